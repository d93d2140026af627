"""One request's record as it crosses the proxy, and the watch for a client that leaves."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass
from typing import Any

# Generated request ids: a random per-process prefix and a counter. Unique across replicas and
# restarts without paying for a uuid4 (os.urandom) on every request.
_ID_PREFIX = uuid.uuid4().hex[:12]
_id_counter = itertools.count(1)


def request_id(given: bytes | None = None) -> str:
    """The client's request id when it is sane (printable, short), else a new one."""
    if given and len(given) <= 128 and given.isascii():
        text = given.decode()
        if text.isprintable() and " " not in text:
            return text
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


class ClientGone(Exception):
    """The client disconnected before the proxy finished answering."""


# Set in the ASGI scope by the server (http_protocol.py) when it cut a client off for
# breaking a bound, so the request is recorded as the client's fault with the right reason.
CLIENT_FAULT = "zai_proxy.client_fault"
_GONE = {"read_timeout": (408, "client_read_timeout"),
         "write_timeout": (499, "client_write_timeout"),
         "header_too_large": (431, "proxy_header_too_large")}


def client_gone(scope: Any) -> tuple[int, str]:
    """(status, outcome) to record for a request whose client went away."""
    return _GONE.get(scope.get(CLIENT_FAULT), (499, "client_disconnected"))


@dataclass(slots=True)
class Exchange:
    """What one request did; filled in along the request path, recorded once at the end."""

    request_id: str
    method: str
    started: float
    route: str = "other"
    client: str = ""
    model: str | None = None
    stream: bool = False
    status: int = 0
    outcome: str = "ok"
    error: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    upstream_status: int | None = None
    upstream_started: float | None = None
    upstream_ttfb: float | None = None
    upstream_ended: float | None = None
    attempts: int = 0
    admission_wait: float = 0.0
    paced: bool = False  # admission also waits for the quota pacer (QUOTA_PACING)
    # Set just before the last byte is sent: from then on a disconnect is not the client leaving.
    complete: bool = False
    usage: Any = None
    cost: float | None = None


class DisconnectWatcher:
    """Cancels the request's task the moment the client disconnects.

    ASGI servers report a disconnect only through `receive()`, and uvicorn's `send()` silently
    drops data for a gone client, so without this a proxy would keep an abandoned upstream
    stream (and its slot) open until the upstream finished.
    """

    def __init__(self, receive: Any, exchange: Exchange) -> None:
        self.disconnected = False
        self._exchange = exchange
        self._target = asyncio.current_task()
        self._armed = True
        self._task = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self._armed and not self._exchange.complete and self._target is not None:
            self.disconnected = True
            self._target.cancel("client disconnected")

    def stop(self) -> None:
        self._armed = False
        self._task.cancel()
