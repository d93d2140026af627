"""Optional per-client quotas (requests and tokens per period) with the `limits` library.

`CLIENT_RATE_LIMITS` syntax: items separated by `;` or `,`, each in `limits` notation; an item
prefixed `tokens:` limits tokens, any other (optionally prefixed `requests:`) limits requests.
Every client key gets its own counters. Examples:

    600/minute                              600 requests per minute per client
    600/minute; 10/second                   both must hold
    600/minute; tokens:100000/minute        plus 100k tokens per minute per client

Requests use a moving window (exact); tokens a fixed window (one counter, whatever the cost).
Storage from `RATE_LIMIT_STORAGE_URI`: `memory://` (default) or `redis://host:port/0`
(mapped to `limits`' async variants). A storage failure lets the request through (logged):
quotas must not take the proxy down.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter
from limits.storage import storage_from_string

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaDecision:
    """`allowed`, else which limit (`limit`, e.g. "tokens 100000/1 minute") and `retry_after` s."""

    allowed: bool
    limit: str | None = None
    retry_after: float = 0.0


ALLOWED = QuotaDecision(True)


def parse_client_limits(spec: str) -> tuple[list[RateLimitItem], list[RateLimitItem]]:
    """(request limits, token limits) from `CLIENT_RATE_LIMITS`; ValueError when malformed."""
    requests: list[RateLimitItem] = []
    tokens: list[RateLimitItem] = []
    for raw in re.split(r"[;,]", spec):
        item = raw.strip()
        if not item:
            continue
        kind, sep, rest = item.partition(":")
        target = requests
        if sep and kind.strip().lower() in ("tokens", "requests"):
            target = tokens if kind.strip().lower() == "tokens" else requests
            item = rest.strip()
        try:
            target.append(parse(item))
        except ValueError as exc:
            raise ValueError(f"CLIENT_RATE_LIMITS: cannot parse {raw.strip()!r}") from exc
    return requests, tokens


def async_storage_uri(uri: str) -> str:
    """`limits`' async scheme for a configured storage URI."""
    return uri if uri.startswith("async+") else f"async+{uri}"


class ClientQuotas:
    """Per-client request and token limits; `enabled` is False when no limit is configured."""

    def __init__(
        self,
        spec: str = "",
        storage_uri: str = "memory://",
        *,
        prefix: str = "zai-proxy",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.request_limits, self.token_limits = parse_client_limits(spec)
        storage = storage_from_string(async_storage_uri(storage_uri))
        self._requests: RateLimiter = MovingWindowRateLimiter(storage)
        self._tokens: RateLimiter = FixedWindowRateLimiter(storage)
        self.prefix, self._wall = prefix, wall_clock

    @property
    def enabled(self) -> bool:
        return bool(self.request_limits or self.token_limits)

    async def _retry_after(self, limiter: RateLimiter, item: RateLimitItem, *ids: str) -> float:
        stats = await limiter.get_window_stats(item, *ids)
        return max(1.0, float(stats.reset_time) - self._wall())

    async def check(self, client_id: str, tokens: int = 0) -> QuotaDecision:
        """Count one request (and `tokens` expected input tokens) unless a limit is exhausted."""
        if not self.enabled:
            return ALLOWED
        req_ids, tok_ids = (self.prefix, "req", client_id), (self.prefix, "tok", client_id)
        try:
            for item in self.request_limits:
                if not await self._requests.test(item, *req_ids):
                    after = await self._retry_after(self._requests, item, *req_ids)
                    return QuotaDecision(False, f"requests {item}", after)
            for item in self.token_limits:
                if not await self._tokens.test(item, *tok_ids, cost=max(1, tokens)):
                    after = await self._retry_after(self._tokens, item, *tok_ids)
                    return QuotaDecision(False, f"tokens {item}", after)
            for item in self.request_limits:
                await self._requests.hit(item, *req_ids)
            if tokens > 0:
                await self._hit_tokens(client_id, tokens)
        except Exception as exc:
            log.warning("client quota storage failed, request allowed: %r", exc)
        return ALLOWED

    async def _hit_tokens(self, client_id: str, tokens: int) -> None:
        for item in self.token_limits:
            # Counted even past the limit: usage is what it was; the next request is refused.
            await self._tokens.hit(item, self.prefix, "tok", client_id, cost=tokens)

    async def record_tokens(self, client_id: str, tokens: int) -> None:
        """Add tokens known after the response (output, or input not counted in `check`)."""
        if tokens <= 0 or not self.token_limits:
            return
        try:
            await self._hit_tokens(client_id, tokens)
        except Exception as exc:
            log.warning("client quota storage failed, tokens not counted: %r", exc)
