"""Adaptive request-rate controller that learns the upstream's ceiling, plus its token bucket.

Pure and deterministic: an injected clock, no sleeping, no asyncio. Outcomes are counted in
windows of `window` seconds. Evidence rule: a window is decided when it holds at least
`min_outcomes` (default 20) accepted + throttled outcomes, or at least min_outcomes / 4 429s;
a thinner window is merged into the next one (up to `max_merge` windows, then dropped as
"insufficient evidence"), so one 429 at low traffic never triggers a decision.

Policy (one `Adjustment` per decided window):
- Throttled (>= `min_limited` 429s and > `tolerance`, or a trickle two windows in a row: no dead
  band): the accepted rate (ok / seconds) is a measurement of the ceiling when 429s are
  >= `strong_fraction` or requests were queued; set the estimate there, else smooth toward it
  with `ceiling_alpha`. Rate -> estimate x (1 - hold_margin): back off to the measurement, not
  by half. Estimates are clamped to [minimum, maximum]; nothing ever decays.
- A failed probe (any 429 while probing) is undone at once and never raises the estimate.
- Clean window with unmet demand: climb x`climb` while no ceiling is known (never seeded at the
  maximum) or while below the hold; at the hold, probe `probe_step` above the estimate after
  `probe_interval` clean windows. A clean probe raises the estimate to what was accepted, less
  the headroom an upstream with a burst allowance (`upstream_burst` s) may have banked while we
  held below it (else it repeats the same step); consecutive clean probes double the step.
- No unmet demand: hold - an idle proxy never drifts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Direction = Literal["increase", "decrease", "probe", "hold", "restore", "reset"]


MAX_PROBE_STEP = 0.2


class Outcome(StrEnum):
    """One upstream attempt as the controllers see it."""

    ACCEPTED = "accepted"  # reached the upstream and was not throttled
    RATE_LIMITED = "rate_limited"  # 429 of class frequency or unknown
    CONCURRENCY_LIMITED = "concurrency_limited"  # 429 code 1302
    OTHER = "other"  # errors, congestion, quota: no rate evidence


@dataclass(frozen=True)
class Adjustment:
    """A controller decision; count non-`hold` ones in `..._adjustments_total{direction}`."""

    direction: Direction
    reason: str
    rate: float
    ceiling: float | None


@dataclass
class WindowStats:
    """Outcomes over `seconds` of evaluation time."""

    ok: int = 0
    limited: int = 0
    other: int = 0
    demand: bool = False
    seconds: float = 0.0
    first: float | None = None  # first outcome of a busy spell that began inside this window

    @property
    def decisive(self) -> int:
        return self.ok + self.limited


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
        ceiling_alpha: float = 0.3,
        probe_interval: int = 3,
        probe_step: float = 0.05,
        climb: float = 1.5,
        min_outcomes: int = 20,
        max_merge: int = 4,
        tolerance: float = 0.01,
        upstream_burst: float = 1.0,
        min_limited: int = 3,
        strong_fraction: float = 0.05,
    ) -> None:
        if not 0 < minimum <= maximum or window <= 0:
            raise ValueError("need 0 < minimum <= maximum and window > 0")
        self.clock = clock
        self.minimum, self.maximum, self.window = minimum, maximum, window
        self.initial = self._clamp(initial)
        self.hold_margin, self.alpha = hold_margin, ceiling_alpha
        self.probe_interval, self.probe_step, self.climb = probe_interval, probe_step, climb
        self.min_outcomes, self.max_merge, self.tolerance = min_outcomes, max_merge, tolerance
        self.auto_evaluate = True  # False when a shared coordinator decides (see shared_state)
        self.rate = self.initial
        self.ceiling: float | None = None
        self.ceiling_updated_at: float | None = None
        self._clean = 0  # clean windows at the hold since the last probe or decrease
        self._probing = False
        self._step = probe_step
        self.upstream_burst = upstream_burst  # seconds of rate an upstream may bank
        self.min_limited, self.strong_fraction = min_limited, strong_fraction
        self._tolerated = 0  # consecutive windows with a few 429s
        self._banked = 0.0  # requests of headroom we left unused under the ceiling
        self._stats = WindowStats()
        self._merged = 0
        self._busy = False  # outcomes seen since the last idle window
        self._window_start = clock()

    def _clamp(self, rate: float) -> float:
        return min(self.maximum, max(self.minimum, rate))

    @property
    def hold(self) -> float | None:
        """The rate held under a learned ceiling."""
        if self.ceiling is None:
            return None
        return self._clamp(self.ceiling * (1.0 - self.hold_margin))

    def record(self, outcome: Outcome) -> list[Adjustment]:
        """Count one attempt's outcome (at the time its status is known)."""
        adjustments = self.tick()
        if not self._busy:
            self._busy = True
            self._stats.first = self.clock()
        if outcome is Outcome.ACCEPTED:
            self._stats.ok += 1
        elif outcome is Outcome.RATE_LIMITED:
            self._stats.limited += 1
        else:
            self._stats.other += 1
        return adjustments

    def note_demand(self, waiting: int) -> list[Adjustment]:
        """Tell the controller `waiting` requests are queued behind the rate (unmet demand)."""
        adjustments = self.tick()
        if waiting > 0:
            self._stats.demand = True
        return adjustments

    def tick(self) -> list[Adjustment]:
        """Evaluate the window that ended (windows skipped by a clock jump count as idle)."""
        now = self.clock()
        out: list[Adjustment] = []
        if now < self._window_start + self.window:
            return out
        elapsed = math.floor((now - self._window_start) / self.window)
        ended = self._window_start + self.window
        self._window_start += elapsed * self.window
        # A busy spell that began inside the window only had traffic from its first outcome on:
        # count that part, else the accepted rate (a ceiling measurement) reads low.
        first = self._stats.first
        span = self.window if first is None else \
            min(self.window, max(0.2 * self.window, ended - first))
        idle = not (self._stats.decisive or self._stats.other)
        if idle or elapsed > 1:
            self._busy = False
        if not self.auto_evaluate:
            self._stats.seconds += span + (elapsed - 1) * self.window
            self._stats.first = None
            return out
        if idle:
            self._take()  # idle: nothing to learn, nothing changes
            return out
        self._stats.seconds += span
        self._stats.first = None
        self._merged += 1
        enough = self._stats.decisive >= self.min_outcomes
        if enough or self._stats.limited >= self.min_outcomes // 4:
            out.append(self.decide(self._take()))
        elif self._merged >= self.max_merge or elapsed > 1:
            self._take()
            out.append(self._hold("insufficient evidence"))
        return out

    def _take(self) -> WindowStats:
        stats, self._stats, self._merged = self._stats, WindowStats(), 0
        return stats

    def drain(self) -> WindowStats:
        """Hand the current counts to a coordinator (shared mode) and start afresh."""
        self.tick()
        return self._take()

    def _hold(self, reason: str) -> Adjustment:
        return Adjustment("hold", reason, self.rate, self.ceiling)

    def _set(self, direction: Direction, reason: str, rate: float) -> Adjustment:
        self.rate = self._clamp(rate)
        return Adjustment(direction, reason, self.rate, self.ceiling)

    def _learn(self, ceiling: float) -> None:
        self.ceiling = max(self.minimum, min(self.maximum, ceiling))
        self.ceiling_updated_at = self.clock()

    def decide(self, s: WindowStats) -> Adjustment:
        """Apply one evaluation of `s` (pure policy; also used by the shared coordinator)."""
        if s.decisive == 0 or s.seconds <= 0:
            return self._hold("idle")
        accepted = s.ok / s.seconds
        fraction = s.limited / s.decisive
        probing, self._probing = self._probing, False
        banked, self._banked = self._banked, 0.0
        step = self._step  # the step of the probe this window may have been
        significant = s.limited >= self.min_limited and fraction > self.tolerance
        self._tolerated = self._tolerated + 1 if s.limited and not significant else 0
        if s.limited and (probing or significant or self._tolerated >= 2):
            # A trickle of 429s that persists is not tolerated: no dead band (lesson 1).
            self._clean, self._step, self._tolerated = 0, self.probe_step, 0
            strong = fraction >= self.strong_fraction or (s.demand and significant)
            if probing and self.ceiling is not None:
                # Undo at once. A probe +step above a right estimate earns ~step of 429s by
                # itself, so only more than twice that says the ceiling fell: then the accepted
                # rate is the measurement. Otherwise the accepted rate (headroom banked while
                # holding discounted) still measures the ceiling, weakly: move toward it, up or
                # down, so an estimate just under the true ceiling is not stuck there forever.
                if fraction > 2 * step:
                    self._learn(min(self.ceiling, accepted))
                elif s.demand:
                    measured = accepted if accepted <= self.ceiling else \
                        max(self.ceiling, accepted - banked / s.seconds)
                    self._learn(self.ceiling + self.alpha * (measured - self.ceiling))
                return self._set("decrease", "probe failed", self.hold or self.rate)
            if strong or self.ceiling is None:
                self._learn(accepted)  # the accepted rate is a measurement of the ceiling
            else:
                self._learn(self.ceiling + self.alpha * (accepted - self.ceiling))
            return self._set("decrease", f"{fraction:.1%} throttled", self.hold or self.rate)
        if probing and self.ceiling is not None:
            if not s.demand:
                self._step = self.probe_step
                return self._set("hold", "probe without demand", self.hold or self.rate)
            # An upstream with a burst allowance may have banked the headroom we left unused
            # while holding: discount it, else a masked probe would teach a false ceiling.
            proven = accepted - banked / s.seconds
            if proven <= self.ceiling:
                self._probing = True  # masked: the bank is spent now, so repeat the same step
                return self._set("probe", "probe masked by upstream burst, repeating", self.rate)
            self._learn(proven)
            # Consecutive clean probes climb geometrically, but never by more than a fifth at
            # once: a doubled step overshot a doubled ceiling by 70% in the benchmark.
            self._step = min(self._step * 2, MAX_PROBE_STEP)
        elif not s.demand:
            return self._hold("no unmet demand")
        elif s.limited:
            return self._hold(f"{fraction:.1%} throttled, within tolerance")
        hold = self.hold
        if hold is not None and self.ceiling is not None and self.rate < self.ceiling:
            bank_cap = self.ceiling * self.upstream_burst
            self._banked = min(bank_cap, banked + (self.ceiling - self.rate) * s.seconds)
        if hold is None or (self.rate < hold * (1 - 1e-9) and not probing):
            target = self.rate * self.climb if hold is None else min(hold, self.rate * self.climb)
            target = self._clamp(target)
            if target <= self.rate:
                return self._hold("at maximum")
            return self._set("increase", "clean window, demand unmet", target)
        self._clean += 1
        if probing or self._clean >= self.probe_interval:
            assert self.ceiling is not None
            if self.ceiling >= self.maximum:
                return self._set("hold", "ceiling at maximum", hold)
            self._clean, self._probing = 0, True
            return self._set("probe", f"probe +{self._step:.0%}", self.ceiling * (1 + self._step))
        return self._set("hold", "holding under ceiling", hold)

    def restore(self, ceiling: float | None) -> Adjustment:
        """Adopt a persisted or shared ceiling and hold under it."""
        if ceiling is None or ceiling <= 0:
            return self._hold("nothing to restore")
        self._learn(ceiling)
        self._probing, self._clean, self._step = False, 0, self.probe_step
        return self._set("restore", "restored ceiling", self.hold or self.rate)

    def reset(self) -> Adjustment:
        """Forget everything learned (admin reset)."""
        self.ceiling = self.ceiling_updated_at = None
        self._probing, self._clean, self._step = False, 0, self.probe_step
        self._busy = False
        self._take()
        return self._set("reset", "reset", self.initial)


class TokenBucket:
    """Token bucket at a variable rate; capacity `burst` seconds of rate (never above 1 s)."""

    def __init__(self, rate: float, now: float, burst: float = 1.0) -> None:
        self.burst = min(1.0, burst)
        self.rate = rate
        self.tokens = 1.0  # start nearly empty: no first-window burst above the rate
        self.updated = now

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * self.burst)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate; tokens earned so far keep the old rate."""
        self._refill(now)
        self.rate = rate
        self.tokens = min(self.tokens, self.capacity)

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0.0: now), without taking it."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def try_take(self, now: float) -> float:
        """Take one token: 0.0 if taken, else the seconds until one is available."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def refund(self, now: float) -> None:
        """Give back a token taken for a request that never went upstream."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + 1.0)
