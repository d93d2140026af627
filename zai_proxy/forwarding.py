"""Upstream attempts: admission before each, classification after, retries where safe.

`Forwarder.open` returns an `Opened` answer the handler relays, or raises a `ProxyError`. It
retries only while nothing has reached the client: connection failures, gateway 5xx, empty or
truncated 2xx bodies, a stream that ends before its first byte, and retryable 429s (never quota
exhaustion); each retry waits (jittered, honouring Retry-After and Z.AI's hints) and goes through
admission again, ahead of new work (a 1312 congestion retry queues like new work). A 1312 is fed
to the controllers as `CONGESTED`: it passed the rate gate and the upstream's rate limiter.
The permit (a concurrency slot) stays with the answer until its body has been relayed: Z.AI
counts an open stream as a concurrent request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from zai_proxy.admission import Admission, Permit, Rejection
from zai_proxy.classify import Throttle, ThrottleClass, classify_429
from zai_proxy.errors import (
    RateLimited,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamTruncated,
    UpstreamUnreachable,
)
from zai_proxy.exchange import Exchange
from zai_proxy.headers import RawHeaders
from zai_proxy.metrics import Metrics
from zai_proxy.rate_controller import Outcome
from zai_proxy.retry import RetryPolicy, RetryReason, retry_reason
from zai_proxy.upstream import BodyReader, Upstream

# Error bodies are read with a budget: they decide retries, they are not relayed as streams.
ERROR_BODY_BUDGET = 256 * 1024


@dataclass
class Opened:
    """An upstream answer ready to relay. `body` is set when it was read whole already;
    otherwise `first` is the stream's first chunk and `chunks` the rest."""

    status: int
    headers: RawHeaders
    content_type: str
    chunks: BodyReader
    permit: Permit
    body: bytes | None = None
    first: bytes = b""
    throttle: Throttle | None = None
    parsed: Any = None  # the JSON of a whole 2xx body, parsed once here

    async def close(self) -> None:
        """Close the upstream response and free the slot; safe to call more than once."""
        try:
            await self.chunks.aclose()
        finally:
            self.permit.release()


class Forwarder:
    """Admission + upstream attempts + retries for one proxy."""

    def __init__(self, *, upstream: Upstream, admission: Admission, policy: RetryPolicy,
                 metrics: Metrics, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.upstream = upstream
        self.admission = admission
        self.policy = policy
        self.metrics = metrics
        self.sleep = sleep
        self.wall_clock = wall_clock

    async def open(self, ex: Exchange, method: str, url: str, headers: RawHeaders,
                   body: bytes, *, expect_json: bool = True) -> Opened:
        """The answer to relay (after any retries), or RateLimited / UpstreamError.

        `expect_json`: a 2xx answer must carry a JSON body (or be a stream); an empty or
        unparsable one is a broken answer worth retrying. Off for pass-through routes, where
        an empty 2xx (a 204, say) is legitimate.
        """
        retries = 0
        priority = False
        while True:
            permit = await self._admit(ex, priority=priority)
            ex.attempts += 1
            retry_after: float | None = None
            reason: RetryReason | None
            try:
                opened = await self._attempt(ex, method, url, headers, body, permit)
            except BaseException as error:
                if not isinstance(error, UpstreamError):  # cancelled: the client left
                    permit.release()
                    raise
                permit.observe(Outcome.OTHER)
                permit.release()
                self.metrics.upstream_error(error.error_type)
                reason = (RetryReason.CONNECTION if isinstance(error, UpstreamUnreachable) else
                          RetryReason.EMPTY_RESPONSE if isinstance(error, UpstreamTruncated)
                          else None)
                failure: Exception = error
            else:
                reason, retry_after = self._judge(opened, expect_json)
                if reason is None:
                    return opened
                await opened.close()
                failure = _Retryable(opened)
            delay = self.policy.next_delay(retries, retry_after) if reason else None
            if reason is None or delay is None:
                if isinstance(failure, _Retryable):
                    # Out of retries on an answer already read whole: relay it as it was.
                    return failure.opened
                raise failure
            self.metrics.retries.labels(reason.value, self.metrics.variant).inc()
            retries += 1
            # Retries go ahead of new work, except in a congestion (1312) storm: there they
            # queue like new work, so they cannot crowd it out while the gate backs off.
            priority = reason is not RetryReason.CONGESTION
            await self.sleep(delay)

    async def _admit(self, ex: Exchange, *, priority: bool) -> Permit:
        result = await self.admission.acquire(ex.client, priority=priority)
        if isinstance(result, Rejection):
            self.metrics.rejections.labels(result.reason, self.metrics.variant).inc()
            raise RateLimited(
                "the proxy's request queue is full; retry later" if result.reason == "queue_full"
                else "the proxy could not admit this request within its queue deadline",
                code=f"proxy_{result.reason}", retry_after=result.retry_after)
        ex.admission_wait += result.waited
        self.metrics.admission_wait.observe(result.waited)
        return result

    async def _attempt(self, ex: Exchange, method: str, url: str, headers: RawHeaders,
                       body: bytes, permit: Permit) -> Opened:
        if ex.upstream_started is None:
            ex.upstream_started = time.perf_counter()
        response = await self.upstream.send(method, url, headers, body)
        ex.upstream_ttfb = time.perf_counter()
        ex.upstream_status = response.status_code
        chunks = self.upstream.chunks(response)
        content_type = response.headers.get("content-type", "")
        opened = Opened(response.status_code, list(response.headers.raw), content_type, chunks,
                        permit)
        try:
            if response.status_code >= 300 or not content_type.startswith("text/event-stream"):
                budget = ERROR_BODY_BUDGET if response.status_code >= 300 else None
                opened.body = await _read_all(chunks, budget)
                ex.upstream_ended = time.perf_counter()
            else:
                opened.first = await _first_chunk(chunks)
        except UpstreamInterrupted as exc:
            await opened.chunks.aclose()
            if opened.first or opened.body is not None:
                raise
            raise UpstreamTruncated(f"upstream body broke off: {exc.message}") from exc
        except BaseException:
            await opened.chunks.aclose()
            raise
        return opened

    def _judge(self, opened: Opened,
               expect_json: bool) -> tuple[RetryReason | None, float | None]:
        """Feed the controllers; say whether (and why) this answer is worth another try."""
        status = opened.status
        permit = opened.permit
        if status == 429:
            throttle = classify_429(opened.body or b"", _str_headers(opened.headers),
                                    self.wall_clock())
            opened.throttle = throttle
            self.metrics.upstream_429.labels(throttle.cls.value, self.metrics.variant).inc()
            self.metrics.upstream_error("429")
            if not throttle.retryable:  # quota exhausted: relayed to the client, never retried
                self.metrics.rejections.labels("quota_exhausted", self.metrics.variant).inc()
            feeds = throttle.feeds
            permit.observe(Outcome.RATE_LIMITED if feeds == "rate" else
                           Outcome.CONCURRENCY_LIMITED if feeds == "concurrency" else
                           Outcome.CONGESTED if throttle.cls is ThrottleClass.CONGESTION else
                           Outcome.OTHER)
            return retry_reason(status=429, throttle=throttle), throttle.retry_after
        permit.observe(Outcome.ACCEPTED if status < 500 else Outcome.OTHER)
        if status >= 500:
            self.metrics.upstream_error("5xx")
            return retry_reason(status=status), None
        if 200 <= status < 300:
            if opened.body is None:  # a stream
                if not opened.first:
                    self.metrics.upstream_error("empty_streaming")
                    return retry_reason(status=status, empty_or_truncated=True), None
                return None, None
            if expect_json and not _parse(opened):
                self.metrics.upstream_error("truncated_response")
                return retry_reason(status=status, empty_or_truncated=True), None
        return None, None


class _Retryable(Exception):
    def __init__(self, opened: Opened) -> None:
        self.opened = opened


async def _read_all(chunks: BodyReader, budget: int | None) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if budget is not None and size > budget:
            break
    return b"".join(parts)


async def _first_chunk(chunks: BodyReader) -> bytes:
    async for chunk in chunks:
        if chunk:
            return chunk
    return b""


def _parse(opened: Opened) -> bool:
    try:
        opened.parsed = json.loads(opened.body or b"")
    except (ValueError, RecursionError):
        return False
    return True


def _str_headers(raw: RawHeaders) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}

