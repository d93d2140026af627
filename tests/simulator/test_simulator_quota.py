"""The simulator's plan quota: token windows on a fake clock, 1308/1310 and the monitor route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.simulator import BEARER, CHAT, MESSAGES, XKEY, chat_body
from zai_proxy.simulator import PlanQuota, SimulatorSettings, TokenWindow, create_simulator_app
from zai_proxy.zai.classify import classify_429
from zai_proxy.zai.codes import ThrottleClass
from zai_proxy.zai.monitor_report import QuotaReport, parse_monitor

MONITOR = "/api/monitor/usage/quota/limit"
RAW_KEY = {"Authorization": "sk-upstream"}
WALL_AT_ZERO = 1_767_000_000.0  # the fake wall clock reads this when the fake clock reads 0


def client_for(settings: SimulatorSettings, clock: VirtualTime | None = None,
               delays: list[float] | None = None) -> httpx.AsyncClient:
    """The simulator on fake clocks; its sleeps (latency, monitor delay) are recorded in
    `delays` and return at once."""
    clock = clock or VirtualTime(1000.0, WALL_AT_ZERO)

    async def sleep(seconds: float) -> None:
        if delays is not None:
            delays.append(seconds)

    app = create_simulator_app(settings, clock, clock.wall, sleep)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


def test_rolling_window_opens_at_first_use_refuses_once_spent_and_resets() -> None:
    clock = VirtualTime(1000.0, WALL_AT_ZERO)
    window = TokenWindow("five_hour", 100, 50.0, "rolling", clock, clock.wall)
    assert window.seconds_to_reset() is None  # not opened: no reset to announce
    clock.jump(10)
    window.consume(60)
    assert not window.spent() and window.seconds_to_reset() == 50.0
    clock.jump(20)
    window.consume(60)  # the last request may overshoot, as on Z.AI
    assert window.spent() and window.used == 120
    window.refuse()
    assert window.seconds_to_reset() == pytest.approx(30.0)
    clock.jump(30)
    assert not window.spent() and window.used == 0 and window.seconds_to_reset() is None
    [closed] = window.history
    assert closed["used"] == 120 and closed["refused"] == 1
    assert closed["first_refusal_at"] == WALL_AT_ZERO + 1000 + 30
    assert closed["reset_at"] - closed["opened_at"] == pytest.approx(50.0)


def test_fixed_windows_run_back_to_back_from_the_start() -> None:
    clock = VirtualTime(1000.0, WALL_AT_ZERO)
    window = TokenWindow("weekly", 10, 100.0, "fixed", clock, clock.wall)
    assert window.seconds_to_reset() == 100.0  # open from the start, used or not
    clock.jump(130)
    assert window.seconds_to_reset() == pytest.approx(70.0)
    window.consume(10)
    assert window.spent()
    clock.jump(70)
    assert not window.spent() and window.seconds_to_reset() == pytest.approx(100.0)


def test_weekly_refusal_wins_when_both_are_spent_and_unlimited_windows_never_refuse() -> None:
    clock = VirtualTime(1000.0, WALL_AT_ZERO)
    quota = PlanQuota(five_hour=10, weekly=15, five_hour_s=10, weekly_s=100, clock=clock)
    quota.consume(12)
    code, to_reset = quota.refusal() or (0, 0.0)
    assert code == 1308 and to_reset == pytest.approx(10.0)
    clock.jump(10)
    assert quota.refusal() is None  # five-hour reset; weekly has 3 left
    quota.consume(5)
    code, to_reset = quota.refusal() or (0, 0.0)
    assert code == 1310 and to_reset == pytest.approx(90.0)
    unlimited = PlanQuota(clock=clock)
    unlimited.consume(10**9)
    assert unlimited.refusal() is None and unlimited.monitor_answer()["data"]["limits"] == []


async def _tokens_of(client: httpx.AsyncClient, body: dict[str, Any]) -> int:
    answer = await client.post(CHAT, json=body, headers=BEARER)
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    return int(usage["prompt_tokens"] + usage["completion_tokens"])


async def test_real_token_use_spends_the_budget_then_1308_with_the_reset_message() -> None:
    clock = VirtualTime(1000.0, WALL_AT_ZERO)
    settings = SimulatorSettings(quota_5h_tokens=30, quota_5h_window_s=60)
    async with client_for(settings, clock) as c:
        used = 0
        while used < 30:
            used += await _tokens_of(c, chat_body())
        now = clock.wall()
        over = await c.post(CHAT, json=chat_body(), headers=BEARER)
        assert over.status_code == 429
        error = over.json()["error"]
        assert error["code"] == "1308"
        assert error["message"].startswith("Usage limit reached for 5 hour. Your limit will "
                                           "reset at 20")
        # What the proxy reads from it: class, and the reset one window after the first use.
        throttle = classify_429(over.content, {}, now)
        assert throttle.cls is ThrottleClass.QUOTA_5H
        assert throttle.reset_at == pytest.approx(now + 60, abs=1e-3)
        anthropic = await c.post(MESSAGES, json={"model": "glm-4.7", "max_tokens": 5,
                                                 "messages": [{"role": "user", "content": "x"}]},
                                 headers=XKEY)
        assert anthropic.status_code == 429
        assert anthropic.json()["error"] == {**anthropic.json()["error"], "type":
                                             "rate_limit_error", "code": "1308"}
        stats = (await c.get("/_stats")).json()["quota"]["five_hour"]
        assert stats["used"] == used and stats["remaining"] == 0 and stats["refused"] == 2
        clock.jump(60)
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200
        history = (await c.get("/_stats")).json()["quota"]["five_hour"]["history"]
        assert history[-1]["used"] == used and len(history[-1]["refusals"]) == 2


async def test_monitor_reports_each_window_as_zai_does_and_the_parser_reads_it() -> None:
    clock = VirtualTime(1000.0, WALL_AT_ZERO)
    settings = SimulatorSettings(quota_5h_tokens=1000, quota_weekly_tokens=10000,
                                 quota_5h_window_s=300, quota_level="max")
    async with client_for(settings, clock) as c:
        idle = (await c.get(MONITOR, headers=RAW_KEY)).json()
        assert idle["success"] is True and idle["code"] == 200 and idle["data"]["level"] == "max"
        assert all("nextResetTime" not in lim for lim in idle["data"]["limits"])  # not opened
        used = await _tokens_of(c, chat_body())
        answer = await c.get(MONITOR, headers=RAW_KEY)
        five, weekly = answer.json()["data"]["limits"]
        assert (five["type"], five["unit"], weekly["unit"]) == ("TOKENS_LIMIT", 3, 6)
        assert five["usage"] == 1000 and five["currentValue"] == used
        assert five["remaining"] == 1000 - used
        assert five["nextResetTime"] == int((clock.wall() + 300) * 1000)
        report = parse_monitor(answer.content)
        assert isinstance(report, QuotaReport) and report.level == "max"
        limit = report.window("five_hour")
        assert limit is not None and limit.used_ratio == pytest.approx(used / 1000)
        assert report.window("weekly") is not None


@pytest.mark.parametrize("expect", [None, "sk-upstream"])
@pytest.mark.parametrize("headers", [{}, BEARER, {"Authorization": "wrong-key-000"}])
async def test_monitor_wants_the_raw_key(headers: dict[str, str], expect: str | None) -> None:
    settings = SimulatorSettings(quota_5h_tokens=10, expect_key=expect)
    async with client_for(settings) as c:
        answer = await c.get(MONITOR, headers=headers)
        if expect is None and headers.get("Authorization") == "wrong-key-000":
            assert answer.status_code == 200  # any raw key will do without --expect-key
        else:
            assert answer.status_code == 401 and answer.json()["success"] is False
        assert (await c.get(MONITOR, headers=RAW_KEY)).status_code == 200


async def test_monitor_faults_are_live_settings() -> None:
    delays: list[float] = []
    async with client_for(SimulatorSettings(quota_5h_tokens=10), delays=delays) as c:
        for fault, status in (("error", 503), ("garbage", 200), ("unauthorized", 401)):
            await c.post("/_config", json={"monitor_fault": fault})
            answer = await c.get(MONITOR, headers=RAW_KEY)
            assert answer.status_code == status
            assert not isinstance(parse_monitor(answer.content), QuotaReport)
        await c.post("/_config", json={"monitor_fault": "", "monitor_delay_ms": 50})
        assert (await c.get(MONITOR, headers=RAW_KEY)).status_code == 200
        assert delays == [0.05]  # the answer waited the delay asked for
        bad = await c.post("/_config", json={"monitor_fault": "sometimes"})
        assert bad.status_code == 400
        assert (await c.get("/_stats")).json()["monitor_polls"] == 4


async def test_forced_quota_codes_carry_their_window_reset_and_stats_reset_refills() -> None:
    clock = VirtualTime(1000.0, WALL_AT_ZERO)
    settings = SimulatorSettings(quota_5h_tokens=5, quota_5h_window_s=60,
                                 quota_weekly_window_s=600)
    async with client_for(settings, clock) as c:
        forced = await c.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-429-code": "1310"})
        now = clock.wall()
        throttle = classify_429(forced.content, {}, now)
        assert throttle.cls is ThrottleClass.QUOTA_PERIOD
        assert throttle.reset_at == pytest.approx(now + 600, abs=1e-3)
        await _tokens_of(c, chat_body())
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 429
        await c.post("/_stats/reset")
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200
        await c.post("/_config", json={"quota_5h_tokens": 0})
        for _ in range(3):
            assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200
