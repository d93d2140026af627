"""QUOTA_PACING=even through the whole app on virtual time: who waits, for how long, and what
happens to the queue when pacing pauses or a window resets; the account's rate with N replicas.

The upstream is `tests.support.upstreams.QuotaUpstream` (15 tokens a chat; the monitor answers what
the test sets); the proxy runs on `VirtualTime` (its quota tick and poll loop sleep on it), so a
paced request's wait is measured in virtual seconds. Budgets are chosen for a pacing rate:
`used_for` gives the used tokens at which the budget left, spread evenly until the reset,
allows `rate`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.clock import VirtualTime, settle
from tests.support.inprocess import InProcessProxy
from tests.support.upstreams import QuotaUpstream, monitor_limits
from zai_proxy.quota.pacing import RESERVE_REQUESTS

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
KEYS = "batch:worker-key-0001,chat:worker-key-0002"
BATCH = {"authorization": "Bearer worker-key-0001"}  # paced
CHAT_KEY = {"authorization": "Bearer worker-key-0002"}  # QUOTA_PACING_EXEMPT
TOKENS = 15  # what QuotaUpstream charges per chat
ALLOWANCE = 10_000


def used_for(rate: float, horizon: float, *, allowance: float = ALLOWANCE) -> float:
    """Used tokens at which even pacing allows `rate` account req/s over `horizon` s."""
    return allowance - (rate * horizon + RESERVE_REQUESTS) * TOKENS


def paced_proxy(upstream: QuotaUpstream, vt: VirtualTime, **env: str) -> InProcessProxy:
    # A rate gate far above the pacing rates, with room for bursts: only the pacer holds back.
    return InProcessProxy(upstream.transport(), {
        "QUOTA_POLL_SECONDS": "3600", "QUOTA_PACING": "even", "QUOTA_PACING_EXEMPT": "chat",
        "PROXY_API_KEYS": KEYS, "RATE_LIMIT_INITIAL": "50", "RATE_LIMIT_BURST": "100", **env},
        clock=vt, sleep=vt.sleep, wall=vt.wall)


async def eventually(condition: Callable[[], bool], rounds: int = 500) -> bool:
    """Let the event loop run (no time passes) until `condition` holds, a bounded while."""
    for _ in range(rounds):
        if condition():
            return True
        await settle(1)
    return condition()


async def calibrate(proxy: InProcessProxy, client: httpx.AsyncClient, upstream: QuotaUpstream,
                    vt: VirtualTime, *, rate: float, horizon: float) -> None:
    """One request teaches the tokens per request; a poll then sets pacing at `rate`."""
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=BATCH)).status_code == 200
    upstream.monitor = monitor_limits(used=used_for(rate, horizon), reset=vt.wall() + horizon)
    await proxy.app.state.quota.poll_once()
    assert proxy.app.state.quota.pacing.status == "paced"


def post(client: httpx.AsyncClient, headers: dict[str, str]) -> asyncio.Future[httpx.Response]:
    return asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT, headers=headers))


async def test_a_second_paced_request_waits_for_the_pacer_and_an_exempt_one_does_not() -> None:
    vt, upstream = VirtualTime(), QuotaUpstream()
    upstream.monitor = monitor_limits(used=0, reset=vt.wall() + 3600)
    proxy = paced_proxy(upstream, vt)
    async with proxy as client:
        await calibrate(proxy, client, upstream, vt, rate=0.1, horizon=3600)  # one per 10 s
        first = post(client, BATCH)
        assert await eventually(first.done) and first.result().status_code == 200
        second = post(client, BATCH)
        await settle(200)
        assert not second.done() and upstream.chats == 2  # waits for the pacer
        exempt = post(client, CHAT_KEY)
        assert await eventually(exempt.done) and exempt.result().status_code == 200
        assert upstream.chats == 3 and not second.done()  # the exempt one went past it
        await vt.advance(9.0)
        await settle(200)
        assert not second.done()  # still within the pacer's 10 s
        await vt.advance(2.0)
        assert await eventually(second.done) and second.result().status_code == 200
        assert upstream.chats == 4


async def test_requests_queued_when_pacing_pauses_do_not_go_upstream() -> None:
    vt, upstream = VirtualTime(), QuotaUpstream()
    upstream.monitor = monitor_limits(used=0, reset=vt.wall() + 3600)
    proxy = paced_proxy(upstream, vt)
    async with proxy as client:
        await calibrate(proxy, client, upstream, vt, rate=0.1, horizon=3600)
        first = post(client, BATCH)
        assert await eventually(first.done)
        queued = post(client, BATCH)
        await vt.advance(2.0)
        assert not queued.done()
        # The budget left is within the reserve: pacing pauses until the reset.
        upstream.monitor = monitor_limits(used=ALLOWANCE - TOKENS, reset=vt.wall() + 3598)
        await proxy.app.state.quota.poll_once()
        assert proxy.app.state.quota.pacing.status == "paused"
        chats = upstream.chats
        await vt.advance(30.0)  # three times the 10 s it would have waited at the paced rate
        await settle(200)
        assert upstream.chats == chats  # it waits (then times out) rather than spend
        await vt.advance(30.0)  # the queue timeout (60 s)
        assert await eventually(queued.done)
        assert queued.result().status_code == 429 and upstream.chats == chats


async def test_after_a_window_resets_the_backlog_is_not_released_at_once() -> None:
    vt, upstream = VirtualTime(), QuotaUpstream()
    upstream.monitor = monitor_limits(used=0, reset=vt.wall() + 3600)
    proxy = paced_proxy(upstream, vt)
    async with proxy as client:
        # One request every 2 s for 20 s: 10 go before the reset, the rest of 20 queue past it.
        await calibrate(proxy, client, upstream, vt, rate=0.5, horizon=20)
        backlog = [post(client, BATCH) for _ in range(20)]
        await settle(200)
        await vt.advance(19.5)
        before = upstream.chats
        assert before < 1 + 15  # paced: well short of the backlog
        waiting = sum(not answer.done() for answer in backlog)
        assert waiting >= 5
        await vt.advance(2.5)  # the reset passes; the monitor has not said when the next one is
        await settle(200)
        assert proxy.app.state.quota.pacing.status == "holding"
        # The last paced rate (1 req/s as the window ran out) holds: a few, not the backlog.
        assert upstream.chats - before <= 3
        assert sum(not answer.done() for answer in backlog) >= waiting - 3
        for answer in backlog:
            answer.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)


async def test_with_both_windows_reserved_pacing_refuses_until_the_later_reset() -> None:
    vt, upstream = VirtualTime(), QuotaUpstream()
    upstream.monitor = monitor_limits(used=0, reset=vt.wall() + 3600)
    proxy = paced_proxy(upstream, vt)
    async with proxy as client:
        await calibrate(proxy, client, upstream, vt, rate=0.1, horizon=3600)
        weekly: dict[str, Any] = {
            "type": "TOKENS_LIMIT", "unit": 6, "number": 1, "usage": 100_000,
            "currentValue": 100_000 - TOKENS, "remaining": TOKENS, "percentage": 99,
            "nextResetTime": int((vt.wall() + 5000) * 1000)}
        upstream.monitor = monitor_limits(used=ALLOWANCE - TOKENS, reset=vt.wall() + 100,
                                  weekly=weekly)
        await proxy.app.state.quota.poll_once()
        chats = upstream.chats
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=BATCH)
    assert refused.status_code == 429 and upstream.chats == chats
    error = refused.json()["error"]
    assert error["code"] == "proxy_quota_paced"
    assert refused.headers["x-zai-error-code"] == "1310"  # the weekly window, not the five-hour
    assert refused.headers["retry-after"] == "5000"  # until both have reset
    assert "weekly" in error["message"]


@pytest.mark.parametrize("replicas", [1, 2, 4])
async def test_the_account_is_paced_at_one_rate_whatever_the_replica_count(replicas: int) -> None:
    vt, upstream = VirtualTime(), QuotaUpstream()
    upstream.monitor = monitor_limits(used=0, reset=vt.wall() + 3600)
    proxy = paced_proxy(upstream, vt, RATE_LIMIT_REPLICAS=str(replicas))
    async with proxy as client:
        await calibrate(proxy, client, upstream, vt, rate=0.1, horizon=1000)
        # Each replica sends its 1/N share; together they send the rate the budget allows.
        assert proxy.admission.pacing_rate * replicas == pytest.approx(0.1)
        health = (await client.get("/health")).json()["quota"]
    assert health["pacing"]["rate"] == pytest.approx(0.1)
    assert health["tokens_per_request"] == TOKENS  # per request, not per N requests


async def test_without_redis_the_estimates_count_every_replicas_tokens() -> None:
    vt, upstream = VirtualTime(), QuotaUpstream()
    upstream.monitor = monitor_limits(used=0, reset=vt.wall() + 3600)
    proxy = InProcessProxy(upstream.transport(), {
        "QUOTA_POLL_SECONDS": "3600", "QUOTA_BURN_WINDOW": "100s", "RATE_LIMIT_REPLICAS": "4"},
        clock=vt, sleep=vt.sleep, wall=vt.wall)
    async with proxy as client:
        await settle(200)  # the first poll, at start
        for _ in range(10):  # 10 s of one request a second here: four a second for the account
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            await vt.advance(1.0)
        five = (await client.get("/health")).json()["quota"]["windows"]["five_hour"]
    account_tokens = 10 * TOKENS * 4
    assert five["used_ratio"] == pytest.approx(account_tokens / ALLOWANCE)
    burn = 4 * TOKENS / ALLOWANCE  # per second
    assert five["burn_ratio_per_hour"] == pytest.approx(burn * 3600)
    assert five["exhaustion_eta_seconds"] == pytest.approx(
        (1 - account_tokens / ALLOWANCE) / burn, rel=0.01)
