"""Admission queue on virtual time: fairness, priority, bounds, deadlines, cancellation races,
saturation reporting, concurrency-aware estimates, congestion backoff, pacing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.support.clock import VirtualTime, settle
from zai_proxy.limiter.admission import Admission, Permit, Rejection
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.gcra import Gate, LocalGate
from zai_proxy.limiter.rate_controller import Adjustment, Outcome, RateController


def build(vt: VirtualTime, *, rate: float = 10, workers: int = 10, queue_max: int = 100,
          timeout: float = 30.0, gate: Gate | None = None) -> Admission:
    rc = RateController(clock=vt, initial=rate, minimum=1, maximum=50, window=5)
    cc = ConcurrencyController(clock=vt, max_workers=workers, window=5)
    return Admission(rc, cc, queue_max=queue_max, queue_timeout=timeout, clock=vt, sleep=vt.sleep,
                     gate=gate)


class HookedGate:
    """A local gate that counts refunds and can run a hook inside `take` (a race in the test)."""

    def __init__(self, vt: VirtualTime) -> None:
        self.inner = LocalGate(vt())
        self.refunds = 0
        self.hook: Callable[[], Awaitable[None]] | None = None

    async def take(self, rate: float, now: float) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        return await self.inner.take(rate, now)

    async def refund(self, rate: float, now: float) -> None:
        self.refunds += 1
        await self.inner.refund(rate, now)


async def test_first_request_passes_at_once_then_paced() -> None:
    vt = VirtualTime()
    adm = build(vt)
    first = await adm.acquire("a")
    assert isinstance(first, Permit) and first.waited == 0
    task = asyncio.create_task(adm.acquire("a"))
    await settle()
    assert not task.done() and adm.depth == 1
    await vt.advance(0.1)
    second = task.result()
    assert isinstance(second, Permit) and second.waited == pytest.approx(0.1)
    assert adm.in_flight == 2


async def test_round_robin_across_clients_and_priority_first() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=1, timeout=100)
    order: list[str] = []

    async def one(client: str, priority: bool = False) -> None:
        result = await adm.acquire(client, priority=priority)
        assert isinstance(result, Permit)
        order.append(client + ("!" if priority else ""))
        result.release()

    await one("warm")  # takes the only token
    tasks = [asyncio.create_task(one("busy")) for _ in range(4)]
    await settle()
    tasks += [asyncio.create_task(one("quiet")), asyncio.create_task(one("other"))]
    await settle()
    tasks.append(asyncio.create_task(one("retry", priority=True)))
    await settle()
    await vt.advance(10)
    await asyncio.gather(*tasks)
    assert order == ["warm", "retry!", "busy", "quiet", "other", "busy", "busy", "busy"]


async def test_queue_full_rejects_at_once() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=1, queue_max=2, timeout=100)
    assert isinstance(await adm.acquire("a"), Permit)
    waiting = [asyncio.create_task(adm.acquire("a")) for _ in range(2)]
    await settle()
    rejected = await adm.acquire("b")
    assert isinstance(rejected, Rejection) and rejected.reason == "queue_full"
    assert rejected.retry_after >= 1.0
    for task in waiting:
        task.cancel()
    await settle()
    assert adm.depth == 0


async def test_expected_wait_past_deadline_rejects_at_once() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=1, timeout=2.5)
    assert isinstance(await adm.acquire("a"), Permit)
    w1 = asyncio.create_task(adm.acquire("a"))
    w2 = asyncio.create_task(adm.acquire("a"))
    await settle()
    third = await adm.acquire("a")  # position 2 at 1 req/s: 3 s > 2.5 s
    assert isinstance(third, Rejection) and third.reason == "queue_timeout"
    explicit = await adm.acquire("b", priority=True, deadline=vt.t + 0.5)
    assert isinstance(explicit, Rejection)
    await vt.advance(2)
    assert isinstance(w1.result(), Permit) and isinstance(w2.result(), Permit)


async def test_waiter_expires_when_capacity_shrinks() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=10, workers=1, timeout=1.0)
    held = await adm.acquire("a")
    assert isinstance(held, Permit)
    task = asyncio.create_task(adm.acquire("b"))  # waits for the slot
    await vt.advance(1.0)
    result = task.result()
    assert isinstance(result, Rejection) and result.reason == "queue_timeout"
    assert adm.depth == 0
    held.release()


async def test_cancelled_waiter_uses_no_token_or_slot() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=1, timeout=100)
    assert isinstance(await adm.acquire("a"), Permit)
    leaving = asyncio.create_task(adm.acquire("gone"))
    staying = asyncio.create_task(adm.acquire("stay"))
    await settle()
    leaving.cancel()
    await settle()
    assert adm.depth == 1
    await vt.advance(1.0)
    assert isinstance(staying.result(), Permit)  # got the token the leaver would have used
    assert adm.in_flight == 2


async def test_permit_released_exactly_once_on_every_path() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=50, workers=1)
    permit = await adm.acquire("a")
    assert isinstance(permit, Permit)
    permit.release()
    permit.release()
    assert adm.in_flight == 0
    await vt.advance(1)
    with pytest.raises(RuntimeError):
        async with await adm.acquire("a") as held:  # type: ignore[union-attr]
            assert adm.in_flight == 1 and isinstance(held, Permit)
            raise RuntimeError("upstream blew up")
    assert adm.in_flight == 0


async def test_slot_release_wakes_waiter() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=50, workers=1)
    held = await adm.acquire("a")
    assert isinstance(held, Permit)
    task = asyncio.create_task(adm.acquire("b"))
    await vt.advance(5)
    assert not task.done()
    held.release()
    await vt.advance(0.1)
    assert isinstance(task.result(), Permit)


async def test_observe_feeds_controllers_and_reports_adjustments() -> None:
    vt = VirtualTime()
    seen: list[Adjustment] = []
    adm = build(vt, rate=10, workers=10)
    adm.on_adjust = seen.append
    permits = []
    for _ in range(6):
        p = await adm.acquire("a")
        assert isinstance(p, Permit)
        permits.append(p)
        await vt.advance(0.1)
    permits[-1].observe(Outcome.CONCURRENCY_LIMITED)  # 6th in flight refused: limit 5
    assert adm.concurrency.limit == 5
    assert seen[-1].direction == "decrease"
    for p in permits:
        p.release()
    snap = adm.snapshot()
    assert snap["concurrency_limit"] == 5 and snap["concurrency_ceiling"] == 5
    assert snap["queue_depth"] == 0 and snap["in_flight"] == 0 and snap["rate"] == 10


async def test_close_rejects_waiters() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=1, timeout=100)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("b"))
    await settle()
    await adm.close()
    assert isinstance(task.result(), Rejection)


async def test_pacing_caps_paced_requests_and_lets_unpaced_ones_pass() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=10, timeout=100)
    adm.set_pacing(1.0)
    assert isinstance(await adm.acquire("batch", paced=True), Permit)  # the pacer's one token
    paced = asyncio.create_task(adm.acquire("batch", paced=True))
    await vt.advance(0.1)
    unpaced = asyncio.create_task(adm.acquire("interactive"))
    await vt.advance(0.2)
    # The interactive request queued behind the paced one is served at the rate (10/s)...
    assert isinstance(unpaced.result(), Permit) and not paced.done()
    await vt.advance(0.5)
    assert not paced.done()
    await vt.advance(0.25)  # ...the paced one only when the pacer (1/s) has a token again
    assert isinstance(paced.result(), Permit)
    assert adm.snapshot()["pacing_rate"] == 1.0


async def test_pacing_off_again_and_paced_estimate_rejects_early() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=10, timeout=5)
    adm.set_pacing(0.1)  # one paced request per 10 s
    assert isinstance(await adm.acquire("a", paced=True), Permit)
    early = await adm.acquire("a", paced=True)
    assert isinstance(early, Rejection) and early.reason == "queue_timeout"
    assert early.retry_after >= 10
    adm.set_pacing(None)
    await vt.advance(0.1)
    assert isinstance(await adm.acquire("a", paced=True), Permit)


async def test_granted_just_as_the_client_leaves_frees_the_slot_and_the_send_slot() -> None:
    vt = VirtualTime()
    gate = HookedGate(vt)
    adm = build(vt, rate=1, timeout=100, gate=gate)
    assert isinstance(await adm.acquire("a"), Permit)
    leaving = asyncio.create_task(adm.acquire("gone"))
    await settle()

    async def leave() -> None:  # the client leaves while the dispatcher is about to grant it
        leaving.cancel()

    gate.hook = leave
    await vt.advance(1.0)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert adm.in_flight == 1  # only the first permit: the leaver's slot came back
    assert gate.refunds == 1  # and its send slot: the next request goes at once
    assert isinstance(await adm.acquire("next"), Permit)


async def test_leaving_while_the_gate_answers_uses_no_send_slot() -> None:
    vt = VirtualTime()
    gate = HookedGate(vt)
    adm = build(vt, rate=1, timeout=100, gate=gate)
    assert isinstance(await adm.acquire("a"), Permit)
    leaving = asyncio.create_task(adm.acquire("gone"))
    await settle()
    answered = asyncio.Event()

    async def slow_answer() -> None:  # Redis takes its time; the client leaves meanwhile
        leaving.cancel()
        await answered.wait()

    gate.hook = slow_answer
    await vt.advance(1.0)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    answered.set()
    await settle()
    assert adm.in_flight == 1 and adm.depth == 0
    assert gate.refunds == 1  # the slot taken for nobody went back
    assert isinstance(await adm.acquire("next"), Permit)


async def test_the_gate_is_reported_saturated_only_while_requests_wait_for_it() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=2, workers=10, timeout=100)
    assert isinstance(await adm.acquire("a"), Permit)  # the fast path: nothing waits
    assert not adm.gate_bound and not adm.rate.saturated
    waiting = [asyncio.create_task(adm.acquire("a")) for _ in range(3)]
    await settle()
    assert adm.gate_bound and adm.rate.saturated  # waiting for the rate
    await vt.advance(1.5)  # 3 sends at 2/s: the queue drains at 1.5 s
    assert all(isinstance(t.result(), Permit) for t in waiting)
    assert not adm.gate_bound and not adm.rate.saturated
    assert adm.saturated_seconds() == pytest.approx(1.5)
    counts = adm.rate.drain()
    assert counts.saturated == pytest.approx(1.5) and counts.sent == 3


async def test_waiting_for_a_concurrency_slot_is_not_rate_saturation() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=1, workers=2, timeout=100)
    held = await adm.acquire("a")
    assert isinstance(held, Permit)
    second = asyncio.create_task(adm.acquire("b"))
    third = asyncio.create_task(adm.acquire("c"))
    await settle()
    assert adm.gate_bound  # b waits for the rate
    await vt.advance(1.0)
    assert isinstance(second.result(), Permit)
    await vt.advance(3.0)  # c waits for a slot (2 in flight): the rate is not the bottleneck
    assert not third.done() and not adm.gate_bound
    assert adm.saturated_seconds() == pytest.approx(1.0)
    held.release()
    await vt.advance(0.1)
    assert isinstance(third.result(), Permit)


async def test_long_streams_holding_every_slot_reject_a_request_that_would_wait_too_long() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=50, workers=2, timeout=30.0)

    async def take(client: str) -> Permit:
        task = asyncio.create_task(adm.acquire(client))
        await vt.advance(0.1)
        result = task.result()
        assert isinstance(result, Permit)
        return result

    first = [await take("s"), await take("s")]
    unknown = asyncio.create_task(adm.acquire("early", deadline=vt.t + 4.0))
    await settle()
    assert not unknown.done()  # no hold time known yet: it queues
    await vt.advance(3.0)
    for p in first:
        p.release()  # streams of ~3 s
    await vt.advance(0.1)
    assert isinstance(unknown.result(), Permit)
    streams = [unknown.result(), await take("s")]
    assert adm.hold_time is not None and adm.hold_time > 2.5
    # Both slots held by streams of ~3 s: a slot frees in ~1.5 s, past a 1 s deadline. The
    # rate alone (50/s) would promise 20 ms.
    late = asyncio.create_task(adm.acquire("late", deadline=vt.t + 1.0))
    await settle()
    assert late.done(), "queued although its wait would pass its deadline"
    rejected = late.result()
    assert isinstance(rejected, Rejection) and rejected.reason == "queue_timeout"
    assert rejected.retry_after >= 1.0
    patient = asyncio.create_task(adm.acquire("patient", deadline=vt.t + 10.0))
    await settle()
    assert not patient.done()  # a deadline the estimate fits in: it waits
    for p in streams:
        p.release()
    await vt.advance(0.1)
    assert isinstance(patient.result(), Permit)


async def test_a_1312_storm_slows_the_gate_but_not_the_learned_rate() -> None:
    vt = VirtualTime()
    adm = build(vt, rate=10, timeout=100)
    permit = await adm.acquire("a")
    assert isinstance(permit, Permit)
    for _ in range(2):
        permit.observe(Outcome.CONGESTED)
    assert adm.rate.rate == 10 and adm.gate_rate == 5.0  # halved for a while, bounded
    assert adm.snapshot()["congestion_factor"] == 0.5
    task = asyncio.create_task(adm.acquire("a"))
    await vt.advance(0.15)
    assert not task.done()  # at 5/s the next slot is 0.2 s away, not 0.1 s
    await vt.advance(0.1)
    assert isinstance(task.result(), Permit)
    await vt.advance(10)
    assert adm.gate_rate == 10


async def test_pacing_draws_from_an_injected_shared_pacer() -> None:
    vt = VirtualTime()
    pacer = HookedGate(vt)
    rc = RateController(clock=vt, initial=10, minimum=1, maximum=50, window=5)
    cc = ConcurrencyController(clock=vt, max_workers=10, window=5)
    adm = Admission(rc, cc, clock=vt, sleep=vt.sleep, pacer_gate=pacer)
    adm.set_pacing(2.0)
    assert isinstance(await adm.acquire("batch", paced=True), Permit)
    paced = asyncio.create_task(adm.acquire("batch", paced=True))
    await vt.advance(0.2)
    assert not paced.done()
    paced.cancel()  # left while waiting for the pacer: nothing to give back
    await settle()
    assert pacer.refunds == 0
    await vt.advance(0.5)
    assert isinstance(await adm.acquire("batch", paced=True), Permit)
