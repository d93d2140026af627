"""uvicorn's httptools protocol, with what a proxy facing many clients needs per connection.

One instance per client connection. Added to uvicorn's own behaviour:

- **Release** (retire, drain, and uvicorn's shutdown): it knows since when it has been idle,
  so releasing (`ClientConnections`) closes only connections idle for about a second, and
  answers the next response on a busy one with `Connection: close`. A response whose headers
  already went out (a stream) is never followed by a close the client was not told of: it
  ends as keep-alive, and the connection is then released like an idle one (its next request
  is answered with `Connection: close`). Before closing an idle connection (release or idle
  timeout) it peeks at the socket: a request already on its way is answered rather than cut.
- **Idle timeout** (`CLIENT_IDLE_TIMEOUT_SECONDS`, uvicorn's keep-alive timeout): also armed on
  a fresh connection, which uvicorn leaves open forever until it sends something.
- **No upgrade**: `Upgrade` (WebSocket, h2c) is ignored, as RFC 9110 7.8 allows: the request
  is served as plain HTTP and its connection closed after it (the parser cannot go on past an
  upgrade). An upgrade request with a body is refused (400 `proxy_upgrade_unsupported`): the
  parser hands its body over as upgraded bytes, so it could only be served without its body.
  uvicorn would otherwise hand the socket to a protocol of its own that the registry never
  hears closing, leaking a MAX_CONNECTIONS slot per attempt.
- **Trailers** of a chunked request are never forwarded (they are not headers), and the bytes
  of chunk framing and trailers that carry no body count against `MAX_HEADER_BYTES` (431):
  httptools buffers a trailer line without limit.
- **Header cap** (`MAX_HEADER_BYTES`): request line + headers larger than the cap are answered
  431 without buffering more (httptools itself has no limit).
- **Read timeout** (`CLIENT_READ_TIMEOUT_SECONDS`): from a request's first byte, its headers
  and body must arrive within the timeout, however they are trickled; else 408 and close (the
  SDKs retry a 408). A fresh connection that sends nothing is closed after the keep-alive
  timeout.
- **Write timeout** (`CLIENT_WRITE_TIMEOUT_SECONDS`): when the transport's buffer stays above
  its high-water mark (the client stopped reading) for that long, the connection is aborted:
  the request's task sees the disconnect, its upstream response and concurrency slot are
  released, and it is recorded as `client_write_timeout` (499, the client's fault).
- **Send buffer** (`CLIENT_SEND_BUFFER_BYTES`): the kernel's send buffer of each client socket
  is bounded (autotuning would let a stalled reader pin megabytes of kernel memory, and hide
  the stall from the write timeout until they are full).
- **Connection cap** (`MAX_CONNECTIONS`): requests on connections beyond it get 503 with
  `Retry-After` and `Connection: close`; probes, /metrics and /admin are still served.
- Requests httptools cannot parse get an OpenAI-shaped 400 instead of uvicorn's text/plain.

Everything here uses one timer per request or per stall and the transport's flow-control
callbacks, and a few integer operations per read (the trailer bound), never work per byte or
per response chunk: the request path pays next to nothing for it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from zai_proxy.core.errors import error_body
from zai_proxy.server.connections import RELEASE_IDLE_SECONDS, ClientConnections
from zai_proxy.server.operational import SERVED_OVER_CAPACITY
from zai_proxy.wire.exchange import CLIENT_FAULT, request_id

# Where the connection is in its current request (uvicorn keeps no such state itself).
IDLE, HEADERS, BODY, ANSWERING = range(4)


def data_waiting(transport: asyncio.BaseTransport) -> bool:
    """True when the peer has sent bytes the event loop has not delivered yet."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
    except (OSError, ValueError):
        return False
    try:
        return bool(dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # BlockingIOError: nothing there; others: the connection is gone anyway
        return False
    finally:
        dup.close()


def _path(url: bytes) -> str:
    try:
        return (httptools.parse_url(url).path or b"").decode("latin-1")
    except httptools.HttpParserInvalidURLError:
        return ""


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; `send_400_response` answers it."""


class ClientProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with release and client bounds (see module docstring)."""

    registry: ClientConnections  # set on the subclass `bound_protocol_class` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bounds = self.registry.bounds
        self.max_header_bytes = bounds.max_header_bytes
        self.read_timeout = bounds.read_timeout
        self.write_timeout = bounds.write_timeout
        # loop.time() since when no request is being read or answered; None while busy.
        self.idle_since: float | None = None
        self.phase = IDLE
        self.pending = 0  # bytes received of the current request's head (an upper bound)
        self.head_start = b""  # its first bytes: the method of a request too broken to parse
        self.over_capacity = False
        self.shutting_down = False  # uvicorn's shutdown: released, and never kept again
        self.body_fed = 0  # body bytes the parser delivered from the current data_received
        self.begun = 0  # requests begun in the current data_received
        self.framing = 0  # bytes of the body phase since the last body byte (chunk heads, trailers)
        self.read_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        # (status, code, message, extra headers) of a request the server answers itself.
        self.refusal: tuple[int, str, str, list[bytes]] | None = None

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        send_buffer = self.registry.bounds.send_buffer
        sock = transport.get_extra_info("socket")
        if send_buffer and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            except OSError:  # not a TCP socket (tests' fakes): nothing to bound
                pass
        self.idle_since = self.loop.time()
        if self.registry.over_capacity():
            self.over_capacity = True
            self.registry.exceeded("max_connections")
        # uvicorn arms no timer on a fresh connection: one that never sends would stay forever.
        self._arm_idle_timer(self.timeout_keep_alive)
        self.registry.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.closed(self)
        self._cancel_read_timer()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or cut off: nothing more is read
        self.idle_since = None
        head_before = self.pending
        if self.phase <= HEADERS:
            if self.read_timer is None:
                self.read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)
            if not self.pending:
                self.head_start = data[:8]
            self.pending += len(data)
        in_body = self.phase == BODY
        self.body_fed = self.begun = 0
        super().data_received(data)
        if self.refusal is not None:
            return
        if self.phase == HEADERS and self.pending > self.max_header_bytes:
            self._refuse_head_too_large()
        elif self.phase == BODY and (in_body or self.begun <= 1):
            # What this read held besides body bytes: chunk heads, extensions, trailers (and,
            # in the read where the head ended, the rest of the head). A read with body in it
            # restarts the count, so only bytes carrying no body add up.
            overhead = len(data) - self.body_fed
            if not in_body:
                overhead -= max(0, self._head_size() - head_before)
            self.framing = overhead if self.body_fed else self.framing + overhead
            if self.framing > self.max_header_bytes:
                self._refuse_trailers_too_large()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = HEADERS
        self.begun += 1

    def _head_size(self) -> int:
        """The request line and headers parsed, in their shortest form (a lower bound)."""
        method = self.scope.get("method", "")
        return (len(method) + len(self.url) + 13
                + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.phase == HEADERS:
            super().on_header(name, value)
        # else a trailer of a chunked body: dropped (RFC 9110 6.5.1 lets a recipient discard
        # them); appended to the request's headers, it would reach the upstream.

    def on_headers_complete(self) -> None:
        if self.pending > self.max_header_bytes:  # only then is the exact size worth computing
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.max_header_bytes:
                self.registry.exceeded("max_header_bytes")
                self._stop(431, "proxy_header_too_large",
                           f"request headers of {size} bytes exceed the "
                           f"{self.max_header_bytes}-byte limit (MAX_HEADER_BYTES)")
        if self.parser.should_upgrade() and any(
                name in (b"content-length", b"transfer-encoding") and value.strip() != b"0"
                for name, value in self.headers):
            self._stop(400, "proxy_upgrade_unsupported",
                       "the proxy serves no protocol upgrade, and the body of an upgrade request "
                       "would be lost: send the request without `Upgrade`")
        if self.over_capacity and not _path(self.url).startswith(SERVED_OVER_CAPACITY):
            self._stop(503, "proxy_too_many_connections",
                       "the proxy serves no more connections now; retry shortly",
                       [b"retry-after: 1\r\n"])
        super().on_headers_complete()
        self.phase = BODY
        self.pending = 0
        self.framing = 0
        closing = self.registry.releasing or self.over_capacity or self.shutting_down
        # After an upgrade request the parser reads nothing more: this is the last request.
        if (closing or self.parser.should_upgrade()) and self.cycle is not None:
            self.cycle.keep_alive = False  # uvicorn then sends `connection: close` and closes

    def _should_upgrade(self) -> bool:
        return False  # never hand the socket to uvicorn's WebSocket protocol (module docstring)

    def _unsupported_upgrade_warning(self) -> None:
        pass  # uvicorn's two warnings per upgrade request: a log flood for any client to cause

    def on_body(self, body: bytes) -> None:
        self.body_fed += len(body)
        if self.refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refusal is None:
            super().on_message_complete()
            self.phase = ANSWERING
            self._cancel_read_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle now (not closing, none pipelined)
            self.phase = IDLE
            self.idle_since = self.loop.time()
            if self.registry.releasing or self.shutting_down:
                self.release()

    # -- answers the server gives itself

    def _stop(self, status: int, code: str, message: str,
              extra: list[bytes] | None = None) -> None:
        self.refusal = (status, code, message, extra or [])
        raise _Refused(message)

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when parsing fails: a refusal of ours, or a malformed request."""
        if self.refusal is None:
            self.refusal = (400, "proxy_bad_http_request", f"malformed HTTP request: {msg}", [])
        self._send_refusal()

    def _refuse_head_too_large(self) -> None:
        self.refusal = (431, "proxy_header_too_large",
                        f"request headers exceed the {self.max_header_bytes}-byte limit "
                        "(MAX_HEADER_BYTES)", [])
        self.registry.exceeded("max_header_bytes")
        self._send_refusal()

    def _refuse_trailers_too_large(self) -> None:
        """Chunk framing or trailers with no body in them passed MAX_HEADER_BYTES: the app is
        waiting for the body, so the answer is given for it (`_cut_off`)."""
        self.registry.exceeded("max_header_bytes")
        self._cut_off(431, "proxy_header_too_large", "header_too_large",
                      f"request trailers and chunk framing exceed the {self.max_header_bytes}"
                      "-byte limit (MAX_HEADER_BYTES)")

    def _cut_off(self, status: int, code: str, fault: str, message: str) -> None:
        """Answer `status` for a request whose app task is waiting for its body, and close.

        The app sees the client gone and records the request once, as `fault` says
        (exchange.client_gone); the server records nothing itself.
        """
        cycle = self.cycle
        self.refusal = (status, code, message, [])
        self._cancel_read_timer()
        if cycle is not None and not cycle.response_complete:
            cycle.scope[CLIENT_FAULT] = fault  # type: ignore[literal-required]
            if not cycle.response_started:
                body = error_body(message, "invalid_request_error", code)
                self.transport.write(b"".join([
                    STATUS_LINE[status], b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body), b"connection: close\r\n",
                    self._variant_header(), b"\r\n", body]))
                cycle.response_started = True
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _send_refusal(self) -> None:
        assert self.refusal is not None
        status, code, message, extra = self.refusal
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        body = error_body(message, type_, code)
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n"
                 for name, value in self.server_state.default_headers]
        rid = request_id()
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body), b"connection: close\r\n",
                 b"x-request-id: " + rid.encode() + b"\r\n", self._variant_header(), *extra,
                 b"\r\n"]
        method = self._method()
        # A HEAD answer has the headers a GET's would have, and no body (RFC 9110 9.3.2).
        self.transport.write(b"".join(head) + (b"" if method == "HEAD" else body))
        self.transport.close()
        self._cancel_read_timer()
        self.registry.refused(method, status, code, message, 0, rid)

    def _method(self) -> str:
        """The refused request's method, once its request line parsed; else "other"."""
        if self.scope and "method" in self.scope:
            return str(self.scope["method"])
        if getattr(self, "url", b""):  # on_url ran, so the method before it parsed
            return self.parser.get_method().decode("ascii", "replace")
        return "HEAD" if self.head_start.startswith(b"HEAD ") else "other"

    def _variant_header(self) -> bytes:
        """Answers the server gives itself carry the variant, like every other answer."""
        return b"x-zai-proxy-variant: " + self.registry.metrics.variant.encode() + b"\r\n"

    # -- timers

    def _cancel_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _read_timed_out(self) -> None:
        """The request did not arrive in full within CLIENT_READ_TIMEOUT_SECONDS."""
        self.read_timer = None
        if self.transport.is_closing() or self.phase not in (IDLE, HEADERS, BODY):
            return
        self.registry.exceeded("read_timeout")
        message = (f"the request did not arrive within {self.read_timeout:g} s "
                   "(CLIENT_READ_TIMEOUT_SECONDS)")
        cycle = self.cycle
        if self.phase == BODY and cycle is not None and not cycle.response_complete:
            # The app is waiting for the body: answer for it, and let it see the client gone.
            self._cut_off(408, "proxy_request_timeout", "read_timeout", message)
            return
        self.refusal = (408, "proxy_request_timeout", message, [])
        self._send_refusal()

    def pause_writing(self) -> None:
        """The client stopped reading: start the write (slow reader) timer."""
        super().pause_writing()
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(self.write_timeout, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _write_timed_out(self) -> None:
        """The client left the response unread for CLIENT_WRITE_TIMEOUT_SECONDS: cut it off."""
        self.write_timer = None
        self.registry.exceeded("write_timeout")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.scope[CLIENT_FAULT] = "write_timeout"  # type: ignore[literal-required]
        self.transport.abort()  # close() would wait for a flush that never comes

    # -- releasing

    def release(self) -> None:
        """Ask this client to go: close when idle long enough, or after the current response.

        A response not started yet carries `Connection: close`, and the connection closes
        after it. One already started went out without it: closing after it would reset the
        client's next request on this connection (it has every right to send one at once), so
        it ends as keep-alive and `on_response_complete` releases the connection as idle; the
        next request, if any comes within the idle window, is answered with `Connection: close`.
        """
        if self.transport is None or self.transport.is_closing():
            return
        if self.idle_since is None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.response_started:
                cycle.keep_alive = False
            return  # a request whose headers are still arriving gets keep_alive off when parsed
        idle_for = self.loop.time() - self.idle_since
        self._arm_idle_timer(max(0.0, RELEASE_IDLE_SECONDS - idle_for))

    def keep(self) -> None:
        """Undo `release` for an idle connection: back to the ordinary keep-alive timeout."""
        if (self.transport is None or self.transport.is_closing() or self.idle_since is None
                or self.shutting_down):
            return
        idle_for = self.loop.time() - self.idle_since
        self._arm_idle_timer(max(0.0, self.timeout_keep_alive - idle_for))

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (listener closed): release for good, never cut.

        uvicorn's own closes an idle connection at once and, like `keep_alive = False`, cuts
        a started response's connection right after it: both race the client's next request.
        """
        self.shutting_down = True
        self.release()

    def _arm_idle_timer(self, delay: float) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(delay, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self) -> None:
        """Close an idle connection, unless a request has just arrived on it."""
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or self.idle_since is None:
            return
        if data_waiting(self.transport):
            return  # data_received follows; the response closes the connection if releasing
        if self.registry.releasing:
            self.registry.metrics.connections_released.inc()
        self.transport.close()


def bound_protocol_class(registry: ClientConnections) -> type[ClientProtocol]:
    """The protocol class bound to `registry` (for `uvicorn.Config(http=)`)."""
    return type("BoundClientProtocol", (ClientProtocol,), {"registry": registry})
