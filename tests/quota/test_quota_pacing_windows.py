"""Even pacing with both windows in play, and the account-level counts it paces by (pure)."""

from __future__ import annotations

import pytest

from tests.support.quota_windows import NOW, view
from zai_proxy.quota.pacing import even_pacing
from zai_proxy.quota.state import QuotaState


@pytest.mark.parametrize("weekly_first", [False, True])
def test_with_both_windows_reserved_pacing_pauses_until_the_later_reset(
        weekly_first: bool) -> None:
    five = view("five_hour", used=1 - 1e-4 * 50, reset=NOW + 1000)  # 50 tokens: in the reserve
    weekly = view("weekly", used=1 - 1e-5 * 50, k=1e-5, reset=NOW + 90_000)
    views = [weekly, five] if weekly_first else [five, weekly]
    pacing = even_pacing(views, now=NOW, in_flight=0, tokens_per_request=50)
    # Paced requests may go again only once both have reset: the weekly one, later.
    assert pacing.status == "paused"
    assert (pacing.window, pacing.paused_until) == ("weekly", NOW + 90_000)


def test_scaled_tokens_count_for_the_account_and_the_cost_per_request_stays_per_request() -> None:
    state = QuotaState()
    for tokens in (10, 20, 30):
        state.settled(tokens, scale=4.0)  # one of four replicas, no shared counts
    assert state.tokens == 4 * 60  # the account's tokens: every replica's
    assert state.tokens_per_request == pytest.approx(20)  # what one request costs
