"""Adaptive request-rate controller: learns the account's ceiling from saturated time only.

Pure and deterministic: an injected clock, no sleeping, no asyncio. Outcomes are counted in
windows of `window` seconds together with the window's *saturated* time: the seconds in which
requests were waiting and the rate gate was the bottleneck (admission reports it with
`gate_bound`). Only saturated time says anything about the ceiling. There the gate sent at its
rate r, and an upstream that refused a share f accepted what `measured` = r x (1 - f) stands
for: a lower bound of its ceiling, whatever kind of limiter it runs. A window in which nothing
waited says nothing, so bursty demand with idle gaps never lowers the rate. All rates are gate
rates (what the gate is set to); late wake-ups make the real sends a little slower, the same
way for every rate, so bounds learned in gate terms stay consistent.

Evidence: a window is decided when it holds `min_outcomes` accepted + throttled outcomes (or
`min_limited` 429s); a thinner one merges into the next (up to `max_merge`). A probe is decided
early, mid-window: failed at `probe_limited` 429s above `tolerance`, passed at `min_outcomes`
outcomes without a 429 while saturated throughout; a new window starts there.

Two learned numbers: the *floor*, the highest rate proven clean (a saturated window without
429s at it), and the *upper* bound, the lowest rate seen throttled since. The rate holds at the
floor; `ceiling` (exported, persisted) is the upper bound, or the floor while none is known.
Rules, one `Adjustment` each:
- The starting rate (RATE_LIMIT_INITIAL, nothing learned) is a guess: it is tried as a probe.
- Throttled (>= `min_limited` 429s above `tolerance`; `probe_limited` in a probe; a trickle two
  windows in a row - no dead band):
  - a probe: undone at once, back to the floor. The upper bound becomes the probe rate, or, when
    refusals were heavy (>= `strong_fraction`) and `measured` stayed at or above the floor (a
    counting upstream, whose accepted rate *is* its ceiling), `measured`. An upstream that
    allows no burst accepts *less* above its cliff (0.6-0.75 of it): there `measured` falls
    below the floor and the bound stays at the probe rate.
  - at the floor: once and light, held; heavy (>= `strong_fraction` and >= min_outcomes / 4
    429s), the ceiling fell: the floor is forgotten, upper = `measured`, rate = `measured` x
    (1 - hold_margin); light again, the floor sits just over the cliff: it becomes the upper
    bound and the rate backs off to `measured` x (1 - hold_margin). A floor a probe raised
    within `FRESH_WINDOWS` is overturned instead (back to the floor before it).
  - a first throttle (nothing learned): upper = that rate, rate = `measured` x (1 - margin);
    the ceiling lies between the two and is bisected.
- Clean and saturated (>= `min_saturation` of the window): the rate is proven (floor). Then:
  never throttled -> climb x`climb`; upper bound disproved by a clean probe -> probe +step;
  floor and upper further apart than `narrow` -> probe their midpoint (bisection; after a
  failed one the next waits 1, 2, 4 ... clean windows, so a ceiling just over the floor does
  not cost two 429s every window while the gap closes); close ->
  hold, and after `interval` clean windows saturated for >= `sustained` of their time (probing
  above the ceiling costs 429s: only under sustained demand) probe `step` above the ceiling.
  Such a probe failing doubles the interval (up to `max_probe_interval`) and halves the step
  (down to `min_probe_step`); passing resets the interval and doubles the step (up to
  `max_probe_step`).
- Not saturated, congested (1312s count as accepted: they passed the gate and the rate limiter,
  but more than `CONGESTED_SHARE` of them make a window teach nothing), or one 429 below
  tolerance: hold. Idle windows change nothing.
- `upstream_burst` (seconds of rate an upstream may bank, 0 = none): a clean probe is discounted
  by the headroom such an upstream banked while the proxy held below it, repeated if masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from zai_proxy.limiter.evidence import (
    CONGESTED_SHARE,
    EPS,
    FRESH_WINDOWS,
    Adjustment,
    Direction,
    Evidence,
    Outcome,
    WindowStats,
)

__all__ = ["Adjustment", "Evidence", "Outcome", "RateController", "WindowStats"]


class RateController:
    """Learns and holds the request rate; see the module docstring for the policy."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        initial: float = 10.0,
        minimum: float = 1.0,
        maximum: float = 50.0,
        window: float = 30.0,
        hold_margin: float = 0.02,
        probe_interval: int = 3,
        max_probe_interval: int | None = None,
        probe_step: float = 0.05,
        min_probe_step: float = 0.01,
        max_probe_step: float = 0.2,
        climb: float = 1.5,
        narrow: float = 0.04,
        min_outcomes: int = 20,
        max_merge: int = 4,
        tolerance: float = 0.01,
        min_limited: int = 3,
        probe_limited: int = 2,
        strong_fraction: float = 0.05,
        min_saturation: float = 0.5,
        sustained: float = 0.9,
        upstream_burst: float = 0.0,
    ) -> None:
        if not 0 < minimum <= maximum or window <= 0:
            raise ValueError("need 0 < minimum <= maximum and window > 0")
        self.clock = clock
        self.minimum, self.maximum, self.window = minimum, maximum, window
        self.initial = self._clamp(initial)
        self.hold_margin, self.climb, self.narrow = hold_margin, climb, narrow
        self.probe_interval = probe_interval
        self.max_probe_interval = max_probe_interval or 2 * probe_interval
        self.probe_step, self.min_probe_step = probe_step, min_probe_step
        self.max_probe_step = max_probe_step
        self.min_outcomes, self.max_merge, self.tolerance = min_outcomes, max_merge, tolerance
        self.min_limited, self.strong_fraction = min_limited, strong_fraction
        self.probe_limited = probe_limited
        self.min_saturation, self.upstream_burst = min_saturation, upstream_burst
        self.sustained = sustained
        self.auto_evaluate = True  # False on a replica whose decisions a leader takes
        self.rate = self.initial
        self.floor: float | None = None
        self.upper: float | None = None
        self.ceiling_updated_at: float | None = None
        self.last: Adjustment | None = None  # the latest decision, with its evidence
        self.last_change: Adjustment | None = None  # the latest one that moved the rate
        self._throttled_before = False  # False: climb multiplicatively (cold start)
        self._probe: float | None = None  # the probe rate while probing
        self._above = False  # the probe goes above the upper bound (not a bisection or climb)
        self._probe_counts = [0, 0]  # [accepted, throttled] since the probe began
        self._step, self._interval = probe_step, probe_interval
        self._clean = 0  # clean saturated windows at the floor since the last probe
        self._bisect_wait = 0  # clean windows to wait before the next bisection (after a failure)
        self._bisect_clean = 0  # clean windows waited so far
        self._prior_floor: float | None = None  # the floor before a probe raised it
        self._fresh = 0  # windows left in which 429s at the floor overturn that probe
        self._fresh_above = False  # that probe went above the ceiling
        self._recur = 0  # throttled windows at the floor in a row
        self._tolerated = 0  # windows with a few 429s in a row
        self._banked = 0.0  # requests of headroom an upstream may have banked
        self._stats = WindowStats()
        self._merged = 0
        self._window_start = clock()
        self._guess()
        self._saturated_since: float | None = None

    def _guess(self) -> None:
        """RATE_LIMIT_INITIAL is a guess, not a proven rate: it is tried like a probe, so a
        guess above the ceiling is given up after a few 429s, not after a window of them."""
        self._probe, self._probe_counts, self._above = self.rate, [0, 0], False

    # -- figures ---------------------------------------------------------------------------

    def _clamp(self, rate: float) -> float:
        return min(self.maximum, max(self.minimum, rate))

    @property
    def ceiling(self) -> float | None:
        """The learned ceiling: the lowest rate seen throttled, else the highest proven clean."""
        return self.upper if self.upper is not None else self.floor

    @property
    def hold(self) -> float | None:
        """The rate to resume at (persisted, carried): the clean floor, or before one is proven
        the rate backed off to after a throttle; None with nothing learned."""
        if self.floor is not None:
            return self.floor
        if self.upper is None:
            return None
        return min(self.rate, self._clamp(self.upper * (1 - self.hold_margin)))

    @property
    def probing(self) -> bool:
        return self._probe is not None

    @property
    def probe_interval_now(self) -> int:
        return self._interval

    @property
    def saturated(self) -> bool:
        return self._saturated_since is not None

    # -- inputs ----------------------------------------------------------------------------

    def record(self, outcome: Outcome) -> list[Adjustment]:
        """Count one attempt's outcome (when its status is known); may end a failing probe."""
        out = self.tick()
        s = self._stats
        if outcome is Outcome.ACCEPTED or outcome is Outcome.CONGESTED:
            s.ok += 1
            s.congested += outcome is Outcome.CONGESTED
            if self._probe is not None:
                self._probe_counts[0] += 1
            out += self._probe_verdict()
        elif outcome is Outcome.RATE_LIMITED:
            s.limited += 1
            if self._probe is not None:
                self._probe_counts[1] += 1
                out += self._probe_verdict()
        else:
            s.other += 1
        return out

    def merge(self, stats: WindowStats) -> list[Adjustment]:
        """Add counts other replicas saw (shared mode, on the leader), then evaluate: counts
        pushed before a window ended belong to it."""
        self._stats.add(stats)
        out = self.tick()
        if self._probe is not None:
            self._probe_counts[0] += stats.ok
            self._probe_counts[1] += stats.limited
            out += self._probe_verdict()
        return out

    def granted(self) -> None:
        """One attempt left through the gate (counted while saturated)."""
        if self._saturated_since is not None:
            self._stats.sent += 1

    def gate_bound(self, bound: bool) -> list[Adjustment]:
        """Admission says whether requests wait for the rate gate from now on (saturation)."""
        out = self.tick()
        now = self.clock()
        if bound and self._saturated_since is None:
            self._saturated_since = now
        elif not bound and self._saturated_since is not None:
            self._count_saturated(now)
            self._saturated_since = None
        return out

    def _count_saturated(self, until: float) -> None:
        since = self._saturated_since
        if since is not None and until > since:
            self._stats.saturated += until - since
            self._stats.rate_seconds += (until - since) * self.rate
            self._saturated_since = until

    # -- windows ---------------------------------------------------------------------------

    def tick(self) -> list[Adjustment]:
        """Evaluate the window that ended (windows skipped by a clock jump count as idle)."""
        now = self.clock()
        if now < self._window_start + self.window:
            return []
        elapsed = math.floor((now - self._window_start) / self.window)
        ended = self._window_start + self.window
        self._count_saturated(ended)
        self._window_start += elapsed * self.window
        if self._saturated_since is not None:
            self._saturated_since = max(self._saturated_since, self._window_start)
        self._stats.seconds += self.window
        if not self.auto_evaluate:
            return []
        s = self._stats
        if not (s.decisive or s.other):
            self._take()
            return [self._end_probe("idle")] if self._probe is not None else []
        self._merged += 1
        if s.decisive >= self.min_outcomes or s.limited >= self.min_limited:
            return [self.decide(self._take())]
        if self._merged >= self.max_merge or elapsed > 1:
            self._take()
            if self._probe is not None:
                return [self._end_probe("insufficient evidence")]
            return [self._hold("insufficient evidence")]
        return []

    def _take(self) -> WindowStats:
        stats, self._stats, self._merged = self._stats, WindowStats(), 0
        return stats

    def drain(self) -> WindowStats:
        """Hand the counts so far (saturated time up to now) to a leader, start afresh."""
        self.tick()
        now = self.clock()
        self._count_saturated(now)
        stats = self._take()
        stats.seconds += max(0.0, now - self._window_start)
        self._window_start = now
        return stats

    def _probe_verdict(self) -> list[Adjustment]:
        """Decide a probe before its window ends once the evidence is conclusive: failed at
        `min_limited` 429s, passed at `min_outcomes` without one while saturated throughout."""
        if self._probe is None or not self.auto_evaluate:
            return []
        ok, limited = self._probe_counts
        now = self.clock()
        if limited >= self.probe_limited and limited / (ok + limited) > self.tolerance:
            pass
        elif limited == 0 and ok >= self.min_outcomes and self.upstream_burst == 0:
            since = self._saturated_since
            saturated = self._stats.saturated + (now - since if since is not None else 0.0)
            elapsed = now - self._window_start
            if elapsed <= 0 or saturated < self.sustained * elapsed:
                return []
        else:
            return []
        # Decide now on what this window has seen; a new window starts here.
        self._count_saturated(now)
        stats = self._take()
        stats.seconds += max(EPS, now - self._window_start)
        self._window_start = now
        return [self.decide(stats, early=True)]

    # -- the policy ------------------------------------------------------------------------

    def _evidence(self, s: WindowStats) -> Evidence:
        gate = s.rate_seconds / s.saturated if s.saturated > 0 else self.rate
        fraction = s.limited / s.decisive if s.decisive else 0.0
        measured = gate * (1 - fraction) if s.saturated > 0 else None
        return Evidence(s.seconds, min(s.saturated, s.seconds), s.ok, s.limited, s.congested,
                        s.other, gate, measured, s.sent)

    def _note(self, adjustment: Adjustment) -> Adjustment:
        self.last = adjustment
        if adjustment.direction != "hold":
            self.last_change = adjustment
        return adjustment

    def _hold(self, reason: str, ev: Evidence | None = None) -> Adjustment:
        return self._note(Adjustment("hold", reason, self.rate, self.ceiling, self.floor, ev))

    def _set(self, direction: Direction, reason: str, rate: float,
             ev: Evidence | None = None) -> Adjustment:
        self._count_saturated(self.clock())  # saturated time so far ran at the old rate
        self.rate = self._clamp(rate)
        return self._note(Adjustment(direction, reason, self.rate, self.ceiling, self.floor, ev))

    def _learned(self) -> None:
        self.ceiling_updated_at = self.clock()

    def _end_probe(self, reason: str, ev: Evidence | None = None) -> Adjustment:
        if self.floor is None and self.upper is None:
            self._guess()  # nothing learned yet: the starting rate is still a guess
            return self._hold(reason, ev)
        self._probe = None
        back = self.hold if self.hold is not None else self.rate
        return self._set("hold", f"probe ended: {reason}", back, ev)

    def _start_probe(self, direction: Direction, reason: str, rate: float,
                     ev: Evidence, above: bool = False) -> Adjustment:
        rate = self._clamp(rate)
        self._above = above
        if rate <= self.rate * (1 + EPS):
            self._probe = None
            return self._set("hold", "at maximum", self.rate, ev)
        self._probe, self._probe_counts = rate, [0, 0]
        return self._set(direction, reason, rate, ev)

    def decide(self, s: WindowStats, *, early: bool = False) -> Adjustment:
        """Apply one evaluation of `s` (pure policy; also used by a shared leader)."""
        ev = self._evidence(s)
        self._fresh = max(0, self._fresh - 1)
        probe, self._probe = self._probe, None
        banked, self._banked = self._banked, 0.0
        if s.decisive == 0 or s.seconds <= 0:
            return self._end_probe("idle", ev) if probe is not None else self._hold("idle", ev)
        fraction = ev.throttled
        significant = s.limited >= self.min_limited and fraction > self.tolerance
        self._tolerated = self._tolerated + 1 if s.limited and not significant else 0
        # One 429 in a probe window may be background (send jitter); two fail it. A floor a
        # probe raised is on probation for FRESH_WINDOWS: judged the same way.
        probation = probe is None and self._fresh > 0 and self._prior_floor is not None
        failed_probe = (probe is not None or probation) and s.limited >= self.probe_limited \
            and fraction > self.tolerance
        trickle = bool(s.limited) and self._tolerated >= 2
        if significant or failed_probe or trickle:
            self._tolerated = 0
            return self._throttled(ev, probe, early, recurring=trickle and not significant)
        saturated = s.saturated >= self.min_saturation * s.seconds
        if not saturated:
            if probe is not None:
                return self._end_probe("no unmet demand", ev)
            return self._hold("no unmet demand", ev)
        if s.congested > CONGESTED_SHARE * s.decisive:
            if probe is not None:
                return self._end_probe("congestion (1312): inconclusive", ev)
            return self._hold("congestion (1312): nothing learned", ev)
        if s.limited and probe is None:
            return self._hold(f"{fraction:.1%} throttled, within tolerance", ev)
        self._recur = 0
        consecutive = False
        if probe is not None:
            proven, banked = ev.gate_rate - banked / s.saturated, 0.0  # a probe spends it
            if self.floor is not None and proven <= self.floor * (1 + EPS):
                self._probe, self._probe_counts = probe, [0, 0]
                return self._set("probe", "probe masked by what the upstream banked; repeating",
                                 probe, ev)
            self._prior_floor, self._fresh = self.floor, FRESH_WINDOWS
            self._fresh_above = self._above
            self.floor = self._clamp(proven)
            if self.upper is not None and proven >= self.upper * (1 - EPS):
                self.upper = None  # a clean rate at or above the bound disproves it
            self._learned()
            if self._above:
                self._interval, self._clean = self.probe_interval, 0
                self._step = min(2 * self._step, self.max_probe_step)
            self._bisect_wait = 0
            consecutive = True
        elif self.floor is None or ev.gate_rate > self.floor * (1 + EPS):
            self.floor = self._clamp(ev.gate_rate)
            if self.upper is not None and self.floor >= self.upper:
                self.upper = None
            self._learned()
        return self._next(ev, consecutive, s.seconds, banked)

    def _next(self, ev: Evidence, consecutive: bool, seconds: float,
              banked: float) -> Adjustment:
        floor = self.floor
        assert floor is not None
        if self.rate < floor * (1 - EPS):
            return self._set("increase", "back to the clean floor", floor, ev)
        if self.upper is None and not self._throttled_before:
            return self._start_probe(
                "increase", f"clean and saturated, never throttled: x{self.climb:g}",
                floor * self.climb, ev)
        if self.upper is None:  # a clean probe disproved the bound: climb step by step
            return self._start_probe(
                "probe", f"ceiling rose: probe +{self._step:.0%}", floor * (1 + self._step),
                ev, above=True)
        if self.upper > floor * (1 + self.narrow):
            if self._bisect_clean < self._bisect_wait:
                self._bisect_clean += 1
                return self._set("hold", f"bisection waits {self._bisect_wait} clean windows "
                                 "after a failed one", floor, ev)
            middle = (floor + self.upper) / 2
            return self._start_probe(
                "probe", f"bisecting between clean {floor:.3g} and throttled {self.upper:.3g}",
                middle, ev)
        if self.upstream_burst > 0:
            cap = self.upper * self.upstream_burst
            self._banked = min(cap, banked + max(0.0, self.upper - self.rate) * seconds)
        # Probing above the ceiling costs 429s: only under sustained demand.
        sustained = ev.saturated >= self.sustained * ev.seconds
        self._clean += 0 if consecutive or not sustained else 1
        if self._clean >= self._interval:
            self._clean = 0
            target = max(floor * (1 + self._step), self.upper * (1 + self._step / 2))
            return self._start_probe(
                "probe", f"probe {target / self.upper - 1:+.1%} over the ceiling after "
                f"{self._interval} clean saturated windows", target, ev, above=True)
        return self._set("hold", "holding at the clean floor", floor, ev)

    def _heavy(self, ev: Evidence, fraction: float) -> bool:
        """Refusals heavy enough to act on at once: a share and a count (at 10 req/s and 5 s
        windows three 429s are 6 %: that alone is not a fallen ceiling)."""
        return fraction >= self.strong_fraction and \
            ev.limited >= max(self.min_limited, self.min_outcomes // 4)

    def _throttled(self, ev: Evidence, probe: float | None, early: bool,
                   recurring: bool = False) -> Adjustment:
        self._throttled_before = True
        fraction = ev.throttled
        if early:  # decided on a few outcomes: the ones not seen yet are not counted as 429s
            fraction = ev.limited / max(ev.ok + ev.limited, self.min_outcomes)
        accepted = ev.gate_rate * (1 - fraction) if ev.measured is not None else \
            min(self.rate, (ev.ok + ev.limited) / ev.seconds) * (1 - fraction)
        measured = max(self.minimum, accepted)
        when = "early" if early else "in its window"
        if probe is not None and self.floor is not None:
            floor = self.floor
            # Judged on what was accepted, not on it raised to RATE_LIMIT_MIN: at a floor that
            # is the minimum, a strict upstream's refusal would otherwise read as a ceiling.
            if self._heavy(ev, fraction) and accepted >= floor and not early:
                # A counting upstream: sending more got as much accepted as before, so the
                # accepted rate is its ceiling (a whole window's evidence, not a few outcomes).
                bound = max(floor * (1 + self.min_probe_step), measured)
            else:
                bound = max(floor * (1 + self.min_probe_step), probe)
            bisection = self.upper is not None and probe < self.upper * (1 - EPS)
            self.upper = bound if self.upper is None else min(self.upper, bound)
            self._learned()
            if self._above:
                self._interval = min(2 * self._interval, self.max_probe_interval)
                self._step = max(self._step / 2, self.min_probe_step)
            elif bisection:  # each further bisection waits longer (1, 2, 4 ... windows)
                self._bisect_wait = min(max(1, 2 * self._bisect_wait), self.max_probe_interval)
                self._bisect_clean = 0
            self._clean = 0
            return self._set("decrease", f"probe at {probe:.3g} failed {when}: "
                             f"{fraction:.1%} throttled", floor, ev)
        if self.floor is not None and self.rate <= self.floor * (1 + EPS) and self._fresh and \
                self._prior_floor is not None:
            # A probe passed on thin evidence and its rate does not hold: overturn it.
            bad, self.floor, self._prior_floor, self._fresh = self.floor, self._prior_floor, None, 0
            self.upper = bad if self.upper is None else min(self.upper, bad)
            self._learned()
            if self._fresh_above:  # it was a probe above the ceiling: back off like one
                self._interval = min(2 * self._interval, self.max_probe_interval)
                self._step = max(self._step / 2, self.min_probe_step)
            self._clean = 0
            return self._set("decrease", f"{fraction:.1%} throttled at {bad:.3g}, just proven: "
                             "back to the floor before it", self.floor, ev)
        if self.floor is not None and self.rate <= self.floor * (1 + EPS):
            self._recur += 1
            heavy = self._heavy(ev, fraction)
            if not heavy and self._recur < 2 and not recurring:
                return self._hold(f"{fraction:.1%} throttled at the clean floor (once)", ev)
            if heavy:
                # The ceiling fell: what was accepted over saturated time measures the new one.
                self.upper = max(self.minimum, measured)
                reason = "429s recur at the clean floor: the ceiling fell"
            else:  # a trickle: the floor sits just over the cliff; the bound is the floor
                self.upper = self.rate
                reason = "a trickle of 429s recurs at the clean floor: backing off"
        elif self.upper is None:
            # A first throttle from a starting guess: the ceiling lies between the accepted
            # rate and this one (an upstream without burst accepts less above its cliff).
            self.upper = self.rate
            reason = f"{fraction:.1%} throttled"
        else:
            self.upper = max(self.minimum, min(self.upper, measured))
            reason = f"{fraction:.1%} throttled again"
        if early:
            reason += " (early)"
        self._recur = 0
        self.floor = None
        self._learned()
        # The upstream just got stricter: probe again only after the longest interval.
        self._interval, self._step, self._clean = self.max_probe_interval, self.probe_step, 0
        target = min(measured * (1 - self.hold_margin), self.rate * (1 - self.hold_margin))
        return self._set("decrease", reason, target, ev)

    # -- from outside ----------------------------------------------------------------------

    def restore(self, ceiling: float | None, floor: float | None = None) -> Adjustment:
        """Adopt a persisted or carried ceiling (and clean floor) and hold at the floor.

        Without a ceiling a floor alone is adopted (nothing was ever throttled: climbing goes
        on from it); without a floor the rate holds `hold_margin` under the ceiling.
        """
        top = ceiling if ceiling is not None and ceiling > 0 else None
        low = floor if floor is not None and floor > 0 else None
        if top is None and low is None:
            return self._hold("nothing to restore")
        self.upper = None if top is None else self._clamp(top)
        if low is None:
            assert self.upper is not None
            low = self.upper * (1 - self.hold_margin)
        self.floor = self._clamp(low if self.upper is None else min(low, self.upper))
        self._throttled_before = self.upper is not None
        self._learned()
        self._probe, self._recur, self._clean, self._tolerated = None, 0, 0, 0
        self._fresh, self._prior_floor = 0, None
        self._interval, self._step = self.probe_interval, self.probe_step
        self._bisect_wait = self._bisect_clean = 0
        # A fresh window: what this one saw was sent at the rate before the restore (a cold
        # start's guess, say) and says nothing about the adopted one.
        now = self.clock()
        self._take()
        self._window_start = now
        if self._saturated_since is not None:
            self._saturated_since = now
        return self._set("restore", "restored ceiling", self.floor)

    def adopt(self, rate: float, upper: float | None, floor: float | None) -> Adjustment | None:
        """Take the decisions another replica (the shared leader) published."""
        self.upper = None if upper is None else self._clamp(upper)
        self.floor = None if floor is None else self._clamp(floor)
        previous = self.rate
        self._probe = None
        if self._clamp(rate) == previous:
            return None
        direction: Direction = "increase" if rate > previous else "decrease"
        return self._set(direction, "adopted from the shared leader", rate)

    def reset(self) -> Adjustment:
        """Forget everything learned (admin reset)."""
        self.upper = self.floor = self.ceiling_updated_at = None
        self._throttled_before = False
        self._probe, self._recur, self._clean, self._tolerated = None, 0, 0, 0
        self._interval, self._step = self.probe_interval, self.probe_step
        self._bisect_wait = self._bisect_clean = 0
        self._take()
        adjustment = self._set("reset", "reset", self.initial)
        self._guess()
        return adjustment
