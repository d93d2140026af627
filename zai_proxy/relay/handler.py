"""The request path: a pure ASGI handler for every `/v1/...` call.

read and check the request -> the request hooks' checks (`relay.hooks`: the plan quota, the
client limits, in the order `create_app` gives) -> admission and upstream attempt(s)
(`Forwarder`) -> relay (token accounting watching) -> settle usage (accounting, then the hooks)
-> record once.

Streams are relayed chunk by chunk as the upstream sends them; a non-stream body is read whole
(it is needed whole for usage and to spot an empty 2xx) and sent with its length, unless it is
large and nobody needs it whole (see `forwarding`): then it is relayed as it arrives, with the
upstream's length. A client that leaves cancels the request at once: the upstream response is
closed, the slot freed, and the request recorded as 499.

A stream Z.AI ends with an error event or an abnormal finish reason after its first content is
relayed unchanged, byte for byte (the client sees what Z.AI sent); the forwarder's
`StreamWatch` follows it, the fault is counted and logged once, and the request is recorded
with outcome `upstream_stream_error` and status 502 (like a stream cut short), not `ok`. An
answer judged by its Z.AI code (`opened.throttle`) keeps that code's outcome,
`upstream_429_<class>` for a 429 and `upstream_error_<class>` for any other carrier, and is not
settled for tokens: it produced none.

Everything that can refuse a request (route, body, JSON, the upstream URL) runs before the
request asks for admission, so a refused request never costs a rate token or a slot. Framing
follows RFC 9110: no body and no `Content-Length` on 204 and 304, a HEAD answer carries the
upstream's length and no body; 401 carries `WWW-Authenticate`, 405 carries `Allow`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from zai_proxy.accounting.ledger import Accounting, Ledger
from zai_proxy.core.errors import (
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    ProxyError,
    RateLimited,
    Unauthorized,
    UpstreamError,
    sse_error_event,
)
from zai_proxy.observe.recorder import Recorder
from zai_proxy.relay.forwarding import Opened
from zai_proxy.relay.hooks import ClientIdentity, RequestHook
from zai_proxy.relay.lifecycle import Lifecycle
from zai_proxy.relay.outbound import ClientFacing, Outbound
from zai_proxy.wire.exchange import (
    ClientGone,
    DisconnectWatcher,
    Exchange,
    client_gone,
    request_id,
)
from zai_proxy.wire.headers import (
    RawHeaders,
    client_response_headers,
    header_value,
    upstream_request_headers,
)
from zai_proxy.wire.json_body import INLINE_MAX, PARSE_ERRORS, parse_off_loop
from zai_proxy.wire.routing import Route

Scope = dict[str, Any]
Message = dict[str, Any]

_JSON = (b"content-type", b"application/json")
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="zai-proxy"')
# Statuses whose answers never have a body (RFC 9110 §6.4.1); no Content-Length on them either.
_NO_BODY = frozenset({204, 304})
# Longest Retry-After the proxy passes on (a weekly quota resets within 7 days).
_MAX_RETRY_AFTER = 7 * 86400.0
# Query bytes kept as they are when the client sent non-ASCII ones (percent-encoded otherwise).
_QUERY_SAFE = "!#$%&'()*+,-./:;=?@[]^_`{|}~"


class ProxyHandler:
    """ASGI app for `/v1/...`; every collaborator is passed in by `create_app`."""

    def __init__(self, *, outbound: Outbound, hooks: Sequence[RequestHook],
                 auth: ClientIdentity, accounting: Accounting | None, facing: ClientFacing,
                 lifecycle: Lifecycle, recorder: Recorder,
                 wall: Callable[[], float] = time.time) -> None:
        self.router = outbound.router
        self.forwarder = outbound.forwarder
        self.api_key = outbound.account.key
        self.hooks = tuple(hooks)
        self.wall = wall  # epoch seconds: Z.AI's reset hints are wall-clock times
        self.accounting = accounting
        self.models_body = facing.models_body
        self.auth = auth
        self.lifecycle = lifecycle
        self.recorder = recorder
        self.variant = facing.variant.encode()
        self.max_request_bytes = facing.max_request_bytes

    def stamped(self, scope: Scope, send: Any) -> Any:
        """`send` that adds x-request-id and x-zai-proxy-variant (for the operational routes)."""
        rid = request_id(header_value(scope["headers"], b"x-request-id")).encode()

        async def stamp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k not in (b"x-request-id", b"x-zai-proxy-variant")]
                headers += [(b"x-request-id", rid), (b"x-zai-proxy-variant", self.variant)]
                message = {**message, "headers": headers}
            await send(message)

        return stamp

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        headers: RawHeaders = scope["headers"]
        method: str = scope["method"]
        ex = Exchange(
            request_id=request_id(header_value(headers, b"x-request-id")),
            method=method if method in _KNOWN_METHODS else "other",
            started=time.perf_counter(),
        )
        self.lifecycle.in_flight += 1
        self.recorder.in_flight(self.lifecycle.in_flight)
        try:
            await self._handle(ex, scope, receive, send)
        except ClientGone:
            ex.status, ex.outcome = client_gone(scope)
        finally:
            self.lifecycle.in_flight -= 1
            self.recorder.in_flight(self.lifecycle.in_flight)
            self.recorder.finished(ex)

    async def _handle(self, ex: Exchange, scope: Scope, receive: Any, send: Any) -> None:
        headers: RawHeaders = scope["headers"]
        try:
            ex.client = self.auth.client_id(headers) or _peer(scope)
            raw_path = scope.get("raw_path") or scope["path"].encode()
            route = self.router.resolve(scope["method"], raw_path.decode("latin-1"),
                                        _query(scope["query_string"]))
            ex.route = route.template
            body = await _read_body(receive, headers, self.max_request_bytes)
            ex.request_bytes = len(body)
            payload = None
            if route.json_body and scope["method"] == "POST":
                payload = (_parse_json(body) if len(body) <= INLINE_MAX
                           else await _parse_json_off_loop(body))
        except ProxyError as error:
            if error.route is not None:
                ex.route = error.route
            await self._error(ex, send, error)
            return
        if payload is not None:
            model = payload.get("model")
            ex.model = model[:128] if isinstance(model, str) else None  # bounded in logs too
            ex.stream = payload.get("stream") is True
        if route.template == "/v1/models" and self.models_body is not None:
            await self._local(ex, send, self.models_body)
            return
        watcher = DisconnectWatcher(receive, ex)
        try:
            await self._forward(ex, scope["method"], route, headers, body, payload, send)
        except asyncio.CancelledError:
            if not watcher.disconnected:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            raise ClientGone() from None
        finally:
            watcher.stop()

    async def _forward(self, ex: Exchange, method: str, route: Route, headers: RawHeaders,
                       body: bytes, payload: dict[str, Any] | None, send: Any) -> None:
        head = method == "HEAD"
        try:
            ledger = (self.accounting.open(route, payload, body)
                      if self.accounting is not None and not head else None)
            upstream_body = ledger.upstream_body if ledger is not None else body
            upstream_headers = upstream_request_headers(headers, route.surface, self.api_key,
                                                         ex.request_id, len(upstream_body))
            request = self.forwarder.build(method, route.upstream_url, upstream_headers,
                                           upstream_body)
            for hook in self.hooks:
                refused = await hook.check(ex)
                if refused is not None:
                    raise refused
            opened = await self.forwarder.open(ex, request, expect_json=route.json_body,
                                               read_whole=ledger is not None)
        except ProxyError as error:
            await self._error(ex, send, error)
            return
        if opened.throttle is not None:  # a Z.AI error, whatever carried it
            for hook in self.hooks:
                hook.observe(ex, opened.throttle)
        instead: ProxyError | None = None
        for hook in self.hooks:  # every hook hears the answer; the first replacement wins
            replaced = hook.answered(ex, opened.status, opened.throttle)
            instead = instead or replaced
        try:
            if instead is not None:
                await self._error(ex, send, instead)
            elif opened.body is not None:
                await self._relay_whole(ex, opened, ledger, send, head)
            else:
                await self._relay_stream(ex, route, opened, ledger, send)
        finally:
            await opened.close()
            if (ledger is not None and instead is None and opened.throttle is None
                    and 200 <= opened.status < 300):
                report = await ledger.settle()
                ex.usage = report.log_fields()
                ex.cost = report.cost_usd
                client = "anonymous" if self.auth.open else ex.client
                for hook in self.hooks:
                    await hook.settled(ex, client, report.counts)

    async def _relay_whole(self, ex: Exchange, opened: Opened, ledger: Ledger | None,
                           send: Any, head: bool) -> None:
        data = opened.body or b""
        if ledger is not None and opened.json_ok:
            ledger.body(opened.parsed)
        headers = self._headers(ex, opened)
        if opened.status in _NO_BODY:
            data = b""
        elif head:  # the length the upstream gave for the GET, if it gave one; no body
            data = b""
            length = _upstream_length(opened.headers)
            if length is not None:
                headers.append((b"content-length", length))
        else:
            headers.append((b"content-length", str(len(data)).encode()))
        ex.status = opened.status
        ex.complete = True
        await send({"type": "http.response.start", "status": opened.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        ex.response_bytes = len(data)

    async def _relay_stream(self, ex: Exchange, route: Route, opened: Opened,
                            ledger: Ledger | None, send: Any) -> None:
        """An event stream, or (not `opened.sse`) a large body relayed as it arrives."""
        headers = self._headers(ex, opened)
        if opened.sse:
            headers.append((b"x-accel-buffering", b"no"))
            headers.append((b"cache-control", b"no-cache"))
        else:
            length = _upstream_length(opened.headers)
            if length is not None:
                headers.append((b"content-length", length))
        ex.status = opened.status
        await send({"type": "http.response.start", "status": opened.status, "headers": headers})
        watching = ledger if ledger is not None and ledger.stream and opened.sse else None
        relay = watching.relay if watching is not None else None
        watch = opened.watch  # it has read `first` already
        sent = 0
        chunk = opened.first
        try:
            while True:
                data = relay(chunk) if relay is not None else chunk
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    sent += len(data)
                chunk = await opened.chunks.__anext__()
                if watch is not None:
                    watch.feed(chunk)
        except StopAsyncIteration:
            if watch is not None:
                watch.close()
                self._stream_fault(ex, opened)
        except UpstreamError as error:
            ex.upstream_ended = time.perf_counter()
            if watch is not None:  # counted, though the cut is the request's outcome
                self.forwarder.report_fault(ex, opened)
            self.recorder.upstream_error(error.error_type)
            ex.status = 502
            ex.outcome = "upstream_interrupted"
            ex.error = error.message
            ex.response_bytes = sent
            if not opened.sse:
                # No in-band way to say so: leave the response unfinished, and the server
                # closes the connection, so the client sees a cut body, never a whole-looking one.
                ex.complete = True
                return
            tail = (watching.flush() if watching is not None else b"") + sse_error_event(
                error, anthropic=route.surface == "anthropic")
            ex.complete = True
            await send({"type": "http.response.body", "body": tail})
            ex.response_bytes = sent + len(tail)
            return
        ex.upstream_ended = time.perf_counter()
        tail = watching.flush() if watching is not None else b""
        ex.complete = True
        await send({"type": "http.response.body", "body": tail})
        ex.response_bytes = sent + len(tail)

    def _stream_fault(self, ex: Exchange, opened: Opened) -> None:
        """A stream that ended with an error event or an abnormal finish: counted and logged
        once; the request's outcome unless its answer was judged by a Z.AI code already."""
        fault = opened.watch.fault if opened.watch is not None else None
        if fault is None:
            return
        self.forwarder.report_fault(ex, opened)
        if opened.throttle is None:
            ex.status = 502
            ex.outcome = "upstream_stream_error"
            ex.error = ("the upstream stream ended with an abnormal finish reason"
                        if fault.kind == "finish" else "the upstream stream carried an error event"
                        + (f" (code {fault.code})" if fault.code else ""))

    def _headers(self, ex: Exchange, opened: Opened) -> RawHeaders:
        headers = client_response_headers(opened.headers, ex.request_id.encode(), self.variant)
        throttle = opened.throttle
        if throttle is not None:
            headers.append((b"x-zai-error-class", throttle.cls.value.encode()))
            if throttle.code:
                headers.append((b"x-zai-error-code", throttle.code.encode()))
            wait = throttle.wait_seconds(self.wall())
            if wait is not None and header_value(headers, b"retry-after") is None:
                headers.append((b"retry-after", _retry_after(wait)))
            ex.outcome = (f"upstream_429_{throttle.cls.value}" if opened.carrier == "429"
                          else f"upstream_error_{throttle.cls.value}")
        if self.lifecycle.draining:
            headers.append((b"connection", b"close"))
        return headers

    def _json_headers(self, ex: Exchange, body: bytes) -> RawHeaders:
        return [_JSON, (b"content-length", str(len(body)).encode()),
                (b"x-request-id", ex.request_id.encode()), (b"x-zai-proxy-variant", self.variant)]

    async def _local(self, ex: Exchange, send: Any, body: bytes) -> None:
        """A JSON answer the proxy gives itself (the configured model list; for HEAD the
        server sends the headers only)."""
        ex.status = 200
        ex.complete = True
        headers = self._json_headers(ex, body)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        ex.response_bytes = len(body)

    async def _error(self, ex: Exchange, send: Any, error: ProxyError) -> None:
        body = error.body()
        ex.status = error.status
        ex.outcome = error.code
        ex.error = error.message
        headers = self._json_headers(ex, body)
        if isinstance(error, RateLimited):
            headers.append((b"retry-after", _retry_after(error.retry_after)))
        elif isinstance(error, Unauthorized):
            headers.append(_WWW_AUTHENTICATE)
        elif isinstance(error, MethodNotAllowed) and error.allow:
            headers.append((b"allow", ", ".join(sorted(error.allow)).encode()))
        headers.extend(error.extra_headers)
        if isinstance(error, PayloadTooLarge) or self.lifecycle.draining:
            headers.append((b"connection", b"close"))
        ex.complete = True
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        ex.response_bytes = len(body)


async def _read_body(receive: Any, headers: RawHeaders, limit: int) -> bytes:
    """The whole request body, or PayloadTooLarge as soon as it is known to pass `limit`."""
    declared = header_value(headers, b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("invalid Content-Length header") from None
        if size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the {limit}-byte limit")
    parts: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("request body is empty; a JSON object is required")
    try:
        payload = json.loads(body)
    except PARSE_ERRORS as exc:
        raise _invalid_json(exc) from None
    return _object(payload)


async def _parse_json_off_loop(body: bytes) -> dict[str, Any]:
    try:
        payload = await parse_off_loop(body)
    except PARSE_ERRORS as exc:
        raise _invalid_json(exc) from None
    return _object(payload)


def _invalid_json(exc: Exception) -> InvalidRequest:
    if isinstance(exc, RecursionError):
        return InvalidRequest("request body is not valid JSON: nested too deeply")
    return InvalidRequest(f"request body is not valid JSON: {str(exc)[:200]}")


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    return payload


def _query(raw: bytes) -> str:
    """The client's query for the upstream URL: as sent, non-ASCII bytes percent-encoded."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return quote(raw, safe=_QUERY_SAFE)


def _retry_after(seconds: float) -> bytes:
    """A Retry-After value: whole seconds, at least 1, at most a week (also for inf and NaN)."""
    if not seconds < _MAX_RETRY_AFTER:
        seconds = _MAX_RETRY_AFTER
    return str(max(1, math.ceil(seconds))).encode()


def _upstream_length(raw: RawHeaders) -> bytes | None:
    """The upstream's Content-Length value, when it sent a valid one."""
    for name, value in raw:
        if name.lower() == b"content-length":
            return value if value.isdigit() else None
    return None




def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip-{client[0]}" if client else "ip-unknown"
