"""A background loop that runs one step on a schedule: the limiter's tick, the quota's tick and
the quota monitor's poll.

`Ticker` runs `step()` every `interval` seconds, measured on the injected `clock` from the start
of each step (a slow step does not push the schedule back; a step that overran its whole
interval, e.g. against a Redis at its op timeout, is followed by a full interval, never by a
burst of back-to-back steps on what is already struggling), waiting with the injected `sleep`
(tests pass virtual time). The first step runs after one interval, or at once with
`immediate=True`. A step that raises is logged (with its traceback, on the caller's logger and
with the caller's message, each time) and the loop goes on: no one bad step ends it.

With `min_gap` set, `poke()` asks for the next step sooner: `min_gap` seconds after the start of
the last one (or at once when that is past). Without it the loop waits with plain `sleep` calls
in its own task, and `poke()` is refused.

`start` and `stop` are idempotent: a second `start` while running starts nothing, a second
`stop` (or a `stop` before any `start`) does nothing. `stop` cancels the loop and waits until it
has ended; a cancellation of the caller of `stop` itself still propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Ticker:
    """Runs `step` every `interval` s in one background task; see the module docstring."""

    def __init__(self, step: Callable[[], Awaitable[None]], *, interval: float,
                 log: logging.Logger, failure: str, immediate: bool = False,
                 min_gap: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if interval <= 0:
            raise ValueError("a ticker's interval must be positive")
        self.step = step
        self.interval = interval
        self.immediate = immediate
        self.min_gap = None if min_gap is None else min(min_gap, interval)
        self.clock, self._sleep = clock, sleep
        self._log, self._failure = log, failure
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running loop's task; None before `start` and after `stop`."""
        return self._task

    def start(self) -> None:
        """Start the loop on the running event loop, unless it runs already."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end; harmless when it does not run."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller of stop is cancelled too: not ours to swallow

    def poke(self) -> None:
        """Run the next step soon: `min_gap` after the last one started."""
        if self.min_gap is None:
            raise RuntimeError("this ticker takes no pokes (no min_gap)")
        self._poked.set()

    async def run(self) -> None:
        """The loop itself (`start` runs it in a task); ends only when cancelled."""
        if not self.immediate:
            await self._sleep(self.interval)
        while True:
            self._poked.clear()
            started = self.clock()
            try:
                await self.step()
            except Exception:  # the loop must outlive any one bad step
                self._log.exception(self._failure)
            await self._wait(started)

    async def _wait(self, started: float) -> None:
        due = started + self.interval - self.clock()
        if due <= 0:
            due = self.interval
        if self.min_gap is None:
            await self._sleep(max(0.0, due))
        elif await self._poked_within(due):
            await self._sleep(max(0.0, started + self.min_gap - self.clock()))

    async def _poked_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for a poke; True when poked (a poke already pending counts)."""
        poked = asyncio.ensure_future(self._poked.wait())
        timer = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        try:
            await asyncio.wait({poked, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poked.cancel()
            timer.cancel()
        return self._poked.is_set()
