"""The one fake clock of the unit tests: virtual monotonic and wall time, and a `sleep` that
returns only when the test advances time past it.

Unit tests never read the real clock and never sleep to synchronise: they pass `vt` (as the
monotonic clock), `vt.wall` (as the wall clock) and `vt.sleep` to the code under test, and move
time with `await vt.advance(seconds)`, which wakes every sleeper due by then, in order, letting
the event loop run between wake-ups (`settle`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

# Epoch seconds the wall clock shows at virtual time 0 (2026-12-07 00:00:00 UTC).
WALL_EPOCH = 1_796_601_600.0


async def settle(rounds: int = 20) -> None:
    """Let every task that is ready run until it blocks again (a bounded number of rounds)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class VirtualTime:
    """A monotonic clock (`vt()`), a wall clock (`vt.wall()`) and `sleep` on virtual time."""

    def __init__(self, start: float = 0.0, wall_epoch: float = WALL_EPOCH) -> None:
        self.t = start
        self.wall_epoch = wall_epoch
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        """Epoch seconds: moves with the monotonic clock."""
        return self.wall_epoch + self.t

    async def sleep(self, seconds: float) -> None:
        """Return once the test has advanced time by `seconds` (0 or less: yield once)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """Sleeps not yet woken (cancelled ones included until their time passes)."""
        return len(self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking each sleeper at its own time, in order."""
        end = self.t + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            when, _, future = heapq.heappop(self._sleepers)
            self.t = max(self.t, when)
            if not future.done():
                future.set_result(None)
            await settle()
        self.t = end
        await settle()

    def jump(self, seconds: float) -> None:
        """Move time without waking anyone (a process that was stopped, a clock step)."""
        self.t += seconds
