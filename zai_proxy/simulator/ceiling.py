"""The simulator's hidden limits as pure classes: time comes from an injected clock, nothing sleeps.

- `RateCeiling`: at most `rate` admissions per sliding window of `max(1, 1/rate)` seconds (so
  `rate=20` allows 20 in any 1 s, `rate=0.5` allows 1 in any 2 s); the rate follows a schedule of
  `(seconds since start, req/s)` pairs. A rate of 0 means no ceiling.
- `ConcurrencyCeiling`: in-flight counter with an optional cap, also tracking the peak.

The plan quota (token budgets per window) is `simulator.quota`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class RateCeiling:
    """Sliding-window request-rate ceiling; `try_acquire()` admits and records, or refuses."""

    def __init__(
        self,
        rate: float = 0.0,
        schedule: tuple[tuple[float, float], ...] = (),
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._base = rate
        self._schedule = tuple(sorted(schedule))
        self._start = clock()
        self._accepted: deque[float] = deque()

    def configure(self, rate: float, schedule: tuple[tuple[float, float], ...]) -> None:
        """Replace the base rate and schedule; the schedule's origin stays where it was."""
        self._base = rate
        self._schedule = tuple(sorted(schedule))

    def reset(self) -> None:
        """Forget admissions and restart the schedule at the current time."""
        self._start = self._clock()
        self._accepted.clear()

    def rate_at(self, elapsed: float) -> float:
        """The ceiling (req/s) `elapsed` seconds after start: the last schedule entry reached."""
        rate = self._base
        for start, scheduled in self._schedule:
            if start > elapsed:
                break
            rate = scheduled
        return rate

    def current(self) -> float:
        """The ceiling now (0 = none)."""
        return self.rate_at(self._clock() - self._start)

    @staticmethod
    def _window(rate: float) -> tuple[float, int]:
        window = max(1.0, 1.0 / rate)
        return window, max(1, math.floor(rate * window + 1e-9))

    def _prune(self, now: float, window: float) -> None:
        horizon = now - window
        accepted = self._accepted
        while accepted and accepted[0] <= horizon:
            accepted.popleft()

    def try_acquire(self) -> bool:
        """Admit one request if the window has room (always, without a ceiling)."""
        now = self._clock()
        rate = self.rate_at(now - self._start)
        if rate <= 0:
            return True
        window, allowed = self._window(rate)
        self._prune(now, window)
        if len(self._accepted) >= allowed:
            return False
        self._accepted.append(now)
        return True

    def retry_after(self) -> float:
        """Seconds until `try_acquire` could succeed (0 when it would now)."""
        now = self._clock()
        rate = self.rate_at(now - self._start)
        if rate <= 0:
            return 0.0
        window, allowed = self._window(rate)
        self._prune(now, window)
        if len(self._accepted) < allowed:
            return 0.0
        return max(0.0, self._accepted[len(self._accepted) - allowed] + window - now)


class ConcurrencyCeiling:
    """In-flight requests with an optional cap (`limit=0`: unlimited); tracks the peak."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.in_flight = 0
        self.peak = 0

    def try_enter(self) -> bool:
        """Count one more request in flight, or refuse when at the cap."""
        if self.limit and self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        return True

    def leave(self) -> None:
        """One request finished (its body ended or the client left)."""
        self.in_flight = max(0, self.in_flight - 1)

    def reset_peak(self) -> None:
        self.peak = self.in_flight
