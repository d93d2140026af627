"""The GCRA pacer: even spacing, a bounded burst, no catch-up after a late send."""

from __future__ import annotations

import pytest

from zai_proxy.limiter.gcra import Gcra, LocalGate


def test_sends_are_spaced_one_interval_apart() -> None:
    g = Gcra(now=0.0)
    assert g.try_take(10.0, 0.0) == 0.0
    assert g.try_take(10.0, 0.0) == pytest.approx(0.1)
    assert g.try_take(10.0, 0.05) == pytest.approx(0.05)
    assert g.try_take(10.0, 0.1) == 0.0
    # after an idle spell only one leaves at once (burst 1): never two closer than 1/r
    assert g.try_take(10.0, 5.0) == 0.0
    assert g.try_take(10.0, 5.0) == pytest.approx(0.1)


def test_a_late_send_earns_no_short_gap_after_it() -> None:
    g = Gcra(now=0.0)
    g.try_take(10.0, 0.0)
    assert g.try_take(10.0, 0.13) == 0.0  # 30 ms late
    assert g.try_take(10.0, 0.2) == pytest.approx(0.03)  # next one 100 ms after it, not at 0.2


def test_burst_allows_that_many_back_to_back() -> None:
    g = Gcra(now=0.0, burst=3)
    assert [g.try_take(10.0, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert g.try_take(10.0, 0.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Gcra(now=0.0, burst=0.5)


def test_rate_change_keeps_the_promised_slots_at_the_new_spacing() -> None:
    g = Gcra(now=0.0)
    g.try_take(2.0, 0.0)  # next slot due at 0.5 s at 2/s
    assert g.wait_time(20.0, 0.0) == pytest.approx(0.05)  # one slot at 20/s is 50 ms
    assert g.try_take(20.0, 0.05) == 0.0


def test_give_back_returns_a_slot_but_no_credit_for_idle_time() -> None:
    g = Gcra(now=0.0)
    g.try_take(10.0, 0.0)
    g.give_back(10.0, 0.0)
    assert g.try_take(10.0, 0.0) == 0.0
    g.give_back(10.0, 10.0)  # idle since: nothing to give back
    assert g.try_take(10.0, 10.0) == 0.0 and g.try_take(10.0, 10.0) > 0


async def test_local_gate_is_the_gcra() -> None:
    gate = LocalGate(now=0.0)
    assert await gate.take(4.0, 0.0) == 0.0
    assert await gate.take(4.0, 0.0) == pytest.approx(0.25)
    await gate.refund(4.0, 0.0)
    assert await gate.take(4.0, 0.0) == 0.0
