"""One Redis link per proxy process and one leader lease per account, on a real redis-server.

The proxies run in process with their background loops held (a `sleep` that never returns), so
the test drives every Redis user itself, one after the other: the connections then seen by
`CLIENT LIST` are the pools' idle connections, one per pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.support.inprocess import InProcessProxy
from tests.support.servers import RedisServer, start_redis
from zai_proxy.core.redis_link import MAX_CONNECTIONS, RedisLink
from zai_proxy.limiter.shared import namespace

pytestmark = pytest.mark.needs("redis-server")

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
OBSERVER = "test-observer"


def upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "x", "object": "chat.completion", "model": "glm-4.7",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


async def held(seconds: float) -> None:
    """The loops' sleep: never returns, so only the test touches Redis."""
    await asyncio.Event().wait()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own: no other test's connections in `CLIENT LIST`."""
    own = start_redis()
    try:
        yield own
    finally:
        own.stop()


def proxy(url: str, **env: str) -> InProcessProxy:
    return InProcessProxy(httpx.MockTransport(upstream), {
        "RATE_LIMIT_STORAGE_URI": url, "CLIENT_RATE_LIMITS": "100/minute; tokens:10000/minute",
        **env}, sleep=held)


def proxy_connections(observer: redis.Redis) -> list[dict[str, Any]]:
    return [c for c in observer.client_list() if c.get("name") != OBSERVER]


async def test_a_proxy_opens_one_connection_pool_for_every_redis_user(
        server: RedisServer) -> None:
    observer = redis.Redis.from_url(server.url, client_name=OBSERVER)
    app = proxy(server.url)
    async with app as client:
        limiter, quota = app.app.state.limiter, app.app.state.quota
        # Every user once, in turn: the client quotas and the shared gate (a request), the
        # limiter's coordinator, the quota share's tick and its polling lock.
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        await limiter.coordinator.sync()
        await quota.tick()
        await quota.sharing.lead(3.0)
        assert observer.exists(f"{namespace(app.settings.account)}:leader")
        assert any(k.startswith(b"LIMITS") for k in observer.keys()), "client quotas counted"
        connections = proxy_connections(observer)
        assert len(connections) == 1, connections
        health = (await client.get("/health")).json()
        assert health["client_rate_limits"]["degraded"] is False
    assert proxy_connections(observer) == [], "the link is closed at shutdown"
    observer.close()


async def test_the_limiter_and_the_quota_lead_under_one_lease(server: RedisServer) -> None:
    """Whoever holds the account's lease leads the limiter and polls the quota; when it moves,
    both move, and a polling lock held by another (an older version's replica) is respected."""
    observer = redis.Redis.from_url(server.url, client_name=OBSERVER)
    first, second = proxy(server.url), proxy(server.url)
    async with first, second:
        lease_key = f"{namespace(first.settings.account)}:leader"
        quota_key = f"zai-proxy:acct:{first.settings.account}:quota:leader"

        async def step() -> list[tuple[bool, bool]]:
            roles = []
            for p in (first, second):
                coordinator, share = p.app.state.limiter.coordinator, p.app.state.quota.sharing
                await coordinator.sync()
                roles.append((coordinator.leader, await share.lead(3.0)))
            return roles

        for p in (first, second):
            assert p.app.state.limiter.coordinator.lease is p.app.state.quota.sharing.lease
        assert await step() == [(True, True), (False, False)]
        holder = first.app.state.limiter.coordinator.lease.id
        assert observer.get(lease_key) == observer.get(quota_key) == holder.encode()

        observer.delete(lease_key)  # the lease moves (the first replica stalled past it)
        observer.set(lease_key, second.app.state.limiter.coordinator.lease.id, px=3000)
        assert await step() == [(False, False), (True, True)]
        assert observer.get(quota_key) == second.app.state.quota.sharing.lease.id.encode()

        # A replica of the previous version polls while it holds the polling lock: the lease
        # holder does not poll beside it, and takes over once that lock is gone.
        observer.set(quota_key, "old-version-replica", px=60_000)
        assert await step() == [(False, False), (True, False)]
        observer.delete(quota_key)
        assert await step() == [(False, False), (True, True)]
    observer.close()


async def test_a_burst_of_operations_waits_for_connections_instead_of_degrading(
        redis_server: RedisServer) -> None:
    """400 operations at once (a burst of requests on an idle proxy, each taking a send slot):
    they share a bounded pool and all answer; none fails for want of a connection."""
    link = RedisLink.connect(redis_server.url)

    async def one(i: int) -> Any:
        return await link.call(lambda: link.redis.set(f"burst:{i}", "1"))

    answers = await asyncio.gather(*(one(i) for i in range(400)))
    assert all(answers) and not link.degraded, link.reason
    clients = redis.Redis.from_url(redis_server.url).client_list()
    assert len(clients) <= MAX_CONNECTIONS + 1, "bounded: this link's pool and the checker"
    await link.aclose()
