"""The account stop as pure state: when requests are refused, when the one probe goes, what
lifts the stop, what another replica's stop does here, and the key/base mismatch hint."""

from __future__ import annotations

import pytest

from zai_proxy.quota.stop import PROBE, AccountStop, Stopped, mismatch_hint
from zai_proxy.zai.codes import lookup

T0 = 1_767_000_000.0
FAIR_USE, EXPIRED, NO_BALANCE = lookup("1313"), lookup("1309"), lookup("1113")


def test_a_stop_refuses_then_lets_one_probe_through_per_interval_and_an_ok_probe_lifts_it() -> None:
    stop = AccountStop(60.0)
    assert stop.check(T0) is None
    assert stop.on_stop(FAIR_USE, "  Fair use limit reached  ", T0) is True
    refused = stop.check(T0 + 1)
    assert isinstance(refused, Stopped)
    assert (refused.code, refused.status, refused.message, refused.since) == (
        "1313", 429, "Fair use limit reached", T0)
    assert refused.cause == FAIR_USE.cause
    assert stop.retry_after(T0 + 1) == 59.0
    assert isinstance(stop.check(T0 + 59.9), Stopped)
    assert stop.check(T0 + 60) == PROBE
    assert isinstance(stop.check(T0 + 61), Stopped), "one probe in flight: no second one"
    assert isinstance(stop.check(T0 + 500), Stopped), "however long it takes"
    assert stop.probe_ended(T0 + 501, ok=True) is True
    assert stop.stopped is None and stop.check(T0 + 501) is None


def test_a_probe_that_meets_the_stop_again_restarts_the_timer() -> None:
    stop = AccountStop(60.0)
    stop.on_stop(EXPIRED, None, T0)
    assert stop.check(T0 + 60) == PROBE
    assert stop.on_stop(EXPIRED, "still expired", T0 + 62) is False
    assert stop.probe_ended(T0 + 62, ok=False) is False
    stopped = stop.check(T0 + 121)
    assert isinstance(stopped, Stopped) and stopped.since == T0 and stopped.status == 403
    assert stop.retry_after(T0 + 121) == 1.0
    assert stop.check(T0 + 122) == PROBE


def test_a_probe_that_ended_otherwise_keeps_the_stop_and_its_schedule() -> None:
    stop = AccountStop(30.0)
    stop.on_stop(FAIR_USE, None, T0)
    assert stop.check(T0 + 30) == PROBE
    assert stop.probe_ended(T0 + 31, ok=False) is False
    assert isinstance(stop.check(T0 + 59), Stopped)
    assert stop.check(T0 + 60) == PROBE


def test_another_replicas_stop_is_adopted_unless_this_one_lifted_it_later() -> None:
    here = AccountStop(60.0)
    there = Stopped("1313", "fair_use", 429, FAIR_USE.cause, None, T0, "upstream")
    assert here.adopt(there, T0 + 1) is True
    adopted = here.check(T0 + 2)
    assert isinstance(adopted, Stopped) and adopted.source == "shared"
    assert here.check(T0 + 61) == PROBE
    here.probe_ended(T0 + 62, ok=True)
    assert here.adopt(there, T0 + 63) is False, "a stop older than the lift is stale"
    assert here.check(T0 + 63) is None
    assert here.adopt(Stopped("1309", "plan_expired", 403, "", None, T0 + 70, "upstream"),
                      T0 + 71) is True


def test_no_balance_before_any_success_hints_at_the_key_base_mismatch() -> None:
    standard = AccountStop(60.0, key_kind="standard")
    standard.on_stop(NO_BALANCE, None, T0)
    assert standard.hint == mismatch_hint("standard")
    assert standard.hint is not None and standard.hint.startswith(
        "a Coding Plan key on the pay-as-you-go base?")
    coding = AccountStop(60.0, key_kind="coding")
    coding.on_stop(NO_BALANCE, None, T0)
    assert coding.hint is not None and coding.hint.startswith(
        "a pay-as-you-go key on the Coding Plan base?")
    after = AccountStop(60.0, key_kind="standard")
    after.answered_ok()
    after.on_stop(NO_BALANCE, None, T0)
    assert after.hint is None, "a key that worked is no mismatch"
    other = AccountStop(60.0, key_kind="standard")
    other.on_stop(FAIR_USE, None, T0)
    assert other.hint is None
    assert mismatch_hint(None) is None


@pytest.mark.parametrize("message", [None, "", "   "])
def test_a_stop_without_words_from_zai_has_no_message(message: str | None) -> None:
    stop = AccountStop(60.0)
    stop.on_stop(FAIR_USE, message, T0)
    assert stop.stopped is not None and stop.stopped.message is None


def test_zais_message_is_bounded() -> None:
    stop = AccountStop(60.0)
    stop.on_stop(FAIR_USE, "x" * 10_000, T0)
    assert stop.stopped is not None and stop.stopped.message == "x" * 300
