"""A Redis connection that degrades instead of failing: the one policy every Redis user follows.

`RedisLink.call(op)` runs one Redis operation under a bounded timeout (`op_timeout`, 0.5 s by
default). A failure turns the link `degraded` (with a short `reason`), logged once by
`on_degraded`; while degraded no operation is tried for `retry_interval` seconds (each answers
None at once, so a lost or stalled Redis never slows a request by more than one timeout); the
first success afterwards logs `on_recovered` and clears it.

A failure is anything the operation raises: a timeout, a Redis or socket error, and also an
answer that is not what the command returns (`BadAnswer`, or the ValueError/TypeError a client
library raises parsing it): a Redis that answers nonsense (a wrong port, a proxy that says `+OK`
to everything) is as unusable as one that is down, and must never surface as an exception in a
request or at startup. Values that are well-formed but unusable (a stored document holding NaN)
are the caller's to drop; `ignored` logs each kind of those once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("zai_proxy.redis_link")

Timeout = Callable[[float], AbstractAsyncContextManager[Any]]


class BadAnswer(ValueError):
    """Redis answered something the command cannot return: treated like a failed call."""


class RedisLink:
    """Degrade-and-retry around Redis calls; subclasses say what degrading means for them.

    `timeout` makes the context manager that bounds each call (`asyncio.timeout`; tests pass
    one on virtual time).
    """

    def __init__(self, *, op_timeout: float = 0.5, retry_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 timeout: Timeout = asyncio.timeout) -> None:
        self.op_timeout, self.retry_interval, self.clock = op_timeout, retry_interval, clock
        self._timeout = timeout
        self.degraded = False
        self.reason: str | None = None
        self._retry_at = 0.0
        self._ignored: set[str] = set()

    def on_degraded(self, exc: BaseException) -> None:
        """Called once when a working link fails (log what the fallback is)."""

    def on_recovered(self) -> None:
        """Called once when a degraded link answers again."""

    async def call(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """Run a Redis operation within `op_timeout`; None (and degraded) when it fails (see
        the module doc) or the link is still backing off. `op` should validate what it reads
        and raise `BadAnswer` for a reply the command cannot give."""
        if self.degraded and self.clock() < self._retry_at:
            return None
        try:
            async with self._timeout(self.op_timeout):
                result = await op()
        except Exception as exc:  # every failure degrades; cancellation is not an Exception
            if isinstance(exc, TimeoutError) and not str(exc):
                exc = TimeoutError(f"no answer within {self.op_timeout:g} s")
            if not self.degraded:
                self.on_degraded(exc)
            self.degraded, self.reason = True, f"{type(exc).__name__}: {exc}"[:200]
            self._retry_at = self.clock() + self.retry_interval
            return None
        if self.degraded:
            self.on_recovered()
            self.degraded, self.reason = False, None
        return result

    def ignored(self, what: str, value: object) -> None:
        """Log (once per `what`) a value read from Redis that is dropped as unusable."""
        if what in self._ignored:
            return
        self._ignored.add(what)
        log.warning("ignored a bad value read from Redis (logged once): %s = %.80r", what, value)


def finite(value: object) -> float | None:
    """`value` as a finite float when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number - number == 0 else None  # NaN and ±inf fail this


def number_reply(value: object, what: str) -> float:
    """A finite number Redis sent as an integer, float, or its decimal text; else BadAnswer."""
    if isinstance(value, bytes | str):
        try:
            value = float(value)
        except ValueError:
            raise BadAnswer(f"{what}: {value!r:.60}") from None
    number = finite(value)
    if number is None:
        raise BadAnswer(f"{what}: {value!r:.60}")
    return number
