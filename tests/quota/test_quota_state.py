"""QuotaState on a fake clock: when to refuse locally, burn rate and time to exhaustion."""

from __future__ import annotations

import math

import pytest

from zai_proxy.quota.state import MAX_RESET_HORIZON, UNKNOWN_RESET_BLOCK, Block, QuotaState
from zai_proxy.zai.monitor_report import Limit, QuotaReport

T0 = 1_767_000_000.0  # epoch seconds


def report(*limits: Limit, level: str | None = "pro") -> QuotaReport:
    return QuotaReport(level, limits)


def tokens_limit(unit: int = 3, *, used: float, allowance: float = 10_000.0,
                 reset: float | None = T0 + 3600) -> Limit:
    return Limit(type="TOKENS_LIMIT", unit=unit, usage=allowance, used=used,
                 remaining=allowance - used, reset_at=reset)


def percent_limit(percentage: float, reset: float | None = T0 + 3600) -> Limit:
    return Limit(type="TOKENS_LIMIT", unit=3, percentage=percentage, reset_at=reset)


def test_nothing_is_blocked_until_the_upstream_says_so() -> None:
    state = QuotaState()
    assert state.blocked(T0) is None and state.block is None
    block = state.on_throttle("1308", T0 + 120, T0)
    assert block == Block("five_hour", "1308", T0 + 120, T0, "upstream")
    assert state.blocked(T0 + 119.5) is block
    assert block.retry_after(T0 + 100) == 20
    assert state.blocked(T0 + 120) is None and state.block is None  # the reset passed


def test_a_quota_429_without_reset_uses_the_polled_reset_else_a_short_block() -> None:
    state = QuotaState()
    block = state.on_throttle("1310", None, T0)
    assert block is not None and block.until == T0 + UNKNOWN_RESET_BLOCK
    state.on_report(report(tokens_limit(6, used=10_000, reset=T0 + 86_400)), T0 + 1)
    state.blocked(T0 + 100)
    assert state.block is not None and state.block.until == T0 + 86_400  # the poll knows better
    five = QuotaState()
    five.on_report(report(tokens_limit(3, used=10, reset=T0 + 900)), T0)
    block = five.on_throttle("1308", T0 - 5, T0 + 1)  # a hint already past: ignored
    assert block is not None and block.until == T0 + 900
    assert five.on_throttle("1302", None, T0) is None


def test_a_reset_hint_beyond_a_month_is_bounded_from_every_source() -> None:
    """Found by the fuzzer: a 1308 whose reset hint was 1e999 s made the local refusal (and
    its "Your limit will reset at ..." text) overflow into a 500."""
    state = QuotaState()
    block = state.on_throttle("1308", 1e999, T0)
    assert block is not None and block.until == T0 + MAX_RESET_HORIZON
    polled = QuotaState()
    polled.on_report(report(tokens_limit(6, used=10_000, reset=1e300)), T0)
    polled.blocked(T0 + 1)
    assert polled.block is not None and polled.block.until == T0 + MAX_RESET_HORIZON
    shared = QuotaState()
    shared.adopt(Block("weekly", "1310", 1e300, T0, "shared"), T0)
    shared.blocked(T0 + 1)
    assert shared.block is not None and shared.block.until == T0 + MAX_RESET_HORIZON


def test_a_poll_showing_the_budget_spent_blocks_and_a_later_one_with_budget_lifts() -> None:
    state = QuotaState()
    state.on_report(report(tokens_limit(used=10_000, reset=T0 + 600)), T0)
    block = state.blocked(T0 + 1)
    assert block is not None and (block.source, block.code, block.until) == (
        "poll", "1308", T0 + 600)
    state.on_report(report(tokens_limit(used=10_000, reset=T0 + 600)), T0 + 60)
    assert state.blocked(T0 + 61) is block  # still spent: the same block
    state.on_report(report(tokens_limit(used=100, reset=T0 + 600)), T0 + 120)  # e.g. plan upgrade
    assert state.blocked(T0 + 121) is None


def test_a_poll_taken_before_the_429_does_not_lift_its_block() -> None:
    state = QuotaState()
    state.on_throttle("1308", T0 + 600, T0)
    state.on_report(report(tokens_limit(used=9_990, reset=T0 + 600)), T0 - 0.5)  # fetched earlier
    assert state.blocked(T0 + 1) is not None
    state.on_report(report(tokens_limit(used=9_990, reset=T0 + 600)), T0 + 2)
    assert state.blocked(T0 + 3) is None


def test_the_longest_block_answers_and_lifting_one_window_keeps_the_other() -> None:
    state = QuotaState()
    state.on_throttle("1308", T0 + 100, T0)
    state.on_throttle("1310", T0 + 5000, T0 + 1)
    assert state.blocked(T0 + 2) is not None and state.block is not None
    assert state.block.code == "1310"
    state.on_report(report(tokens_limit(3, used=0, reset=T0 + 18_000),
                           tokens_limit(6, used=10_000, reset=T0 + 5000)), T0 + 10)
    block = state.blocked(T0 + 11)
    assert block is not None and block.window == "weekly"
    assert [b.window for b in state.blocks()] == ["weekly"]


def test_shared_blocks_are_adopted_unless_expired_or_shorter() -> None:
    state = QuotaState()
    state.adopt(Block("five_hour", "1308", T0 - 1, T0 - 50, "shared"), T0)
    assert state.blocked(T0) is None
    state.adopt(Block("five_hour", "1308", T0 + 50, T0, "shared"), T0)
    state.adopt(Block("five_hour", "1308", T0 + 20, T0, "shared"), T0)
    assert state.block is not None and state.block.until == T0 + 50
    # A later poll with budget lifts it, and the shared copy seen again is not re-adopted.
    state.on_report(report(tokens_limit(used=10, reset=T0 + 50)), T0 + 1)
    state.adopt(Block("five_hour", "1308", T0 + 50, T0, "shared"), T0 + 2)
    assert state.blocked(T0 + 2) is None
    state.adopt(Block("five_hour", "1308", T0 + 60, T0 + 3, "shared"), T0 + 3)  # a newer 1308
    assert state.blocked(T0 + 3) is not None


def run(state: QuotaState, start: float, seconds: int, tokens_per_second: float) -> float:
    """Settle `tokens_per_second` each second, ticking, from `start`; return the end time."""
    for i in range(1, seconds + 1):
        state.settled(tokens_per_second)
        state.tick(start + i)
    return start + seconds


def test_burn_rate_and_eta_from_own_tokens_and_the_observed_cost_of_a_token() -> None:
    state = QuotaState(burn_window=60)
    state.tick(T0)
    state.on_report(report(tokens_limit(used=0, reset=T0 + 2000)), T0, tokens_at=0)
    now = run(state, T0, 100, 10.0)
    state.on_report(report(tokens_limit(used=1000, reset=T0 + 2000)), now, tokens_at=1000)
    view = state.view("five_hour", now)
    assert view.ratio_per_token == pytest.approx(1 / 10_000)
    assert view.used_ratio == pytest.approx(0.1)
    assert view.burn_per_second == pytest.approx(0.001)  # 10 tokens/s of 10,000
    assert view.eta_seconds == pytest.approx(900)  # 90 % left at 0.1 %/s
    assert view.exhausts_before_reset is True  # at T0 + 1000, before the reset at T0 + 2000
    # Between polls the estimate follows the tokens counted here.
    now = run(state, now, 50, 10.0)
    view = state.view("five_hour", now)
    assert view.used_ratio == pytest.approx(0.15) and view.polled_used_ratio == pytest.approx(0.1)
    assert view.eta_seconds == pytest.approx(850)
    # Demand halves: the burn (over the last 60 s) follows.
    now = run(state, now, 60, 5.0)
    assert state.view("five_hour", now).burn_per_second == pytest.approx(0.0005, rel=0.05)
    # Idle: never runs out.
    now = run(state, now, 61, 0.0)
    idle = state.view("five_hour", now)
    assert idle.eta_seconds == math.inf and idle.exhausts_before_reset is False


def test_a_tokens_budget_gives_the_cost_of_a_token_before_any_observation() -> None:
    state = QuotaState()
    state.on_report(report(tokens_limit(used=0, allowance=4000)), T0)
    assert state.view("five_hour", T0).ratio_per_token == pytest.approx(1 / 4000)
    credits = QuotaState()
    credits.on_report(report(Limit(type="CREDIT_LIMIT", unit=3, usage=50, used=0)), T0)
    assert credits.view("five_hour", T0).ratio_per_token is None  # credits: not tokens


def test_a_percentage_only_budget_learns_from_polls_once_the_evidence_is_enough() -> None:
    state = QuotaState(burn_window=3600)
    state.tick(T0)
    state.on_report(report(percent_limit(10)), T0, tokens_at=0)
    now = run(state, T0, 60, 50.0)
    state.on_report(report(percent_limit(12)), now)
    view = state.view("five_hour", now)
    assert view.ratio_per_token is None  # 2 points of whole percents: mostly rounding
    assert view.burn_per_second == pytest.approx(0.02 / 60)  # the polled slope meanwhile
    now = run(state, now, 120, 50.0)
    state.on_report(report(percent_limit(19)), now)
    view = state.view("five_hour", now)
    assert view.ratio_per_token == pytest.approx(0.09 / 9000)
    assert view.eta_seconds == pytest.approx(0.81 / (view.ratio_per_token * 50.0), rel=0.01)


def test_a_passed_reset_starts_a_fresh_window_and_keeps_what_a_token_costs() -> None:
    state = QuotaState()
    state.on_report(report(tokens_limit(used=9000, reset=T0 + 10)), T0, tokens_at=0)
    state.settled(500.0)
    assert state.view("five_hour", T0 + 5).used_ratio == pytest.approx(0.95)
    state.tick(T0 + 10)
    state.settled(300.0)
    view = state.view("five_hour", T0 + 11)
    assert view.reset_at is None and view.used_ratio == pytest.approx(0.03)
    assert view.ratio_per_token == pytest.approx(1 / 10_000)
    # The new window's first poll: used is lower than before the reset, samples restart.
    state.on_report(report(tokens_limit(used=300, reset=T0 + 3610)), T0 + 12)
    assert state.view("five_hour", T0 + 12).used_ratio == pytest.approx(0.03)


def test_a_window_the_plan_drops_is_forgotten_and_tool_calls_are_tracked_not_blocking() -> None:
    state = QuotaState()
    state.on_report(report(tokens_limit(used=10_000)), T0)
    assert state.blocked(T0) is not None
    mcp = Limit(type="TIME_LIMIT", unit=5, usage=1000, used=1000, reset_at=T0 + 86400)
    state.on_report(report(mcp, level="lite"), T0 + 5)
    assert state.blocked(T0 + 5) is None and state.level == "lite"  # spent calls stop nothing
    calls = state.view("monthly", T0 + 5)
    assert (calls.measure, calls.used_ratio, calls.spent, calls.window) == (
        "calls", 1.0, True, None)
    assert state.view("five_hour", T0 + 5).used_ratio is None


def test_tokens_per_request_is_a_mean_then_a_slow_average() -> None:
    state = QuotaState()
    for tokens in (10, 20, 30):
        state.settled(tokens)
    assert state.tokens_per_request == pytest.approx(20) and state.tokens == 60
    for _ in range(100):
        state.settled(100)
    assert state.tokens_per_request == pytest.approx(100, rel=0.01)
