"""Rate and concurrency controllers, driven window by window on a fake clock."""

from __future__ import annotations

import pytest

from zai_proxy.concurrency_controller import ConcurrencyController
from zai_proxy.rate_controller import Adjustment, Outcome, RateController, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(clock: Clock, **kw: float) -> RateController:
    args: dict[str, float] = {"initial": 10, "minimum": 1, "maximum": 50, "window": 5}
    args.update(kw)
    return RateController(clock=clock, **args)  # type: ignore[arg-type]


def window(ctl: RateController, clock: Clock, ok: int, limited: int = 0, *,
           demand: bool = True) -> list[Adjustment]:
    """One window's outcomes, then the clock moves to the next window's start."""
    for _ in range(ok):
        ctl.record(Outcome.ACCEPTED)
    for _ in range(limited):
        ctl.record(Outcome.RATE_LIMITED)
    if demand:
        ctl.note_demand(5)
    clock.t += ctl.window
    return ctl.tick()


def test_climbs_multiplicatively_without_a_ceiling() -> None:
    clock = Clock()
    ctl = make(clock, initial=4)
    adj = window(ctl, clock, ok=20)
    assert [a.direction for a in adj] == ["increase"]
    assert ctl.rate == 6.0 and ctl.ceiling is None


def test_no_drift_when_idle_or_without_demand() -> None:
    clock = Clock()
    ctl = make(clock)
    assert [a.direction for a in window(ctl, clock, ok=40, demand=False)] == ["hold"]
    clock.t += 100 * ctl.window  # a long quiet period
    assert [a.reason for a in ctl.tick()] == []
    assert ctl.rate == 10 and ctl.ceiling is None


def test_heavy_429_window_measures_the_ceiling() -> None:
    clock = Clock()
    ctl = make(clock, initial=30)
    adj = window(ctl, clock, ok=100, limited=50)  # 20 req/s accepted of 30 sent
    assert adj[0].direction == "decrease"
    assert ctl.ceiling == pytest.approx(20.0)
    assert ctl.rate == pytest.approx(19.6)  # hold margin 2 %, not halved


def test_min_outcomes_boundary_merges_small_windows() -> None:
    clock = Clock()
    ctl = make(clock, initial=2)
    assert window(ctl, clock, ok=19) == []  # 19 < 20: merged into the next window
    adj = window(ctl, clock, ok=1)  # exactly 20 over two windows
    assert [a.direction for a in adj] == ["increase"]


def test_insufficient_evidence_gives_up_after_max_merge() -> None:
    clock = Clock()
    ctl = make(clock, initial=2)
    for _ in range(3):
        assert window(ctl, clock, ok=2) == []
    adj = window(ctl, clock, ok=2)
    assert adj[0].reason == "insufficient evidence" and ctl.rate == 2


def test_many_429s_decide_even_below_min_outcomes() -> None:
    clock = Clock()
    ctl = make(clock, initial=2)
    adj = window(ctl, clock, ok=5, limited=5)
    assert adj[0].direction == "decrease" and ctl.ceiling == pytest.approx(1.0)


def test_one_429_is_tolerated_but_a_persistent_trickle_is_not() -> None:
    clock = Clock()
    ctl = make(clock, initial=20)
    ctl.restore(20.0)
    assert window(ctl, clock, ok=98, limited=1)[0].direction == "hold"
    adj = window(ctl, clock, ok=98, limited=1)  # second window in a row: no dead band
    assert adj[0].direction == "decrease"
    assert ctl.ceiling is not None and ctl.ceiling < 20.0


def test_probe_after_interval_and_clean_probe_raises_ceiling() -> None:
    clock = Clock()
    ctl = make(clock, initial=20, probe_interval=3)
    ctl.restore(20.0)
    for _ in range(2):
        assert window(ctl, clock, ok=98)[0].direction == "hold"
    adj = window(ctl, clock, ok=98)
    assert adj[0].direction == "probe" and ctl.rate == pytest.approx(21.0)
    # first probe window: may be masked by what the upstream banked while we held below it
    adj = window(ctl, clock, ok=105)
    assert adj[0].direction == "probe" and "masked" in adj[0].reason
    adj = window(ctl, clock, ok=105)  # bank spent: this one is real
    assert adj[0].direction == "probe"
    assert ctl.ceiling == pytest.approx(21.0)
    assert ctl.rate == pytest.approx(21.0 * 1.10)  # next step doubled


def test_failed_probe_is_undone_at_once_and_keeps_a_right_estimate() -> None:
    clock = Clock()
    ctl = make(clock, initial=20, probe_interval=1)
    ctl.restore(20.0)
    assert window(ctl, clock, ok=98)[0].direction == "probe"
    adj = window(ctl, clock, ok=100, limited=5)  # 4.8% 429s: what a +5% probe earns by itself
    assert adj[0].direction == "decrease" and adj[0].reason == "probe failed"
    assert ctl.ceiling == pytest.approx(20.0) and ctl.rate == pytest.approx(19.6)


def test_failed_probes_lift_an_estimate_stuck_just_under_the_ceiling() -> None:
    # The upstream accepts 20/s; the estimate says 19.4. A +5% probe (20.4/s) fails by a little,
    # but what it got accepted measures the ceiling: the estimate climbs toward 20, not away
    # (short of it by the headroom an upstream may have banked while the proxy held below).
    clock = Clock()
    ctl = make(clock, initial=19, probe_interval=1)
    ctl.restore(19.4)
    estimates = []
    for _ in range(6):
        window(ctl, clock, ok=int(ctl.rate * 5))  # clean window at the hold: probe next
        window(ctl, clock, ok=100, limited=2)  # the probe window: 20/s accepted, 2% 429s
        estimates.append(ctl.ceiling)
    assert estimates == sorted(estimates) and estimates[0] > 19.4 and estimates[-1] > 19.55


def test_a_clearly_failed_probe_lowers_the_estimate_to_the_measurement() -> None:
    clock = Clock()
    ctl = make(clock, initial=20, probe_interval=1)
    ctl.restore(20.0)
    window(ctl, clock, ok=98)
    window(ctl, clock, ok=75, limited=30)  # 29% 429s: the ceiling fell to ~15/s
    assert ctl.ceiling == pytest.approx(15.0)


def test_bounds_are_respected() -> None:
    clock = Clock()
    ctl = make(clock, initial=40, maximum=50)
    window(ctl, clock, ok=200)
    assert ctl.rate == 50
    assert window(ctl, clock, ok=250)[0].reason == "at maximum"
    low = make(clock, initial=1, minimum=1)
    window(low, clock, ok=0, limited=40)
    assert low.rate == 1 and low.ceiling == 1  # never decays to zero


def test_ceiling_is_never_seeded_at_the_maximum() -> None:
    clock = Clock()
    ctl = make(clock, initial=50, maximum=50)
    window(ctl, clock, ok=250)
    assert ctl.ceiling is None


def test_clock_jump_evaluates_data_window_once() -> None:
    clock = Clock()
    ctl = make(clock, initial=30)
    for _ in range(100):
        ctl.record(Outcome.ACCEPTED)
    for _ in range(50):
        ctl.record(Outcome.RATE_LIMITED)
    clock.t += 7 * ctl.window
    adj = ctl.tick()
    assert len(adj) == 1 and adj[0].direction == "decrease"
    assert ctl.tick() == []


def test_restore_and_reset() -> None:
    clock = Clock()
    ctl = make(clock, minimum=2, maximum=40)
    assert ctl.restore(100.0).direction == "restore"
    assert ctl.ceiling == 40 and ctl.hold == pytest.approx(39.2)
    assert ctl.restore(None).direction == "hold"
    assert ctl.reset().direction == "reset"
    assert ctl.ceiling is None and ctl.rate == 10


def test_token_bucket_starts_nearly_empty_and_paces() -> None:
    bucket = TokenBucket(10.0, now=0.0)
    assert bucket.try_take(0.0) == 0.0
    assert bucket.try_take(0.0) == pytest.approx(0.1)
    assert bucket.try_take(0.1) == 0.0
    taken = sum(1 for _ in range(100) if bucket.try_take(100.0) == 0.0)
    assert taken == 10  # burst capped at one second of rate
    bucket.set_rate(2.0, 100.0)
    assert bucket.try_take(100.0) == pytest.approx(0.5)
    bucket.refund(100.0)
    assert bucket.try_take(100.0) == 0.0


def test_concurrency_learns_from_1302_and_ignores_stale_answers() -> None:
    clock = Clock()
    conc = ConcurrencyController(clock=clock, max_workers=20, window=5)
    gens = [conc.admitted(k) for k in range(1, 10)]
    adj = conc.record_limited(9, gens[-1])  # the 9th in flight was refused
    assert adj[0].direction == "decrease" and conc.limit == 8 and conc.ceiling == 8
    assert conc.record_limited(8, gens[-2]) == []  # admitted before the decrease
    assert conc.limit == 8


def test_concurrency_probes_only_with_unmet_demand_and_undoes() -> None:
    clock = Clock()
    conc = ConcurrencyController(clock=clock, max_workers=20, window=5, probe_interval=2)
    conc.restore(8)
    for _ in range(2):
        conc.admitted(8)
        conc.note_demand(3)
        clock.t += 5
    adj = conc.tick()
    assert adj and adj[0].direction == "probe" and conc.limit == 9
    gen = conc.admitted(9)
    assert conc.record_limited(9, gen)[0].direction == "decrease"
    assert conc.limit == 8
    clock.t += 50  # idle: nothing moves
    assert conc.tick() == [] and conc.limit == 8


def test_concurrency_clean_probe_raises_ceiling_and_is_capped() -> None:
    clock = Clock()
    conc = ConcurrencyController(clock=clock, max_workers=9, window=5, probe_interval=1)
    conc.restore(8)
    conc.admitted(8)
    conc.note_demand(1)
    clock.t += 5
    conc.tick()
    assert conc.limit == 9
    conc.admitted(9)
    conc.note_demand(1)
    clock.t += 5
    assert conc.tick() == []  # at max_workers: no further probe
    assert conc.ceiling == 9 and conc.limit == 9
    assert conc.reset().direction == "reset" and conc.ceiling is None
