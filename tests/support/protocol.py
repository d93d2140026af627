"""The proxy's per-connection HTTP protocol without a socket: a fake transport and a loop whose
timers run on the one fake clock (`tests.support.clock.VirtualTime`).

`Connection` builds the server's protocol class (`http_protocol.bound_protocol_class`, exactly
what uvicorn runs) over `FakeTransport`, feeds it bytes as a client would send them, and reads
back what the server wrote. Timers the protocol arms (keep-alive, read and write timeouts,
release) fire when the test advances virtual time; the ASGI app runs as a task on the real
event loop. What only a kernel socket shows (peeking at unread bytes, buffer sizes) stays in
tests/integration/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from tests.support.clock import VirtualTime, settle
from zai_proxy.server.connections import ClientConnections
from zai_proxy.server.http_protocol import bound_protocol_class


class VirtualTimer:
    """What `loop.call_later` returns: runs `callback` when virtual time reaches `when`."""

    def __init__(self, vt: VirtualTime, delay: float, callback: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self._when = vt() + delay
        self.cancelled = False
        self._task = asyncio.get_running_loop().create_task(self._run(vt, delay, callback, args))

    async def _run(self, vt: VirtualTime, delay: float, callback: Callable[..., Any],
                   args: tuple[Any, ...]) -> None:
        await vt.sleep(delay)
        if not self.cancelled:
            callback(*args)

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True
        self._task.cancel()


class VirtualLoop:
    """The loop a protocol sees: virtual `time()` and timers; tasks on the running loop."""

    def __init__(self, vt: VirtualTime) -> None:
        self.vt = vt

    def time(self) -> float:
        return self.vt()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> VirtualTimer:
        return VirtualTimer(self.vt, max(0.0, delay), callback, args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> Any:
        return asyncio.get_running_loop().call_soon(callback, *args)

    def create_task(self, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro, **kwargs)


class FakeTransport(asyncio.Transport):
    """Collects what the server writes; closing or aborting tells the protocol it is lost."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        super().__init__()
        self.protocol: asyncio.Protocol | None = None
        self.written = bytearray()
        self.closing = False
        self.aborted = False
        self.reading = True
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 8080)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def _lose(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Connection:
    """One client connection to `app` through the server's protocol, on virtual time."""

    def __init__(self, app: Any, connections: ClientConnections, vt: VirtualTime, *,
                 keep_alive: float = 30.0) -> None:
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                timeout_keep_alive=int(keep_alive))
        config.load()
        protocol_class = bound_protocol_class(connections)
        self.transport = FakeTransport()
        self.protocol = protocol_class(config=config, server_state=ServerState(), app_state={},
                                       _loop=VirtualLoop(vt))
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    async def send(self, data: bytes) -> None:
        """Bytes from the client, then let the app run."""
        self.protocol.data_received(data)
        await settle()

    def take(self) -> bytes:
        """What the server wrote since the last `take`."""
        data = bytes(self.transport.written)
        self.transport.written.clear()
        return data

    @property
    def closed(self) -> bool:
        return self.transport.closing
