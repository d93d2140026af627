"""Credit budgets (`CREDIT_LIMIT`) beside the token ones, and the quota monitor's newer entries
(`CREDIT_LIMIT`, `TIME_LIMIT`, an unknown type). Virtual time only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.clock import WALL_EPOCH, VirtualTime
from tests.support.simulator import BEARER, CHAT, MESSAGES, XKEY, anthropic_body, chat_body, sim
from zai_proxy.simulator import PlanQuota, SimulatorSettings

MONITOR = "/api/monitor/usage/quota/limit"
RAW_KEY = {"Authorization": "sk-upstream"}
# chat_body(): 1 + 3 prompt words; 5 chunks of 2 words: 4 + 10 tokens a request
TOKENS_PER_CHAT = 14


async def limits_of(c: Any) -> list[dict[str, Any]]:
    answer = await c.get(MONITOR, headers=RAW_KEY)
    assert answer.status_code == 200
    limits: list[dict[str, Any]] = answer.json()["data"]["limits"]
    return limits


async def test_five_hour_credits_refuse_with_1308_once_spent_and_reset_with_the_window() -> None:
    vt = VirtualTime()
    settings = SimulatorSettings(quota_5h_credits=3, quota_5h_window_s=100)
    async with sim(settings, vt) as c:
        models = await c.get("/api/paas/v4/models", headers=BEARER)  # runs no model: free
        served = [await c.post(CHAT, json=chat_body(), headers=BEARER) for _ in range(3)]
        await vt.advance(10)
        refused = await c.post(CHAT, json=chat_body(), headers=BEARER)
        [entry] = await limits_of(c)
        snapshot = (await c.get("/_stats")).json()["quota"]
        await vt.advance(90)
        again = await c.post(MESSAGES, json=anthropic_body(), headers=XKEY)
    assert [a.status_code for a in (models, *served)] == [200, 200, 200, 200]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "1308" and error["next_reset_time"] == int((WALL_EPOCH + 100) * 1000)
    assert entry == {"type": "CREDIT_LIMIT", "unit": 3, "number": 5, "usage": 3,
                     "currentValue": 3, "remaining": 0, "percentage": 100,
                     "nextResetTime": int((WALL_EPOCH + 100) * 1000)}
    assert snapshot["five_hour_credits"]["used"] == 3
    assert snapshot["five_hour_credits"]["refused"] == 1
    assert snapshot["five_hour"]["limit"] == 0  # no token budget: tokens untouched
    assert again.status_code == 200


async def test_weekly_credits_answer_1310() -> None:
    async with sim(SimulatorSettings(quota_weekly_credits=1, quota_5h_credits=100)) as c:
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200
        refused = await c.post(CHAT, json=chat_body(), headers=BEARER)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "1310"


async def test_credits_per_1k_tokens_cost_on_top_of_the_price_per_request() -> None:
    settings = SimulatorSettings(quota_5h_credits=10_000, credits_per_request=2,
                                 credits_per_1k_tokens=1000)
    async with sim(settings) as c:
        await c.post(CHAT, json=chat_body(), headers=BEARER)
        [entry] = await limits_of(c)
    assert entry["currentValue"] == 2 + TOKENS_PER_CHAT
    assert entry["remaining"] == 10_000 - 2 - TOKENS_PER_CHAT


def test_credit_costs_round_up_per_request() -> None:
    quota = PlanQuota(five_hour_credits=10, clock=lambda: 0.0, wall=lambda: WALL_EPOCH)
    quota.consume(tokens=999, credits=1)
    assert quota.credit_windows["five_hour"].used == 1
    assert quota.windows["five_hour"].used == 0  # no token budget: nothing counted


async def test_fractional_credit_price_rounds_up() -> None:
    settings = SimulatorSettings(quota_5h_credits=100, credits_per_request=0,
                                 credits_per_1k_tokens=1)
    async with sim(settings) as c:
        await c.post(CHAT, json=chat_body(), headers=BEARER)
        [entry] = await limits_of(c)
    assert entry["currentValue"] == 1  # 14 tokens at 1 credit per 1K: a whole credit


async def test_monitor_lists_tokens_credits_time_and_an_unknown_entry() -> None:
    settings = SimulatorSettings(quota_level="lite", quota_5h_tokens=1000,
                                 quota_5h_credits=2000, quota_weekly_credits=10_000,
                                 monitor_time_limit=100, monitor_unknown_entry=True)
    async with sim(settings) as c:
        await c.post(CHAT, json=chat_body(), headers=BEARER)
        answer = (await c.get(MONITOR, headers=RAW_KEY)).json()
    assert answer["data"]["level"] == "lite"
    limits = answer["data"]["limits"]
    assert [(e["type"], e["unit"]) for e in limits] == [
        ("TOKENS_LIMIT", 3), ("CREDIT_LIMIT", 3), ("CREDIT_LIMIT", 6), ("TIME_LIMIT", 5),
        ("FUTURE_LIMIT", 9)]
    tokens, five, week, tools, _ = limits
    assert tokens["currentValue"] == TOKENS_PER_CHAT
    assert (five["usage"], five["currentValue"], five["remaining"]) == (2000, 1, 1999)
    assert (week["usage"], week["currentValue"], week["percentage"]) == (10_000, 1, 0)
    assert tools["usage"] == tools["remaining"] == 100 and tools["currentValue"] == 0
    assert tools["nextResetTime"] > int(WALL_EPOCH * 1000)


async def test_credit_settings_are_live_and_off_by_default() -> None:
    async with sim(SimulatorSettings(quota_5h_tokens=1000)) as c:
        await c.post(CHAT, json=chat_body(), headers=BEARER)
        assert [e["type"] for e in await limits_of(c)] == ["TOKENS_LIMIT"]
        assert "five_hour_credits" not in (await c.get("/_stats")).json()["quota"]
        changed = await c.post("/_config", json={"quota_5h_credits": 1,
                                                 "monitor_unknown_entry": True})
        assert changed.status_code == 200
        await c.post(CHAT, json=chat_body(), headers=BEARER)
        refused = await c.post(CHAT, json=chat_body(), headers=BEARER)
        types = [e["type"] for e in await limits_of(c)]
    assert refused.json()["error"]["code"] == "1308"
    assert types == ["TOKENS_LIMIT", "CREDIT_LIMIT", "FUTURE_LIMIT"]


def test_credit_settings_validated() -> None:
    with pytest.raises(ValueError, match="credit"):
        SimulatorSettings(credits_per_request=-1)
    with pytest.raises(ValueError, match="credit"):
        SimulatorSettings(quota_weekly_credits=-5)
