"""A storm is `storm` 1312s within one `cut_interval`: isolated 1312s, however many over a day,
never slow the gate; the same count within the interval does. Virtual time."""

from __future__ import annotations

from tests.support.clock import VirtualTime
from zai_proxy.limiter.congestion import Congestion

HOUR = 3600.0


def test_isolated_1312s_hours_apart_never_cut_the_factor() -> None:
    vt = VirtualTime()
    c = Congestion(clock=vt, storm=2, cut_interval=1.0)
    for _ in range(24):
        c.congested()
        assert c.factor() == 1.0
        vt.jump(HOUR)
    assert c.cuts == 0


def test_1312s_just_over_an_interval_apart_are_not_a_storm() -> None:
    vt = VirtualTime()
    c = Congestion(clock=vt, storm=2, cut_interval=1.0)
    for _ in range(10):
        c.congested()
        vt.jump(1.5)
    assert c.cuts == 0 and c.factor() == 1.0


def test_the_same_count_within_the_interval_is_a_storm() -> None:
    vt = VirtualTime()
    c = Congestion(clock=vt, storm=2, cut_interval=1.0)
    c.congested()
    vt.jump(HOUR)  # a lone 1312 long ago does not count towards the storm...
    c.congested()
    assert c.cuts == 0 and c.factor() == 1.0
    vt.jump(0.5)
    c.congested()  # ...but two within a second do
    assert c.cuts == 1 and c.factor() == 0.5
