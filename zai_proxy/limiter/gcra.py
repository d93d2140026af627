"""Even pacing: the generic cell rate algorithm (GCRA) at a variable rate, O(1) per take.

A `Gcra` remembers one number, the theoretical arrival time `tat` of the next request. At rate r
requests leave `1/r` apart; `burst` B lets up to B leave back to back after an idle spell (B = 1:
never two closer than 1/r, which is what an upstream that allows no burst demands). A request
that leaves late does not earn a short gap after it: the next one is due 1/r after it left.

`Gate` is what admission draws from: this class in one process, or the same algorithm as a Lua
script on Redis' clock shared by every replica of the account (`shared_state.SharedState`).
"""

from __future__ import annotations

from typing import Protocol

EPSILON = 1e-9


class Gate(Protocol):
    """A pacer: `take` one send slot at `rate` req/s (0.0) or say how long until one is free."""

    async def take(self, rate: float, now: float) -> float:
        """0.0 when a slot was taken, else seconds until one is available."""

    async def refund(self, rate: float, now: float) -> None:
        """Give back a slot taken for a request that never went upstream."""


class Gcra:
    """The pacing state; times are on the caller's clock (monotonic seconds)."""

    def __init__(self, now: float, burst: float = 1.0) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.burst = burst
        self.tat = now
        self.rate: float | None = None

    def _follow(self, rate: float, now: float) -> float:
        """Adopt `rate`; slots already promised keep their count, at the new spacing."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        if self.rate is not None and rate != self.rate and self.tat > now:
            self.tat = now + (self.tat - now) * self.rate / rate
        self.rate = rate
        return 1.0 / rate

    def wait_time(self, rate: float, now: float) -> float:
        """Seconds until a slot is free (0.0: now), without taking it."""
        interval = self._follow(rate, now)
        wait = max(self.tat, now) - (self.burst - 1.0) * interval - now
        return wait if wait > EPSILON else 0.0

    def try_take(self, rate: float, now: float) -> float:
        """Take a slot: 0.0 if taken, else the seconds until one is free."""
        wait = self.wait_time(rate, now)
        if wait:
            return wait
        self.tat = max(self.tat, now) + 1.0 / rate
        return 0.0

    def give_back(self, rate: float, now: float) -> None:
        """Return a slot taken at `rate` (never earning credit for time already idle)."""
        self._follow(rate, now)
        self.tat = max(now, self.tat - 1.0 / rate)


class LocalGate:
    """A `Gcra` in this process as a `Gate`."""

    def __init__(self, now: float, burst: float = 1.0) -> None:
        self.gcra = Gcra(now, burst)

    async def take(self, rate: float, now: float) -> float:
        return self.gcra.try_take(rate, now)

    async def refund(self, rate: float, now: float) -> None:
        self.gcra.give_back(rate, now)
