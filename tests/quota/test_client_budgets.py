"""Per-client budgets, pure: a client past its share of a window's budget is refused until the
reset while the others go on; periods end at the reset; a window without a known cost per token
refuses no one; the roster's shares are read at every check; even pacing keeps a client on its
share's even line; the counts shared between replicas are merged with what was counted since."""

from __future__ import annotations

import pytest

from zai_proxy.quota.client_budgets import (
    PACING_AHEAD_SECONDS,
    WINDOW_SECONDS,
    ClientBudgets,
    WindowFacts,
)

NOW = 1_767_000_000.0
K = 1e-4  # one token is 1/10,000 of the budget
RESET = NOW + 3600


def budgets(shares: dict[str, tuple[float | None, float | None]], *, k: float | None = K,
            reset: float | None = RESET, weekly: WindowFacts | None = None) -> ClientBudgets:
    found = ClientBudgets(lambda name: shares.get(name, (None, None)), now=NOW)
    found.observe({"five_hour": WindowFacts(reset, k),
                   "weekly": weekly or WindowFacts(None, None)}, NOW)
    return found


def test_a_client_at_its_share_is_refused_until_the_reset_and_the_others_go_on() -> None:
    b = budgets({"ci": (0.2, None), "batch": (0.5, None)})
    b.settled("ci", 1999)
    b.settled("batch", 1000)
    b.settled("agents", 50_000)  # no share: never refused, however much it spends
    assert b.check("ci", NOW + 10) is None, "19.99 % of the budget: under its 20 %"
    b.settled("ci", 1)
    refused = b.check("ci", NOW + 10)
    assert refused is not None and refused.window == "five_hour" and not refused.paced
    assert refused.share == 0.2 and refused.used == pytest.approx(0.2)
    assert refused.retry_after == pytest.approx(3590) and refused.reset_at == RESET
    assert b.check("batch", NOW + 10) is None and b.check("agents", NOW + 10) is None
    assert b.used("ci", "five_hour") == pytest.approx(0.2)


def test_the_period_ends_at_the_reset_and_the_counts_start_over() -> None:
    b = budgets({"ci": (0.2, None)})
    b.settled("ci", 5000)
    assert b.check("ci", RESET - 1) is not None
    assert b.check("ci", RESET) is None, "the reset passed, even before a tick says so"
    assert b.used("ci", "five_hour") == 0.0 and b.periods["five_hour"].since == RESET
    b.observe({"five_hour": WindowFacts(RESET + 18_000, K)}, RESET + 5)
    assert b.periods["five_hour"].reset_at == RESET + 18_000, "the next reset names the period"
    b.settled("ci", 2000)
    refused = b.check("ci", RESET + 10)
    assert refused is not None and refused.retry_after == pytest.approx(18_000 - 10)


def test_a_reset_first_polled_keeps_the_counts_a_moved_one_starts_a_new_period() -> None:
    b = budgets({"ci": (0.2, None)}, reset=None)
    b.settled("ci", 2500)
    b.observe({"five_hour": WindowFacts(RESET, K)}, NOW + 1)
    assert b.check("ci", NOW + 1) is not None, "counted before the reset was known: same period"
    b.observe({"five_hour": WindowFacts(RESET + 30, K)}, NOW + 2)  # jitter: the same period
    assert b.check("ci", NOW + 2) is not None
    b.observe({"five_hour": WindowFacts(RESET + 7200, K)}, NOW + 3)
    assert b.check("ci", NOW + 3) is None, "the monitor moved the reset: a new period"


def test_a_window_without_a_cost_per_token_is_calibrating_and_refuses_no_one() -> None:
    b = budgets({"ci": (0.2, None)}, k=None)
    b.settled("ci", 1_000_000)
    assert b.check("ci", NOW) is None and b.used("ci", "five_hour") is None
    assert b.health(NOW)["windows"]["five_hour"]["status"] == "calibrating"  # type: ignore[index]
    b.observe({"five_hour": WindowFacts(RESET, 2e-6)}, NOW + 1)  # credits: learned from polls
    refused = b.check("ci", NOW + 1)
    assert refused is not None and refused.used == pytest.approx(2.0)


def test_a_changed_share_takes_effect_at_the_next_check() -> None:
    shares: dict[str, tuple[float | None, float | None]] = {"ci": (0.5, None)}
    b = budgets(shares)
    b.settled("ci", 3000)
    assert b.check("ci", NOW) is None
    shares["ci"] = (0.25, None)  # the clients file reloaded
    assert b.check("ci", NOW) is not None
    del shares["ci"]  # its share removed
    assert b.check("ci", NOW) is None


def test_tokens_count_scaled_to_the_account_without_shared_counts() -> None:
    b = budgets({"ci": (0.2, None)})
    b.settled("ci", 1000, scale=2)  # RATE_LIMIT_REPLICAS=2: each token here stands for two
    assert b.check("ci", NOW) is not None


def test_of_two_spent_windows_the_refusal_lasting_longest_is_given() -> None:
    weekly = WindowFacts(NOW + 86_400, K)
    b = budgets({"ci": (0.2, 0.1)}, weekly=weekly)
    b.settled("ci", 1000)  # 10 % of the week's budget, 10 % of the five hours'
    refused = b.check("ci", NOW)
    assert refused is not None and refused.window == "weekly"
    assert refused.retry_after == pytest.approx(86_400)
    b.settled("ci", 1000)  # 20 % of the five hours' too: the week still binds longer
    second = b.check("ci", NOW)
    assert second is not None and second.window == "weekly"
    assert b.periods["weekly"].refused == {"ci": 2}


def test_even_pacing_keeps_a_client_on_its_shares_even_line() -> None:
    length = WINDOW_SECONDS["five_hour"]
    reset = NOW + length - 3600  # an hour of the five elapsed: 20 % of the window
    b = budgets({"ci": (0.2, None)}, reset=reset)
    line = 0.2 * (3600 + PACING_AHEAD_SECONDS) / length  # what it may have used by now
    b.settled("ci", line / K - 1)
    assert b.check("ci", NOW, pacing=True) is None
    b.settled("ci", 0.05 / K - line / K + 1)  # 5 % used: ahead of the line
    paced = b.check("ci", NOW, pacing=True)
    assert paced is not None and paced.paced
    # The line reaches 5 % at 0.05 / 0.2 of the window, less the minute it may run ahead.
    assert paced.retry_after == pytest.approx(0.25 * length - PACING_AHEAD_SECONDS - 3600)
    assert b.check("ci", NOW, pacing=False) is None, "not paced: only the share itself caps"
    assert b.check("ci", NOW + paced.retry_after + 1, pacing=True) is None


def test_shared_counts_merge_with_what_was_counted_since_the_flush() -> None:
    b = budgets({"ci": (0.2, None)}, reset=None)
    b.settled("ci", 100)
    assert b.take_unflushed(NOW) == [], "no period name before its reset is polled"
    b.observe({"five_hour": WindowFacts(RESET, K)}, NOW)
    [flush] = b.take_unflushed(NOW)
    assert flush.window == "five_hour" and flush.deltas == {"ci": 100}
    assert flush.ttl == pytest.approx(3600 + 3600)
    b.settled("ci", 50)  # while the flush is on its way
    b.adopt(flush, {"ci": 1900.0, "other": 10.0})  # another replica counted 1800 of ci's
    assert b.periods["five_hour"].tokens == {"ci": 1950.0, "other": 10.0}
    assert b.check("ci", NOW) is None
    b.settled("ci", 50)
    assert b.check("ci", NOW) is not None
    [again] = b.take_unflushed(NOW)
    assert again.deltas == {"ci": 100}
    b.give_back([again])  # Redis did not answer: counted again at the next flush
    assert b.take_unflushed(NOW)[0].deltas == {"ci": 100}


def test_counts_of_a_period_that_ended_are_not_adopted_into_the_next() -> None:
    b = budgets({"ci": (0.2, None)})
    b.settled("ci", 100)
    [flush] = b.take_unflushed(NOW)
    b.observe({"five_hour": WindowFacts(RESET + 18_000, K)}, RESET + 1)
    b.adopt(flush, {"ci": 5000.0})
    b.give_back([flush])
    assert b.used("ci", "five_hour") == 0.0 and b.periods["five_hour"].unflushed == {}


def test_health_lists_each_client_with_a_share_and_its_use() -> None:
    b = budgets({"ci": (0.2, None)})
    b.settled("ci", 1000)
    b.settled("agents", 1000)
    b.check("ci", NOW)
    health = b.health(NOW)
    assert health["clients"] == [{"name": "ci", "window": "five_hour", "share": 0.2,
                                  "used": 0.1, "used_ratio": 0.5, "refused": 0,
                                  "reset_at": RESET}]
    assert health["windows"]["five_hour"] == {  # type: ignore[index]
        "since": NOW, "reset_at": RESET, "status": "enforced", "ratio_per_token": K}
