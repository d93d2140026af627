"""Upstream attempts: admission before each, classification after, retries where safe.

`Forwarder.open` returns an `Opened` answer the handler relays, or raises a `ProxyError`. It
retries only while nothing has reached the client: connection failures, gateway 5xx, empty or
truncated 2xx bodies, a stream that ends before its first content, and retryable Z.AI errors
(never quota exhaustion); each retry waits (jittered, honouring Retry-After and Z.AI's hints)
and goes through admission again, ahead of new work (a 1312 congestion retry queues like new
work). A 1312 is fed to the controllers as `CONGESTED`: it passed the rate gate and the
upstream's rate limiter. The permit (a concurrency slot) stays with the answer until its body
has been relayed: Z.AI counts an open stream as a concurrent request.

A Z.AI error is judged by its code's row (`zai/codes.py`) whatever carried it (`carriers`: a
429, another 4xx, a 2xx error object, an error event before a stream's first content): counted,
fed to the controllers, retried when its row says so, relayed as it came otherwise, with
`opened.throttle` set for the request hooks and the client headers. A prompt-sensitive code
that comes back for a request body that drew it lately (`PromptMemory`) is read by the
`OVERLOADED_PROMPT` row instead: it lowers no ceiling and is retried at most that row's
`max_retries` times within the request.

The start of an event stream is held back until its first event past the head (content, an
error, a finish; `HEAD_LIMIT` bytes or the first-byte timeout at most, checked as chunks come),
so an error event before any content is judged like any other answer. The `StreamWatch` that
read the head follows the rest of the stream in the handler; a fault found is counted once in
`zai_proxy_upstream_stream_errors_total{class}` and logged with the request id.

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
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
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
from zai_proxy.relay.carriers import carried
from zai_proxy.relay.hooks import RequestHook
from zai_proxy.relay.prompt_memory import PromptMemory, digest
from zai_proxy.relay.retry import SAFE_METHODS, RetryPolicy, RetryReason, retry_reason
from zai_proxy.relay.stream_errors import StreamWatch
from zai_proxy.relay.upstream import BodyReader, ScrubbingReader, Upstream
from zai_proxy.wire.exchange import Exchange
from zai_proxy.wire.headers import RawHeaders
from zai_proxy.wire.json_body import INLINE_MAX, PARSE_ERRORS, parse_off_loop
from zai_proxy.zai.classify import Throttle
from zai_proxy.zai.codes import OVERLOADED_PROMPT, Learns

# Error bodies are read with a budget: enough to decide retries and classify a 429.
ERROR_BODY_BUDGET = 256 * 1024
# A body nobody needs whole is buffered (one send, with its length) only up to this size.
STREAM_ABOVE = 256 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# The most of a stream's start held back while waiting for its first content.
HEAD_LIMIT = 64 * 1024
# What each controller is told of a Z.AI error, by the `learns` column of the code table.
_OUTCOMES: dict[Learns | None, Outcome] = {
    "rate": Outcome.RATE_LIMITED,
    "concurrency": Outcome.CONCURRENCY_LIMITED,
    "congestion": Outcome.CONGESTED,
    None: Outcome.OTHER,
}
log = logging.getLogger("zai_proxy")


@dataclass
class Opened:
    """An upstream answer ready to relay. `body` is set when it was read whole already;
    otherwise `first` is the start of the body and `chunks` the rest (an event stream when
    `sse`, else a large body relayed as it arrives). `throttle` is the Z.AI error it carried
    and `carrier` what carried it; `watch` follows an event stream (it has read `first`)."""

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
    carrier: str | None = None  # "429", "4xx", "200" or "stream"
    watch: StreamWatch | None = None
    fault_reported: bool = False

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
                 hooks: Sequence[RequestHook] = (),
                 prompts: PromptMemory | None = None) -> None:
        self.upstream = upstream
        self.prompts = prompts if prompts is not None else PromptMemory()
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
        retried: dict[str | None, int] = {}  # retries so far of answers carrying each code
        while True:
            permit = await self._admit(ex, priority=priority)
            for hook in self.hooks:
                if (refused := hook.recheck(ex)) is not None:
                    permit.release()
                    raise refused
            ex.attempts += 1
            retry_after: float | None = None
            reason: RetryReason | None
            opened: Opened | None = None
            failure: Exception | None = None
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
                failure = error
            else:
                reason, retry_after = self._judge(opened, expect_json, request)
                if opened.watch is not None:
                    self.report_fault(ex, opened)
                throttle = opened.throttle
                if throttle is not None and _spent(throttle, retried):
                    reason = None  # its row's own cap on retries within one request
                if reason is None or (opened.body is None and opened.first and not opened.sse):
                    return opened  # fine, or a long error body already being relayed
            delay = self.policy.next_delay(retries, retry_after) if reason else None
            if reason is None or delay is None:
                if opened is not None:
                    return opened  # out of retries: relay the answer as it came
                assert failure is not None
                raise failure
            if opened is not None:
                await opened.close()
                if opened.throttle is not None:
                    code = opened.throttle.code
                    retried[code] = retried.get(code, 0) + 1
            self.metrics.retries.labels(reason.value).inc()
            retries += 1
            # Retries go ahead of new work, except in a congestion (1312) storm: there they
            # queue like new work, so they cannot crowd it out while the gate backs off.
            priority = reason is not RetryReason.CONGESTION
            await self.sleep(delay)

    def report_fault(self, ex: Exchange, opened: Opened) -> None:
        """Count and log the fault the stream's watch found, once per stream."""
        fault = opened.watch.fault if opened.watch is not None else None
        if fault is None or opened.fault_reported:
            return
        opened.fault_reported = True
        self.metrics.stream_errors.labels(fault.cls).inc()
        log.warning("upstream stream error", extra={"fields": {
            "request_id": ex.request_id, "kind": fault.kind, "class": fault.cls,
            "code": fault.code, "before_content": fault.before_content,
            "detail": self.upstream.scrub.text(fault.detail)}})

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
                opened.watch = StreamWatch()
                opened.first = await self._head(chunks, opened.watch)
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

    async def _head(self, chunks: BodyReader, watch: StreamWatch) -> bytes:
        """The start of a stream, up to its first event past the head (see the docstring)."""
        parts: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.upstream.first_byte_timeout
        async for chunk in chunks:
            if not chunk:
                continue
            parts.append(chunk)
            size += len(chunk)
            watch.feed(chunk)
            if watch.head_over or size >= HEAD_LIMIT or loop.time() >= deadline:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _judge(self, opened: Opened, expect_json: bool,
               request: httpx.Request | None = None) -> tuple[RetryReason | None, float | None]:
        """Feed the controllers; say whether (and why) this answer is worth another try."""
        status = opened.status
        permit = opened.permit
        found = carried(status, opened.headers, opened.body, opened.parsed, opened.json_ok,
                        opened.watch, self.wall_clock)
        if found is not None:
            throttle, carrier = found
            if throttle.row.prompt_sensitive and request is not None and self.prompts.recall(
                    digest(request.method.encode(), request.url.raw_path, request.content)):
                throttle = replace(throttle, cls=OVERLOADED_PROMPT.cls)
            opened.throttle = throttle
            opened.carrier = carrier
            cls = throttle.cls.value
            if carrier == "429":
                self.metrics.upstream_429.labels(cls).inc()
                self.metrics.upstream_error("429")
            self.metrics.business_errors.labels(cls, carrier).inc()
            row = throttle.row
            if not row.retryable:  # quota spent or account stopped: never retried
                self.metrics.rejections.labels(
                    "account_stopped" if row.stop else "quota_exhausted").inc()
            permit.observe(_OUTCOMES[row.learns])
            return retry_reason(status=status, throttle=throttle), throttle.retry_after
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

def _spent(throttle: Throttle, retried: dict[str | None, int]) -> bool:
    """Whether answers carrying this code were retried as often as its row allows."""
    cap = throttle.row.max_retries
    return cap is not None and retried.get(throttle.code, 0) >= cap


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
