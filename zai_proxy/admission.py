"""Admission: the gate every upstream attempt passes (rate token + concurrency slot).

Being over a limit is a value (`Rejection`), not an exception. Waiters are served by one
dispatcher task: retries (`priority=True`) first, then new work round-robin across client ids.
The queue is bounded (`queue_max`) and has a deadline (`queue_timeout`); a request is rejected
at once when the queue is full or its expected wait would pass its deadline. A waiter whose task
is cancelled (client left) is dropped without using a token or a slot. Clock and sleep are
injected so tests run on virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

from zai_proxy.concurrency_controller import ConcurrencyController
from zai_proxy.rate_controller import Adjustment, Outcome, RateController, TokenBucket


class RateGate(Protocol):
    """Where rate tokens come from: a local bucket, or Redis shared by all replicas."""

    async def take(self, rate: float, now: float) -> float:
        """0.0 when a token was taken, else seconds until one is available."""

    async def refund(self, now: float) -> None:
        """Return a token taken for a request that never went upstream."""


class LocalGate:
    """A `TokenBucket` in this process, following the controller's rate."""

    def __init__(self, now: float, burst: float = 1.0) -> None:
        self.bucket: TokenBucket | None = None
        self._now, self._burst = now, burst

    async def take(self, rate: float, now: float) -> float:
        if self.bucket is None:
            self.bucket = TokenBucket(rate, min(now, self._now), self._burst)
        elif self.bucket.rate != rate:
            self.bucket.set_rate(rate, now)
        return self.bucket.try_take(now)

    async def refund(self, now: float) -> None:
        if self.bucket is not None:
            self.bucket.refund(now)


@dataclass(frozen=True)
class Rejection:
    """Not admitted; `retry_after` is an estimate in seconds for the client's Retry-After."""

    reason: Literal["queue_full", "queue_timeout"]
    retry_after: float


@dataclass(eq=False)
class Permit:
    """One admitted attempt holding one concurrency slot; `release()` is idempotent."""

    admission: Admission
    client_id: str
    generation: int
    in_flight_at_admission: int
    waited: float
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._release()

    def observe(self, outcome: Outcome) -> list[Adjustment]:
        """Feed this attempt's outcome to the controllers."""
        return self.admission.observe(outcome, self)

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@dataclass(eq=False)
class _Waiter:
    client_id: str
    priority: bool
    deadline: float
    enqueued: float
    future: asyncio.Future[Permit | Rejection] = field(repr=False)
    paced: bool = False  # also needs a token of the quota pacer (when pacing is on)
    gone: bool = False  # admitted, expired or cancelled: skip it in the queues


class Admission:
    """Rate and concurrency admission with a bounded, fair, deadline-aware queue."""

    def __init__(
        self,
        rate: RateController,
        concurrency: ConcurrencyController,
        *,
        queue_max: int = 1000,
        queue_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        gate: RateGate | None = None,
        on_adjust: Callable[[Adjustment], None] | None = None,
    ) -> None:
        self.rate, self.concurrency = rate, concurrency
        self.queue_max, self.queue_timeout = queue_max, queue_timeout
        self.clock, self._sleep = clock, sleep
        self.gate: RateGate = gate or LocalGate(clock())
        self.on_adjust = on_adjust
        self.in_flight = 0
        self.depth = 0
        self._priority: deque[_Waiter] = deque()
        self._clients: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Quota pacing (see `set_pacing`): a second bucket only paced requests draw from.
        self.pacer: TokenBucket | None = None

    def set_pacing(self, rate: float | None) -> None:
        """Cap paced requests (`acquire(paced=True)`) at `rate` req/s; None turns pacing off.

        Unpaced requests (exempt clients, retries) never wait for the pacer, and a paced
        client waiting for it never holds up an unpaced one behind it in the queue.
        """
        now = self.clock()
        if rate is None or rate <= 0:
            self.pacer = None
        elif self.pacer is None:
            self.pacer = TokenBucket(rate, now)
        elif self.pacer.rate != rate:
            self.pacer.set_rate(rate, now)
        self._wake.set()

    def _estimate(self, position: int, paced: bool = False) -> float:
        rate = self.rate.rate
        if paced and self.pacer is not None:
            rate = min(rate, self.pacer.rate)
        return (position + 1) / rate

    async def acquire(
        self, client_id: str, *, priority: bool = False, deadline: float | None = None,
        paced: bool = False,
    ) -> Permit | Rejection:
        """Wait for a token and a slot. `deadline` is absolute on this admission's clock.

        `paced`: the request also waits for the quota pacer when pacing is on (`set_pacing`).
        """
        now = self.clock()
        limit = now + self.queue_timeout
        deadline = limit if deadline is None else min(deadline, limit)
        paced = paced and not priority
        if not self.depth and self.in_flight < self.concurrency.limit and (
                not paced or self.pacer is None or self.pacer.wait_time(now) == 0.0):
            if await self.gate.take(self.rate.rate, now) == 0.0:
                if paced and self.pacer is not None:
                    self.pacer.try_take(now)
                return self._grant(client_id, now)
        if self.depth >= self.queue_max:
            return Rejection("queue_full", max(1.0, self._estimate(self.depth, paced)))
        expected = self._estimate(len(self._priority) if priority else self.depth, paced)
        if now + expected > deadline:
            return Rejection("queue_timeout", max(1.0, expected))
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(client_id, priority, deadline, now, future, paced)
        if priority:
            self._priority.append(waiter)
        else:
            self._clients.setdefault(client_id, deque()).append(waiter)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), waiter))
        self.depth += 1
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._dispatch())
        try:
            return await asyncio.shield(waiter.future)
        except asyncio.CancelledError:
            if not waiter.gone:
                self._drop(waiter)
            elif waiter.future.done() and isinstance(permit := waiter.future.result(), Permit):
                permit.release()  # granted as the client left: free the slot, return the token
                await self.gate.refund(self.clock())
            raise

    def _drop(self, waiter: _Waiter) -> None:
        waiter.gone = True
        self.depth -= 1
        self._wake.set()

    def _next(self) -> _Waiter | None:
        """The waiter to serve next: retries first, then round-robin across clients."""
        while self._priority and self._priority[0].gone:
            self._priority.popleft()
        if self._priority:
            return self._priority[0]
        while self._clients:
            client, waiters = next(iter(self._clients.items()))
            while waiters and waiters[0].gone:
                waiters.popleft()
            if waiters:
                return waiters[0]
            del self._clients[client]
        return None

    def _next_unpaced(self) -> _Waiter | None:
        """The first waiter in serving order that does not need the pacer (heads only)."""
        for waiter in self._priority:
            if not waiter.gone:
                return waiter
        for waiters in self._clients.values():
            head = next((w for w in waiters if not w.gone), None)
            if head is not None and not head.paced:
                return head
        return None

    def _pop(self, waiter: _Waiter) -> None:
        if waiter.priority:
            self._priority.popleft()
            return
        waiters = self._clients[waiter.client_id]
        while waiters[0] is not waiter:  # gone waiters ahead of it
            waiters.popleft()
        waiters.popleft()
        if waiters:
            self._clients.move_to_end(waiter.client_id)  # the next client's turn
        else:
            del self._clients[waiter.client_id]

    def _expire(self, now: float) -> float | None:
        """Reject waiters past their deadline; return the seconds to the next deadline."""
        while self._deadlines:
            deadline, _, waiter = self._deadlines[0]
            if waiter.gone:
                heapq.heappop(self._deadlines)
            elif deadline <= now:
                heapq.heappop(self._deadlines)
                self._drop(waiter)
                waiter.future.set_result(Rejection("queue_timeout", max(1.0, self._estimate(0))))
            else:
                return deadline - now
        return None

    async def _wait(self, seconds: float | None) -> None:
        tasks: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
        if seconds is not None:
            tasks.add(asyncio.ensure_future(self._sleep(max(0.0, seconds))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    async def _dispatch(self) -> None:
        try:
            while self.depth:
                self._wake.clear()  # before looking, so no wake-up between look and wait is lost
                now = self.clock()
                timeout = self._expire(now)
                waiter = self._next()
                if waiter is None:
                    break
                if self.in_flight >= self.concurrency.limit:
                    self._emit(self.concurrency.note_demand(self.depth))
                    await self._wait(timeout)
                    continue
                pacer = self.pacer
                if waiter.paced and pacer is not None and (paced := pacer.wait_time(now)) > 0:
                    # Paced work waits for the pacer; unpaced work behind it goes first.
                    unpaced = self._next_unpaced()
                    if unpaced is None:
                        await self._wait(paced if timeout is None else min(paced, timeout))
                        continue
                    waiter = unpaced
                wait = await self.gate.take(self.rate.rate, now)
                if wait > 0.0:
                    self._emit(self.rate.note_demand(self.depth))
                    await self._wait(wait if timeout is None else min(wait, timeout))
                    continue
                if waiter.gone:  # it left while the gate answered
                    await self.gate.refund(now)
                    continue
                if waiter.paced and pacer is not None:
                    pacer.try_take(now)
                self._pop(waiter)
                waiter.gone = True
                self.depth -= 1
                waiter.future.set_result(self._grant(waiter.client_id, waiter.enqueued))
        finally:
            self._task = None

    def _grant(self, client_id: str, enqueued: float) -> Permit:
        self.in_flight += 1
        generation = self.concurrency.admitted(self.in_flight)
        return Permit(self, client_id, generation, self.in_flight, self.clock() - enqueued)

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue again now (limits changed from outside: restore, adopt)."""
        self._wake.set()

    def _emit(self, adjustments: list[Adjustment]) -> None:
        if adjustments:
            self._wake.set()  # a raised limit may admit waiters now
        if self.on_adjust is not None:
            for adjustment in adjustments:
                self.on_adjust(adjustment)

    def observe(self, outcome: Outcome, permit: Permit | None = None) -> list[Adjustment]:
        """Feed one attempt's outcome to the controllers; returns (and emits) their decisions."""
        out = self.rate.record(outcome)
        if outcome is Outcome.CONCURRENCY_LIMITED and permit is not None:
            out += self.concurrency.record_limited(permit.in_flight_at_admission, permit.generation)
        self._emit(out)
        return out

    def tick(self) -> list[Adjustment]:
        """Evaluate windows that ended (call periodically so quiet periods are seen)."""
        out = self.rate.tick() + self.concurrency.tick()
        self._emit(out)
        return out

    def snapshot(self) -> dict[str, float | int | None]:
        """Figures for /health and the gauges (0 would mean 'none learned' in a gauge)."""
        return {
            "rate": self.rate.rate,
            "ceiling": self.rate.ceiling,
            "hold": self.rate.hold,
            "ceiling_updated_at": self.rate.ceiling_updated_at,
            "concurrency_limit": self.concurrency.limit,
            "concurrency_ceiling": self.concurrency.ceiling,
            "max_workers": self.concurrency.max_workers,
            "queue_depth": self.depth,
            "in_flight": self.in_flight,
            "pacing_rate": None if self.pacer is None else self.pacer.rate,
        }

    async def close(self) -> None:
        """Reject everyone still waiting and stop the dispatcher (shutdown)."""
        for _, _, waiter in self._deadlines:
            if not waiter.gone:
                self._drop(waiter)
                waiter.future.set_result(Rejection("queue_timeout", 1.0))
        self._deadlines.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
