"""Congestion backoff: a 1312 storm slows the send rate for a bounded while, nothing more.

Z.AI answers 1312 when the model is busy. That says nothing about the account's rate ceiling
(the rate controller counts those requests as accepted and never lowers the learned rate for
them), but sending at full rate into a busy model only earns more 1312s, and their retries
would crowd out new work. So the gate runs at `factor()` x the learned rate: every
`storm` 1312s within `cut_interval` seconds halve the factor (at most once per interval, never
below `minimum`); after `quiet` seconds without a 1312 it climbs back linearly to 1 over
`recovery` seconds. Pure: time comes from the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable


class Congestion:
    """The send-rate factor during 1312 storms (1.0 = no backoff)."""

    def __init__(self, *, clock: Callable[[], float], minimum: float = 0.25,
                 storm: int = 2, cut_interval: float = 1.0, quiet: float = 2.0,
                 recovery: float = 5.0) -> None:
        if not 0 < minimum <= 1:
            raise ValueError("minimum must be in (0, 1]")
        self.clock, self.minimum, self.storm = clock, minimum, storm
        self.cut_interval, self.quiet, self.recovery = cut_interval, quiet, recovery
        self.cuts = 0  # times the factor was cut (for metrics)
        self._base = 1.0  # the factor at the last 1312
        self._last = -1e18  # time of the last 1312
        self._last_cut = -1e18
        self._recent = 0  # 1312s since the last cut (or the start of the current interval)
        self._interval_start = -1e18

    def factor(self) -> float:
        """The share of the learned rate the gate may send at now."""
        if self._base >= 1.0:
            return 1.0
        calm = self.clock() - self._last - self.quiet
        if calm <= 0:
            return self._base
        return min(1.0, self._base + (1.0 - self._base) * calm / self.recovery)

    def congested(self) -> None:
        """One 1312 answer arrived."""
        now = self.clock()
        current = self.factor()
        if now - self._interval_start > self.cut_interval:
            self._interval_start, self._recent = now, 0
        self._recent += 1
        self._base, self._last = current, now
        if self._recent >= self.storm and now - self._last_cut >= self.cut_interval:
            self._base = max(self.minimum, current * 0.5)
            self._last_cut, self._recent = now, 0
            self.cuts += self._base < current
