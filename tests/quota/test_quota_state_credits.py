"""QuotaState with credit budgets beside token ones, and the month's tool calls: which binds,
what blocks, what a counted token costs in credits, how pacing reads them."""

from __future__ import annotations

import pytest

from tests.support.quota_windows import NOW, view
from zai_proxy.quota.pacing import even_pacing
from zai_proxy.quota.state import QuotaState
from zai_proxy.zai.codes import window_code
from zai_proxy.zai.monitor_report import Limit, QuotaReport

T0 = 1_767_000_000.0  # epoch seconds


def credits(unit: int = 3, *, used: float, allowance: float = 2000.0,
            reset: float | None = T0 + 3600) -> Limit:
    return Limit(type="CREDIT_LIMIT", unit=unit, usage=allowance, used=used,
                 remaining=allowance - used, reset_at=reset)


def tokens(percentage: float, unit: int = 3, reset: float | None = T0 + 3600) -> Limit:
    return Limit(type="TOKENS_LIMIT", unit=unit, percentage=percentage, reset_at=reset)


def report(*limits: Limit) -> QuotaReport:
    return QuotaReport("lite", limits)


def test_a_spent_credit_window_blocks_under_its_windows_code_though_tokens_are_left() -> None:
    state = QuotaState()
    state.on_report(report(tokens(10), credits(used=2000, reset=T0 + 900)), T0)
    block = state.blocked(T0 + 1)
    assert block is not None and block.window == "five_hour"
    assert block.code == window_code("five_hour") and block.until == T0 + 900
    # Tokens fine, credits still spent: the block holds; credits back: lifted.
    state.on_report(report(tokens(5), credits(used=2000, reset=T0 + 900)), T0 + 10)
    assert state.blocked(T0 + 11) is not None
    state.on_report(report(tokens(5), credits(used=10, reset=T0 + 900)), T0 + 20)
    assert state.blocked(T0 + 21) is None


def test_a_spent_weekly_credit_budget_blocks_the_weekly_window() -> None:
    state = QuotaState()
    state.on_report(report(credits(used=5), credits(6, used=10_000, allowance=10_000,
                                                     reset=T0 + 86_400)), T0)
    block = state.blocked(T0 + 1)
    assert block is not None and (block.window, block.code) == ("weekly", window_code("weekly"))


def test_an_upstream_quota_429_without_a_hint_blocks_until_the_credit_windows_reset() -> None:
    state = QuotaState()
    state.on_report(report(credits(used=100, reset=T0 + 1234)), T0)
    block = state.on_throttle(window_code("five_hour"), None, T0 + 1)
    assert block is not None and block.until == T0 + 1234


def test_tokens_and_credits_of_one_window_are_both_tracked_and_the_most_used_binds() -> None:
    state = QuotaState()
    state.on_report(report(tokens(30), credits(used=1000)), T0)
    both = {v.measure: v.used_ratio for v in state.views(T0) if v.name == "five_hour"}
    assert both == {"tokens": pytest.approx(0.3), "credits": pytest.approx(0.5)}
    assert state.view("five_hour", T0).measure == "credits"
    state.on_report(report(tokens(80), credits(used=1000)), T0 + 10)
    assert state.view("five_hour", T0 + 10).measure == "tokens"


def test_the_cost_of_a_token_in_credits_is_learned_from_polls_not_from_the_allowance() -> None:
    state = QuotaState(burn_window=100.0)
    state.on_report(report(credits(used=0)), T0)
    assert state.view("five_hour", T0, "credits").ratio_per_token is None  # credits: not tokens
    state.tick(T0)
    for second in range(1, 11):  # 100 tokens a second for 10 s
        state.settled(100)
        state.tick(T0 + second)
    state.on_report(report(credits(used=200)), T0 + 10)  # 1000 tokens cost 200 of 2000 credits
    five = state.view("five_hour", T0 + 10, "credits")
    assert five.ratio_per_token == pytest.approx(0.1 / 1000)
    assert five.burn_per_second == pytest.approx(100 * 0.1 / 1000)
    assert five.eta_seconds == pytest.approx(0.9 / 0.01)
    state.settled(500)  # the estimate moves with tokens counted since the poll
    assert state.view("five_hour", T0 + 10, "credits").used_ratio == pytest.approx(0.15)


def test_pacing_binds_on_the_credit_budget_when_it_allows_less() -> None:
    state = QuotaState()
    state.on_report(report(tokens(0), credits(used=0)), T0)
    for second in range(1, 11):
        state.settled(100)
        state.tick(T0 + second)
    # 1000 tokens: 1% of the token budget, 10% of the credit one.
    state.on_report(report(tokens(1), credits(used=200)), T0 + 10)
    state.on_report(report(tokens(6), credits(used=400)), T0 + 20)  # evidence past rounding
    pacing = even_pacing(state.views(T0 + 20), now=T0 + 20, in_flight=0,
                         tokens_per_request=100)
    assert pacing.status == "paced" and (pacing.window, pacing.measure) == (
        "five_hour", "credits")


def test_a_spent_tool_call_month_is_visible_but_blocks_and_paces_nothing() -> None:
    state = QuotaState()
    reset = T0 + 20 * 86400
    state.on_report(report(Limit(type="TIME_LIMIT", unit=5, usage=100, used=50,
                                 reset_at=reset)), T0)
    state.settled(1000)  # tokens went by while the tool calls were spent: no cause of it
    state.on_report(report(Limit(type="TIME_LIMIT", unit=5, usage=100, used=100, remaining=0,
                                 reset_at=reset)), T0 + 10)
    assert state.blocked(T0 + 11) is None
    month = state.view("monthly", T0 + 11)
    assert month.spent and month.measure == "calls" and month.window is None
    assert month.ratio_per_token is None  # tokens do not drive tool calls
    pacing = even_pacing(state.views(T0 + 11), now=T0 + 11, in_flight=0, tokens_per_request=10)
    assert pacing.status == "calibrating"
    # Even a month whose calls had a cost per token would pause nothing.
    spent_month = view("monthly", used=1.0, k=1e-4)
    assert even_pacing([spent_month], now=NOW, in_flight=0,
                       tokens_per_request=10).status == "calibrating"


def test_a_paused_pacing_names_the_unit_of_the_budget_that_paused_it() -> None:
    state = QuotaState()
    state.on_report(report(tokens(0), credits(used=0)), T0)
    for second in range(1, 11):
        state.settled(100)
        state.tick(T0 + second)
    # The credit budget is all but spent (1990 of 2000), the token one at 6 %.
    state.on_report(report(tokens(1), credits(used=200)), T0 + 10)
    state.on_report(report(tokens(6), credits(used=1990)), T0 + 20)
    pacing = even_pacing(state.views(T0 + 20), now=T0 + 20, in_flight=0,
                         tokens_per_request=100)
    assert pacing.status == "paused" and (pacing.window, pacing.measure) == (
        "five_hour", "credits")
