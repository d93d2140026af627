"""Two proxies of one account sharing quota state through a real redis-server.

Each proxy runs in process against its own scripted upstream
(tests/quota/test_quota.py's `QuotaUpstream`), so the test sees which replica polled the monitor
and which one went upstream.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import redis

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from tests.support.servers import RedisServer, free_port
from tests.support.upstreams import QUOTA_T0, QuotaUpstream, monitor_limits
from zai_proxy.zai.account import account_id

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}


@asynccontextmanager
async def replicas(url: str, key: str, wall: VirtualTime, **env: str) -> AsyncIterator[
        list[tuple[InProcessProxy, QuotaUpstream, httpx.AsyncClient]]]:
    out = []
    async with AsyncExitStack() as stack:
        for _ in range(2):
            upstream = QuotaUpstream()
            upstream.monitor = monitor_limits(used=1000, reset=QUOTA_T0 + 600)
            proxy = InProcessProxy(upstream.transport(), {
                "ZAI_API_KEY": key, "RATE_LIMIT_STORAGE_URI": url,
                "QUOTA_POLL_SECONDS": "3600", **env}, wall=wall)
            client = await stack.enter_async_context(proxy)
            out.append((proxy, upstream, client))
        yield out


async def test_one_replica_polls_and_every_replica_shares_report_tokens_and_blocks(
        redis_server: RedisServer) -> None:
    key = f"shared-key-{uuid.uuid4().hex}"  # its own account: its own keys in this Redis
    wall = VirtualTime(QUOTA_T0)
    async with replicas(redis_server.url, key, wall) as [(a, up_a, ca), (b, up_b, cb)]:
        qa, qb = a.app.state.quota, b.app.state.quota
        for _ in range(3):
            await qa.poll_once()
            await qb.poll_once()
        polled = [len(up_a.polls), len(up_b.polls)]
        assert sorted(polled) == [0, sorted(polled)[1]] and max(polled) >= 3  # one poller
        follower = qb if polled[0] else qa
        await follower.tick()
        health = (await (cb if follower is qb else ca).get("/health")).json()["quota"]
        assert health["polling"]["state"] == "ok" and health["shared"]["leader"] is False
        assert health["windows"]["five_hour"]["polled_used_ratio"] == 0.1
        # Tokens are the account's: each replica's count reaches the other.
        await ca.post("/v1/chat/completions", json=CHAT)
        await cb.post("/v1/chat/completions", json=CHAT)
        await cb.post("/v1/chat/completions", json=CHAT)
        for quota in (qa, qb, qa, qb):
            await quota.tick()
        assert qa.state.tokens == qb.state.tokens == 45
        # A 1308 on one replica stops the other at its next tick, before it tries upstream.
        up_a.spent = ("1308", QUOTA_T0 + 600)
        assert (await ca.post("/v1/chat/completions", json=CHAT)).status_code == 429
        await qa.tick()
        await qb.tick()
        chats = up_b.chats
        local = await cb.post("/v1/chat/completions", json=CHAT)
        assert local.status_code == 429 and local.headers["x-zai-error-class"] == "quota"
        assert up_b.chats == chats
        assert qb.health()["blocked"]["source"] == "shared"
    account = account_id(key, "https://api.z.ai/api/paas/v4")
    # The Redis server is shared with other tests (other accounts): look at this account's keys.
    every = {k.decode() for k in redis.Redis.from_url(redis_server.url).keys(f"*{account}*")}
    prefix = f"zai-proxy:acct:{account}:quota:"
    # Everything lives under the account (the limiter's gate too), the quota under its own part.
    assert every and all(k.startswith(f"zai-proxy:acct:{account}:") for k in every)
    keys = {k for k in every if ":quota:" in k}
    assert all(k.startswith(prefix) for k in keys)
    assert {prefix + "leader", prefix + "report", prefix + "tokens",
            prefix + "block:five_hour"} <= keys


async def test_without_redis_each_replica_polls_and_health_says_degraded() -> None:
    wall = VirtualTime(QUOTA_T0)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with replicas(url, f"shared-key-{uuid.uuid4().hex}", wall) as pair:
        for proxy, _, client in pair:
            await proxy.app.state.quota.poll_once()
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        for _, upstream, client in pair:
            assert upstream.polls  # each polled on its own
            health = (await client.get("/health")).json()["quota"]
            assert health["shared"]["degraded"] is True and health["polling"]["state"] == "ok"
