"""Retry policy: which failures are retried, and how long to wait before the next attempt.

Pure: the random source is injected. A retry is only safe before any byte reached the client.
Each retry must re-acquire admission (with `priority=True`) - this module only decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from zai_proxy.zai.classify import Throttle, parse_retry_after
from zai_proxy.zai.codes import UNKNOWN

__all__ = ["SAFE_METHODS", "RetryPolicy", "RetryReason", "parse_retry_after", "retry_reason"]

GATEWAY_STATUSES = frozenset({502, 503, 504})
# Methods a second delivery cannot harm (RFC 9110 §9.2.1): the only ones re-sent after the
# upstream may have read them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RetryReason(StrEnum):
    """Values of the `reason` label of `zai_proxy_retry_attempts_total` (the 429 ones are the
    `retry` column of the Z.AI code table)."""

    CONNECTION = "connection"
    SERVER = "5xx"
    EMPTY_RESPONSE = "empty_response"
    FREQUENCY = "429_frequency"
    CONCURRENCY = "429_concurrency"
    CONGESTION = "429_congestion"
    UNKNOWN = "429_unknown"
    OVERLOADED_PROMPT = "429_overloaded_prompt"


def retry_reason(
    *,
    status: int | None = None,
    throttle: Throttle | None = None,
    connection_error: bool = False,
    maybe_delivered: bool = False,
    idempotent: bool = True,
    empty_or_truncated: bool = False,
    client_started: bool = False,
) -> RetryReason | None:
    """Why this failed attempt may be retried, or None when it must not be.

    `status` is the upstream HTTP status (None when no response); `throttle` the classified error
    (a 429, or a business code in another carrier: its row decides, whatever the status);
    `empty_or_truncated` a 2xx whose body was empty or cut short (or a stream with no bytes);
    `client_started` whether any byte already went to the client - then nothing is retried.
    `connection_error` with `maybe_delivered`: the connection broke after the request may have
    been written, so the upstream may have read it; retried only when `idempotent` (a safe
    method), never a POST that may already be spending tokens.
    """
    if client_started:
        return None
    if connection_error:
        return RetryReason.CONNECTION if idempotent or not maybe_delivered else None
    if throttle is not None or status == 429:
        retry = (throttle.row if throttle is not None else UNKNOWN).retry
        return None if retry is None else RetryReason(retry)
    if status is None:
        return None
    if status in GATEWAY_STATUSES:
        return RetryReason.SERVER
    if 200 <= status < 300 and empty_or_truncated:
        return RetryReason.EMPTY_RESPONSE
    return None


@dataclass
class RetryPolicy:
    """Full-jitter exponential backoff that honours Retry-After and Z.AI's hints.

    `attempt` counts retries already made (0 before the first retry). `jitter` in [0, 1] is the
    fraction of the backoff that is randomised (1.0 = full jitter). A server hint longer than
    `max_hint` seconds is not waited for: the client is better served by a 429 with that hint.
    """

    max_retries: int = 3
    base: float = 0.5
    cap: float = 20.0
    jitter: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    max_hint: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base < 0 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("invalid retry policy")

    def next_delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None to stop retrying."""
        if attempt >= self.max_retries:
            return None
        backoff = min(self.cap, self.base * (2.0**attempt))
        delay = backoff * (1.0 - self.jitter * self.rng.random())
        if retry_after is None:
            return delay
        if retry_after > self.max_hint:
            return None
        # Never earlier than the server asked; a little spread so retries do not arrive together.
        return retry_after + self.jitter * self.rng.random() * min(self.base, backoff)
