"""The whole app in process with RATE_LIMIT_STORAGE_URI=redis://... answered by a fake Redis
(tests/support/redis.py) that lies (`OK` to everything) or is down: startup, requests, ticks
and /health work, degraded, on local limits, with no exception anywhere. The same against real
sockets: tests/integration/test_redis_faults.py."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.inprocess import InProcessProxy
from tests.support.redis import FakeRedis, Mode
from zai_proxy.limiter.shared import namespace

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}


def upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "x", "object": "chat.completion", "model": "glm-4.7",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


class Fakes:
    """Stands in for `redis.asyncio.Redis.from_url`: every client the app makes talks to the
    one FakeRedis `server` (`clients` counts them)."""

    def __init__(self) -> None:
        self.server = FakeRedis(clock=time.monotonic)
        self.clients = 0

    def __call__(self, url: str, **kwargs: object) -> FakeRedis:
        self.clients += 1
        return self.server


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    factory = Fakes()
    monkeypatch.setattr(aioredis.Redis, "from_url", factory)
    yield factory


@pytest.mark.parametrize("mode", ["lie", "down"])
async def test_startup_requests_and_ticks_work_on_a_redis_that_lies_or_is_down(
        fakes: Fakes, mode: Mode, caplog: pytest.LogCaptureFixture) -> None:
    fakes.server.mode = mode
    proxy = InProcessProxy(httpx.MockTransport(upstream), {
        "RATE_LIMIT_STORAGE_URI": "redis://10.0.0.1:6379/0", "RATE_LIMIT_REPLICAS": "2"})
    with caplog.at_level(logging.INFO):
        async with proxy as client:
            assert fakes.clients == 1  # one link for the limiter and the quota
            for _ in range(3):
                assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            limiter, quota = proxy.app.state.limiter, proxy.app.state.quota
            assert quota.sharing.link is limiter.shared.link
            limiter.shared.link._retry_at = 0.0  # past the back-off: the ticks try Redis again
            assert await limiter.coordinator.sync() == []
            await quota.tick()
            health = (await client.get("/health")).json()
    shared = health["rate_limit"]["shared_state"]
    assert shared["degraded"] is True and shared["live_replicas"] is None
    assert shared["replicas"] == 2  # local limits at the configured share
    assert health["quota"]["shared"]["degraded"] is True
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.CRITICAL]
    assert sum("shared limiter state degraded" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("state", [
    {"seq": 3, "rate": 20.0, "ceiling": 25.0, "floor": 20.0, "at": float("inf")},
    {"seq": 3, "rate": 20.0, "ceiling": float("inf"), "floor": float("nan"), "at": time.time()},
    {"seq": 3, "rate": float("nan"), "ceiling": -25.0, "hold": "20", "at": time.time()}],
    ids=["at-inf", "ceiling-inf", "all-bad"])
async def test_startup_does_not_restore_an_unusable_published_state(
        fakes: Fakes, state: dict[str, object]) -> None:
    """An `at` of Infinity made any state fresh forever; a ceiling of Infinity became the
    maximum: a published state is only restored from its valid fields."""
    proxy = InProcessProxy(httpx.MockTransport(upstream), {
        "RATE_LIMIT_STORAGE_URI": "redis://10.0.0.1:6379/0", "RATE_LIMIT_INITIAL": "5",
        "RATE_LIMIT_MAX": "50"})
    fakes.server.raw_set(namespace(proxy.settings.account) + ":state", json.dumps(state))
    async with proxy as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["restored_from"] is None and health["ceiling"] is None
    assert health["current_rate"] == 5.0
