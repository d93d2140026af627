"""Upstream attempts: admission before each, classification after, retries where safe.

`Forwarder.open` returns an `Opened` answer the handler relays, or raises a `ProxyError`. It
retries only while nothing has reached the client: connection failures, gateway 5xx, empty or
truncated 2xx bodies, a stream that ends before its first byte, and retryable 429s (never quota
exhaustion); each retry waits (jittered, honouring Retry-After and Z.AI's hints) and goes through
admission again, ahead of new work (a 1312 congestion retry queues like new work). A 1312 is fed
to the controllers as `CONGESTED`: it passed the rate gate and the upstream's rate limiter.
The permit (a concurrency slot) stays with the answer until its body has been relayed: Z.AI
counts an open stream as a concurrent request.

Bodies are bounded. A 2xx body the proxy must read whole (JSON it counts tokens from or checks)
is read up to `max_response_bytes` and answered 502 past it: relaying it unread would let its
tokens past accounting. Any other non-stream body is read whole only while it is small
(`STREAM_ABOVE`); past that it is relayed as it arrives. Error bodies are read up to
`ERROR_BODY_BUDGET` (enough to classify them); a longer one is relayed as it arrives, not cut.

A request that may have reached the upstream is never re-sent unless its method is safe: a
connection that broke after the request was written (`UpstreamDisconnected`) is retried for
GET, HEAD and OPTIONS only; a POST the upstream may have read (and spent tokens on) is answered
502 instead. The upstream key is scrubbed (`Upstream.scrub`) from the relayed response headers
and from every error body read whole, before anything classifies, logs or relays them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from zai_proxy.core.errors import (
    RateLimited,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamResponseTooLarge,
    UpstreamTruncated,
    UpstreamUnreachable,
)
from zai_proxy.limiter.admission import Admission, Permit, Rejection
from zai_proxy.limiter.rate_controller import Outcome
from zai_proxy.observe.metrics import Metrics
from zai_proxy.relay.hooks import RequestHook
from zai_proxy.relay.retry import SAFE_METHODS, RetryPolicy, RetryReason, retry_reason
from zai_proxy.relay.upstream import BodyReader, ScrubbingReader, Upstream
from zai_proxy.wire.exchange import Exchange
from zai_proxy.wire.headers import RawHeaders
from zai_proxy.wire.json_body import INLINE_MAX, PARSE_ERRORS, parse_off_loop
from zai_proxy.zai.classify import Throttle, classify_429
from zai_proxy.zai.codes import Learns

# Error bodies are read with a budget: enough to decide retries and classify a 429.
ERROR_BODY_BUDGET = 256 * 1024
# A body nobody needs whole is buffered (one send, with its length) only up to this size.
STREAM_ABOVE = 256 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# What each controller is told of a 429, by the `learns` column of the Z.AI code table.
_OUTCOMES: dict[Learns | None, Outcome] = {
    "rate": Outcome.RATE_LIMITED,
    "concurrency": Outcome.CONCURRENCY_LIMITED,
    "congestion": Outcome.CONGESTED,
    None: Outcome.OTHER,
}


@dataclass
class Opened:
    """An upstream answer ready to relay. `body` is set when it was read whole already;
    otherwise `first` is the start of the body and `chunks` the rest (an event stream when
    `sse`, else a large body relayed as it arrives)."""

    status: int
    headers: RawHeaders
    content_type: str
    chunks: BodyReader | ScrubbingReader
    permit: Permit
    body: bytes | None = None
    first: bytes = b""
    throttle: Throttle | None = None
    parsed: Any = None  # the JSON of a whole 2xx body, parsed once here (when `json_ok`)
    json_ok: bool = False
    sse: bool = False

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
                 wall_clock: Callable[[], float] = time.time,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 hooks: Sequence[RequestHook] = ()) -> None:
        self.upstream = upstream
        self.max_response_bytes = max_response_bytes
        # Each hook's `recheck` is asked after admission, before every attempt: the first
        # refusal is the answer (the plan quota ran out while the request waited in the queue).
        self.hooks = tuple(hooks)
        self.admission = admission
        self.policy = policy
        self.metrics = metrics
        self.sleep = sleep
        self.wall_clock = wall_clock

    def build(self, method: str, url: str, headers: RawHeaders, body: bytes) -> httpx.Request:
        """The upstream request (UriTooLong / InvalidRequest for a URL httpx refuses); made
        before admission, so a refusal costs no rate token."""
        return self.upstream.build(method, url, headers, body)

    async def open(self, ex: Exchange, request: httpx.Request, *, expect_json: bool = True,
                   read_whole: bool = False) -> Opened:
        """The answer to `request` (after any retries), or RateLimited / UpstreamError.

        `expect_json`: a 2xx answer must carry a JSON body (or be a stream); an empty or
        unparsable one is a broken answer worth retrying. Off for pass-through routes, where
        an empty 2xx (a 204, say) is legitimate. `read_whole` (implied by `expect_json`): a
        non-stream 2xx body is needed whole and parsed (it is counted), up to the size cap.
        """
        read_whole = read_whole or expect_json
        retries = 0
        priority = False
        while True:
            permit = await self._admit(ex, priority=priority)
            for hook in self.hooks:
                if (refused := hook.recheck(ex)) is not None:
                    permit.release()
                    raise refused
            ex.attempts += 1
            retry_after: float | None = None
            reason: RetryReason | None
            try:
                opened = await self._attempt(ex, request, permit, read_whole)
            except BaseException as error:
                if not isinstance(error, UpstreamError):  # cancelled: the client left
                    permit.release()
                    raise
                permit.observe(Outcome.OTHER)
                permit.release()
                self.metrics.upstream_error(error.error_type)
                reason = retry_reason(
                    connection_error=isinstance(error, UpstreamUnreachable),
                    maybe_delivered=isinstance(error, UpstreamDisconnected),
                    idempotent=request.method in SAFE_METHODS,
                ) or (RetryReason.EMPTY_RESPONSE if isinstance(error, UpstreamTruncated)
                      else None)
                failure: Exception = error
            else:
                reason, retry_after = self._judge(opened, expect_json)
                if reason is None or (opened.body is None and opened.first):
                    return opened  # fine, or a long error body already being relayed
                await opened.close()
                failure = _Retryable(opened)
            delay = self.policy.next_delay(retries, retry_after) if reason else None
            if reason is None or delay is None:
                if isinstance(failure, _Retryable):
                    # Out of retries on an answer already read whole: relay it as it was.
                    return failure.opened
                raise failure
            self.metrics.retries.labels(reason.value).inc()
            retries += 1
            # Retries go ahead of new work, except in a congestion (1312) storm: there they
            # queue like new work, so they cannot crowd it out while the gate backs off.
            priority = reason is not RetryReason.CONGESTION
            await self.sleep(delay)

    async def _admit(self, ex: Exchange, *, priority: bool) -> Permit:
        result = await self.admission.acquire(ex.client, priority=priority, paced=ex.paced)
        if isinstance(result, Rejection):
            self.metrics.rejections.labels(result.reason).inc()
            raise RateLimited(
                "the proxy's request queue is full; retry later" if result.reason == "queue_full"
                else "the proxy could not admit this request within its queue deadline",
                code=f"proxy_{result.reason}", retry_after=result.retry_after)
        ex.admission_wait += result.waited
        self.metrics.admission_wait.observe(result.waited)
        return result

    async def _attempt(self, ex: Exchange, request: httpx.Request, permit: Permit,
                       read_whole: bool) -> Opened:
        if ex.upstream_started is None:
            ex.upstream_started = time.perf_counter()
        response = await self.upstream.send(request)
        ex.upstream_ttfb = time.perf_counter()
        status = ex.upstream_status = response.status_code
        chunks = self.upstream.chunks(response)
        content_type = response.headers.get("content-type", "")
        raw = self.upstream.scrub.headers(response.headers.raw)
        opened = Opened(status, raw, content_type, chunks, permit)
        try:
            if status < 300 and content_type.startswith("text/event-stream"):
                opened.sse = True
                opened.first = await _first_chunk(chunks)
            else:
                whole = read_whole and status < 300
                limit = (self.max_response_bytes if whole else
                         STREAM_ABOVE if status < 300 else ERROR_BODY_BUDGET)
                if whole and _declared_length(raw) > limit:
                    raise UpstreamResponseTooLarge(_too_large(limit))
                data, complete = await _read_upto(chunks, limit)
                scrub = self.upstream.scrub
                if status >= 300 and scrub.active:  # relayed and classified: never with the key
                    if complete:
                        data = scrub.data(data)
                    else:  # relayed as it arrives: scrubbed across reads, length unknown
                        data, tail = scrub.split(data)
                        opened.chunks = scrub.reader(chunks, tail)
                        opened.headers = [(k, v) for k, v in raw
                                          if k.lower() != b"content-length"]
                if complete:
                    opened.body = data
                    ex.upstream_ended = time.perf_counter()
                    if whole and len(data) <= INLINE_MAX:
                        _parse(opened, data)  # small: inline, no await on the hot path
                    elif whole:
                        await _parse_off_loop(opened, data)
                elif whole:
                    raise UpstreamResponseTooLarge(_too_large(limit))
                else:
                    opened.first = data
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
            self.metrics.upstream_429.labels(throttle.cls.value).inc()
            self.metrics.upstream_error("429")
            row = throttle.row
            if not row.retryable:  # quota spent or account stopped: never retried
                self.metrics.rejections.labels(
                    "account_stopped" if row.stop else "quota_exhausted").inc()
            permit.observe(_OUTCOMES[row.learns])
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
            if expect_json and not opened.json_ok:
                self.metrics.upstream_error("truncated_response")
                return retry_reason(status=status, empty_or_truncated=True), None
        return None, None


class _Retryable(Exception):
    def __init__(self, opened: Opened) -> None:
        self.opened = opened


async def _read_upto(chunks: BodyReader, limit: int) -> tuple[bytes, bool]:
    """The body if it ends within `limit` bytes (True), else what was read so far (False)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts), False
    return (parts[0] if len(parts) == 1 else b"".join(parts)), True


def _declared_length(raw: RawHeaders) -> int:
    for name, value in raw:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


def _too_large(limit: int) -> str:
    return f"the upstream answer is larger than MAX_RESPONSE_BYTES ({limit} bytes)"


async def _first_chunk(chunks: BodyReader) -> bytes:
    async for chunk in chunks:
        if chunk:
            return chunk
    return b""


def _parse(opened: Opened, body: bytes) -> None:
    """Parse a whole 2xx body once; `json_ok` says whether it is JSON."""
    try:
        opened.parsed = json.loads(body)
    except PARSE_ERRORS:
        return
    opened.json_ok = True


async def _parse_off_loop(opened: Opened, body: bytes) -> None:
    try:
        opened.parsed = await parse_off_loop(body)
    except PARSE_ERRORS:
        return
    opened.json_ok = True


def _str_headers(raw: RawHeaders) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}

