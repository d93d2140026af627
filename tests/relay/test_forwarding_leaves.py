"""A client that leaves while its upstream attempt is pending frees its concurrency slot.

Through the whole app in-process on virtual time: the upstream holds every request until the
test releases it; a client's request task is cancelled while its attempt is at the upstream.
"""

from __future__ import annotations

import asyncio

import httpx

from tests.support.clock import VirtualTime, settle
from tests.support.inprocess import InProcessProxy

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
WORKERS = 2


class HeldUpstream:
    """Answers 200, but only once `release` is set; counts the requests that reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived += 1
        await self.release.wait()
        return httpx.Response(200, json={"id": "x", "choices": []})


async def test_clients_that_leave_during_the_upstream_attempt_free_their_slots() -> None:
    vt = VirtualTime()
    upstream = HeldUpstream()
    proxy = InProcessProxy(httpx.MockTransport(upstream), {
        "TOKEN_COUNTING_ENABLED": "false", "MAX_WORKERS": str(WORKERS),
        "RATE_LIMIT_INITIAL": "10", "RATE_LIMIT_MAX": "10"},
        clock=vt, sleep=vt.sleep, wall=vt.wall)
    async with proxy as client:
        for leaver in range(3 * WORKERS):
            task = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
            await vt.advance(1.0)  # its send slot is due; it reaches the upstream and waits
            assert upstream.arrived == leaver + 1
            assert proxy.admission.in_flight == 1
            task.cancel()  # the client leaves
            await settle()
            assert task.cancelled()
            assert proxy.admission.in_flight == 0
        upstream.release.set()
        served = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await vt.advance(1.0)
        response = await served
    assert response.status_code == 200  # admitted after more leavers than MAX_WORKERS
    assert upstream.arrived == 3 * WORKERS + 1
    assert proxy.admission.in_flight == 0
    assert proxy.admission.depth == 0
