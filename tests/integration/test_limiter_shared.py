"""The limiter with shared state in a real Redis: the whole limit shared, the learned state
the account's (not the variant's), quota pacing account-wide.

In-process app (real clock: Redis has its own) against the session's redis-server.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.inprocess import InProcessProxy
from tests.support.servers import RedisServer

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "choices": []})


class App(InProcessProxy):
    def __init__(self, **env: str) -> None:
        super().__init__(httpx.MockTransport(ok), {
            "TOKEN_COUNTING_ENABLED": "false", "RATE_LIMIT_INITIAL": "100",
            "RATE_LIMIT_MAX": "100", "RATE_LIMIT_WINDOW": "10", **env})


@pytest.mark.needs("redis-server")
async def test_replicas_with_redis_share_the_whole_limit(redis_server: RedisServer) -> None:
    app = App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_REPLICAS="4", RATE_LIMIT_INITIAL="20",
              RATE_LIMIT_MAX="40", RATE_LIMIT_STORAGE_URI=redis_server.url,
              DEPLOYMENT_VARIANT="limiter-test")
    async with app as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        health = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert health["current_rate"] == 20.0  # Redis holds the global rate: no division
    shared = health["shared_state"]
    assert (shared["degraded"], shared["reason"], shared["replicas"]) == (False, None, 4)
    assert shared["namespace"] == f"zai-proxy:acct:{app.settings.account}:limiter"
    assert 'zai_proxy_shared_state_degraded{deployment_variant="limiter-test"} 0.0' in metrics


@pytest.mark.needs("redis-server")
async def test_with_redis_the_state_belongs_to_the_account_not_the_variant(
        redis_server: RedisServer) -> None:
    env = {"RATE_LIMIT_STATE_FILE": "", "RATE_LIMIT_STORAGE_URI": redis_server.url,
           "RATE_LIMIT_WINDOW": "1"}
    v1 = App(DEPLOYMENT_VARIANT="v1", **env)
    async with v1 as client:
        v1.limiter.rate.restore(14.0, 13.5)
        assert v1.limiter.coordinator is not None
        await v1.limiter.coordinator.publish()
    # A v2 pod starting later, same key and upstream: it starts from the account's state.
    v2 = App(DEPLOYMENT_VARIANT="v2", **env)
    async with v2 as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["restored_from"] == "redis"
    assert (health["ceiling"], health["current_rate"]) == (14.0, 13.5)
    # Another account (another key) on the same Redis sees nothing of it.
    other = App(DEPLOYMENT_VARIANT="v1", ZAI_API_KEY="another-upstream-key-456", **env)
    async with other as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["restored_from"] is None and health["ceiling"] is None


@pytest.mark.needs("redis-server")
async def test_quota_pacing_is_account_wide_through_redis(redis_server: RedisServer) -> None:
    from zai_proxy.limiter.shared import RedisGate

    env = {"RATE_LIMIT_STATE_FILE": "", "RATE_LIMIT_STORAGE_URI": redis_server.url,
           "RATE_LIMIT_REPLICAS": "4"}
    shared, alone = App(**env), App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_REPLICAS="4")
    async with shared:
        shared.limiter.set_quota_pacing(4.0)
        # one Redis pacer at the account's rate, not a quarter of it per replica
        assert shared.limiter.admission.pacing_rate == 4.0
        assert isinstance(shared.limiter.admission.pacer, RedisGate)
    async with alone:
        alone.limiter.set_quota_pacing(4.0)
        assert alone.limiter.admission.pacing_rate == 1.0  # without Redis: its share
