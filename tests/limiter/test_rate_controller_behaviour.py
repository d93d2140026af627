"""RateController behaviour: which Adjustment (direction, reason, rate, ceiling, floor,
evidence) each decision emits, and what restore / reset / adopt / drain leave behind.

`decide` is fed a window's counts directly; `record` / `gate_bound` / `tick` are driven on a
plain settable clock. No sleeping, no sockets.
"""

from __future__ import annotations

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.limiter.evidence import Adjustment
from zai_proxy.limiter.rate_controller import Outcome, RateController, WindowStats

T0 = 1000.0


def make(clock: VirtualTime | None = None, **kw: float) -> RateController:
    args: dict[str, float] = {"initial": 10, "minimum": 1, "maximum": 100, "window": 5}
    args.update(kw)
    return RateController(clock=clock or VirtualTime(T0), **args)  # type: ignore[arg-type]


def win(ok: int = 0, limited: int = 0, *, rate: float, saturated: float = 5.0,
        seconds: float = 5.0, congested: int = 0, other: int = 0, sent: int = 0) -> WindowStats:
    """A window whose gate ran at `rate` for `saturated` of its `seconds`."""
    return WindowStats(ok=ok, limited=limited, congested=congested, other=other,
                       seconds=seconds, saturated=saturated, rate_seconds=saturated * rate,
                       sent=sent)


def is_(got: Adjustment, direction: str, reason: str, rate: float, ceiling: float | None,
        floor: float | None) -> None:
    assert (got.direction, got.reason) == (direction, reason), got
    assert got.rate == pytest.approx(rate, rel=1e-9), got
    assert got.ceiling == (None if ceiling is None else pytest.approx(ceiling, rel=1e-9)), got
    assert got.floor == (None if floor is None else pytest.approx(floor, rel=1e-9)), got


def settled(**kw: float) -> RateController:
    """A controller holding at a clean floor of 10 under a ceiling of 10.2 (narrow)."""
    ctl = make(**kw)
    ctl.restore(10.2, 10.0)
    return ctl


def clean(ctl: RateController, saturated: float = 5.0) -> Adjustment:
    return ctl.decide(win(int(ctl.rate * 5), rate=ctl.rate, saturated=saturated))


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{"minimum": 0}, {"minimum": 6, "maximum": 5}, {"window": 0},
                                {"window": -1}])
def test_invalid_bounds_are_refused_with_a_clear_message(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"^need 0 < minimum <= maximum and window > 0$"):
        make(**kw)


def test_a_fixed_rate_and_a_short_window_are_valid() -> None:
    ctl = make(minimum=5, maximum=5, initial=5, window=0.5)
    assert ctl.rate == 5 and ctl.window == 0.5


# -- the starting guess ----------------------------------------------------------------------


def test_a_first_throttle_sets_the_bound_and_backs_off_under_what_was_accepted() -> None:
    ctl = make()
    got = ctl.decide(win(65, 35, rate=10))
    is_(got, "decrease", "35.0% throttled", 6.37, 10, None)
    assert got.evidence is not None and got.evidence.limited == 35
    assert ctl.hold == pytest.approx(6.37)


def test_a_first_throttle_unsaturated_is_measured_over_what_was_sent() -> None:
    # 30 outcomes in 5 s: 6/s went out although the gate allowed 10; 40% refused.
    ctl = make()
    got = ctl.decide(win(18, 12, rate=10, saturated=0))
    assert got.evidence is not None and got.evidence.measured is None
    is_(got, "decrease", "40.0% throttled", 6 * 0.6 * 0.98, 10, None)


def test_a_throttle_never_backs_off_above_the_rate_in_force() -> None:
    # The window's gate rate (20) was above the rate now in force (10): the target is the
    # lower of the two backed-off figures.
    ctl = settled()
    ctl.adopt(10, 30, None)
    got = ctl.decide(win(90, 10, rate=20))
    is_(got, "decrease", "10.0% throttled again", 9.8, 18, None)


def test_an_idle_start_keeps_the_guess_and_says_idle() -> None:
    ctl = make()
    got = ctl.decide(win(rate=10, saturated=0))
    is_(got, "hold", "idle", 10, None, None)
    assert got.evidence is not None
    assert ctl.probing


def test_a_window_of_no_length_is_idle() -> None:
    ctl = settled()
    is_(ctl.decide(win(30, rate=10, saturated=0, seconds=0)), "hold", "idle", 10, 10.2, 10)


def test_an_idle_probe_ends_back_at_the_floor() -> None:
    ctl = settled()
    for _ in range(3):
        clean(ctl)
    assert ctl.probing
    got = ctl.decide(win(rate=ctl.rate, saturated=0))
    is_(got, "hold", "probe ended: idle", 10, 10.2, 10)
    assert got.evidence is not None and not ctl.probing


def test_a_single_429_in_the_first_window_is_tolerated() -> None:
    ctl = make()
    got = ctl.decide(win(99, 1, rate=10))
    is_(got, "increase", "clean and saturated, never throttled: x1.5", 15, 10, 10)
    assert got.evidence is not None


def test_after_a_reset_the_controller_climbs_again_from_its_guess() -> None:
    ctl = make()
    ctl.decide(win(65, 35, rate=10))
    got = ctl.reset()
    assert got == Adjustment("reset", "reset", 10.0, None, None)
    assert ctl.probing and ctl.ceiling is None and ctl.hold is None
    is_(ctl.decide(win(50, rate=10)), "increase",
        "clean and saturated, never throttled: x1.5", 15, 10, 10)


# -- the evidence behind a decision ----------------------------------------------------------


def test_evidence_is_the_time_weighted_gate_rate_and_what_it_measured() -> None:
    ctl = settled()
    got = ctl.decide(win(50, rate=10.0, saturated=0.5, sent=7, other=2))
    ev = got.evidence
    assert ev is not None
    assert ev.gate_rate == pytest.approx(10.0) and ev.measured == pytest.approx(10.0)
    assert (ev.sent, ev.other, ev.saturated) == (7, 2, 0.5)
    ctl = settled()
    ev = ctl.decide(win(50, rate=12.5, saturated=4)).evidence
    assert ev is not None and ev.gate_rate == pytest.approx(12.5)


def test_evidence_of_a_window_with_no_outcomes_measures_the_gate_rate() -> None:
    ctl = settled()
    ev = ctl.decide(win(rate=10, saturated=5)).evidence
    assert ev is not None and ev.measured == pytest.approx(10)
    ev = ctl.decide(win(rate=10, saturated=0)).evidence
    assert ev is not None and ev.measured is None


def test_evidence_without_saturation_measures_nothing() -> None:
    ctl = settled()
    ev = ctl.decide(win(50, rate=10, saturated=0)).evidence
    assert ev is not None and ev.measured is None and ev.gate_rate == 10


# -- holds -----------------------------------------------------------------------------------


def test_holds_name_their_reason_and_keep_the_learned_numbers() -> None:
    ctl = settled()
    before = ctl.last_change
    cases = [
        (win(50, rate=10, saturated=1), "no unmet demand"),
        (win(50, rate=10, congested=6), "congestion (1312): nothing learned"),
        (win(199, 1, rate=10), "0.5% throttled, within tolerance"),
    ]
    for s, reason in cases:
        got = ctl.decide(s)
        is_(got, "hold", reason, 10, 10.2, 10)
        assert got.evidence is not None
        assert ctl.last is got
    assert ctl.last_change is before  # a hold is no change


def test_congestion_is_judged_by_its_share_of_the_window() -> None:
    ctl = settled()
    # Exactly 10% of 1312s is not yet congested; 2 of 100 certainly not.
    assert ctl.decide(win(100, rate=10, congested=10)).reason == "holding at the clean floor"
    assert ctl.decide(win(100, rate=10, congested=2)).reason == "holding at the clean floor"
    assert ctl.decide(win(100, rate=10, congested=11)).reason == \
        "congestion (1312): nothing learned"


def test_half_saturated_is_saturated() -> None:
    ctl = settled()
    assert ctl.decide(win(50, rate=10, saturated=2.5)).reason == "holding at the clean floor"


@pytest.mark.parametrize(("s", "reason"), [
    (win(50, rate=10.5, saturated=1), "probe ended: no unmet demand"),
    (win(50, rate=10.5, congested=6), "probe ended: congestion (1312): inconclusive"),
])
def test_an_inconclusive_probe_names_why(s: WindowStats, reason: str) -> None:
    ctl = settled()
    for _ in range(3):
        clean(ctl)
    assert ctl.probing
    got = ctl.decide(s)
    is_(got, "hold", reason, 10, 10.2, 10)
    assert got.evidence is not None


# -- 429s below the threshold ----------------------------------------------------------------


def test_three_429s_at_exactly_the_tolerance_are_tolerated() -> None:
    ctl = settled()
    got = ctl.decide(win(297, 3, rate=10))
    is_(got, "hold", "1.0% throttled, within tolerance", 10, 10.2, 10)
    got = ctl.decide(win(997, 3, rate=10, seconds=5))  # a trickle in a second window
    assert got.direction == "decrease"


def test_many_429s_below_the_tolerance_share_are_tolerated_once() -> None:
    ctl = settled()
    got = ctl.decide(win(996, 4, rate=10))
    is_(got, "hold", "0.4% throttled, within tolerance", 10, 10.2, 10)


def test_after_a_trickle_is_acted_on_the_count_starts_again() -> None:
    ctl = settled()
    ctl.decide(win(199, 1, rate=10))
    got = ctl.decide(win(199, 1, rate=10))
    assert got.direction == "decrease"  # a trickle: two windows in a row
    clean(ctl)
    # The next window with one 429 is the first of a new count: within tolerance.
    ctl.adopt(ctl.rate, ctl.upper, ctl.rate)
    got = ctl.decide(win(199, 1, rate=ctl.rate))
    assert got.reason == "0.5% throttled, within tolerance"


# -- 429s at the clean floor -----------------------------------------------------------------


def test_light_429s_at_the_floor_are_held_once_then_back_off() -> None:
    ctl = settled()
    got = ctl.decide(win(96, 4, rate=10))
    is_(got, "hold", "4.0% throttled at the clean floor (once)", 10, 10.2, 10)
    assert got.evidence is not None
    got = ctl.decide(win(96, 4, rate=10))
    is_(got, "decrease", "a trickle of 429s recurs at the clean floor: backing off",
        10 * 0.96 * 0.98, 10, None)


@pytest.mark.parametrize(("ok", "limited", "heavy"), [
    (95, 5, True),  # 5% and 5 429s (min_outcomes / 4): the ceiling fell
    (96, 5, False),  # five but 4.95%
    (46, 4, False),  # 8% but only four: not yet
    (195, 5, False),  # five but 2.5%
])
def test_heavy_refusals_at_the_floor_need_a_share_and_a_count(ok: int, limited: int,
                                                              heavy: bool) -> None:
    ctl = settled()
    got = ctl.decide(win(ok, limited, rate=10))
    if heavy:
        fraction = limited / (ok + limited)
        is_(got, "decrease", "429s recur at the clean floor: the ceiling fell",
            10 * (1 - fraction) * 0.98, 10 * (1 - fraction), None)
    else:
        assert got.direction == "hold", got


def test_the_heavy_count_rounds_a_quarter_of_min_outcomes_down() -> None:
    ctl = make(min_outcomes=22)
    ctl.restore(10.2, 10.0)
    assert ctl.decide(win(45, 5, rate=10)).reason == \
        "429s recur at the clean floor: the ceiling fell"


def test_a_floor_taken_from_the_leader_starts_with_no_429s_counted() -> None:
    ctl = make()
    ctl.adopt(10, 10.2, 10)
    got = ctl.decide(win(96, 4, rate=10))
    is_(got, "hold", "4.0% throttled at the clean floor (once)", 10, 10.2, 10)


def test_a_rate_above_the_floor_is_not_at_the_floor() -> None:
    ctl = make()
    ctl.adopt(15, 20, 10)
    got = ctl.decide(win(80, 20, rate=15))
    # Measured 12 accepted: the bound; the rate backs off under what was accepted.
    is_(got, "decrease", "20.0% throttled again", 12 * 0.98, 12, None)


def test_after_backing_off_a_new_floor_counts_429s_afresh() -> None:
    ctl = settled()
    ctl.decide(win(96, 4, rate=10))
    ctl.decide(win(96, 4, rate=10))  # backed off
    ctl.adopt(ctl.rate, 10, ctl.rate)  # the leader says this is clean
    assert ctl.decide(win(96, 4, rate=ctl.rate)).direction == "hold"


def test_a_throttle_updates_when_the_ceiling_was_learned() -> None:
    clock = VirtualTime(T0)
    ctl = settled(clock=clock)
    clock.t += 7
    ctl.decide(win(80, 20, rate=10))
    assert ctl.ceiling_updated_at == clock.t


# -- probes ----------------------------------------------------------------------------------


def bracketed(**kw: float) -> RateController:
    """Clean at 10, throttled at 20: the next clean window bisects."""
    ctl = make(**kw)
    ctl.restore(20, 10)
    return ctl


def test_bisection_probe_fails_in_its_window_and_the_next_waits() -> None:
    ctl = bracketed()
    is_(clean(ctl), "probe", "bisecting between clean 10 and throttled 20", 15, 20, 10)
    got = ctl.decide(win(10, 90, rate=15))
    is_(got, "decrease", "probe at 15 failed in its window: 90.0% throttled", 10, 15, 10)
    assert got.evidence is not None
    got = clean(ctl)
    is_(got, "hold", "bisection waits 1 clean windows after a failed one", 10, 15, 10)
    assert got.evidence is not None
    is_(clean(ctl), "probe", "bisecting between clean 10 and throttled 15", 12.5, 15, 10)


def test_a_passed_bisection_resets_the_wait() -> None:
    ctl = bracketed()
    clean(ctl)
    ctl.decide(win(10, 90, rate=15))  # failed: the next waits a window
    clean(ctl)
    assert clean(ctl).rate == 12.5
    ctl.decide(win(60, rate=12.5))  # passed: floor 12.5, bisect 12.5..15 at once
    got = ctl.decide(win(60, rate=12.5))
    assert got.direction == "probe", got


def test_a_heavy_failure_with_as_much_accepted_bounds_at_the_accepted_rate() -> None:
    ctl = bracketed()
    clean(ctl)  # probing 15
    got = ctl.decide(win(67, 13, rate=15))  # 15 x 67/80 = 12.5625 accepted
    is_(got, "decrease", "probe at 15 failed in its window: 16.2% throttled", 10, 12.5625, 10)


def test_a_heavy_failure_bound_is_at_least_a_step_over_the_floor() -> None:
    ctl = bracketed()
    clean(ctl)  # probing 15
    # 15 x 0.67 = 10.05 accepted: the bound is at least 1% over the floor of 10.
    got = ctl.decide(win(67, 33, rate=15))
    assert got.ceiling == pytest.approx(10.1)
    ctl = bracketed()
    clean(ctl)
    # Exactly the floor accepted (12.5 x 0.8): counting, bound at the floor's step.
    ctl2 = make()
    ctl2.restore(20, 10)
    ctl2.decide(win(50, rate=10))  # probe 15
    got = ctl2.decide(win(80, 20, rate=12.5))
    assert got.ceiling == pytest.approx(10.1)


def test_a_probe_barely_over_the_floor_is_bounded_a_minimum_step_above_it() -> None:
    ctl = make(min_probe_step=0.5)
    ctl.restore(20, 10)
    clean(ctl)  # probing 15
    got = ctl.decide(win(10, 90, rate=15))
    assert got.ceiling == pytest.approx(15)
    ctl = make(min_probe_step=0.6)
    ctl.restore(20, 10)
    clean(ctl)
    got = ctl.decide(win(10, 90, rate=15))
    assert got.ceiling == pytest.approx(16)


def test_a_probe_that_fails_early_names_it_and_discounts_the_unseen() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock)
    clean(ctl)  # probing 15
    out: list[Adjustment] = []
    for _ in range(30):
        out += ctl.record(Outcome.ACCEPTED)
    out += ctl.record(Outcome.RATE_LIMITED)
    out += ctl.record(Outcome.RATE_LIMITED)
    assert len(out) == 1
    is_(out[0], "decrease", "probe at 15 failed early: 6.2% throttled", 10, 15, 10)
    assert out[0].evidence is not None and out[0].evidence.limited == 2


def test_an_early_failure_of_the_guess_is_marked_early() -> None:
    ctl = make()
    out = ctl.record(Outcome.RATE_LIMITED) + ctl.record(Outcome.RATE_LIMITED)
    assert len(out) == 1
    # Two 429s of at least min_outcomes: 10% counted, measured at 10 x 0.9 backed off.
    is_(out[0], "decrease", "10.0% throttled (early)", 10 * 0.9 * 0.98, 10, None)


def test_two_429s_at_exactly_the_tolerance_do_not_fail_a_probe_early() -> None:
    ctl = bracketed()
    clean(ctl)
    out = ctl.record(Outcome.RATE_LIMITED)
    for _ in range(198):
        out += ctl.record(Outcome.ACCEPTED)
    out += ctl.record(Outcome.RATE_LIMITED)  # 2 of 200: 1%, not above
    assert out == []
    out = ctl.record(Outcome.RATE_LIMITED)
    assert len(out) == 1 and out[0].direction == "decrease"


def test_two_429s_far_below_the_tolerance_do_not_fail_a_probe_early() -> None:
    ctl = bracketed()
    clean(ctl)
    out = ctl.record(Outcome.RATE_LIMITED)
    for _ in range(300):
        out += ctl.record(Outcome.ACCEPTED)
    out += ctl.record(Outcome.RATE_LIMITED)
    assert out == []


def test_a_probe_passes_early_at_min_outcomes_when_saturated_throughout() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock)
    ctl.gate_bound(True)
    clean(ctl)  # probing 15
    clock.t += 2
    out: list[Adjustment] = []
    for _ in range(19):
        out += ctl.record(Outcome.ACCEPTED)
    assert out == []
    out = ctl.record(Outcome.ACCEPTED)
    assert len(out) == 1 and out[0].direction == "probe", out
    assert out[0].evidence is not None and out[0].evidence.seconds == pytest.approx(2)
    # A new window starts at the early verdict.
    clock.t += 4.9
    assert ctl.tick() == []
    clock.t += 0.1
    assert ctl.tick() != []


def test_a_probe_does_not_pass_early_when_saturated_only_lately() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock)
    clean(ctl)  # probing 15
    clock.t += 4
    ctl.gate_bound(True)
    clock.t += 0.5
    out: list[Adjustment] = []
    for _ in range(40):
        out += ctl.record(Outcome.ACCEPTED)
    assert out == []


def test_a_probe_passes_early_when_saturated_for_exactly_the_sustained_share() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock, sustained=0.5)
    clean(ctl)  # probing 15
    clock.t += 1
    ctl.gate_bound(True)
    clock.t += 1  # saturated 1 of 2 seconds
    out: list[Adjustment] = []
    for _ in range(20):
        out += ctl.record(Outcome.ACCEPTED)
    assert len(out) == 1 and out[0].direction == "probe"


def test_an_early_verdict_counts_the_merged_window_it_ends() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock)
    clean(ctl)  # probing 15
    ctl.record(Outcome.ACCEPTED)
    clock.t += 5  # a thin window: merged into the next
    assert ctl.tick() == []
    clock.t += 1
    out = ctl.record(Outcome.RATE_LIMITED) + ctl.record(Outcome.RATE_LIMITED)
    assert len(out) == 1
    assert out[0].evidence is not None and out[0].evidence.seconds == pytest.approx(6)


def test_every_decision_records_its_time_and_its_evidence() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock)
    clock.t += 3
    clean(ctl)
    clock.t += 3
    got = ctl.decide(win(10, 90, rate=15))
    assert ctl.ceiling_updated_at == clock.t
    assert got.evidence is not None


def test_a_clean_probe_at_exactly_the_bound_disproves_it() -> None:
    ctl = settled()
    for _ in range(3):
        clean(ctl)
    assert ctl.probing
    got = ctl.decide(win(60, rate=10.2))
    is_(got, "probe", "ceiling rose: probe +10%", 10.2 * 1.1, 10.2, 10.2)
    assert ctl.upper is None


def test_a_probe_above_the_ceiling_names_how_far_and_after_how_long() -> None:
    ctl = settled()
    assert clean(ctl).reason == "holding at the clean floor"
    clean(ctl)
    got = clean(ctl)
    is_(got, "probe", "probe +2.9% over the ceiling after 3 clean saturated windows",
        10.5, 10.2, 10)
    assert got.evidence is not None


def test_windows_saturated_exactly_the_sustained_share_count_toward_a_probe() -> None:
    ctl = settled()
    for _ in range(2):
        assert clean(ctl, saturated=4.5).direction == "hold"
    assert clean(ctl, saturated=4.5).direction == "probe"


def test_an_inconclusive_probe_above_the_ceiling_starts_the_count_again() -> None:
    ctl = settled()
    for _ in range(3):
        clean(ctl)
    ctl.decide(win(50, rate=ctl.rate, saturated=1))  # not saturated: probe ended
    assert [clean(ctl).direction for _ in range(3)] == ["hold", "hold", "probe"]


def test_a_failed_probe_above_the_ceiling_doubles_the_interval() -> None:
    ctl = settled(probe_interval=2, max_probe_interval=10)
    clean(ctl)
    assert clean(ctl).direction == "probe"
    ctl.decide(win(10, 90, rate=ctl.rate))
    directions = [clean(ctl).direction for _ in range(4)]
    assert directions == ["hold", "hold", "hold", "probe"], directions
    assert ctl.probe_interval_now == 4


def test_after_a_fall_the_next_probe_waits_the_longest_interval() -> None:
    ctl = settled()
    ctl.decide(win(80, 20, rate=10))  # the ceiling fell to 8; rate 7.84
    # The first clean window proves the new floor and counts: six windows in all.
    directions = [clean(ctl).direction for _ in range(6)]
    assert directions == ["hold"] * 5 + ["probe"], directions


def test_a_clean_probe_after_a_throttle_climbs_by_steps_not_multiplicatively() -> None:
    ctl = make()
    ctl.adopt(10, None, 10)
    ctl.decide(win(80, 20, rate=10))  # the ceiling fell to 8
    clean(ctl)
    for _ in range(6):
        clean(ctl)
    assert ctl.probing
    got = ctl.decide(win(60, rate=ctl.rate))
    assert got.direction == "probe" and got.reason.startswith("ceiling rose"), got


def test_the_rate_goes_back_up_to_a_clean_floor() -> None:
    ctl = make()
    ctl.adopt(5, 20, 10)
    got = ctl.decide(win(30, rate=5))
    is_(got, "increase", "back to the clean floor", 10, 20, 10)
    assert got.evidence is not None


def test_a_clean_window_at_the_floor_does_not_relearn_it() -> None:
    clock = VirtualTime(T0)
    ctl = settled(clock=clock)
    learned = ctl.ceiling_updated_at
    clock.t += 5
    clean(ctl)
    assert ctl.ceiling_updated_at == learned


def test_a_clean_window_well_above_the_floor_raises_it() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.adopt(10, 40, 10)
    clock.t += 5
    got = ctl.decide(win(80, rate=15))
    assert ctl.floor == 15 and ctl.ceiling_updated_at == clock.t
    is_(got, "increase", "back to the clean floor", 15, 40, 15)


def test_a_clean_window_at_or_over_the_bound_disproves_it() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.adopt(10, 12, 10)
    clock.t += 5
    got = ctl.decide(win(80, rate=12))
    assert ctl.upper is None and ctl.floor == 12 and ctl.ceiling_updated_at == clock.t
    assert got.direction == "increase"
    ctl = make()
    ctl.adopt(10, 12, 10)
    ctl.decide(win(80, rate=13))
    assert ctl.upper is None and ctl.floor == 13


def test_at_the_maximum_the_climb_holds() -> None:
    ctl = make(maximum=12)
    ctl.adopt(12, None, 12)
    got = ctl.decide(win(80, rate=12))
    is_(got, "hold", "at maximum", 12, 12, 12)
    assert got.evidence is not None and not ctl.probing


# -- a floor a probe just raised -------------------------------------------------------------


def raised(**kw: float) -> RateController:
    """Clean at 10, a probe above the ceiling passed at 10.455 (floor raised, on probation)."""
    ctl = settled(**kw)
    for _ in range(3):
        clean(ctl)
    ctl.decide(win(60, rate=10.455))
    ctl.adopt(10.455, 11, 10.455)  # hold at the new floor (the leader's numbers)
    return ctl


def test_429s_at_a_floor_just_raised_overturn_it() -> None:
    clock = VirtualTime(T0)
    ctl = raised(clock=clock)
    clock.t += 5
    got = ctl.decide(win(97, 3, rate=10.455))
    is_(got, "decrease", "3.0% throttled at 10.5, just proven: back to the floor before it",
        10, 10.455, 10)
    assert got.evidence is not None and ctl.ceiling_updated_at == clock.t
    # It was a probe above the ceiling: the interval doubles, the step halves.
    assert ctl.probe_interval_now == 6


def test_an_overturned_probe_above_the_ceiling_backs_off_like_a_failed_one() -> None:
    ctl = raised(max_probe_interval=10)
    ctl.decide(win(97, 3, rate=10.455))  # overturned: back to 10 under 10.455
    assert ctl.probe_interval_now == 6
    got = clean(ctl)  # 10..10.455 is wide: bisect
    assert got.rate == pytest.approx(10.2275)
    ctl.decide(win(60, rate=10.2275))  # passed: floor 10.2275, narrow now
    n = 0
    while not ctl.probing and n < 20:
        n += 1
        clean(ctl)
    assert n == 6
    # The step went 5% -> 10% (a passed probe above) -> 5% (overturned).
    assert ctl.rate == pytest.approx(10.2275 * 1.05)


def test_probation_ends_after_its_windows() -> None:
    ctl = raised()
    for _ in range(3):
        ctl.decide(win(60, rate=10.455, saturated=1))  # windows pass, nothing learned
    got = ctl.decide(win(97, 3, rate=10.455))
    assert got.reason == "3.0% throttled at the clean floor (once)", got


def test_a_floor_raised_without_a_probe_is_not_on_probation() -> None:
    ctl = make()
    ctl.adopt(10, 11, 10)
    got = ctl.decide(win(98, 2, rate=10))
    assert got.reason == "2.0% throttled, within tolerance", got


def test_probation_is_judged_like_a_probe() -> None:
    ctl = raised()
    got = ctl.decide(win(98, 2, rate=10.455))  # two 429s fail a probe
    assert got.reason.endswith("just proven: back to the floor before it"), got


# -- tick, merging, draining -----------------------------------------------------------------


def test_three_429s_decide_a_thin_window() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    for _ in range(3):
        ctl.record(Outcome.RATE_LIMITED)
    ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    out = ctl.tick()
    assert len(out) == 1 and out[0].direction == "hold"
    assert out[0].reason == "75.0% throttled at the clean floor (once)"


def test_thin_windows_merge_up_to_max_merge() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    for _ in range(3):
        ctl.record(Outcome.ACCEPTED)
        clock.t += 5
        assert ctl.tick() == []
    ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    assert ctl.tick() == [Adjustment("hold", "insufficient evidence", 10.0, 10.2, 10.0)]
    # Counting starts again after the merged windows were given up.
    for _ in range(3):
        ctl.record(Outcome.ACCEPTED)
        clock.t += 5
        assert ctl.tick() == []


def test_a_jump_of_two_windows_gives_a_thin_window_up() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.record(Outcome.ACCEPTED)
    clock.t += 10
    assert [a.reason for a in ctl.tick()] == ["insufficient evidence"]
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.record(Outcome.ACCEPTED)
    clock.t += 15
    assert [a.reason for a in ctl.tick()] == ["insufficient evidence"]


def test_a_probe_with_thin_evidence_ends_and_says_so() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock, max_merge=1)
    ctl.restore(20, 10)
    clean(ctl)  # probing 15
    ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    out = ctl.tick()
    assert [(a.direction, a.reason, a.rate) for a in out] == \
        [("hold", "probe ended: insufficient evidence", 10.0)]
    assert not ctl.probing


def test_an_idle_window_ends_a_probe_and_starts_a_fresh_count() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(20, 10)
    clean(ctl)  # probing 15
    clock.t += 5
    out = ctl.tick()
    assert [(a.direction, a.reason, a.rate) for a in out] == [("hold", "probe ended: idle", 10)]
    assert not ctl.probing
    clock.t += 5
    assert ctl.tick() == []  # idle and no probe: nothing to say


def test_an_idle_guess_stays_a_guess() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    clock.t += 5
    out = ctl.tick()
    assert [(a.direction, a.reason) for a in out] == [("hold", "idle")]
    assert ctl.probing


def test_other_outcomes_are_counted_but_decide_nothing() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.record(Outcome.OTHER)
    stats = ctl.drain()
    assert (stats.other, stats.ok, stats.limited) == (1, 0, 0)


def test_a_window_of_other_outcomes_is_not_idle() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock, max_merge=1)
    ctl.restore(10.2, 10)
    ctl.record(Outcome.OTHER)
    clock.t += 5
    assert [a.reason for a in ctl.tick()] == ["insufficient evidence"]


def test_drain_hands_over_saturated_time_and_starts_afresh() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.gate_bound(True)
    clock.t += 2
    ctl.record(Outcome.ACCEPTED)
    stats = ctl.drain()
    assert (stats.saturated, stats.rate_seconds, stats.seconds, stats.ok) == (2, 20, 2, 1)
    clock.t += 0.25
    stats = ctl.drain()
    assert (stats.saturated, stats.seconds, stats.ok) == (0.25, 0.25, 0)
    stats = ctl.drain()
    assert stats.seconds == 0


def test_drain_after_a_window_ended_includes_that_window() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.auto_evaluate = False
    ctl.record(Outcome.ACCEPTED)
    clock.t += 6
    stats = ctl.drain()
    assert stats.seconds == pytest.approx(6) and stats.ok == 1


def test_saturated_time_is_counted_at_the_rate_in_force_when_the_rate_changes() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.gate_bound(True)
    clock.t += 2
    ctl.adopt(20, 30, 10)
    clock.t += 2
    stats = ctl.drain()
    assert stats.rate_seconds == pytest.approx(2 * 10 + 2 * 20)


def test_gate_bound_only_reports_changes() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.gate_bound(False)
    assert not ctl.saturated
    ctl.gate_bound(True)
    clock.t += 1
    ctl.gate_bound(True)
    assert ctl.saturated
    clock.t += 1
    assert ctl.drain().saturated == 2


def test_a_window_counts_its_saturated_time_up_to_its_end() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.gate_bound(True)
    for _ in range(50):
        ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    out = ctl.tick()
    assert len(out) == 1 and out[0].evidence is not None
    assert out[0].evidence.saturated == 5 and out[0].reason == "holding at the clean floor"


def test_a_new_probe_fails_on_the_first_429_with_probe_limited_one() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock, probe_limited=1)
    ctl.restore(20, 10)
    ctl.gate_bound(True)
    for _ in range(50):
        ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    out = ctl.record(Outcome.RATE_LIMITED)  # ends the window (a bisection) and fails it
    assert [a.direction for a in out] == ["probe", "decrease"], out


def test_a_new_probe_passes_on_the_first_outcome_with_min_outcomes_one() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock, min_outcomes=1)
    ctl.restore(20, 10)
    ctl.gate_bound(True)
    ctl.record(Outcome.ACCEPTED)
    clock.t += 5.5
    out = ctl.record(Outcome.ACCEPTED)
    assert [a.direction for a in out] == ["probe", "probe"], out


def test_a_probe_counts_each_outcome_once() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(20, 10)
    ctl.gate_bound(True)
    clean(ctl)  # probing 15
    clock.t += 1
    out: list[Adjustment] = []
    for _ in range(10):
        out += ctl.record(Outcome.ACCEPTED)
    assert out == []


# -- from outside ----------------------------------------------------------------------------


def test_restore_holds_at_the_floor_and_names_it() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    clock.t += 1
    got = ctl.restore(20, 12)
    assert got == Adjustment("restore", "restored ceiling", 12.0, 20.0, 12.0)
    assert not ctl.probing and ctl.ceiling_updated_at == clock.t


@pytest.mark.parametrize(("ceiling", "floor", "want"), [
    (0, 12, (12.0, 12.0, None)),  # no ceiling: the floor alone
    (-1, 12, (12.0, 12.0, None)),
    (0.5, None, (1.0, 1.0, 1.0)),  # a ceiling under the minimum is clamped
    (20, 0, (19.6, 19.6, 20.0)),  # no floor: a margin under the ceiling
    (20, 0.5, (1.0, 1.0, 20.0)),
])
def test_restore_ignores_non_positive_numbers(ceiling: float, floor: float | None,
                                              want: tuple[float, float, float | None]) -> None:
    ctl = make()
    ctl.restore(ceiling, floor)
    assert (ctl.rate, ctl.floor, ctl.upper) == pytest.approx(want)


def test_restore_of_nothing_holds() -> None:
    ctl = make()
    got = ctl.restore(None, None)
    assert got == Adjustment("hold", "nothing to restore", 10.0, None, None)
    assert ctl.restore(0, 0).reason == "nothing to restore"


def test_restore_forgets_probation_and_counts() -> None:
    ctl = raised()
    ctl.decide(win(199, 1, rate=ctl.rate))  # one tolerated 429
    ctl.restore(10.455 * 1.02, 10.455)
    # A single light window now is the first at a clean floor: held once.
    got = ctl.decide(win(97, 3, rate=10.455))
    assert got.reason == "3.0% throttled at the clean floor (once)", got


def test_restore_resets_the_probe_interval_and_bisection_wait() -> None:
    ctl = bracketed()
    clean(ctl)
    ctl.decide(win(10, 90, rate=15))  # a failed bisection: the next waits
    ctl.restore(20, 10)
    assert clean(ctl).direction == "probe"
    ctl = settled(probe_interval=2, max_probe_interval=10)
    clean(ctl)
    clean(ctl)
    ctl.decide(win(10, 90, rate=ctl.rate))  # failed above: interval 4
    ctl.restore(10.2, 10)
    assert ctl.probe_interval_now == 2
    assert [clean(ctl).direction for _ in range(2)] == ["hold", "probe"]


def test_restore_starts_a_fresh_saturated_window() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.gate_bound(True)
    clock.t += 2
    ctl.restore(20, 12)
    clock.t += 1
    stats = ctl.drain()
    assert (stats.saturated, stats.rate_seconds, stats.seconds) == (1, 12, 1)
    clock.t += 1
    ctl.gate_bound(False)
    ctl.restore(20, 12)
    clock.t += 1
    assert ctl.drain().saturated == 0


def test_reset_forgets_counts_and_probation() -> None:
    clock = VirtualTime(T0)
    ctl = raised(clock=clock)
    ctl.record(Outcome.RATE_LIMITED)
    ctl.decide(win(199, 1, rate=ctl.rate))
    got = ctl.reset()
    assert got == Adjustment("reset", "reset", 10.0, None, None)
    assert ctl.drain().limited == 0
    assert ctl.probe_interval_now == 3


def test_reset_forgets_the_tolerated_trickle() -> None:
    ctl = settled()
    ctl.decide(win(199, 1, rate=10))
    ctl.reset()
    ctl.adopt(10, 10.2, 10)
    assert ctl.decide(win(199, 1, rate=10)).reason == "0.5% throttled, within tolerance"


def test_reset_forgets_the_count_toward_a_probe() -> None:
    ctl = settled()
    clean(ctl)
    clean(ctl)
    ctl.reset()
    ctl.adopt(10, 10.2, 10)
    assert [clean(ctl).direction for _ in range(3)] == ["hold", "hold", "probe"]


def test_reset_forgets_the_429s_at_the_floor() -> None:
    ctl = settled()
    ctl.decide(win(96, 4, rate=10))  # once
    ctl.reset()
    ctl.adopt(10, 10.2, 10)
    assert ctl.decide(win(96, 4, rate=10)).direction == "hold"


def test_reset_forgets_the_bisection_wait_and_the_interval() -> None:
    ctl = bracketed()
    clean(ctl)
    ctl.decide(win(10, 90, rate=15))  # failed: waits
    ctl.reset()
    ctl.adopt(10, 20, 10)
    assert clean(ctl).direction == "probe"
    ctl = settled(probe_interval=2, max_probe_interval=10)
    clean(ctl)
    clean(ctl)
    ctl.decide(win(10, 90, rate=ctl.rate))
    ctl.reset()
    assert ctl.probe_interval_now == 2


def test_adopt_moves_to_the_leaders_rate_in_the_right_direction() -> None:
    ctl = make()
    got = ctl.adopt(8, 9, 8)
    assert got is not None
    is_(got, "decrease", "adopted from the shared leader", 8, 9, 8)
    got = ctl.adopt(12, 13, 12)
    assert got is not None and got.direction == "increase"
    assert ctl.adopt(12, 13, 12) is None


# -- an upstream that banks headroom ---------------------------------------------------------


def banking(burst: float, floor: float = 19.5) -> RateController:
    """Held 3 clean windows under a ceiling of 20 with an upstream that may bank `burst`
    seconds of rate: the probe above the ceiling has begun."""
    ctl = make(upstream_burst=burst)
    ctl.restore(20, floor)
    for _ in range(3):
        clean(ctl)
    assert ctl.probing
    return ctl


def test_a_probe_is_discounted_by_what_the_upstream_banked() -> None:
    # 3 windows 0.5/s under the ceiling: 7.5 requests banked, 1.5/s over the 5 s probe.
    ctl = banking(1.0)
    got = ctl.decide(win(105, rate=21.5))
    assert ctl.floor == pytest.approx(20.0)
    assert got.direction == "probe" and got.reason == "ceiling rose: probe +10%", got


def test_a_probe_discounted_to_the_floor_is_masked_and_repeated() -> None:
    ctl = banking(1.0)
    probe = ctl.rate
    got = ctl.decide(win(105, rate=21))  # 21 - 1.5 = 19.5: no better than the floor
    is_(got, "probe", "probe masked by what the upstream banked; repeating", probe, 20, 19.5)
    assert got.evidence is not None and ctl.probing
    # The repeated probe starts with no outcomes counted: one 429 does not fail it.
    assert ctl.record(Outcome.RATE_LIMITED) == []
    # The bank was spent: the repeat is judged on its own.
    got = ctl.decide(win(105, rate=21))
    assert "masked" not in got.reason and ctl.floor == pytest.approx(21), got


def test_the_bank_is_capped_by_the_burst_seconds() -> None:
    # 0.1 s of 20/s: at most 2 requests banked, 0.4/s over the probe's 5 s.
    ctl = banking(0.1)
    ctl.decide(win(105, rate=20.5))
    assert ctl.floor == pytest.approx(20.1)


def test_the_bank_grows_by_the_headroom_left_each_window() -> None:
    # 0.1/s under the ceiling for 3 windows: 1.5 banked, 0.3/s.
    ctl = banking(1.0, floor=19.9)
    ctl.decide(win(105, rate=20.5))
    assert ctl.floor == pytest.approx(20.2)


def test_a_passed_probe_spends_the_bank() -> None:
    ctl = banking(1.0, floor=19.8)  # 3 x 1 = 3 banked: 0.6/s
    ctl.decide(win(105, rate=20.5))  # passed: floor 19.9, narrow under 20
    assert ctl.floor == pytest.approx(19.9) and not ctl.probing
    # Three clean windows at 19.9 bank 0.5 each: the next probe is discounted 0.3/s only.
    n = 0
    while not ctl.probing and n < 10:
        n += 1
        clean(ctl)
    assert ctl.probing
    ctl.decide(win(105, rate=20.25))
    assert ctl.floor == pytest.approx(19.95)


def test_a_repeated_probe_passes_early_at_min_outcomes() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock, upstream_burst=1.0)
    ctl.restore(20, 19.5)
    for _ in range(3):
        clean(ctl)
    ctl.decide(win(105, rate=21))  # masked: repeated
    ctl.gate_bound(True)
    clock.t += 1
    out: list[Adjustment] = []
    for _ in range(19):
        out += ctl.record(Outcome.ACCEPTED)
    assert out == []


# -- probation -------------------------------------------------------------------------------


def test_one_429_at_a_floor_on_probation_is_tolerated() -> None:
    ctl = raised()
    got = ctl.decide(win(99, 1, rate=10.455))
    assert got.reason == "1.0% throttled, within tolerance", got


def test_two_429s_within_tolerance_on_probation_do_not_overturn() -> None:
    ctl = raised()
    got = ctl.decide(win(298, 2, rate=10.455))
    assert got.direction == "hold", got


def test_a_floor_proven_by_a_climb_is_on_probation_too() -> None:
    ctl = make()
    ctl.decide(win(50, rate=10))  # the guess passed: floor 10, climbing to 15
    ctl.decide(win(75, rate=15))  # passed: floor 15 (prior 10), climbing to 22.5
    ctl.adopt(15, 22.5, 15)
    got = ctl.decide(win(98, 2, rate=15))
    assert got.reason == "2.0% throttled at 15, just proven: back to the floor before it", got
    # A climb was no probe above the ceiling: the interval stays.
    assert ctl.probe_interval_now == 3


def test_a_429_window_during_a_probe_with_a_trickle_before_is_a_failure() -> None:
    ctl = bracketed()
    ctl.decide(win(199, 1, rate=10))  # tolerated once
    clean_probe = ctl.decide(win(199, 1, rate=10))  # a trickle: backs off
    assert clean_probe.direction == "decrease"


def test_a_significant_throttle_is_not_marked_recurring() -> None:
    ctl = settled()
    ctl.decide(win(199, 1, rate=10))  # tolerated
    got = ctl.decide(win(96, 4, rate=10))  # significant, light: once
    assert got.reason == "4.0% throttled at the clean floor (once)", got


def test_after_a_throttle_the_tolerated_count_starts_again() -> None:
    ctl = settled()
    ctl.decide(win(199, 1, rate=10))
    ctl.decide(win(96, 4, rate=10))  # significant: acted on (held once)
    got = ctl.decide(win(199, 1, rate=10))
    assert got.reason == "0.5% throttled, within tolerance", got


def test_the_guess_passing_is_no_probe_above_the_ceiling() -> None:
    ctl = make()
    ctl.decide(win(50, rate=10))  # guess passed: floor 10, climbing to 15
    ctl.decide(win(10, 90, rate=15))  # failed: bound 15, back to 10
    assert ctl.probe_interval_now == 3


def test_a_repeated_probe_fails_on_its_own_outcomes() -> None:
    ctl = banking(1.0)
    ctl.decide(win(105, rate=21))  # masked: repeated with nothing counted
    out: list[Adjustment] = []
    for _ in range(197):
        out += ctl.record(Outcome.ACCEPTED)
    out += ctl.record(Outcome.RATE_LIMITED)
    out += ctl.record(Outcome.RATE_LIMITED)  # 2 of 199: just above the tolerance
    assert [a.direction for a in out] == ["decrease"], out


def test_after_probation_two_429s_are_within_tolerance_again() -> None:
    ctl = raised()
    for _ in range(3):
        ctl.decide(win(60, rate=10.455, saturated=1))
    got = ctl.decide(win(98, 2, rate=10.455))
    assert got.reason == "2.0% throttled, within tolerance", got


def test_a_single_429_above_the_tolerance_share_is_tolerated_without_a_probe() -> None:
    ctl = settled()
    got = ctl.decide(win(49, 1, rate=10))
    assert got.reason == "2.0% throttled, within tolerance", got


def test_two_429s_at_exactly_the_tolerance_pass_a_probe() -> None:
    ctl = bracketed()
    clean(ctl)  # probing 15
    got = ctl.decide(win(198, 2, rate=15))
    assert got.direction == "probe" and ctl.floor == 15, got


def test_after_a_trickle_is_acted_on_the_next_429_starts_a_new_count() -> None:
    ctl = settled()
    ctl.decide(win(199, 1, rate=10))
    assert ctl.decide(win(199, 1, rate=10)).direction == "decrease"  # the trickle
    got = ctl.decide(win(199, 1, rate=ctl.rate))
    assert got.reason == "0.5% throttled, within tolerance", got


def test_a_passed_probe_records_when_the_ceiling_was_learned() -> None:
    clock = VirtualTime(T0)
    ctl = bracketed(clock=clock)
    clean(ctl)  # probing 15
    clock.t += 5
    ctl.decide(win(80, rate=15))
    assert ctl.ceiling_updated_at == clock.t


def test_a_passed_probe_above_the_ceiling_resets_the_interval() -> None:
    ctl = settled(probe_interval=2, max_probe_interval=10)
    clean(ctl)
    clean(ctl)  # probe above
    ctl.decide(win(10, 90, rate=ctl.rate))  # failed: interval 4
    n = 0
    while not ctl.probing and n < 10:
        n += 1
        clean(ctl)
    assert ctl.probe_interval_now == 4 and n == 4
    probe = ctl.rate
    ctl.decide(win(80, rate=probe))  # passed: the interval is back to 2
    assert ctl.probe_interval_now == 2


def test_the_guess_passes_early_at_min_outcomes() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.gate_bound(True)
    clock.t += 1
    out: list[Adjustment] = []
    for _ in range(19):
        out += ctl.record(Outcome.ACCEPTED)
    assert out == []
    out = ctl.record(Outcome.ACCEPTED)
    assert [a.direction for a in out] == ["increase"], out


def test_the_guess_passing_does_not_widen_the_step() -> None:
    ctl = make()
    ctl.decide(win(50, rate=10))  # the guess passed
    ctl.adopt(10, 10.2, 10)
    for _ in range(3):
        clean(ctl)
    assert ctl.rate == pytest.approx(10.5)


def test_a_leaders_floor_counts_windows_toward_a_probe_from_zero() -> None:
    ctl = make()
    ctl.adopt(10, 10.2, 10)
    assert [clean(ctl).direction for _ in range(3)] == ["hold", "hold", "probe"]


def test_thin_windows_of_the_guess_merge_up_to_max_merge() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    for _ in range(3):
        ctl.record(Outcome.ACCEPTED)
        clock.t += 5
        assert ctl.tick() == []
    ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    assert [(a.direction, a.reason) for a in ctl.tick()] == [("hold", "insufficient evidence")]
    assert ctl.probing  # still a guess


def test_a_bound_exactly_narrow_above_the_floor_is_not_bisected() -> None:
    ctl = make()
    ctl.restore(13.0, 12.5)
    assert clean(ctl).reason == "holding at the clean floor"


def test_a_failed_probe_above_the_ceiling_counts_toward_the_next_from_zero() -> None:
    ctl = make(probe_step=0.02, max_probe_interval=10)
    ctl.restore(10.2, 10)
    clean(ctl)
    clean(ctl)  # two windows counted toward a probe above the ceiling
    ctl.adopt(10, None, 10)  # the leader dropped the bound: climb by steps
    got = clean(ctl)
    assert got.reason == "ceiling rose: probe +2%" and got.evidence is not None, got
    ctl.decide(win(10, 90, rate=ctl.rate))  # failed: bound 10.2, interval 6
    assert ctl.probe_interval_now == 6
    directions = [clean(ctl).direction for _ in range(6)]
    assert directions == ["hold"] * 5 + ["probe"], directions


def test_429s_above_a_floor_just_raised_do_not_overturn_it() -> None:
    ctl = raised()
    ctl.adopt(12, 13, 10.455)
    got = ctl.decide(win(97, 3, rate=12))
    assert got.reason == "3.0% throttled again", got


def test_an_overturned_floor_counts_toward_the_next_probe_from_zero() -> None:
    ctl = settled(probe_step=0.02)
    for _ in range(3):
        clean(ctl)  # probe above the ceiling at 10.302
    ctl.decide(win(60, rate=10.3))  # passed: floor 10.3 on probation
    ctl.adopt(10.3, 10.5, 10.3)
    clean(ctl)  # one window counted
    got = ctl.decide(win(97, 3, rate=10.3))
    assert got.reason.endswith("just proven: back to the floor before it"), got
    directions = [clean(ctl).direction for _ in range(6)]
    assert directions == ["hold"] * 5 + ["probe"], directions


def test_a_short_saturated_stretch_is_measured_at_the_gate_rate() -> None:
    ctl = settled()
    ev = ctl.decide(win(50, rate=12.5, saturated=0.5)).evidence
    assert ev is not None and ev.gate_rate == pytest.approx(12.5)
    assert ev.measured == pytest.approx(12.5)


def holds_before_probe(ctl: RateController) -> int:
    n = 0
    while clean(ctl).direction == "hold" and n < 10:
        n += 1
    return n


def test_a_passed_bisection_forgets_the_wait_for_the_next_failure() -> None:
    ctl = bracketed()
    clean(ctl)  # bisecting at 15
    ctl.decide(win(10, 90, rate=15))  # failed: the next waits one window
    assert holds_before_probe(ctl) == 1  # then bisects at 12.5
    got = ctl.decide(win(60, rate=12.5))  # passed: bisecting 12.5..15 at once
    assert got.rate == pytest.approx(13.75)
    ctl.decide(win(10, 90, rate=13.75))  # failed: the first failure since a pass waits one
    assert holds_before_probe(ctl) == 1


def test_reset_forgets_how_long_bisection_waits() -> None:
    ctl = bracketed()
    ctl.reset()
    ctl.adopt(10, 20, 10)
    clean(ctl)  # bisecting at 15
    ctl.decide(win(10, 90, rate=15))
    assert holds_before_probe(ctl) == 1


def test_drain_evaluates_a_window_that_ended_first() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    for _ in range(50):
        ctl.record(Outcome.ACCEPTED)
    clock.t += 6
    stats = ctl.drain()
    assert ctl.last is not None and ctl.last.evidence is not None
    assert ctl.last.evidence.ok == 50
    assert (stats.ok, stats.seconds) == (0, pytest.approx(1))


def test_every_other_outcome_is_counted() -> None:
    ctl = make()
    ctl.record(Outcome.OTHER)
    ctl.record(Outcome.OTHER)
    assert ctl.drain().other == 2


def test_saturation_across_a_clock_jump_counts_from_the_new_window() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    ctl.gate_bound(True)
    clock.t += 12  # two windows skipped
    ctl.tick()
    clock.t += 1
    stats = ctl.drain()
    assert stats.saturated == pytest.approx(3)


def test_an_idle_window_is_not_carried_into_the_next() -> None:
    clock = VirtualTime(T0)
    ctl = make(clock=clock)
    ctl.restore(10.2, 10)
    clock.t += 5
    assert ctl.tick() == []  # idle
    ctl.gate_bound(True)
    for _ in range(50):
        ctl.record(Outcome.ACCEPTED)
    clock.t += 5
    out = ctl.tick()
    assert len(out) == 1 and out[0].evidence is not None
    assert out[0].evidence.seconds == 5


def test_a_probe_refused_heavily_at_the_minimum_floor_bounds_at_the_probe() -> None:
    """At a floor that is also RATE_LIMIT_MIN, an upstream that accepts far less than the floor
    during a failed probe is a strict one that refused the probe (not a counting upstream that
    accepts its ceiling): the bound is the probe rate, as above any other floor."""
    ctl = make(minimum=1, initial=1)
    ctl.restore(2, 1)
    is_(clean(ctl), "probe", "bisecting between clean 1 and throttled 2", 1.5, 2, 1)
    got = ctl.decide(win(1, 9, rate=1.5))  # 0.15/s accepted: far below the floor
    is_(got, "decrease", "probe at 1.5 failed in its window: 90.0% throttled", 1, 1.5, 1)
