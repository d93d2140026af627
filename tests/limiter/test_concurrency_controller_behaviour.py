"""ConcurrencyController behaviour: which Adjustment each event emits, generations, probes.

Time is a plain settable clock; a window is `WINDOW` seconds. No sleeping, no sockets.
"""

from __future__ import annotations

import itertools

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.evidence import Adjustment

WINDOW = 10.0


def make(max_workers: int = 8,
         probe_interval: int = 3) -> tuple[ConcurrencyController, VirtualTime]:
    clock = VirtualTime(100.0)
    return ConcurrencyController(clock=clock, max_workers=max_workers, window=WINDOW,
                                 probe_interval=probe_interval), clock


def window(ctl: ConcurrencyController, clock: VirtualTime, *, peak: int | None = None,
           waiting: int = 1) -> list[Adjustment]:
    """One window in which admissions reached `peak` in flight (default: the limit) while
    `waiting` requests waited for a slot; returns what the window's end decided."""
    ctl.note_demand(waiting)
    if peak is None:
        peak = ctl.limit
    if peak:
        ctl.admitted(peak)
    clock.t += WINDOW
    return ctl.tick()


def windows_until_probe(ctl: ConcurrencyController, clock: VirtualTime, limit: int = 10) -> int:
    for n in range(1, limit + 1):
        if window(ctl, clock):
            return n
    return 0


def test_an_invalid_max_workers_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"^max_workers must be >= 1$"):
        ConcurrencyController(clock=VirtualTime(100.0), max_workers=0)


def test_a_1302_sets_the_limit_below_the_admission_and_names_it() -> None:
    ctl, _ = make()
    generation = ctl.admitted(6)
    out = ctl.record_limited(6, generation)
    assert out == [Adjustment("decrease", "1302 concurrency limit", 5.0, 5.0)]
    assert (ctl.limit, ctl.ceiling) == (5, 5)


def test_a_burst_of_1302s_from_one_generation_shrinks_the_limit_once() -> None:
    ctl, _ = make()
    generations = [ctl.admitted(n) for n in (4, 5, 6, 7)]
    assert ctl.record_limited(7, generations[3])  # the first 1302 decides
    # The others were admitted under the old limit: they change nothing.
    for in_flight, generation in zip((4, 5, 6), generations[:3], strict=True):
        assert ctl.record_limited(in_flight, generation) == []
    assert (ctl.limit, ctl.ceiling) == (6, 6)
    # A request admitted after the decrease is of the new generation and does count.
    fresh = ctl.admitted(4)
    assert fresh != generations[0]
    assert ctl.record_limited(4, fresh) == [
        Adjustment("decrease", "1302 concurrency limit", 3.0, 3.0)]
    assert ctl.limit == 3


def test_every_decision_starts_a_new_generation() -> None:
    ctl, _ = make()
    ctl.restore(7)
    seen = [ctl.admitted(1)]
    ctl.record_limited(5, seen[-1])
    seen.append(ctl.admitted(1))
    ctl.restore(3)
    seen.append(ctl.admitted(1))
    ctl.reset()
    seen.append(ctl.admitted(1))
    # Each is exactly one apart and all differ: a permit of one generation is never
    # mistaken for another's.
    assert [b - a for a, b in itertools.pairwise(seen)] == [1, 1, 1]
    # A stale permit from before the reset does not shrink the limit.
    assert ctl.record_limited(3, seen[-2]) == []
    assert ctl.limit == 8 and ctl.ceiling is None


def test_a_window_with_a_1302_does_not_probe_but_the_next_clean_ones_do() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    generation = ctl.admitted(4)
    ctl.note_demand(3)
    ctl.record_limited(4, generation)  # a current 1302: decided at once, the window is spent
    clock.t += WINDOW
    assert ctl.tick() == []
    assert ctl.limit == 3
    assert window(ctl, clock) == [Adjustment("probe", "slots full, clean window", 4.0, 3.0)]


def test_a_stale_1302_neither_decides_nor_spoils_a_full_window() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    generation = ctl.admitted(4)
    ctl.note_demand(3)
    assert ctl.record_limited(2, generation + 5) == []  # not this generation's: no decision
    clock.t += WINDOW
    assert ctl.tick() == [Adjustment("probe", "slots full, clean window", 5.0, 4.0)]


def test_after_a_1302_the_probe_waits_the_whole_interval_again() -> None:
    ctl, clock = make(probe_interval=3)
    ctl.restore(5)
    assert window(ctl, clock) == []
    assert window(ctl, clock) == []  # two clean windows counted
    ctl.record_limited(5, ctl.admitted(5))
    assert ctl.limit == 4
    clock.t += WINDOW
    ctl.tick()  # the throttled window
    assert windows_until_probe(ctl, clock) == 3


def test_restore_adopts_the_ceiling_and_says_so() -> None:
    ctl, _ = make()
    generation = ctl.generation
    assert ctl.restore(3) == Adjustment("restore", "restored ceiling", 3.0, 3.0)
    assert ctl.generation == generation + 1
    assert ctl.restore(50) == Adjustment("restore", "restored ceiling", 8.0, 8.0)
    assert ctl.restore(0) is None and ctl.restore(None) is None


def test_reset_forgets_the_ceiling_and_says_so() -> None:
    ctl, _ = make()
    ctl.restore(3)
    generation = ctl.generation
    assert ctl.reset() == Adjustment("reset", "reset", 8.0, None)
    assert ctl.generation == generation + 1
    assert (ctl.limit, ctl.ceiling) == (8, None)


def test_reset_in_the_middle_of_a_probe_ends_it() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    assert window(ctl, clock)  # probing at 5
    ctl.reset()
    # A full window at max_workers after the reset proves nothing about a ceiling.
    window(ctl, clock)
    assert ctl.ceiling is None and ctl.limit == 8


def test_reset_starts_the_probe_count_afresh() -> None:
    ctl, clock = make(probe_interval=3)
    ctl.restore(4)
    assert window(ctl, clock) == []
    assert window(ctl, clock) == []  # two clean windows counted
    ctl.reset()
    ctl.restore(4)
    assert windows_until_probe(ctl, clock) == 3


def test_probes_emit_the_new_limit_and_the_known_ceiling() -> None:
    ctl, clock = make(probe_interval=2)
    ctl.restore(4)
    assert window(ctl, clock) == []
    assert window(ctl, clock) == [Adjustment("probe", "slots full, clean window", 5.0, 4.0)]
    # The probe filled the new limit without a 1302: the ceiling rises, the next probe follows.
    assert window(ctl, clock) == [Adjustment("probe", "slots full, clean window", 6.0, 5.0)]
    assert ctl.ceiling == 5


def test_no_probe_without_demand_or_without_full_slots() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    for _ in range(4):
        assert window(ctl, clock, waiting=0) == []  # slots full, nobody waiting
        assert window(ctl, clock, peak=3) == []  # waiting, but slots were not full
    assert ctl.limit == 4


def test_a_window_with_demand_but_no_admission_does_not_count_as_full() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(1)
    for _ in range(3):
        assert window(ctl, clock, peak=0) == []
    assert ctl.limit == 1


def test_the_first_window_has_no_demand_until_some_is_noted() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    ctl.admitted(4)
    clock.t += WINDOW
    assert ctl.tick() == []


def test_a_full_window_without_a_probe_does_not_raise_the_ceiling() -> None:
    ctl, clock = make(probe_interval=5)
    window(ctl, clock, peak=8)
    window(ctl, clock, peak=8)
    assert ctl.ceiling is None
    ctl.restore(4)
    window(ctl, clock, peak=4)
    window(ctl, clock, peak=4, waiting=0)
    assert ctl.ceiling == 4 and ctl.limit == 4


def test_an_inconclusive_probe_goes_back_to_the_ceiling() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    assert window(ctl, clock)  # probing at 5
    assert window(ctl, clock, peak=3) == []  # the probe never filled 5 slots
    assert (ctl.limit, ctl.ceiling) == (4, 4)
    # The peak of that window does not leak into the next one.
    assert window(ctl, clock, peak=3, waiting=0) == []
    assert ctl.limit == 4


def test_the_peak_is_per_window() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    window(ctl, clock, peak=4, waiting=0)  # full but nobody waiting
    assert window(ctl, clock, peak=0) == []  # waiting, but nothing was admitted this window
    assert ctl.limit == 4


def test_after_an_inconclusive_probe_the_interval_counts_from_zero() -> None:
    ctl, clock = make(probe_interval=3)
    ctl.restore(4)
    assert windows_until_probe(ctl, clock) == 3
    window(ctl, clock, peak=2, waiting=0)  # inconclusive: back to 4
    assert ctl.limit == 4
    assert windows_until_probe(ctl, clock) == 3


def test_demand_of_zero_waiting_is_no_demand() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    for _ in range(3):
        ctl.note_demand(0)
        ctl.admitted(4)
        clock.t += WINDOW
        assert ctl.tick() == []
    assert ctl.limit == 4


def test_a_1302_window_is_forgotten_once_it_ended() -> None:
    ctl, clock = make(probe_interval=1)
    ctl.restore(4)
    ctl.record_limited(9, -1)  # stale: only marks the window throttled
    clock.t += WINDOW
    ctl.tick()
    assert window(ctl, clock) == [Adjustment("probe", "slots full, clean window", 5.0, 4.0)]


def test_a_stale_1302_during_a_probe_does_not_leave_the_limit_raised() -> None:
    """A 1302 for a request admitted under an older limit is already accounted for: it neither
    decides nor hides the probe window's verdict (an inconclusive probe goes back to the
    ceiling; a probe that filled its slots raises the ceiling)."""
    ctl, clock = make(max_workers=8, probe_interval=1)
    old = ctl.admitted(6)  # a request admitted before the ceiling was restored
    ctl.restore(4)
    assert window(ctl, clock) == [Adjustment("probe", "slots full, clean window", 5.0, 4.0)]
    ctl.note_demand(1)
    ctl.admitted(4)  # the probe's slots are not filled...
    assert ctl.record_limited(6, old) == []  # ...and a stale 1302 arrives meanwhile
    clock.t += WINDOW
    ctl.tick()
    assert (ctl.limit, ctl.ceiling) == (4, 4), "an inconclusive probe goes back to the ceiling"

    ctl2, clock2 = make(max_workers=8, probe_interval=1)
    stale = ctl2.admitted(6)
    ctl2.restore(4)
    window(ctl2, clock2)  # probe to 5
    ctl2.note_demand(1)
    ctl2.admitted(5)  # the probe filled its slots
    ctl2.record_limited(6, stale)
    clock2.t += WINDOW
    ctl2.tick()
    assert ctl2.ceiling == 5, "a probe that filled its slots raises the ceiling"
