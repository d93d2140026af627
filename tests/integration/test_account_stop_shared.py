"""An account stop shared by two proxies of one account through a real redis-server: the
replica that met it stops the other, which refuses without going upstream; a probe at either
lifts it for both.

Both proxies run in process on one virtual wall clock, each with its own scripted upstream, so
the test sees which one went upstream; their ticks are called by the test.
"""

from __future__ import annotations

import uuid

import httpx

from tests.support.clock import VirtualTime
from tests.support.forwarding import CHAT, ok
from tests.support.inprocess import InProcessProxy
from tests.support.servers import RedisServer


class Upstream:
    """OK, or a 1313 while `stopped`; counts what it was asked."""

    def __init__(self) -> None:
        self.stopped = False
        self.seen = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.stopped:
            return httpx.Response(429, json={"error": {"code": "1313", "message": "fair use"}})
        return ok(request)


async def test_a_stop_one_proxy_meets_is_refused_by_the_other_and_one_probe_lifts_both(
        redis_server: RedisServer) -> None:
    key = f"stop-key-{uuid.uuid4().hex}"  # its own account: its own keys in this Redis
    wall = VirtualTime()
    env = {"ZAI_API_KEY": key, "RATE_LIMIT_STORAGE_URI": redis_server.url,
           "ACCOUNT_STOP_PROBE_SECONDS": "30"}
    up_a, up_b = Upstream(), Upstream()
    a = InProcessProxy(httpx.MockTransport(up_a), env, wall=wall.wall)
    b = InProcessProxy(httpx.MockTransport(up_b), env, wall=wall.wall)
    async with a as ca, b as cb:
        qa, qb = a.app.state.quota, b.app.state.quota
        up_a.stopped = up_b.stopped = True
        assert (await ca.post("/v1/chat/completions", json=CHAT)).status_code == 429
        assert up_a.seen == 1
        await qa.tick()
        await qb.tick()
        refused = await cb.post("/v1/chat/completions", json=CHAT)
        assert refused.json()["error"]["code"] == "proxy_account_stopped"
        assert refused.headers["x-zai-error-code"] == "1313"
        assert up_b.seen == 0, "the second proxy never asked the upstream"
        assert (await cb.get("/health")).json()["account_stop"]["source"] == "shared"

        up_a.stopped = up_b.stopped = False
        wall.jump(31)
        answers = [await c.post("/v1/chat/completions", json=CHAT) for c in (cb, ca)]
        assert [r.status_code for r in answers] == [200, 429], "one probe for both"
        assert (up_a.seen, up_b.seen) == (1, 1)
        await qb.tick()
        await qa.tick()
        assert (await ca.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await ca.get("/health")).json()["account"] == "ok"
