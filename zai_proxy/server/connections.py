"""The set of open client connections, and releasing them (retire, drain).

`ClientConnections` is created by `create_app` and handed to the server, which builds its
HTTP protocol class for it (`http_protocol.bound_protocol_class`); every connection registers
here while open.
Releasing (on `POST /admin/retire`, and when a drain starts) asks every client to leave without
failing any request:

- a connection with a request in progress whose response has not started answers with
  `Connection: close` and closes after its response;
- a response already started (a stream in flight) runs to its end as keep-alive: its headers
  told the client it may send its next request at once, so a close right after it would reset
  that request. The connection is then released like an idle one: a next request arriving
  within the idle window is answered with `Connection: close`, and only then is it closed;
- an idle keep-alive connection is closed once it has been idle for `RELEASE_IDLE_SECONDS`
  (about a second), never earlier: a client that picks a pooled connection at the instant
  the server closes it sees its request fail, and the SDKs retry such a request on a fresh
  connection; keeping the window to connections idle that long keeps such races rare;
- just before closing, the socket is peeked: bytes already there mean a request is arriving,
  and that connection is answered (with `Connection: close`) instead of closed.

It also holds the client-side bounds every connection enforces (`ClientBounds`) and records
the requests the server refuses itself (431, 408, 503, 400) like every other request: one
metric update and one log line each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from zai_proxy.observe.metrics import Metrics
from zai_proxy.observe.recorder import Recorder
from zai_proxy.wire.exchange import Exchange

log = logging.getLogger("zai_proxy")

# How long a keep-alive connection must have been idle before releasing closes it.
RELEASE_IDLE_SECONDS = 1.0


class Connection(Protocol):
    """What the registry asks of an open connection (the server's protocol implements it)."""

    def release(self) -> None:
        """Close after the response in progress, or now when idle long enough."""

    def keep(self) -> None:
        """Stop releasing: keep-alive again."""


@dataclass(frozen=True)
class ClientBounds:
    """What one client may take: header bytes, time to send a request, time to read a reply."""

    max_header_bytes: int = 64 * 1024
    read_timeout: float = 30.0
    write_timeout: float = 60.0
    send_buffer: int = 256 * 1024
    max_connections: int = 4096


class ClientConnections:
    """Open client connections; `release()` / `keep()` flip whether clients are asked to go."""

    def __init__(self, metrics: Metrics, recorder: Recorder | None = None,
                 bounds: ClientBounds | None = None) -> None:
        self.metrics = metrics
        self.recorder = recorder
        self.bounds = bounds or ClientBounds()
        self.live: set[Connection] = set()
        self._retired = False
        self._draining = False
        metrics.max_connections.set(self.bounds.max_connections)
        self._bound_children = {
            name: metrics.client_bounds.labels(name)
            for name in ("max_header_bytes", "read_timeout", "write_timeout", "max_connections")}

    @property
    def releasing(self) -> bool:
        """True while every response should close its connection (retired or draining)."""
        return self._retired or self._draining

    def exceeded(self, bound: str) -> None:
        """A client hit `bound` (a label of zai_proxy_client_bound_exceeded_total)."""
        self._bound_children[bound].inc()

    def refused(self, method: str, status: int, outcome: str, message: str,
                request_bytes: int, rid: str) -> None:
        """Record a request the server answered itself, before the app saw it."""
        if self.recorder is None:
            return
        ex = Exchange(request_id=rid, method=method,
                      started=time.perf_counter(), status=status, outcome=outcome,
                      error=message, request_bytes=request_bytes, complete=True)
        self.recorder.finished(ex)

    def over_capacity(self) -> bool:
        """True when a connection opened now would pass MAX_CONNECTIONS."""
        return len(self.live) >= self.bounds.max_connections

    def opened(self, conn: Connection) -> None:
        self.live.add(conn)
        self.metrics.client_connections.inc()
        if self.releasing:
            conn.release()

    def closed(self, conn: Connection) -> None:
        if conn in self.live:
            self.live.discard(conn)
            self.metrics.client_connections.dec()

    def retire(self, retired: bool) -> None:
        """Listener of `Retirement`: release every connection, or keep them again."""
        self._retired = retired
        self._apply()

    def drain(self) -> None:
        """A drain started: release every connection, for good."""
        self._draining = True
        self._apply()

    def _apply(self) -> None:
        releasing = self.releasing
        for conn in list(self.live):
            if releasing:
                conn.release()
            else:
                conn.keep()
        log.info("client connections %s", "released" if releasing else "kept",
                 extra={"fields": {"connections": len(self.live)}})
