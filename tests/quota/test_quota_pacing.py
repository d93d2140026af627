"""Even pacing: the rate that makes the budget left last until the reset."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.quota_windows import NOW, view
from zai_proxy.quota.pacing import RESERVE_REQUESTS, even_pacing


def test_rate_spends_what_is_left_evenly_until_the_reset() -> None:
    # 10,000-token budget half used: 5,000 left, minus 2 in flight + the reserve, at 50 per request.
    pacing = even_pacing([view()], now=NOW, in_flight=2, tokens_per_request=50)
    left = 5000 - (2 + RESERVE_REQUESTS) * 50
    assert pacing.status == "paced" and pacing.window == "five_hour"
    assert pacing.tokens_left == pytest.approx(left)
    assert pacing.rate == pytest.approx(left / 50 / 1000)


def test_the_window_that_allows_least_binds() -> None:
    weekly = view("weekly", used=0.9, k=1e-5, reset=NOW + 100_000)  # 10,000 tokens over a day+
    pacing = even_pacing([view(), weekly], now=NOW, in_flight=0, tokens_per_request=50)
    assert pacing.window == "weekly"
    assert pacing.rate == pytest.approx((10_000 - 100) / 50 / 100_000)


def test_a_budget_within_the_reserve_pauses_until_its_reset() -> None:
    nearly = view(used=1 - 1e-4 * 140)  # 140 tokens left: less than in flight + reserve
    pacing = even_pacing([nearly, view("weekly", reset=NOW + 9000)], now=NOW, in_flight=1,
                         tokens_per_request=50)
    assert pacing.status == "paused" and pacing.paused_until == NOW + 1000
    assert pacing.rate == 0.0 and pacing.window == "five_hour"
    over = even_pacing([view(used=1.2)], now=NOW, in_flight=0, tokens_per_request=50)
    assert over.status == "paused" and over.tokens_left == 0


def test_nothing_to_pace_by_is_calibrating() -> None:
    for views, tokens in (([view()], None), ([view()], 0.0), ([view(k=None)], 50.0),
                          ([view(used=None)], 50.0), ([view(reset=None)], 50.0),
                          ([view(reset=NOW - 1)], 50.0), ([], 50.0)):
        pacing = even_pacing(views, now=NOW, in_flight=0, tokens_per_request=tokens)
        assert (pacing.status, pacing.rate) == ("calibrating", None)


def test_a_reset_a_moment_away_does_not_ask_for_an_unbounded_rate() -> None:
    soon = dataclasses.replace(view(), reset_at=NOW + 0.01)
    pacing = even_pacing([soon], now=NOW, in_flight=0, tokens_per_request=50)
    assert pacing.rate == pytest.approx((5000 - 100) / 50)  # spread over at least 1 s
