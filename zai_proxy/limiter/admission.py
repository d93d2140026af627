"""Admission: the gate every upstream attempt passes (an evenly paced send slot + a slot).

Being over a limit is a value (`Rejection`), not an exception. Waiters are served by one
dispatcher task in the order of a `FairQueue`: interactive clients before batch ones (batch keeps
`batch_floor` of the dispatches while it waits), retries (`priority=True`) ahead of the new work
of their class, and new work shared across clients by weight (weighted fair queueing). A client's
class (`class_of`: weight, priority, in-flight cap) is read when its request arrives, so a reload
applies to new requests. A client at its `max_in_flight` waits in the queue, passed over without
holding up anyone behind it, until one of its permits is released.
Every attempt - first tries, retries, probes, queue drains - takes its slot from the same
`Gate` (GCRA: evenly spaced at the controller's rate, burst `RATE_LIMIT_BURST`), local or shared
through Redis. The dispatcher tells the rate controller when the gate is the bottleneck
(requests waiting for it): the saturated time the controller learns from.

The queue is bounded (`queue_max`) and has a deadline (`queue_timeout`); a request is rejected at
once when the queue is full or its expected wait - for the rate, and for a concurrency slot when
every slot is held (long streams) - would pass its deadline. A waiter whose task is cancelled
(client left) is dropped without using a send slot, a concurrency slot or a pacer slot, also
when it leaves while the gate is answering or just as it is granted; a waiter that expires
gives back the pacer slot it took. During a 1312 storm (`Congestion`) the gate slows down for
a bounded while; the learned rate does not move. Clock and sleep are injected so tests run on
virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from zai_proxy.limiter.client_class import ClassOf, default_class
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.congestion import Congestion
from zai_proxy.limiter.fair_queue import FairQueue
from zai_proxy.limiter.fleet_shares import FleetParts
from zai_proxy.limiter.gcra import Gate, LocalGate
from zai_proxy.limiter.permit import Permit, Rejection, Waiter, both, may_go
from zai_proxy.limiter.rate_controller import Adjustment, Outcome, RateController

__all__ = ["Admission", "Permit", "Rejection"]

HOLD_WEIGHT = 0.2  # weight of the newest permit in the mean time a concurrency slot is held


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
        gate: Gate | None = None,
        burst: float = 1.0,
        pacer_gate: Gate | None = None,
        congestion: Congestion | None = None,
        on_adjust: Callable[[Adjustment], None] | None = None,
        class_of: ClassOf = default_class,
        batch_floor: float = 0.1,
        on_admit: Callable[[str, float], None] | None = None,
        on_refuse: Callable[[str, str], None] | None = None,
    ) -> None:
        """`class_of(client)`: the client's weight, priority and in-flight cap (read at each
        request); `batch_floor`: the part of the dispatches batch keeps while interactive work
        waits too; `on_admit(client, waited)` and `on_refuse(client, reason)` see each
        request's answer (per-client metrics)."""
        self.rate, self.concurrency = rate, concurrency
        self.queue_max, self.queue_timeout = queue_max, queue_timeout
        self.clock, self._sleep = clock, sleep
        self.gate: Gate = gate or LocalGate(clock(), burst)
        self.congestion = congestion or Congestion(clock=clock)
        self.on_adjust = on_adjust
        self.in_flight = 0
        self.depth = 0
        self.hold_time: float | None = None  # mean seconds a permit holds its slot
        self.class_of = class_of
        self.on_admit, self.on_refuse = on_admit, on_refuse
        self.queue: FairQueue[Waiter] = FairQueue(batch_floor)  # who goes next
        self.client_in_flight: dict[str, int] = {}  # clients with permits out: how many
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._bound = False  # the rate gate is the bottleneck right now
        self._unreturned = 0  # pacer slots of expired waiters, given back by the dispatcher
        self._bound_since = 0.0
        self._saturated_total = 0.0
        # Quota pacing (see `set_pacing`): a second gate only paced requests draw from.
        self._pacer_gate = pacer_gate
        self.pacer: Gate | None = None
        self.pacing_rate: float | None = None
        # Account-wide shares (see `set_fleet_parts`): per-client pacing under the gate.
        self.fleet = FleetParts()

    # -- rates -----------------------------------------------------------------------------

    @property
    def gate_rate(self) -> float:
        """The send rate now: the controller's, slowed while the upstream is congested."""
        return self.rate.rate * self.congestion.factor()

    def set_pacing(self, rate: float | None) -> None:
        """Cap paced requests (`acquire(paced=True)`) at `rate` req/s; None turns pacing off.

        Unpaced requests (exempt clients, retries) never wait for the pacer, and a paced
        client waiting for it never holds up an unpaced one behind it in the queue.
        """
        if rate is None or rate <= 0:
            self.pacer, self.pacing_rate = None, None
        else:
            if self.pacer is None:
                self.pacer = self._pacer_gate or LocalGate(self.clock())
            self.pacing_rate = rate
        self._wake.set()

    def set_fleet_parts(self, parts: Mapping[str, float] | None,
                        caps: Mapping[str, int] | None = None,
                        divisor: int | None = None) -> None:
        """Pace each named client at its part of the send rate (the fleet's allocation,
        `fleet_shares.allocate`; None: no one, the local fair queue shares alone; a retry is
        never held back by it, but counts against its client's part). `caps`: this replica's
        part of the in-flight caps of clients others want too (`fleet_shares.cap_parts`);
        None: it holds `1 / divisor` of each cap (see `FleetParts.cap`)."""
        self.fleet.set(parts)
        self.fleet.caps = caps
        if divisor is not None:
            self.fleet.divisor = divisor
        for client, *_ in list(self.queue.clients()):  # caps may have moved either way
            self._hold_back(client, self.class_of(client).max_in_flight)
        self._wake.set()

    def _fleet_held(self, client_id: str, now: float) -> bool:
        """Whether the fleet's pacing holds `client_id` back now."""
        return self.fleet.active and self.fleet.wait(client_id, self.gate_rate, now) > 0.0

    def _fleet_open(self, now: float) -> Callable[[Waiter], bool] | None:
        """While the fleet paces clients: who may take a send slot now (None: anyone)."""
        if not self.fleet.active:
            return None
        rate = self.gate_rate
        return lambda w: w.priority or self.fleet.wait(w.client_id, rate, now) == 0.0

    def _estimate(self, position: int, paced: bool = False, client: str | None = None,
                  cap: int | None = None) -> float:
        """Expected seconds until the waiter at `position` (0 = next) is admitted; with `cap`,
        also until enough of `client`'s own permits are released (its in-flight cap)."""
        rate = self.gate_rate
        if paced and self.pacing_rate is not None:
            rate = min(rate, self.pacing_rate)
        wait = (position + 1) / rate
        slots = self.concurrency.limit
        short = position + 1 - max(0, slots - self.in_flight)  # slots that must free up first
        if short > 0 and self.hold_time is not None:
            wait = max(wait, short * self.hold_time / slots)
        cap = None if client is None else self.fleet.cap(client, cap)
        if cap is not None and client is not None and self.hold_time is not None:
            free = max(0, cap - self.client_in_flight.get(client, 0))
            own = self.queue.waiting(client) + 1 - free  # own permits that must end first
            if own > 0:
                wait = max(wait, own * self.hold_time / max(1, cap))
        return wait

    # -- acquire ---------------------------------------------------------------------------

    async def acquire(
        self, client_id: str, *, priority: bool = False, deadline: float | None = None,
        paced: bool = False,
    ) -> Permit | Rejection:
        """Wait for a send slot and a concurrency slot. `deadline` is absolute on this clock.

        `paced`: the request also waits for the quota pacer when pacing is on (`set_pacing`).
        """
        now = self.clock()
        limit = now + self.queue_timeout
        deadline = limit if deadline is None else min(deadline, limit)
        paced = paced and not priority and self.pacer is not None
        pacer_held = False
        klass = self.class_of(client_id)
        cap = klass.max_in_flight  # the client's, account-wide; its part here below
        if not self.depth and self.in_flight < self.concurrency.limit and \
                self._under_cap(client_id, cap) and \
                (priority or not self._fleet_held(client_id, now)):
            try:
                if paced:
                    pacer_held = await self._take_pacer(now) == 0.0
                if (pacer_held or not paced) and await self.gate.take(self.gate_rate,
                                                                      now) == 0.0:
                    return self._noted(client_id, self._grant(client_id, now, cap), False)
            except BaseException:  # left (or the gate failed) while the gate answered
                await self._return_pacer(pacer_held)
                raise
        if self.depth >= self.queue_max:
            await self._return_pacer(pacer_held)
            return self._noted(client_id, Rejection(
                "queue_full", max(1.0, self._estimate(self.depth, paced))))
        ahead = self.queue.ahead(client_id, weight=klass.weight, priority=klass.priority,
                                  retry=priority)
        expected = self._estimate(ahead, paced, client_id, cap)
        if now + expected > deadline:
            await self._return_pacer(pacer_held)
            return self._noted(client_id, Rejection("queue_timeout", max(1.0, expected)))
        future = asyncio.get_running_loop().create_future()
        waiter = Waiter(client_id, priority, deadline, now, future, paced, pacer_held,
                         klass=klass.priority, cap=cap)
        self._hold_back(client_id, cap)  # the cap may have changed since its permits went
        self.queue.push(client_id, waiter, weight=klass.weight, priority=klass.priority,
                         retry=priority)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), waiter))
        self.depth += 1
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._dispatch())
        try:
            return self._noted(client_id, await asyncio.shield(waiter.future))
        except asyncio.CancelledError:
            if not waiter.gone:
                self._drop(waiter)  # the dispatcher refunds a slot taken while we left
                await self._return_pacer(waiter.pacer_held)
            elif waiter.future.done() and isinstance(permit := waiter.future.result(), Permit):
                # Granted just as the client left: free the slot, give back what it took
                # (the pacer slot only if it took one: pacing may have been off meanwhile).
                permit.release()
                self.fleet.refund(client_id, self.gate_rate, self.clock())
                await self.gate.refund(self.gate_rate, self.clock())
                await self._return_pacer(waiter.pacer_held)
            raise

    async def _take_pacer(self, now: float) -> float:
        assert self.pacer is not None and self.pacing_rate is not None
        return await self.pacer.take(self.pacing_rate, now)

    async def _return_pacer(self, held: bool) -> None:
        if held and self.pacer is not None and self.pacing_rate is not None:
            await self.pacer.refund(self.pacing_rate, self.clock())

    def _noted(self, client_id: str, result: Permit | Rejection,
               queued: bool = True) -> Permit | Rejection:
        """`result`, shown to the per-client observers on its way out (a permit granted
        without queueing as having waited 0)."""
        if isinstance(result, Permit):
            if self.on_admit is not None:
                self.on_admit(client_id, result.waited if queued else 0.0)
        elif self.on_refuse is not None:
            self.on_refuse(client_id, result.reason)
        return result

    def _under_cap(self, client_id: str, cap: int | None) -> bool:
        """Whether `client_id` may have one more request upstream: under this replica's part of
        its in-flight `cap`."""
        own = self.fleet.cap(client_id, cap)
        return own is None or self.client_in_flight.get(client_id, 0) < own

    def _hold_back(self, client_id: str, cap: int | None) -> None:
        """Pass `client_id` over in the queue while it is at its in-flight cap."""
        if self._under_cap(client_id, cap):
            self.queue.unblock(client_id)
        else:
            self.queue.block(client_id)

    def _drop(self, waiter: Waiter) -> None:
        waiter.gone = True
        self.queue.remove(waiter.client_id, waiter, priority=waiter.klass,
                           retry=waiter.priority)
        self.depth -= 1
        self._wake.set()

    # -- the queue -------------------------------------------------------------------------

    def _expire(self, now: float) -> float | None:
        """Reject waiters past their deadline; return the seconds to the next deadline."""
        while self._deadlines:
            deadline, _, waiter = self._deadlines[0]
            if waiter.gone:
                heapq.heappop(self._deadlines)
            elif deadline <= now:
                heapq.heappop(self._deadlines)
                self._drop(waiter)
                if waiter.pacer_held:
                    self._unreturned += 1
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

    @property
    def gate_bound(self) -> bool:
        """True while requests wait for the rate gate (it is the bottleneck)."""
        return self._bound

    def saturated_seconds(self) -> float:
        """Total seconds the rate gate was the bottleneck (for a counter)."""
        open_part = self.clock() - self._bound_since if self._bound else 0.0
        return self._saturated_total + open_part

    def _gate_bound(self, bound: bool) -> None:
        if bound != self._bound:
            now = self.clock()
            if bound:
                self._bound_since = now
            else:
                self._saturated_total += now - self._bound_since
            self._bound = bound
            self._emit(self.rate.gate_bound(bound))

    async def _dispatch(self) -> None:
        try:
            while self.depth:
                self._wake.clear()  # before looking, so no wake-up between look and wait is lost
                now = self.clock()
                timeout = self._expire(now)
                while self._unreturned:
                    self._unreturned -= 1
                    await self._return_pacer(True)
                fleet = self._fleet_open(now)
                head = self.queue.peek(fleet)
                if head is None:  # every waiting client is at its cap or its fleet part
                    self._gate_bound(False)
                    opens = None if fleet is None else self.fleet.opens_in(
                        (c for c, *_ in self.queue.clients() if not self.queue.blocked(c)),
                        self.gate_rate, now)
                    await self._wait(timeout if opens is None else
                                     opens if timeout is None else min(opens, timeout))
                    continue
                if self.in_flight >= self.concurrency.limit:
                    self._gate_bound(False)  # waiting for a slot, not for the rate
                    self._emit(self.concurrency.note_demand(self.depth))
                    await self._wait(timeout)
                    continue
                accept = fleet
                if self.pacer is not None:
                    # Who gets the send slot below: never one without its pacer slot.
                    accept = may_go if fleet is None else both(fleet, may_go)
                    if not may_go(head):
                        paced_wait = await self._take_pacer(now)
                        if paced_wait > 0:
                            # Paced work waits for the pacer; unpaced work behind it goes first.
                            if self.queue.peek(accept) is None:
                                self._gate_bound(False)
                                await self._wait(paced_wait if timeout is None
                                                 else min(paced_wait, timeout))
                                continue
                        elif head.gone:  # it left while the pacer answered
                            await self._return_pacer(True)
                            continue
                        else:
                            head.pacer_held = True
                rate = self.gate_rate
                wait = await self.gate.take(rate, now)
                if wait > 0.0:
                    self._gate_bound(True)
                    await self._wait(wait if timeout is None else min(wait, timeout))
                    continue
                # Who is next is decided now, with the slot in hand: whoever arrived or left
                # while the gate answered is seen.
                waiter = self.queue.pop(accept)
                if waiter is None:  # they left while the gate answered: nothing went upstream
                    await self.gate.refund(rate, now)
                    continue
                waiter.gone = True
                self.depth -= 1
                waiter.future.set_result(self._grant(waiter.client_id, waiter.enqueued,
                                                     waiter.cap))
        finally:
            self._gate_bound(False)
            self._task = None

    # -- permits and outcomes --------------------------------------------------------------

    def _grant(self, client_id: str, enqueued: float, cap: int | None) -> Permit:
        self.in_flight += 1
        self.client_in_flight[client_id] = self.client_in_flight.get(client_id, 0) + 1
        if not self._under_cap(client_id, cap):
            self.queue.block(client_id)
        self.rate.granted()
        generation = self.concurrency.admitted(self.in_flight)
        now = self.clock()
        if self.fleet.active or self.fleet.meter is not None:  # the fleet's exchange is on
            self.fleet.charge(client_id, self.gate_rate, now)
        return Permit(self, client_id, generation, self.in_flight, now - enqueued, now, cap=cap)

    def _release(self, permit: Permit) -> None:
        self.in_flight -= 1
        client = permit.client_id
        others = self.client_in_flight[client] - 1
        if others:
            self.client_in_flight[client] = others
        else:
            del self.client_in_flight[client]
        if self.queue.blocked(client):  # its next waiter may be eligible now (cap as of now)
            self._hold_back(client, self.class_of(client).max_in_flight)
        held = self.clock() - permit.granted_at
        self.hold_time = held if self.hold_time is None else \
            self.hold_time + HOLD_WEIGHT * (held - self.hold_time)
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
        if outcome is Outcome.CONGESTED:
            self.congestion.congested()
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
            "gate_rate": self.gate_rate,
            "ceiling": self.rate.ceiling,
            "floor": self.rate.floor,
            "hold": self.rate.hold,
            "ceiling_updated_at": self.rate.ceiling_updated_at,
            "concurrency_limit": self.concurrency.limit,
            "concurrency_ceiling": self.concurrency.ceiling,
            "max_workers": self.concurrency.max_workers,
            "queue_depth": self.depth,
            "in_flight": self.in_flight,
            "slot_hold_seconds": self.hold_time,
            "pacing_rate": self.pacing_rate,
            "congestion_factor": self.congestion.factor(),
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
