"""Congestion backoff on virtual time: a 1312 storm slows the gate, boundedly, then recovers."""

from __future__ import annotations

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.limiter.congestion import Congestion


def test_one_1312_is_not_a_storm() -> None:
    clock = VirtualTime(start=100.0)
    c = Congestion(clock=clock)
    c.congested()
    assert c.factor() == 1.0 and c.cuts == 0


def test_a_storm_halves_at_most_once_a_second_down_to_the_minimum() -> None:
    clock = VirtualTime(start=100.0)
    c = Congestion(clock=clock, minimum=0.25)
    factors = []
    for _ in range(5):  # 10 1312s a second for 5 s
        for _ in range(10):
            c.congested()
            clock.jump(0.1)
        factors.append(c.factor())
    assert factors == [0.5, 0.25, 0.25, 0.25, 0.25]  # bounded: never below the minimum
    assert c.cuts == 2


def test_recovers_linearly_after_a_quiet_spell() -> None:
    clock = VirtualTime(start=100.0)
    c = Congestion(clock=clock, quiet=2.0, recovery=5.0)
    c.congested()
    c.congested()
    assert c.factor() == 0.5
    clock.jump(2.0)
    assert c.factor() == 0.5  # still within the quiet spell
    clock.jump(2.5)
    assert c.factor() == pytest.approx(0.75)
    clock.jump(10)
    assert c.factor() == 1.0
