"""The simulator's hidden limits as pure classes: time comes from an injected clock, nothing sleeps.

- `RateCeiling`: the hidden request-rate ceiling; the rate follows a schedule of
  `(seconds since start, req/s)` pairs, and a rate of 0 means no ceiling. Its burst allowance
  decides how strict it is: `burst=0` (lenient, the default) allows `rate` admissions per sliding
  window of `max(1, 1/rate)` seconds (so `rate=20` lets 20 through back to back in any 1 s);
  `burst=B >= 1` is a token bucket holding at most B tokens, so `burst=1` (strict) refuses any
  request that arrives sooner than 1/rate after the last one it admitted.
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
    """Request-rate ceiling (sliding window, or a token bucket when `burst` >= 1);
    `try_acquire()` admits and records, or refuses."""

    def __init__(
        self,
        rate: float = 0.0,
        schedule: tuple[tuple[float, float], ...] = (),
        clock: Clock = time.monotonic,
        burst: float = 0.0,
    ) -> None:
        if burst != 0 and burst < 1:
            raise ValueError("burst must be 0 (sliding window) or at least 1 (token bucket)")
        self._clock = clock
        self._base = rate
        self._schedule = tuple(sorted(schedule))
        self.burst = burst
        self._start = clock()
        self._accepted: deque[float] = deque()
        self._tokens = max(1.0, burst)  # token-bucket mode: starts full
        self._updated = self._start

    def configure(self, rate: float, schedule: tuple[tuple[float, float], ...],
                  burst: float | None = None) -> None:
        """Replace the base rate and schedule (and burst); the schedule's origin stays."""
        self._base = rate
        self._schedule = tuple(sorted(schedule))
        if burst is not None and burst != self.burst:
            if burst != 0 and burst < 1:
                raise ValueError("burst must be 0 (sliding window) or at least 1")
            self.burst = burst
            self._tokens = min(self._tokens, max(1.0, burst))

    def reset(self) -> None:
        """Forget admissions and restart the schedule at the current time."""
        self._start = self._updated = self._clock()
        self._accepted.clear()
        self._tokens = max(1.0, self.burst)

    def _refill(self, now: float, rate: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * rate)
        self._updated = max(self._updated, now)

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
        if self.burst:
            self._refill(now, rate)
            if self._tokens < 1.0 - 1e-9:
                return False
            self._tokens -= 1.0
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
        if self.burst:
            self._refill(now, rate)
            return max(0.0, (1.0 - self._tokens) / rate)
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
