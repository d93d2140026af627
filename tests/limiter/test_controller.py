"""Rate and concurrency controllers on virtual time: one table per rule of the rate policy.

`decide` is the pure policy (a window's counts in, one decision out); `record` / `gate_bound` /
`tick` are how admission feeds it in real time. No test sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.rate_controller import Outcome, RateController, WindowStats

START = 1000.0  # virtual seconds at the start of each test; `jump` moves time (no test sleeps)


def make(clock: VirtualTime | None = None, **kw: float) -> RateController:
    args: dict[str, float] = {"initial": 10, "minimum": 1, "maximum": 100, "window": 5}
    args.update(kw)
    return RateController(clock=clock or VirtualTime(START), **args)  # type: ignore[arg-type]


def stats(ok: int = 0, limited: int = 0, *, rate: float | None = None,
          saturated: float = 5.0, seconds: float = 5.0, congested: int = 0) -> WindowStats:
    """A window in which the gate ran at `rate` (None: the controller's) for `saturated` of
    its `seconds`."""
    s = WindowStats(ok=ok, limited=limited, congested=congested, seconds=seconds,
                    saturated=saturated)
    s.rate_seconds = saturated * rate if rate is not None else -saturated  # filled in `check`
    return s


def fill(ctl: RateController, s: WindowStats) -> WindowStats:
    if s.rate_seconds < 0:
        s.rate_seconds = s.saturated * ctl.rate
    return s


def clean(ctl: RateController, n: int = 1) -> str:
    """`n` clean, fully saturated windows at the current rate; the last decision's direction."""
    direction = ""
    for _ in range(n):
        direction = ctl.decide(stats(int(ctl.rate * 5), rate=ctl.rate)).direction
    return direction


@dataclass
class Expect:
    direction: str
    rate: float
    floor: float | None
    upper: float | None
    reason: str = ""


def check(ctl: RateController, s: WindowStats, want: Expect) -> None:
    got = ctl.decide(fill(ctl, s))
    assert got.direction == want.direction, got
    assert want.reason in got.reason, got
    assert ctl.rate == pytest.approx(want.rate, rel=1e-3), got
    assert ctl.floor == (None if want.floor is None else pytest.approx(want.floor, rel=1e-3))
    assert ctl.upper == (None if want.upper is None else pytest.approx(want.upper, rel=1e-3))


# -- the starting rate is a guess -----------------------------------------------------------


def test_a_first_throttle_brackets_the_ceiling_and_bisects_it() -> None:
    ctl = make(initial=20)
    assert ctl.probing and ctl.ceiling is None  # RATE_LIMIT_INITIAL is tried, not trusted
    steps = [
        # 35% refused at 20/s: 13/s accepted. The ceiling lies between 13 and 20.
        (stats(65, 35, rate=20), Expect("decrease", 12.74, None, 20, "throttled")),
        (stats(63), Expect("probe", 16.37, 12.74, 20, "bisecting")),
        (stats(81), Expect("probe", 18.185, 16.37, 20, "bisecting")),
        # Heavy refusals with *less* accepted than the floor: an upstream without burst,
        # past its cliff. The bound is the probe rate, not the accepted rate.
        (stats(40, 40), Expect("decrease", 16.37, 16.37, 18.185, "failed")),
        # After a failed bisection the next one waits a clean window (then 2, 4 ...).
        (stats(81), Expect("hold", 16.37, 16.37, 18.185, "bisection waits 1")),
        (stats(81), Expect("probe", 17.28, 16.37, 18.185, "bisecting")),
        (stats(86), Expect("probe", 17.73, 17.28, 18.185, "bisecting")),
        (stats(88), Expect("hold", 17.73, 17.73, 18.185, "holding")),  # within 4 %: settled
    ]
    for s, want in steps:
        check(ctl, s, want)


def test_failed_bisections_wait_longer_each_time_and_a_passed_one_resets_the_wait() -> None:
    ctl = make(initial=20, narrow=0.01)
    steps = [
        (stats(65, 35, rate=20), Expect("decrease", 12.74, None, 20, "throttled")),
        (stats(63), Expect("probe", 16.37, 12.74, 20, "bisecting")),
        (stats(40, 40), Expect("decrease", 12.74, 12.74, 16.37, "failed")),
        (stats(63), Expect("hold", 12.74, 12.74, 16.37, "waits 1")),
        (stats(63), Expect("probe", 14.555, 12.74, 16.37, "bisecting")),
        (stats(40, 40), Expect("decrease", 12.74, 12.74, 14.555, "failed")),
        (stats(63), Expect("hold", 12.74, 12.74, 14.555, "waits 2")),
        (stats(63), Expect("hold", 12.74, 12.74, 14.555, "waits 2")),
        (stats(63), Expect("probe", 13.65, 12.74, 14.555, "bisecting")),
        (stats(68), Expect("probe", 14.10, 13.65, 14.555, "bisecting")),  # passed: no wait
    ]
    for s, want in steps:
        check(ctl, s, want)


def test_a_heavy_refusal_with_as_much_accepted_is_a_counting_ceiling() -> None:
    ctl = make()
    ctl.restore(None, 10.0)  # a floor, never throttled: climbing
    check(ctl, stats(50, rate=10), Expect("increase", 15, 10, None, "never throttled"))
    # 20% refused but 12/s accepted (more than the floor): the accepted rate is the ceiling.
    check(ctl, stats(60, 15, rate=15), Expect("decrease", 10, 10, 12, "failed"))
    check(ctl, stats(50, rate=10), Expect("probe", 11, 10, 12, "bisecting"))


def test_the_guess_fails_early_after_a_few_429s() -> None:
    ctl = make(initial=20)
    assert ctl.record(Outcome.ACCEPTED) == []
    assert ctl.record(Outcome.RATE_LIMITED) == []
    [decision] = ctl.record(Outcome.RATE_LIMITED)  # the second 429: no need to wait
    assert decision.direction == "decrease" and "early" in decision.reason
    assert ctl.upper == 20 and ctl.rate < 20 and not ctl.probing


def test_an_idle_start_keeps_the_guess_a_guess() -> None:
    clock = VirtualTime(START)
    ctl = make(clock, initial=20)
    clock.jump(60)
    assert ctl.tick() == [] or ctl.probing
    assert ctl.probing and ctl.rate == 20


# -- climbing while never throttled ---------------------------------------------------------


def test_climbs_multiplicatively_while_never_throttled_and_stops_at_the_maximum() -> None:
    ctl = make(initial=40, maximum=100)
    check(ctl, stats(200, rate=40), Expect("increase", 60, 40, None, "never throttled"))
    check(ctl, stats(300, rate=60), Expect("increase", 90, 60, None))
    check(ctl, stats(450, rate=90), Expect("increase", 100, 90, None))
    check(ctl, stats(500, rate=100), Expect("hold", 100, 100, None, "at maximum"))
    assert ctl.ceiling == 100  # only the floor is known: it is the ceiling estimate


# -- holding at the floor and probing above the ceiling -------------------------------------


def test_probes_only_after_the_interval_of_sustained_windows() -> None:
    ctl = make(probe_interval=3)
    ctl.restore(20.0, 19.6)
    partly = stats(60, rate=19.6, saturated=3.0)  # saturated 60%: proves, but not sustained
    for _ in range(4):
        check(ctl, partly, Expect("hold", 19.6, 19.6, 20, "holding"))
    assert clean(ctl, 2) == "hold"
    # third sustained window: probe max(floor +5%, ceiling +2.5%)
    check(ctl, stats(98, rate=19.6), Expect("probe", 20.58, 19.6, 20, "over the ceiling"))


def test_failed_probes_back_off_the_interval_and_shrink_the_step_with_caps() -> None:
    ctl = make(probe_interval=3, probe_step=0.05, min_probe_step=0.01)
    ctl.restore(20.0, 19.6)
    intervals, targets = [], []
    for _ in range(4):
        windows = 0
        while clean(ctl) != "probe":
            windows += 1
        intervals.append(windows + 1)
        targets.append(round(ctl.rate, 3))
        check(ctl, stats(100, 3, rate=ctl.rate), Expect("decrease", 19.6, 19.6, 20, "failed"))
    assert intervals == [3, 6, 6, 6]  # doubles once: capped at twice RATE_LIMIT_PROBE_INTERVAL
    assert targets == [20.58, 20.25, 20.125, 20.1]  # step 5% -> 2.5% -> 1.25% -> 1% (minimum)


def test_a_clean_probe_disproves_the_ceiling_and_climbing_steps_double() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)
    check(ctl, stats(103), Expect("probe", 22.638, 20.58, None, "ceiling rose"))
    check(ctl, stats(113), Expect("probe", 27.166, 22.638, None, "+20%"))
    check(ctl, stats(135), Expect("probe", 32.6, 27.166, None, "+20%"))  # the step's maximum
    assert ctl.probe_interval_now == 3


def test_a_probe_passes_early_when_saturated_throughout() -> None:
    clock = VirtualTime(START)
    ctl = make(clock)
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)
    assert ctl.probing
    ctl.gate_bound(True)
    clock.jump(1.0)
    decisions = [d for _ in range(20) for d in ctl.record(Outcome.ACCEPTED)]
    assert [d.direction for d in decisions] == ["probe"] and ctl.floor == pytest.approx(20.58)
    ctl.gate_bound(False)
    # not saturated throughout: no early verdict
    clock.jump(1.0)
    assert [d for _ in range(30) for d in ctl.record(Outcome.ACCEPTED)] == []


def test_one_429_in_a_probe_is_background_two_fail_it() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)
    check(ctl, stats(102, 1), Expect("probe", 22.638, 20.58, None, "ceiling rose"))
    check(ctl, stats(110, 2), Expect("decrease", 20.58, 20.58, 22.638, "failed"))


def test_masked_probe_is_repeated_when_the_upstream_may_bank() -> None:
    ctl = make(upstream_burst=1.0)
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)  # 3 windows 0.4/s under the ceiling: up to 6 requests banked
    check(ctl, stats(103), Expect("probe", 20.58, 19.6, 20, "masked"))
    check(ctl, stats(103), Expect("probe", 22.638, 20.58, None, "ceiling rose"))


# -- throttled at the floor -----------------------------------------------------------------


@pytest.mark.parametrize(("windows", "want"), [
    # light once: held; light twice in a row: the floor sits just over the cliff, it becomes
    # the bound and the rate backs off by what was refused
    ([stats(95, 3, rate=19.6)], Expect("hold", 19.6, 19.6, 20, "once")),
    ([stats(95, 3, rate=19.6)] * 2, Expect("decrease", 18.61, None, 19.6, "backing off")),
    # a clean window in between: the count starts again
    ([stats(95, 3, rate=19.6), stats(98, rate=19.6), stats(95, 3, rate=19.6)],
     Expect("hold", 19.6, 19.6, 20, "once")),
    # 3 of 50 is 6 %, but three 429s are not a fallen ceiling: light, held once
    ([stats(47, 3, rate=19.6)], Expect("hold", 19.6, 19.6, 20, "once")),
    # heavy once (the ceiling halved): at once, to the accepted rate
    ([stats(49, 49, rate=19.6)], Expect("decrease", 9.604, None, 9.8, "ceiling fell")),
])
def test_429s_at_the_clean_floor(windows: list[WindowStats], want: Expect) -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    for s in windows[:-1]:
        ctl.decide(s)
    check(ctl, windows[-1], want)


def test_429s_at_a_floor_a_probe_just_raised_overturn_that_probe() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)
    check(ctl, stats(103), Expect("probe", 22.638, 20.58, None, "ceiling rose"))
    check(ctl, stats(110, 2), Expect("decrease", 20.58, 20.58, 22.638, "failed"))
    # the floor 20.58 rests on one clean probe window: 429s at it now mean it was luck
    check(ctl, stats(98, 3), Expect("decrease", 19.6, 19.6, 20.58, "just proven"))
    # (a floor that has stood for a while: test_429s_at_the_clean_floor)


def test_a_fall_is_measured_over_saturated_time_at_the_gate_rate() -> None:
    # 2.5 s idle, then 2.5 s saturated at 30/s with a third refused: 20/s accepted while it
    # mattered. Over the whole window it would read 10/s.
    ctl = make()
    ctl.restore(40.0, 30.0)
    check(ctl, stats(50, 25, rate=30, saturated=2.5), Expect("decrease", 19.6, None, 20))
    # Saturated throughout at 15/s with a third refused: 10/s, what the gate let through and
    # the upstream accepted - not the 20/s that accepted-per-second would read (the counts
    # include answers to sends from before the rate fell).
    ctl = make()
    ctl.restore(40.0, 15.0)
    check(ctl, stats(100, 50, rate=15, saturated=5.0), Expect("decrease", 9.8, None, 10))


def test_a_persistent_trickle_is_not_tolerated() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    trickle = stats(150, 1, rate=19.6)  # 0.7%: within tolerance once
    first, second = ctl.decide(trickle), ctl.decide(trickle)
    assert first.direction == "hold" and "within tolerance" in first.reason
    # two windows of it are two windows of evidence: the floor is just over the cliff
    assert second.direction == "decrease" and "backing off" in second.reason
    assert ctl.upper == 19.6 and ctl.rate < 19.6


def test_a_floor_a_probe_just_raised_is_on_probation() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)
    check(ctl, stats(103), Expect("probe", 22.638, 20.58, None, "ceiling rose"))
    check(ctl, stats(40, saturated=1.0), Expect("hold", 20.58, 20.58, None, "no unmet demand"))
    assert ctl.probe_interval_now == 3
    # two 429s in 100 are below what counts at a floor that stood, not at one on probation
    check(ctl, stats(100, 2), Expect("decrease", 19.6, 19.6, 20.58, "just proven"))
    assert ctl.probe_interval_now == 6  # it was a probe above the ceiling: backed off


def test_a_fall_backs_off_the_probe_interval_fully() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    ctl.decide(stats(49, 49, rate=19.6))
    assert ctl.probe_interval_now == 6


# -- holds: no demand, congestion -----------------------------------------------------------


@pytest.mark.parametrize(("s", "reason"), [
    (stats(40, rate=19.6, saturated=1.0), "no unmet demand"),
    (stats(100, rate=19.6, congested=30), "congestion (1312)"),
    (stats(150, 1, rate=19.6), "within tolerance"),
    (stats(0, rate=19.6, saturated=0.0), "idle"),
])
def test_holds_change_nothing(s: WindowStats, reason: str) -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    check(ctl, s, Expect("hold", 19.6, 19.6, 20, reason))


@pytest.mark.parametrize(("s", "reason"), [
    (stats(40, rate=20.58, saturated=1.0), "no unmet demand"),
    (stats(100, rate=20.58, congested=30), "congestion"),
])
def test_an_inconclusive_probe_goes_back_to_the_floor(s: WindowStats, reason: str) -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    clean(ctl, 3)
    assert ctl.probing
    check(ctl, s, Expect("hold", 19.6, 19.6, 20, reason))
    assert not ctl.probing


def test_1312s_count_as_accepted_and_never_lower_the_rate() -> None:
    clock = VirtualTime(START)
    ctl = make(clock)
    ctl.restore(20.0, 19.6)
    for _ in range(70):
        ctl.record(Outcome.ACCEPTED)
    for _ in range(30):
        ctl.record(Outcome.CONGESTED)
    drained = ctl.drain()
    assert (drained.ok, drained.congested, drained.limited) == (100, 30, 0)
    drained.rate_seconds = drained.saturated = 5.0 * 1
    drained.rate_seconds *= 19.6
    assert ctl.decide(drained).direction == "hold" and ctl.rate == 19.6 and ctl.upper == 20


# -- windows, evidence, saturation ----------------------------------------------------------


def test_saturated_time_spans_windows_at_the_rate_in_force() -> None:
    clock = VirtualTime(START)
    ctl = make(clock, initial=10, min_outcomes=1000)  # thin windows: they merge
    ctl.record(Outcome.ACCEPTED)
    clock.jump(3)
    ctl.gate_bound(True)
    clock.jump(4)  # 2 s in the first window, 2 s in the second
    ctl.record(Outcome.ACCEPTED)
    ctl.gate_bound(False)
    ctl.granted()  # not saturated any more: not counted as a saturated send
    counts = ctl.drain()
    assert counts.saturated == pytest.approx(4.0) and counts.seconds == pytest.approx(7.0)
    assert counts.rate_seconds == pytest.approx(40.0) and counts.sent == 0


def test_min_outcomes_boundary_merges_small_windows() -> None:
    clock = VirtualTime(START)
    ctl = make(clock, initial=2)
    for _ in range(19):
        ctl.record(Outcome.ACCEPTED)
    clock.jump(5)
    assert ctl.tick() == []  # 19 < 20: merged into the next window
    ctl.record(Outcome.ACCEPTED)
    clock.jump(5)
    [decision] = ctl.tick()
    assert decision.evidence is not None and decision.evidence.ok == 20
    assert decision.evidence.seconds == 10


def test_insufficient_evidence_gives_up_after_max_merge() -> None:
    clock = VirtualTime(START)
    ctl = make(clock, initial=2)
    ctl.restore(3.0, 2.0)
    out = []
    for _ in range(4):
        ctl.record(Outcome.ACCEPTED)
        clock.jump(5)
        out += ctl.tick()
    assert [a.reason for a in out] == ["insufficient evidence"] and ctl.rate == 2


def test_clock_jump_evaluates_the_data_window_once() -> None:
    clock = VirtualTime(START)
    ctl = make(clock)
    ctl.restore(20.0, 19.6)
    for _ in range(50):
        ctl.record(Outcome.ACCEPTED)
    for _ in range(50):
        ctl.record(Outcome.RATE_LIMITED)
    clock.jump(7 * ctl.window)
    assert [a.direction for a in ctl.tick()] == ["decrease"]
    assert ctl.tick() == []


def test_every_decision_carries_its_evidence() -> None:
    ctl = make()
    ctl.restore(20.0, 19.6)
    decision = ctl.decide(stats(90, 10, rate=19.6, saturated=4.0))
    ev = decision.evidence
    assert ev is not None and ctl.last is decision and ctl.last_change is decision
    assert ev.as_dict() == {
        "window_seconds": 5.0, "saturated_seconds": 4.0, "saturated_ratio": 0.8,
        "accepted": 90, "throttled": 10, "congested": 0, "other": 0, "throttled_ratio": 0.1,
        "gate_rate": 19.6, "send_rate": None, "measured_rate": 17.64}


# -- restore, adopt, reset, bounds ----------------------------------------------------------


def test_restore_clamps_and_holds_at_the_floor() -> None:
    ctl = make(minimum=2, maximum=40)
    assert ctl.restore(100.0).direction == "restore"
    assert ctl.upper == 40 and ctl.floor == pytest.approx(39.2) and ctl.rate == ctl.floor
    assert ctl.restore(30.0, 35.0).direction == "restore"
    assert ctl.floor == 30.0  # never above the ceiling
    assert ctl.restore(None).direction == "hold"


def test_restore_starts_a_fresh_window() -> None:
    # A cold start at 2/s saw 429s (another proxy of the account was sending) just before the
    # switch carried a ceiling of 20/s: those 429s were earned at another rate and must not
    # be judged against the adopted floor when the window ends.
    clock = VirtualTime(START)
    ctl = make(clock, initial=2)
    ctl.gate_bound(True)
    for _ in range(4):
        ctl.record(Outcome.ACCEPTED)
        ctl.record(Outcome.RATE_LIMITED)
    clock.jump(3)
    ctl.restore(20.0, 19.0)
    clock.jump(2.5)  # the old window would have ended here, with 4 of 8 refused
    assert ctl.tick() == [] and ctl.rate == 19.0
    for _ in range(95):
        ctl.record(Outcome.ACCEPTED)
    clock.jump(2.6)
    [decision] = ctl.tick()
    assert decision.direction == "probe" and ctl.floor == 19.0  # a clean window at the floor
    assert decision.evidence is not None
    assert (decision.evidence.limited, decision.evidence.ok) == (0, 95)


def test_reset_forgets_and_guesses_again() -> None:
    ctl = make(initial=10)
    ctl.restore(20.0, 19.6)
    assert ctl.reset().direction == "reset"
    assert ctl.ceiling is None and ctl.floor is None and ctl.rate == 10 and ctl.probing


def test_adopt_takes_the_leaders_numbers() -> None:
    ctl = make()
    adjustment = ctl.adopt(18.0, 20.0, 18.0)
    assert adjustment is not None and adjustment.direction == "increase"
    assert (ctl.rate, ctl.upper, ctl.floor) == (18.0, 20.0, 18.0) and not ctl.probing
    assert ctl.adopt(18.0, 20.0, 18.0) is None


def test_never_decays_below_the_minimum() -> None:
    ctl = make(initial=1, minimum=1)
    ctl.decide(stats(0, 40, rate=1))
    assert ctl.rate == 1 and ctl.upper == 1


# -- concurrency controller -----------------------------------------------------------------


def test_concurrency_learns_from_1302_and_ignores_stale_answers() -> None:
    clock = VirtualTime(START)
    conc = ConcurrencyController(clock=clock, max_workers=20, window=5)
    gens = [conc.admitted(k) for k in range(1, 10)]
    adj = conc.record_limited(9, gens[-1])  # the 9th in flight was refused
    assert adj[0].direction == "decrease" and conc.limit == 8 and conc.ceiling == 8
    assert conc.record_limited(8, gens[-2]) == []  # admitted before the decrease
    assert conc.limit == 8


def test_concurrency_probes_only_with_unmet_demand_and_undoes() -> None:
    clock = VirtualTime(START)
    conc = ConcurrencyController(clock=clock, max_workers=20, window=5, probe_interval=2)
    conc.restore(8)
    for _ in range(2):
        conc.admitted(8)
        conc.note_demand(3)
        clock.jump(5)
    adj = conc.tick()
    assert adj and adj[0].direction == "probe" and conc.limit == 9
    gen = conc.admitted(9)
    assert conc.record_limited(9, gen)[0].direction == "decrease"
    assert conc.limit == 8
    clock.jump(50)  # idle: nothing moves
    assert conc.tick() == [] and conc.limit == 8


def test_concurrency_clean_probe_raises_ceiling_and_is_capped() -> None:
    clock = VirtualTime(START)
    conc = ConcurrencyController(clock=clock, max_workers=9, window=5, probe_interval=1)
    conc.restore(8)
    conc.admitted(8)
    conc.note_demand(1)
    clock.jump(5)
    conc.tick()
    assert conc.limit == 9
    conc.admitted(9)
    conc.note_demand(1)
    clock.jump(5)
    assert conc.tick() == []  # at max_workers: no further probe
    assert conc.ceiling == 9 and conc.limit == 9
    assert conc.reset().direction == "reset" and conc.ceiling is None
