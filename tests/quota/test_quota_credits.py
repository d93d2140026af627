"""The proxy's quota awareness with a credit plan, in process, on a fake wall clock: /health and
/metrics show every budget with its unit of account, the month's tool calls, and the monitor
entries not understood (raw, counted); a spent credit window is refused locally, spent tool
calls are not."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.clock import VirtualTime, settle
from tests.support.inprocess import InProcessProxy
from tests.support.upstreams import QUOTA_T0, QuotaUpstream
from zai_proxy.quota.quota import reset_stamp
from zai_proxy.zai.codes import window_code

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
T0 = QUOTA_T0
UNKNOWN = {"type": "FUTURE_LIMIT", "unit": 9, "number": 1, "quantum": 42, "window": "lunar"}


def harness(upstream: QuotaUpstream, wall: VirtualTime, **env: str) -> InProcessProxy:
    # Virtual monotonic time that never moves: the test alone polls and ticks (see test_quota).
    vt = VirtualTime()
    return InProcessProxy(upstream.transport(), {"RATE_LIMIT_BURST": "100",
                                                 "QUOTA_POLL_SECONDS": "3600", **env},
                          clock=vt, sleep=vt.sleep, wall=wall)


def answer(*, credits_used: float, calls_used: float = 100) -> httpx.Response:
    """A Lite credit plan: five-hour tokens (percentage only) and credits, weekly credits, the
    month's tool calls, an entry of a type not known yet and one that is not an object."""
    limits: list[Any] = [
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 10,
         "nextResetTime": int((T0 + 3600) * 1000)},
        {"type": "CREDIT_LIMIT", "unit": 3, "number": 5, "usage": 2000,
         "currentValue": credits_used, "remaining": 2000 - credits_used,
         "nextResetTime": int((T0 + 1800) * 1000)},
        {"type": "CREDIT_LIMIT", "unit": 6, "number": 1, "usage": "10000", "currentValue": "100",
         "nextResetTime": int((T0 + 500_000) * 1000)},
        {"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 100, "currentValue": calls_used,
         "remaining": 100 - calls_used, "nextResetTime": int((T0 + 2_000_000) * 1000)},
        UNKNOWN, "junk",
    ]
    return httpx.Response(200, json={"code": 200, "success": True,
                                     "data": {"level": "lite", "limits": limits}})


async def test_health_and_metrics_show_credits_tool_calls_and_what_was_not_understood() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = answer(credits_used=500)
    proxy = harness(upstream, wall)
    async with proxy as client:
        quota = proxy.app.state.quota
        await quota.poll_once()
        await settle()  # the app's own poll at start is done too
        await quota.tick()
        health = (await client.get("/health")).json()["quota"]
        await client.get("/metrics")  # gauges are refreshed at scrape time
        variant = proxy.settings.deployment_variant
        used = {(w, u): proxy.registry.get_sample_value(  # None: no such series
                    "zai_proxy_quota_used_ratio",
                    {"window": w, "unit": u, "deployment_variant": variant})
                for w, u in (("five_hour", "tokens"), ("five_hour", "credits"),
                             ("weekly", "credits"), ("weekly", "tokens"), ("monthly", "calls"))}
        unparsed = {r: proxy.sample("zai_proxy_quota_unparsed_total", reason=r)
                    for r in ("unknown_type", "not_an_object", "unknown_unit")}
        polls = len(upstream.polls)  # ours and the app's own at start
        # Spent tool calls stop no chat request.
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert upstream.chats == 1
        await quota.poll_once()  # counted again: per poll
        assert proxy.sample("zai_proxy_quota_unparsed_total",
                            reason="unknown_type") == len(upstream.polls) > polls
    five = health["windows"]["five_hour"]
    assert five["unit"] == "credits" and five["used_ratio"] == 0.25  # the most used binds
    assert five["remaining"] == 1500 and five["reset_at"] == T0 + 1800
    assert {u: v["used_ratio"] for u, v in five["units"].items()} == {
        "tokens": 0.1, "credits": 0.25}
    assert health["windows"]["weekly"]["unit"] == "credits"
    month = health["windows"]["monthly"]
    assert (month["unit"], month["spent"], month["blocks_requests"]) == ("calls", True, False)
    assert health["blocked"] is None
    assert health["unparsed"]["total"] == 2
    assert health["unparsed"]["by_reason"] == {"not_an_object": 1, "unknown_type": 1}
    entries = health["unparsed"]["entries"]
    assert [e["reason"] for e in entries] == ["unknown_type", "not_an_object"]
    assert json.loads(entries[0]["raw"]) == UNKNOWN and entries[1]["raw"] == '"junk"'
    assert used == {("five_hour", "tokens"): 0.1, ("five_hour", "credits"): 0.25,
                    ("weekly", "credits"): 0.01, ("weekly", "tokens"): None,
                    ("monthly", "calls"): 1.0}
    assert unparsed == {"unknown_type": polls, "not_an_object": polls, "unknown_unit": 0}


async def test_a_spent_credit_window_is_refused_locally_until_its_reset() -> None:
    upstream, wall = QuotaUpstream(), VirtualTime(T0)
    upstream.monitor = answer(credits_used=2000, calls_used=0)
    proxy = harness(upstream, wall)
    async with proxy as client:
        await proxy.app.state.quota.poll_once()
        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429 and upstream.chats == 0
        error = refused.json()["error"]
        assert error["code"] == "proxy_quota_exhausted"
        assert refused.headers["x-zai-error-code"] == window_code("five_hour")
        assert f"reset at {reset_stamp(T0 + 1800)}" in error["message"]
        assert (await client.get("/health")).json()["quota"]["windows"]["five_hour"][
            "units"]["credits"]["spent"] is True
        wall.t = T0 + 1800  # the credit window's reset
        upstream.monitor = answer(credits_used=0, calls_used=0)
        await proxy.app.state.quota.poll_once()
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert upstream.chats == 1
