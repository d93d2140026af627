"""The set of open client connections, and releasing them (retire, drain).

`ClientConnections` is created by `create_app` and handed to the server, which builds its
HTTP protocol class from it (`protocol_class()`); every connection registers here while open.
Releasing (on `POST /admin/retire`, and when a drain starts) asks every client to leave without
failing any request:

- a connection with a request in progress (being read or answered) answers with
  `Connection: close` and closes after its response: streams in flight run to their end;
- an idle keep-alive connection is closed once it has been idle for `RELEASE_IDLE_SECONDS`
  (about a second), never earlier: a client that picks a pooled connection at the instant
  the server closes it sees its request fail, and the SDKs retry such a request on a fresh
  connection; keeping the window to connections idle that long keeps such races rare;
- just before closing, the socket is peeked: bytes already there mean a request is arriving,
  and that connection is answered (with `Connection: close`) instead of closed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from zai_proxy.metrics import Metrics

if TYPE_CHECKING:
    from zai_proxy.http_protocol import ClientProtocol

log = logging.getLogger("zai_proxy")

# How long a keep-alive connection must have been idle before releasing closes it.
RELEASE_IDLE_SECONDS = 1.0


class ClientConnections:
    """Open client connections; `release()` / `keep()` flip whether clients are asked to go."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.live: set[ClientProtocol] = set()
        self._retired = False
        self._draining = False

    @property
    def releasing(self) -> bool:
        """True while every response should close its connection (retired or draining)."""
        return self._retired or self._draining

    def protocol_class(self) -> type[Any]:
        """The uvicorn HTTP protocol class bound to this registry (for `uvicorn.Config(http=)`)."""
        from zai_proxy.http_protocol import ClientProtocol

        return type("BoundClientProtocol", (ClientProtocol,), {"registry": self})

    def opened(self, conn: ClientProtocol) -> None:
        self.live.add(conn)
        self.metrics.client_connections.inc()
        if self.releasing:
            conn.release()

    def closed(self, conn: ClientProtocol) -> None:
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
