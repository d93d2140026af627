"""Client connections through the server's own protocol, in process on virtual time: retiring
the app releases its connections; a client that stops reading is cut off and its slot freed.
(The same behaviours over real sockets: tests/integration/test_retire.py, test_slow_clients.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from tests.support.protocol import Connection
from zai_proxy.server.connections import RELEASE_IDLE_SECONDS

ADMIN = "admin-key-0123456789abcdef"
HEALTH = b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n"
SSE = {"content-type": "text/event-stream"}
EVENT = b'data: {"choices":[{"delta":{"content":"aaaa"}}]}\n\n'


def ok_upstream() -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json={}))


async def test_retiring_the_app_closes_its_idle_keep_alive_connections() -> None:
    vt = VirtualTime()
    proxy = InProcessProxy(ok_upstream(), {"ADMIN_API_KEY": ADMIN})
    async with proxy as client:
        conn = Connection(proxy.app, proxy.app.state.connections, vt)
        await conn.send(HEALTH)
        assert conn.take().startswith(b"HTTP/1.1 200")
        await vt.advance(5.0)
        assert not conn.closed, "an idle keep-alive connection stays open while not retired"

        retired = await client.post("/admin/retire", headers={"x-api-key": ADMIN})
        assert retired.json() == {"retired": True}
        await vt.advance(RELEASE_IDLE_SECONDS / 2)
        # Idle for long enough already (5 s): released at once, not after the keep-alive.
        assert conn.closed, "retire must release the connections the app holds"

        fresh = Connection(proxy.app, proxy.app.state.connections, vt)
        await fresh.send(HEALTH)
        answer = fresh.take()
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower()

        await client.delete("/admin/retire", headers={"x-api-key": ADMIN})
        kept = Connection(proxy.app, proxy.app.state.connections, vt)
        await kept.send(HEALTH)
        assert b"connection: close" not in kept.take().lower()
        await vt.advance(RELEASE_IDLE_SECONDS * 3)
        assert not kept.closed, "un-retired: connections are kept again"


class Endless(httpx.AsyncByteStream):
    """A stream that keeps sending until it is closed; records that it was."""

    def __init__(self, vt: VirtualTime) -> None:
        self.vt = vt
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield EVENT
            await self.vt.sleep(0.1)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot() -> None:
    vt = VirtualTime()
    body = Endless(vt)
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, headers=SSE, stream=body))
    proxy = InProcessProxy(upstream, {"CLIENT_WRITE_TIMEOUT_SECONDS": "10",
                                      "TOKEN_COUNTING_ENABLED": "false"})
    async with proxy:
        conn = Connection(proxy.app, proxy.app.state.connections, vt)
        payload = b'{"model":"glm-4.7","stream":true,"messages":[]}'
        await conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: proxy\r\n"
                        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(payload), payload))
        await vt.advance(0.5)
        assert conn.take().startswith(b"HTTP/1.1 200")
        assert proxy.admission.in_flight == 1

        conn.protocol.pause_writing()  # the client's window is full: it stopped reading
        await vt.advance(9.0)
        assert not conn.transport.aborted, "cut off before CLIENT_WRITE_TIMEOUT_SECONDS"
        await vt.advance(2.0)
        assert conn.transport.aborted, "a client that stops reading must be cut off"
        for _ in range(50):  # the request task notices the disconnect and unwinds
            if proxy.sample("zai_proxy_requests_total", method="POST",
                            route="/v1/chat/completions", status_code="499"):
                break
            await asyncio.sleep(0)
        assert proxy.sample("zai_proxy_requests_total", method="POST",
                            route="/v1/chat/completions", status_code="499") == 1
        assert proxy.sample("zai_proxy_client_bound_exceeded_total", bound="write_timeout") == 1
        assert proxy.admission.in_flight == 0, "the upstream slot is freed"
        assert body.closed, "the upstream stream is closed"
