"""The proxy's quota awareness in process, on a fake wall clock, against a scripted upstream.

The app runs on virtual monotonic time that never advances (its quota loops sleep on it): each
test polls (`poll_once`) and ticks (`tick`) itself, so no background tick lands between steps.

The upstream (`QuotaUpstream`) answers chat completions with usage (or a 1308/1310 when told) and
the quota monitor with whatever the test set; every chat request it sees is counted, so "no
upstream attempt" is checked where it happens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

import httpx
import pytest

from tests.support.clock import VirtualTime, settle
from tests.support.inprocess import UPSTREAM_KEY, InProcessProxy
from tests.support.upstreams import QUOTA_T0, QuotaUpstream, monitor_limits
from zai_proxy.quota.poller import MONITOR_PATH
from zai_proxy.quota.quota import reset_stamp

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
T0 = QUOTA_T0


def harness(upstream: QuotaUpstream, wall: VirtualTime, **env: str) -> InProcessProxy:
    # `wall` is a VirtualTime read as the wall clock (epoch seconds), moved only by the test.
    # The app's monotonic clock and sleep are virtual time that never moves: past the first
    # poll at start, the test alone decides when a poll or a tick happens, and the rate gate
    # (a burst far above what a test sends) never makes a request wait for real time.
    vt = VirtualTime()
    return InProcessProxy(upstream.transport(), {"RATE_LIMIT_BURST": "100", **env},
                          clock=vt, sleep=vt.sleep, wall=wall)


async def test_after_a_1308_requests_are_answered_locally_until_the_reset() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    proxy = harness(upstream, wall)
    async with proxy as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        upstream.spent = ("1308", T0 + 30.4)
        relayed = await client.post("/v1/chat/completions", json=CHAT)
        assert relayed.status_code == 429 and relayed.json()["error"]["code"] == "1308"
        assert upstream.chats == 2
        wall.jump(10)
        for route, body in (("/v1/chat/completions", CHAT), ("/v1/messages", {
                "model": "glm-4.7", "max_tokens": 5, "messages": CHAT["messages"]})):
            local = await client.post(route, json=body)
            assert local.status_code == 429
            error = local.json()["error"]
            assert error["code"] == "proxy_quota_exhausted" and error["type"] == "rate_limit_error"
            assert set(error) == {"message", "type", "param", "code"}
            assert f"Your limit will reset at {reset_stamp(T0 + 30.4)}" in error["message"]
            assert local.headers["x-zai-error-class"] == "quota"
            assert local.headers["x-zai-error-code"] == "1308"
            assert local.headers["retry-after"] == "21"  # ceil(30.4 - 10)
        assert upstream.chats == 2  # no upstream attempt
        assert proxy.sample("zai_proxy_quota_rejections_total") == 2
        health = (await client.get("/health")).json()["quota"]
        assert health["blocked"] == {"window": "five_hour", "code": "1308", "until": T0 + 30.4,
                                     "retry_after": 21, "source": "upstream"}
        wall.t = T0 + 30.4  # the reset: service resumes at once
        upstream.spent = None
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert upstream.chats == 3
        assert (await client.get("/health")).json()["quota"]["blocked"] is None


async def test_requests_queued_when_the_1308_came_never_reach_the_upstream() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.spent = ("1308", T0 + 60)
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()  # the others queue behind this one (MAX_WORKERS=1)
        return upstream.handle(request)

    vt = VirtualTime()
    proxy = InProcessProxy(httpx.MockTransport(slow), {"MAX_WORKERS": "1",
                                                       "RATE_LIMIT_BURST": "100"},
                           clock=vt, sleep=vt.sleep, wall=wall)
    async with proxy as client:
        sent = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
                for _ in range(5)]
        for _ in range(50):  # until the first is upstream and the other four queue for its slot
            if proxy.admission.depth == 4:
                break
            await settle(1)
        assert proxy.admission.depth == 4 and proxy.admission.in_flight == 1
        release.set()
        answers = await asyncio.gather(*sent)
    codes = sorted(a.json()["error"]["code"] for a in answers)
    assert codes == ["1308"] + ["proxy_quota_exhausted"] * 4
    assert upstream.chats == 1  # admitted after the block began: answered without an attempt
    assert proxy.admission.in_flight == 0  # their slots were given back


async def test_a_weekly_1310_blocks_until_its_own_reset() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    async with harness(upstream, wall) as client:
        upstream.spent = ("1310", T0 + 86_400)
        await client.post("/v1/chat/completions", json=CHAT)
        local = await client.post("/v1/chat/completions", json=CHAT)
        assert local.headers["x-zai-error-code"] == "1310"
        assert local.headers["retry-after"] == "86400"
        assert "weekly" in local.json()["error"]["message"]


async def test_local_reject_off_keeps_forwarding_but_still_knows() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    async with harness(upstream, wall, QUOTA_LOCAL_REJECT="false") as client:
        upstream.spent = ("1308", T0 + 60)
        for _ in range(3):
            answer = await client.post("/v1/chat/completions", json=CHAT)
            assert answer.json()["error"]["code"] == "1308"  # the upstream's own answer
        assert upstream.chats == 3
        quota = (await client.get("/health")).json()["quota"]
        assert quota["blocked"]["code"] == "1308" and quota["local_reject"] is False


async def test_a_poll_showing_the_budget_spent_stops_requests_before_any_1308() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = monitor_limits(used=10_000, reset=T0 + 120)
    proxy = harness(upstream, wall, QUOTA_POLL_SECONDS="3600")
    async with proxy as client:
        await proxy.app.state.quota.poll_once()
        local = await client.post("/v1/chat/completions", json=CHAT)
        assert local.status_code == 429 and local.headers["retry-after"] == "120"
        assert upstream.chats == 0
        upstream.monitor = monitor_limits(used=100, reset=T0 + 120)  # budget again (plan upgraded)
        wall.jump(1)
        await proxy.app.state.quota.poll_once()
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    poll = upstream.polls[-1]
    assert poll.method == "GET" and poll.url == "https://api.z.ai" + MONITOR_PATH
    assert poll.headers["authorization"] == UPSTREAM_KEY  # raw key, no Bearer


@pytest.mark.parametrize(("answer", "reason"), [
    (httpx.Response(401, json={"code": 1001, "msg": "token expired", "success": False}),
     "unauthorized"),
    (httpx.Response(503, text="<html>503</html>"), "http_error"),
    (httpx.Response(200, text="<html>maintenance</html>"), "invalid_response"),
    (httpx.Response(200, json={"code": 500, "msg": "busy", "success": False}), "api_error"),
])
async def test_a_failing_monitor_never_stops_requests_and_health_says_why(
        answer: httpx.Response, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = answer
    proxy = harness(upstream, wall, QUOTA_POLL_SECONDS="3600")
    with caplog.at_level(logging.INFO, logger="zai_proxy"):
        async with proxy as client:
            quota = proxy.app.state.quota
            for _ in range(3):
                await quota.poll_once()
                assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
            health = (await client.get("/health")).json()["quota"]["polling"]
            assert health["state"] == "failing" and health["reason"] == reason
            assert health["consecutive_failures"] >= 3
            metrics = (await client.get("/metrics")).text
            upstream.monitor = monitor_limits(used=5)
            await quota.poll_once()
            recovered = (await client.get("/health")).json()["quota"]["polling"]
    assert proxy.sample("zai_proxy_quota_poll_errors_total", reason=reason) >= 3
    assert 'zai_proxy_quota_poll_up{deployment_variant="production"} 0.0' in metrics
    assert recovered["state"] == "ok" and recovered["reason"] is None
    failing = [r for r in caplog.records if r.name == "zai_proxy.quota"
               and "failing" in r.getMessage()]
    assert len(failing) == 1  # one line per change of state, not per poll
    assert any("quota poll recovered" in r.getMessage() for r in caplog.records)
    assert UPSTREAM_KEY not in caplog.text + metrics + json.dumps(health)


async def test_client_tokens_by_key_name_and_one_anonymous_series_when_open() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    keys = "batch:worker-key-0001,chat:worker-key-0002,worker-key-0003"
    proxy = harness(upstream, wall, PROXY_API_KEYS=keys)
    async with proxy as client:
        for key, times in (("worker-key-0001", 2), ("worker-key-0002", 1),
                           ("worker-key-0003", 1)):
            for _ in range(times):
                answer = await client.post("/v1/chat/completions", json=CHAT,
                                           headers={"authorization": f"Bearer {key}"})
                assert answer.status_code == 200
    sample = proxy.sample
    assert sample("zai_proxy_client_tokens_total", client="batch", direction="input") == 20
    assert sample("zai_proxy_client_tokens_total", client="batch", direction="output") == 10
    assert sample("zai_proxy_client_tokens_total", client="chat", direction="output") == 5
    from zai_proxy.clients.auth import fingerprint

    assert sample("zai_proxy_client_tokens_total", client=fingerprint("worker-key-0003"),
                  direction="input") == 10
    open_proxy = harness(QuotaUpstream(), VirtualTime(T0))
    async with open_proxy as client:
        await client.post("/v1/chat/completions", json=CHAT)
    assert open_proxy.sample("zai_proxy_client_tokens_total", client="anonymous",
                             direction="input") == 10


async def test_gauges_and_health_show_each_window_with_its_time_to_exhaustion() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    weekly = {"type": "TOKENS_LIMIT", "unit": 6, "percentage": 40,
              "nextResetTime": int((T0 + 500_000) * 1000)}
    upstream.monitor = monitor_limits(used=0, reset=T0 + 3600, weekly=weekly)
    proxy = harness(upstream, wall, QUOTA_POLL_SECONDS="3600", QUOTA_BURN_WINDOW="100s")
    async with proxy as client:
        quota = proxy.app.state.quota
        await quota.poll_once()
        await quota.tick()
        for _ in range(10):  # 10 s of 1 request (15 tokens) a second
            wall.jump(1)
            await client.post("/v1/chat/completions", json=CHAT)
            await quota.tick()
        upstream.monitor = monitor_limits(used=150, reset=T0 + 3600, weekly=weekly)
        await quota.poll_once()
        health = (await client.get("/health")).json()["quota"]
        text = (await client.get("/metrics")).text
    five = health["windows"]["five_hour"]
    assert five["used_ratio"] == pytest.approx(0.015)
    assert five["burn_ratio_per_hour"] == pytest.approx(15 / 10_000 * 3600)  # 15 tokens/s
    eta = (1 - 0.015) / (15 / 10_000)  # 657 s: well before the reset in 3590 s
    assert five["exhaustion_eta_seconds"] == pytest.approx(eta, rel=0.01)
    assert five["exhausts_before_reset"] is True and five["reset_at"] == T0 + 3600
    assert health["windows"]["weekly"]["used_ratio"] == pytest.approx(0.4)
    assert health["level"] == "pro" and health["polling"]["state"] == "ok"
    assert five["unit"] == "tokens" and five["blocks_requests"] is True
    assert list(five["units"]) == ["tokens"] and five["units"]["tokens"]["remaining"] == 9850
    labels = {"window": "five_hour", "unit": "tokens"}
    assert proxy.sample("zai_proxy_quota_used_ratio", **labels) == pytest.approx(0.015)
    assert proxy.sample("zai_proxy_quota_remaining", **labels) == 9850
    assert proxy.sample("zai_proxy_quota_reset_timestamp_seconds", **labels) == T0 + 3600
    assert proxy.sample("zai_proxy_quota_exhaustion_eta_seconds", **labels) == pytest.approx(
        eta, rel=0.01)
    assert ('zai_proxy_quota_remaining{deployment_variant="production",unit="tokens",'
            'window="weekly"}') not in text
    assert 'zai_proxy_quota_used_ratio{deployment_variant="production",unit="tokens",' \
        'window="weekly"} 0.4' in text


async def test_even_pacing_sets_the_admission_rate_and_exempt_clients_are_never_paced() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = monitor_limits(used=5000, reset=T0 + 100)
    keys = "batch:worker-key-0001,chat:worker-key-0002"
    proxy = harness(upstream, wall, QUOTA_POLL_SECONDS="3600", QUOTA_PACING="even",
                    QUOTA_PACING_EXEMPT="chat", PROXY_API_KEYS=keys)
    batch = {"authorization": "Bearer worker-key-0001"}
    chat = {"authorization": "Bearer worker-key-0002"}
    async with proxy as client:
        quota = proxy.app.state.quota
        await quota.poll_once()
        assert quota.pacing.status == "calibrating"  # no tokens per request known yet
        assert proxy.admission.pacer is None
        await client.post("/v1/chat/completions", json=CHAT, headers=batch)  # 15 tokens
        upstream.monitor = monitor_limits(used=5015, reset=T0 + 100)
        await quota.poll_once()
        left = 10_000 - 5015 - 2 * 15
        assert quota.pacing.status == "paced"
        assert proxy.admission.pacing_rate == pytest.approx(left / 15 / 100)
        assert quota.paced("batch") and not quota.paced("chat")
        # Nearly spent: paced clients are refused until the reset, exempt ones still go.
        upstream.monitor = monitor_limits(used=9980, reset=T0 + 100)
        await quota.poll_once()
        assert quota.pacing.status == "paused"
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=batch)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "proxy_quota_paced"
        assert refused.headers["x-zai-error-class"] == "quota"
        assert int(refused.headers["retry-after"]) == 100
        chats = upstream.chats
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=chat)).status_code == 200
        assert upstream.chats == chats + 1
        health = (await client.get("/health")).json()["quota"]["pacing"]
    assert health["mode"] == "even" and health["status"] == "paused"
    assert health["exempt"] == ["chat"] and math.isclose(health["paused_until"], T0 + 100)
