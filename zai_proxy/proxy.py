"""The request path: a pure ASGI handler for every `/v1/...` call.

read and check the request -> admission -> upstream attempt(s) -> relay -> record once.

Streams are relayed chunk by chunk as the upstream sends them; a non-stream body is read whole
(it is needed whole for usage and to spot an empty 2xx) and sent with its length. A client that
leaves cancels the request at once: the upstream response is closed, the slot freed, and the
request recorded as 499.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from zai_proxy.auth import ClientAuth
from zai_proxy.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ProxyError,
    ServiceUnavailable,
    UpstreamError,
    sse_error_event,
)
from zai_proxy.exchange import ClientGone, DisconnectWatcher, Exchange
from zai_proxy.headers import (
    RawHeaders,
    client_response_headers,
    header_value,
    upstream_request_headers,
)
from zai_proxy.lifecycle import Lifecycle
from zai_proxy.recorder import Recorder
from zai_proxy.routing import Route, Router
from zai_proxy.upstream import Upstream

Scope = dict[str, Any]
Message = dict[str, Any]

_JSON = (b"content-type", b"application/json")
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class ProxyHandler:
    """ASGI app for `/v1/...`; every collaborator is passed in by `create_app`."""

    def __init__(self, *, router: Router, upstream: Upstream, auth: ClientAuth,
                 lifecycle: Lifecycle, recorder: Recorder, api_key: str, variant: str,
                 max_request_bytes: int) -> None:
        self.router = router
        self.upstream = upstream
        self.auth = auth
        self.lifecycle = lifecycle
        self.recorder = recorder
        self.api_key = api_key
        self.variant = variant.encode()
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        headers: RawHeaders = scope["headers"]
        method: str = scope["method"]
        ex = Exchange(
            request_id=_request_id(header_value(headers, b"x-request-id")),
            method=method if method in _KNOWN_METHODS else "other",
            started=time.perf_counter(),
        )
        self.lifecycle.in_flight += 1
        self.recorder.in_flight(self.lifecycle.in_flight)
        try:
            await self._handle(ex, scope, receive, send)
        except ClientGone:
            ex.status = 499
            ex.outcome = "client_disconnected"
        finally:
            self.lifecycle.in_flight -= 1
            self.recorder.in_flight(self.lifecycle.in_flight)
            self.recorder.finished(ex)

    async def _handle(self, ex: Exchange, scope: Scope, receive: Any, send: Any) -> None:
        headers: RawHeaders = scope["headers"]
        try:
            ex.client = self.auth.client_id(headers) or _peer(scope)
            route = self.router.resolve(scope["method"], scope["raw_path"].decode("latin-1"),
                                        scope["query_string"].decode("latin-1"))
            ex.route = route.template
            body = await _read_body(receive, headers, self.max_request_bytes)
            ex.request_bytes = len(body)
            payload = _parse_json(body) if route.json_body and scope["method"] == "POST" else None
        except ProxyError as error:
            if error.route is not None:
                ex.route = error.route
            await self._error(ex, send, error)
            return
        if payload is not None:
            model = payload.get("model")
            ex.model = model if isinstance(model, str) else None
            ex.stream = payload.get("stream") is True
        watcher = DisconnectWatcher(receive, ex)
        try:
            await self._forward(ex, scope["method"], route, headers, body, send)
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
                       body: bytes, send: Any) -> None:
        # Admission and retries (issue 4) wrap this attempt.
        upstream_headers = upstream_request_headers(headers, route.surface, self.api_key,
                                                    ex.request_id, len(body))
        ex.upstream_started = time.perf_counter()
        try:
            response = await self.upstream.send(method, route.upstream_url,
                                                upstream_headers, body)
        except UpstreamError as error:
            self.recorder.upstream_error(error.error_type)
            await self._error(ex, send, error)
            return
        ex.upstream_ttfb = time.perf_counter()
        ex.upstream_status = response.status_code
        if response.status_code >= 500:
            self.recorder.upstream_error("5xx")
        elif response.status_code == 429:
            self.recorder.upstream_error("429")
        out_headers = client_response_headers(response.headers.raw, ex.request_id.encode(),
                                              self.variant)
        if self.lifecycle.draining:
            out_headers.append((b"connection", b"close"))
        content_type = response.headers.get("content-type", "")
        async with self.upstream.chunks(response) as chunks:
            if content_type.startswith("text/event-stream"):
                await self._relay_stream(ex, response.status_code, out_headers, chunks, send)
            else:
                await self._relay_whole(ex, response.status_code, out_headers, chunks, send)

    async def _relay_whole(self, ex: Exchange, status: int, headers: RawHeaders,
                           chunks: Any, send: Any) -> None:
        parts: list[bytes] = []
        try:
            async for chunk in chunks:
                parts.append(chunk)
        except UpstreamError as error:
            ex.upstream_ended = time.perf_counter()
            self.recorder.upstream_error("truncated_response")
            await self._error(ex, send, error)
            return
        ex.upstream_ended = time.perf_counter()
        data = b"".join(parts)
        headers.append((b"content-length", str(len(data)).encode()))
        ex.status = status
        ex.complete = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        ex.response_bytes = len(data)

    async def _relay_stream(self, ex: Exchange, status: int, headers: RawHeaders,
                            chunks: Any, send: Any) -> None:
        headers.append((b"x-accel-buffering", b"no"))
        headers.append((b"cache-control", b"no-cache"))
        ex.status = status
        await send({"type": "http.response.start", "status": status, "headers": headers})
        sent = 0
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
        except UpstreamError as error:
            ex.upstream_ended = time.perf_counter()
            self.recorder.upstream_error(
                "empty_streaming" if sent == 0 else error.error_type)
            ex.status = 502
            ex.outcome = "upstream_interrupted"
            ex.error = error.message
            tail = sse_error_event(error)
            ex.complete = True
            await send({"type": "http.response.body", "body": tail})
            ex.response_bytes = sent + len(tail)
            return
        ex.upstream_ended = time.perf_counter()
        if sent == 0:
            self.recorder.upstream_error("empty_streaming")
        ex.complete = True
        await send({"type": "http.response.body", "body": b""})
        ex.response_bytes = sent

    async def _error(self, ex: Exchange, send: Any, error: ProxyError) -> None:
        body = error.body()
        ex.status = error.status
        ex.outcome = error.code
        ex.error = error.message
        headers = [_JSON, (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", ex.request_id.encode()),
                   (b"x-zai-proxy-variant", self.variant)]
        if isinstance(error, PayloadTooLarge | ServiceUnavailable) or self.lifecycle.draining:
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
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    return payload


def _request_id(given: bytes | None) -> str:
    """The client's request id when it is sane (printable, short), else a new one."""
    if given and len(given) <= 128 and given.isascii():
        text = given.decode()
        if text.isprintable() and " " not in text:
            return text
    return uuid.uuid4().hex


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip-{client[0]}" if client else "ip-unknown"
