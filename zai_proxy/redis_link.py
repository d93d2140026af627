"""A Redis connection that degrades instead of failing: the one policy both shares follow.

`RedisLink.call(op)` runs one Redis operation. A failure (timeout, Redis error, socket error)
turns the link `degraded` (with a short `reason`), logged once by `on_degraded`; while degraded
no operation is tried for `retry_interval` seconds (each answers None at once, so a lost Redis
never slows a request); the first success afterwards logs `on_recovered` and clears it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")


class RedisLink:
    """Degrade-and-retry around Redis calls; subclasses say what degrading means for them."""

    def __init__(self, *, retry_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval, self.clock = retry_interval, clock
        self.degraded = False
        self.reason: str | None = None
        self._retry_at = 0.0

    def on_degraded(self, exc: BaseException) -> None:
        """Called once when a working link fails (log what the fallback is)."""

    def on_recovered(self) -> None:
        """Called once when a degraded link answers again."""

    async def call(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """Run a Redis operation; None (and degraded) when Redis fails or is still backing off."""
        if self.degraded and self.clock() < self._retry_at:
            return None
        try:
            result = await op()
        except (TimeoutError, aioredis.RedisError, OSError) as exc:
            if not self.degraded:
                self.on_degraded(exc)
            self.degraded, self.reason = True, f"{type(exc).__name__}: {exc}"[:200]
            self._retry_at = self.clock() + self.retry_interval
            return None
        if self.degraded:
            self.on_recovered()
            self.degraded, self.reason = False, None
        return result
