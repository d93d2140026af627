"""uvicorn's httptools protocol, with what a proxy facing many clients needs per connection.

One instance per client connection. Added to uvicorn's own behaviour:

- it knows since when it has been idle (no request being read or answered), so releasing
  (`ClientConnections`) closes only connections idle for about a second, and answers the
  next response on a busy one with `Connection: close`;
- before closing an idle connection (release or keep-alive timeout) it peeks at the socket:
  a request already on its way is answered rather than cut.

Everything here works with timers per connection and flow-control callbacks, never per chunk:
the request path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from zai_proxy.client_connections import RELEASE_IDLE_SECONDS, ClientConnections


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


class ClientProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that tracks idleness and can be released (see module docstring)."""

    registry: ClientConnections  # set on the subclass `ClientConnections.protocol_class` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # loop.time() since when no request is being read or answered; None while busy.
        self.idle_since: float | None = None

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = self.loop.time()
        # uvicorn arms no timer on a fresh connection: one that never sends would stay forever.
        self._arm_idle_timer(self.timeout_keep_alive)
        self.registry.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        super().data_received(data)

    # -- requests

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.registry.releasing and self.cycle is not None:
            self.cycle.keep_alive = False  # uvicorn then sends `connection: close` and closes

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle now (not closing, none pipelined)
            self.idle_since = self.loop.time()
            if self.registry.releasing:
                self.release()

    # -- releasing

    def release(self) -> None:
        """Ask this client to go: close when idle long enough, or after the current response."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.idle_since is None:
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False
            return  # a request whose headers are still arriving gets keep_alive off when parsed
        idle_for = self.loop.time() - self.idle_since
        self._arm_idle_timer(max(0.0, RELEASE_IDLE_SECONDS - idle_for))

    def keep(self) -> None:
        """Undo `release` for an idle connection: back to the ordinary keep-alive timeout."""
        if self.transport is None or self.transport.is_closing() or self.idle_since is None:
            return
        idle_for = self.loop.time() - self.idle_since
        self._arm_idle_timer(max(0.0, self.timeout_keep_alive - idle_for))

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
