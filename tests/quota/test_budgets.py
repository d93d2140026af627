"""Per-client budgets in the whole app, on a fake wall clock, against a scripted upstream: a
client past its `five_hour_share` is answered locally while the others are served, until the
reset; a reload changing a share takes effect; a credit window refuses once its cost per token
is learned; two replicas on one Redis refuse a client on its combined use.

The app's monotonic clock never moves on its own (see tests/quota/test_quota.py): each test
polls and ticks itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime, settle
from tests.support.inprocess import UPSTREAM_KEY, InProcessProxy
from tests.support.redis import FakeRedis
from tests.support.upstreams import QUOTA_T0, QuotaUpstream, monitor_limits
from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.limiter import Limiter
from zai_proxy.limiter.shared import namespace
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.quota import Quota
from zai_proxy.quota.state import reset_stamp
from zai_proxy.server.accounts import account_of, limiter_config, quota_config
from zai_proxy.server.config import load_settings
from zai_proxy.zai.monitor_report import Limit, QuotaReport

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
T0 = QUOTA_T0
CI, AGENTS = "ci-key-secret-0001", "agents-key-secret-02"
ADMIN = "admin-key-secret-003"


def fleet(path: Path, ci_share: str = "five_hour_share = 0.2") -> Path:
    path.write_text(f'[[client]]\nname = "ci"\nkeys = ["{CI}"]\n{ci_share}\n\n'
                    f'[[client]]\nname = "agents"\nkeys = ["{AGENTS}"]\nweight = 3\n')
    return path


def harness(upstream: QuotaUpstream, wall: VirtualTime, clients: Path,
            **env: str) -> tuple[InProcessProxy, VirtualTime]:
    vt = VirtualTime()  # the app's monotonic clock: moved only by a test that reloads the file
    proxy = InProcessProxy(upstream.transport(), {
        "RATE_LIMIT_BURST": "100", "QUOTA_POLL_SECONDS": "3600",
        "PROXY_CLIENTS_FILE": str(clients), "ADMIN_API_KEY": ADMIN, **env},
        clock=vt, sleep=vt.sleep, wall=wall)
    return proxy, vt


def as_(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_client_past_its_five_hour_share_is_refused_while_the_others_are_served(
        tmp_path: Path) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = monitor_limits(used=0, allowance=10_000, reset=T0 + 3600)
    upstream.tokens = (150, 50)  # 200 tokens: 2 % of the five hours' budget a request
    proxy, _ = harness(upstream, wall, fleet(tmp_path / "clients.toml"))
    async with proxy as client:
        quota = proxy.app.state.quota
        await quota.poll_once()
        for _ in range(10):  # 20 % of the budget
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
            assert answer.status_code == 200
        wall.jump(100)
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        assert upstream.chats == 10, "answered locally: no upstream attempt"
        assert refused.status_code == 429 and refused.headers["retry-after"] == "3500"
        error = refused.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "proxy_client_budget_exhausted"
        assert error["type"] == "rate_limit_error"
        assert "Client 'ci'" in error["message"] and "20.0% of the account's five-hour" \
            in error["message"] and "five_hour_share is 20%" in error["message"]
        assert reset_stamp(T0 + 3600) in error["message"] and CI not in error["message"]
        for _ in range(30):  # the others go on, to the end of the budget
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=as_(AGENTS))
            assert answer.status_code == 200
        admin = as_(ADMIN)
        health = (await client.get("/health", headers=admin)).json()
        public = (await client.get("/health")).json()
        metrics = (await client.get("/metrics", headers=admin)).text
        wall.t = T0 + 3600  # the reset: the client is served again
        await quota.tick()
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=as_(CI))).status_code == 200
        await client.get("/metrics")  # the gauges are refreshed at scrape time
    budgets = health["quota"]["client_budgets"]
    assert budgets["clients"] == [{"name": "ci", "window": "five_hour", "share": 0.2,
                                   "used": 0.2, "used_ratio": 1.0, "refused": 1,
                                   "reset_at": T0 + 3600}]
    assert budgets["windows"]["five_hour"]["status"] == "enforced"
    assert health["clients"]["budgets"] == "enforced"
    assert "clients" not in public["quota"]["client_budgets"], "public /health names no client"
    assert public["quota"]["client_budgets"]["windows"] == budgets["windows"]
    labels = {"client": "ci", "window": "five_hour"}
    assert proxy.sample("zai_proxy_client_budget_refusals_total", **labels) == 1
    assert proxy.sample("zai_proxy_client_budget_used_ratio", **labels) == pytest.approx(0.1), \
        "a new period: one request of 2 % against its 20 %"
    assert 'zai_proxy_client_budget_used_ratio{client="ci",deployment_variant="production",' \
        'window="five_hour"} 1.0' in metrics
    assert proxy.sample("zai_proxy_quota_rejections_total") == 0, "not the account's quota"
    assert UPSTREAM_KEY not in json.dumps(health) + metrics


async def test_client_budget_series_are_left_out_of_the_scrape_without_client_names(
        tmp_path: Path) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = monitor_limits(used=0, allowance=10_000, reset=T0 + 3600)
    proxy, _ = harness(upstream, wall, fleet(tmp_path / "clients.toml"),
                       METRICS_CLIENT_NAMES="false")
    async with proxy as client:
        await proxy.app.state.quota.poll_once()
        await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        anonymous = (await client.get("/metrics")).text
        operator = (await client.get("/metrics", headers=as_(ADMIN))).text
    assert "zai_proxy_client_budget_used_ratio{" in operator
    assert "zai_proxy_client_budget" not in anonymous


async def test_a_reload_changing_a_share_takes_effect_at_the_next_request(
        tmp_path: Path) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = monitor_limits(used=0, allowance=10_000, reset=T0 + 3600)
    upstream.tokens = (1500, 500)  # 20 % a request
    path = fleet(tmp_path / "clients.toml")
    proxy, vt = harness(upstream, wall, path)
    async with proxy as client:
        await proxy.app.state.quota.poll_once()
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=as_(CI))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=as_(CI))).status_code == 429
        fleet(path, "five_hour_share = 0.5")
        for _ in range(3):  # the proxy looks at the file once a second; a change settles
            vt.jump(1.0)
            proxy.app.state.auth.refresh()
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=as_(CI))).status_code == 200


async def test_a_client_past_its_share_is_answered_at_once_not_queued(tmp_path: Path) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = monitor_limits(used=0, allowance=10_000, reset=T0 + 3600)
    upstream.tokens = (1500, 500)  # 20 % a request
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-hold") == "1":
            await release.wait()  # holds the one upstream slot (MAX_WORKERS=1)
        return upstream.handle(request)

    vt = VirtualTime()
    proxy = InProcessProxy(httpx.MockTransport(answer), {
        "RATE_LIMIT_BURST": "100", "QUOTA_POLL_SECONDS": "3600", "MAX_WORKERS": "1",
        "PROXY_CLIENTS_FILE": str(fleet(tmp_path / "clients.toml"))},
        clock=vt, sleep=vt.sleep, wall=wall)
    async with proxy as client:
        await proxy.app.state.quota.poll_once()
        await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))  # its 20 %
        held = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT,
                                                 headers={**as_(AGENTS), "x-hold": "1"}))
        await settle()
        assert proxy.admission.in_flight == 1
        refused = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT,
                                                    headers=as_(CI)))
        await settle(50)
        done = refused.done()
        release.set()
        assert (await held).status_code == 200
        assert (await refused).status_code == 429
    assert done, "refused before asking for admission: it did not wait for the slot"


def credit_plan(credits_used: float) -> httpx.Response:
    """A credit plan: the five hours counted in credits only (2,000 of them)."""
    limits: list[dict[str, Any]] = [{
        "type": "CREDIT_LIMIT", "unit": 3, "number": 5, "usage": 2000,
        "currentValue": credits_used, "remaining": 2000 - credits_used,
        "nextResetTime": int((T0 + 3600) * 1000)}]
    return httpx.Response(200, json={"code": 200, "success": True,
                                     "data": {"level": "lite", "limits": limits}})


async def test_a_credit_window_refuses_no_one_until_its_cost_per_token_is_learned(
        tmp_path: Path) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = credit_plan(0)
    upstream.tokens = (100, 100)
    proxy, _ = harness(upstream, wall, fleet(tmp_path / "clients.toml"))
    async with proxy as client:
        quota = proxy.app.state.quota
        await quota.poll_once()
        for _ in range(5):  # 1,000 tokens: what one credit costs is not known yet
            answer = await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
            assert answer.status_code == 200
        health = (await client.get("/health", headers=as_(ADMIN))).json()
        assert health["quota"]["client_budgets"]["windows"]["five_hour"]["status"] == \
            "calibrating"
        upstream.monitor = credit_plan(300)  # the 1,000 tokens cost 15 % of the credits
        wall.jump(60)
        await quota.poll_once()
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        assert refused.status_code == 200, "15 % used: under its 20 %"
        await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        assert refused.status_code == 429, "1,400 tokens: 21 % of the credits"
        assert refused.json()["error"]["code"] == "proxy_client_budget_exhausted"
        health = (await client.get("/health", headers=as_(ADMIN))).json()
    five = health["quota"]["client_budgets"]["windows"]["five_hour"]
    assert five["status"] == "enforced" and five["ratio_per_token"] == pytest.approx(0.15 / 1000)


async def test_a_paced_client_ahead_of_its_even_share_is_refused_with_the_paced_code(
        tmp_path: Path) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    # An hour of the five elapsed: a client with 20 % may have used about 4 % by now.
    upstream.monitor = monitor_limits(used=0, allowance=10_000, reset=T0 + 4 * 3600)
    upstream.tokens = (300, 200)  # 5 % a request
    proxy, _ = harness(upstream, wall, fleet(tmp_path / "clients.toml"), QUOTA_PACING="even")
    async with proxy as client:
        await proxy.app.state.quota.poll_once()
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=as_(CI))).status_code == 200
        paced = await client.post("/v1/chat/completions", json=CHAT, headers=as_(CI))
        served = await client.post("/v1/chat/completions", json=CHAT, headers=as_(AGENTS))
    assert paced.status_code == 429
    assert paced.json()["error"]["code"] == "proxy_client_budget_paced"
    assert int(paced.headers["retry-after"]) == 0.25 * 5 * 3600 - 60 - 3600  # the line at 5 %
    assert served.status_code == 200


def replica(fake: FakeRedis, vt: VirtualTime, shares: dict[str, float]) -> Quota:
    """One replica's quota on the shared fake Redis (the limiter is only its pacing target)."""
    env = {"ZAI_API_KEY": "upstream-key-of-account-a", "QUOTA_POLL_SECONDS": "0",
           "RATE_LIMIT_STATE_FILE": ""}
    metrics = Metrics(CollectorRegistry(), "v1")
    local = load_settings(env)
    limiter = Limiter(limiter_config(local, account_of(local)), metrics, clock=vt, wall=vt.wall)
    shared = load_settings({**env, "RATE_LIMIT_STORAGE_URI": "redis://fake:6379/0"})
    link = RedisLink(fake, clock=vt)
    return Quota(quota_config(shared, account_of(shared)), metrics, limiter, wall=vt.wall,
                 clock=vt, sleep=vt.sleep, link=link,
                 lease=LeaderLease(link, namespace(shared.account)),
                 shares_of=lambda name: (shares.get(name), None))


async def test_two_replicas_refuse_a_client_on_its_combined_use() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    shares = {"ci": 0.2}
    first, second = replica(fake, vt, shares), replica(fake, vt, shares)
    report = QuotaReport("pro", (Limit("TOKENS_LIMIT", 3, 5, usage=10_000, used=0,
                                       reset_at=vt.wall() + 3600),))
    for quota in (first, second):
        quota.state.on_report(report, vt.wall())  # as polled by the leader and adopted
        await quota.tick()
    first.settled("ci", {"input": 1000})
    second.settled("ci", {"input": 999})
    for quota in (first, second):
        await quota.tick()
    assert first.budgets.check("ci") is None and second.budgets.check("ci") is None
    first.settled("ci", {"input": 1})  # 2,000 tokens across the two: 20 %
    assert second.budgets.check("ci") is None, "not shared before a tick"
    await first.tick()
    await second.tick()
    for quota in (first, second):
        refused = quota.budgets.check("ci")
        assert refused is not None and refused.code == "proxy_client_budget_exhausted"
        assert 3599 <= refused.retry_after <= 3600
    fake.mode = "down"
    second.settled("other", {"input": 5})
    await second.tick()  # Redis does not answer: the counts wait, the refusal holds
    assert second.budgets.check("ci") is not None
    fake.mode = "ok"
    await vt.advance(30.0)  # the link's back-off
    await second.tick()
    await first.tick()
    uses = first.budgets.budgets.periods["five_hour"].tokens
    assert uses == {"ci": 2000.0, "other": 5.0}, "the deltas kept while Redis was down arrive"
