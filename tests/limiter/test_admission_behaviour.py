"""Admission on virtual time: what is admitted when, what a waiter gets back on expiry, close
and rejection, how long a permit waited, and the saturated time reported (behaviour the
mutation survivors showed untested)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.clock import VirtualTime, settle
from zai_proxy.limiter.admission import Admission, Permit, Rejection
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.rate_controller import RateController


def build(vt: VirtualTime, *, rate: float = 10, workers: int = 10,
          **kwargs: float) -> Admission:
    rc = RateController(clock=vt, initial=rate, minimum=1, maximum=50, window=5)
    cc = ConcurrencyController(clock=vt, max_workers=workers, window=5)
    return Admission(rc, cc, clock=vt, sleep=vt.sleep, **kwargs)  # type: ignore[arg-type]


async def finish(adm: Admission, tasks: list[asyncio.Task[Permit | Rejection]]) -> None:
    """Close the queue and end every waiter task, whether or not close answered it."""
    await adm.close()
    await settle()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_default_queue_holds_exactly_a_thousand_waiters() -> None:
    # kills xǁAdmissionǁ__init____mutmut_1 (default queue_max 1001)
    vt = VirtualTime()
    adm = build(vt, rate=50)
    assert isinstance(await adm.acquire("first"), Permit)
    tasks = [asyncio.create_task(adm.acquire(f"c{i}")) for i in range(1000)]
    await settle()
    assert adm.depth == 1000 and not any(t.done() for t in tasks)
    over = asyncio.create_task(adm.acquire("late"))
    await settle()
    assert over.done(), "the 1001st waiter is turned away at once"
    assert isinstance(over.result(), Rejection) and over.result().reason == "queue_full"
    await finish(adm, tasks)


async def test_default_deadline_is_thirty_seconds_and_expiry_answers_at_once() -> None:
    # kills __init__ mutmut_2 (31 s default), _expire mutmut_27/_29 (retry_after), _30 (late)
    vt = VirtualTime(start=50.0)
    adm = build(vt, rate=1, workers=1)
    held = await adm.acquire("a")
    assert isinstance(held, Permit)
    task = asyncio.create_task(adm.acquire("b"))
    await vt.advance(29.9)
    assert not task.done()
    await vt.advance(0.1)
    assert task.done() and task.result() == Rejection("queue_timeout", 1.0)
    assert adm.depth == 0


async def test_close_rejects_every_waiter_with_a_one_second_retry() -> None:
    # kills close mutmut_6, _7, _10, _11, _12 (the rejection) and _13 (no answer at all)
    vt = VirtualTime()
    adm = build(vt, rate=1, workers=1)
    assert isinstance(await adm.acquire("a"), Permit)
    tasks = [asyncio.create_task(adm.acquire(c)) for c in ("b", "c")]
    await settle()
    assert adm.depth == 2
    await adm.close()
    await settle()
    assert all(t.done() for t in tasks), "every waiter gets an answer"
    assert [t.result() for t in tasks] == [Rejection("queue_timeout", 1.0)] * 2
    assert adm.depth == 0


async def test_snapshot_reports_hold_and_ceiling_update_time() -> None:
    # kills snapshot mutmut_9, _10, _11, _12 (renamed keys)
    vt = VirtualTime()
    adm = build(vt)
    snap = adm.snapshot()
    assert snap["hold"] == adm.rate.hold
    assert snap["ceiling_updated_at"] == adm.rate.ceiling_updated_at


async def test_permits_carry_client_wait_and_grant_time() -> None:
    # kills _grant mutmut_12, _21, _22, _23; acquire mutmut_43; _dispatch mutmut_102
    vt = VirtualTime(start=5.0)
    adm = build(vt, rate=10)
    first = await adm.acquire("a")
    assert isinstance(first, Permit)
    assert (first.client_id, first.waited, first.granted_at) == ("a", 0.0, 5.0)
    task = asyncio.create_task(adm.acquire("b"))
    await vt.advance(0.1)
    second = task.result()
    assert isinstance(second, Permit) and second.client_id == "b"
    assert second.waited == pytest.approx(0.1)
    assert second.granted_at == pytest.approx(5.1)


async def test_hold_time_is_a_moving_mean_of_how_long_permits_were_held() -> None:
    # kills _release mutmut_7, _11, _13, _15
    vt = VirtualTime(start=100.0)
    adm = build(vt, rate=50)
    one = await adm.acquire("a")
    assert isinstance(one, Permit)
    await vt.advance(2.0)
    one.release()
    assert adm.hold_time == pytest.approx(2.0)
    two = await adm.acquire("a")
    assert isinstance(two, Permit)
    await vt.advance(7.0)
    two.release()
    assert adm.hold_time == pytest.approx(2.0 + 0.2 * (7.0 - 2.0))
    assert adm.snapshot()["slot_hold_seconds"] == pytest.approx(3.0)


async def test_saturated_seconds_sum_the_periods_the_rate_gate_was_the_bottleneck() -> None:
    # kills saturated_seconds mutmut_3, _5, _7 and _gate_bound mutmut_7, _9
    vt = VirtualTime(start=100.0)
    adm = build(vt, rate=10)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("a"))
    await vt.advance(0.05)
    assert adm.gate_bound
    assert adm.saturated_seconds() == pytest.approx(0.05)
    await vt.advance(0.05)
    assert isinstance(task.result(), Permit) and not adm.gate_bound
    assert adm.saturated_seconds() == pytest.approx(0.1)
    await vt.advance(100.0)
    assert adm.saturated_seconds() == pytest.approx(0.1)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("a"))
    await vt.advance(0.1)
    assert isinstance(task.result(), Permit)
    assert adm.saturated_seconds() == pytest.approx(0.2)


async def test_waiting_for_a_concurrency_slot_is_not_rate_saturation() -> None:
    # kills __init__ mutmut_44 (initial bound None: a first "not bound" counted from time 0)
    vt = VirtualTime(start=1000.0)
    adm = build(vt, rate=10, workers=1)
    held = await adm.acquire("a")
    assert isinstance(held, Permit)
    task = asyncio.create_task(adm.acquire("b"))
    await vt.advance(5.0)
    assert not task.done() and not adm.gate_bound
    assert adm.saturated_seconds() == 0.0
    held.release()
    await vt.advance(0.1)
    assert isinstance(task.result(), Permit)
    assert adm.saturated_seconds() == 0.0


async def test_expiry_retry_after_ignores_pacing_for_unpaced_waiters() -> None:
    # kills _estimate mutmut_1 (paced by default)
    vt = VirtualTime()
    adm = build(vt, rate=10, workers=1)
    adm.set_pacing(0.25)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("b", deadline=vt() + 2.0))
    await vt.advance(2.0)
    assert task.result() == Rejection("queue_timeout", 1.0)


async def test_slow_pacing_does_not_reject_unpaced_work() -> None:
    # kills _estimate mutmut_4 (unpaced estimates used the pacing rate)
    vt = VirtualTime()
    adm = build(vt, rate=10)
    adm.set_pacing(0.01)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("b", deadline=vt() + 1.0))
    await vt.advance(0.1)
    assert isinstance(task.result(), Permit)


async def _hold_time(adm: Admission, vt: VirtualTime, seconds: float) -> None:
    permit = await adm.acquire("warm")
    assert isinstance(permit, Permit)
    await vt.advance(seconds)
    permit.release()


async def test_rejection_estimate_counts_only_slots_that_must_free_up() -> None:
    # kills _estimate mutmut_21, _23 (slots short) and acquire mutmut_89 (minimum 2 s)
    vt = VirtualTime()
    adm = build(vt, rate=10, workers=2)
    await _hold_time(adm, vt, 10.0)
    assert isinstance(await adm.acquire("a"), Permit)  # one of two slots held
    out = await adm.acquire("b", deadline=vt() + 0.05)  # the gate needs 0.1 s
    assert out == Rejection("queue_timeout", 1.0)


async def test_rejection_estimate_when_every_slot_is_held() -> None:
    # kills _estimate mutmut_40 (hold time times slots instead of divided)
    vt = VirtualTime()
    adm = build(vt, rate=10, workers=2)
    await _hold_time(adm, vt, 10.0)
    for client in ("a", "b"):
        assert isinstance(await adm.acquire(client), Permit)
        await vt.advance(1.0)
    out = await adm.acquire("c", deadline=vt() + 1.0)
    assert out == Rejection("queue_timeout", 5.0)  # one slot frees in 10 s / 2 slots


async def test_queue_full_retry_after_counts_the_whole_queue_at_the_paced_rate() -> None:
    # kills acquire mutmut_64, _65, _66 (queue_full estimate)
    vt = VirtualTime()
    adm = build(vt, rate=1, queue_max=3)
    assert isinstance(await adm.acquire("a"), Permit)
    tasks = [asyncio.create_task(adm.acquire(c)) for c in ("b", "c", "d")]
    await settle()
    assert adm.depth == 3
    assert await adm.acquire("e") == Rejection("queue_full", 4.0)
    adm.set_pacing(0.5)
    assert await adm.acquire("e", paced=True) == Rejection("queue_full", 8.0)
    await finish(adm, tasks)


async def test_a_retry_is_judged_by_the_retries_ahead_of_it_not_the_whole_queue() -> None:
    # kills acquire mutmut_73 (priority position ignored)
    vt = VirtualTime()
    adm = build(vt, rate=1)
    assert isinstance(await adm.acquire("a"), Permit)
    tasks = [asyncio.create_task(adm.acquire(f"c{i}")) for i in range(5)]
    await settle()
    retry = asyncio.create_task(adm.acquire("r", priority=True, deadline=vt() + 2.5))
    await vt.advance(1.0)
    assert isinstance(retry.result(), Permit)
    await finish(adm, tasks)


async def test_a_wait_ending_exactly_at_the_deadline_is_queued() -> None:
    # kills acquire mutmut_76 (>= instead of >)
    vt = VirtualTime()
    adm = build(vt, rate=1)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("b", deadline=vt() + 1.0))
    await settle()
    assert not task.done() and adm.depth == 1
    await vt.advance(1.0)
    assert isinstance(task.result(), Permit) or task.result() == Rejection("queue_timeout", 1.0)


class SlowPacer:
    """A pacer gate that always asks for a long wait (a far-behind shared quota pacer)."""

    async def take(self, rate: float, now: float) -> float:
        return 100.0

    async def refund(self, rate: float, now: float) -> None:
        pass


async def test_a_paced_waiter_expires_at_its_deadline_while_the_pacer_is_far_behind() -> None:
    # kills _dispatch mutmut_46, _47 (the dispatcher slept the pacer's wait past the deadline)
    # and _dispatch mutmut_41, _42 (waiting for the pacer is not rate-gate saturation)
    vt = VirtualTime(start=1000.0)
    adm = build(vt, rate=10, pacer_gate=SlowPacer())  # type: ignore[arg-type]
    adm.set_pacing(1.0)
    task = asyncio.create_task(adm.acquire("p", paced=True, deadline=vt() + 3.0))
    await vt.advance(2.9)
    assert not task.done()
    assert not adm.gate_bound and adm.saturated_seconds() == 0.0
    await vt.advance(0.1)
    assert task.done() and task.result() == Rejection("queue_timeout", 1.0)


async def test_a_paced_waiter_takes_one_pacer_slot_even_when_the_gate_then_makes_it_wait() -> None:
    # kills _dispatch mutmut_59, _60, _61 (pacer slot not marked held: taken a second time)
    vt = VirtualTime()
    adm = build(vt, rate=10)
    adm.set_pacing(1.0)
    assert isinstance(await adm.acquire("a", paced=True), Permit)
    paced = asyncio.create_task(adm.acquire("b", paced=True))
    await vt.advance(0.95)
    unpaced = asyncio.create_task(adm.acquire("c"))
    await settle()
    assert isinstance(unpaced.result(), Permit)  # it goes ahead of the paced waiter
    assert not paced.done()
    await vt.advance(0.1)  # the pacer frees at 1.0, the gate at 1.05
    assert paced.done() and isinstance(paced.result(), Permit)
    assert paced.result().granted_at == pytest.approx(1.05)


class HookedPacer:
    """A local pacer gate that can run a hook inside `take` and counts refunds."""

    def __init__(self, vt: VirtualTime) -> None:
        from zai_proxy.limiter.gcra import LocalGate
        self.inner = LocalGate(vt())
        self.refunds = 0
        self.hook: object = None

    async def take(self, rate: float, now: float) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()  # type: ignore[operator]
        return await self.inner.take(rate, now)

    async def refund(self, rate: float, now: float) -> None:
        self.refunds += 1
        await self.inner.refund(rate, now)


async def test_a_waiter_leaving_while_the_pacer_answers_gives_its_slot_to_the_next() -> None:
    # kills _dispatch mutmut_55, _56, _57 (pacer slot not given back) and _58 (dispatcher quit)
    vt = VirtualTime()
    pacer = HookedPacer(vt)
    adm = build(vt, rate=10, pacer_gate=pacer)  # type: ignore[arg-type]
    adm.set_pacing(1.0)
    assert isinstance(await adm.acquire("a", paced=True), Permit)
    leaver = asyncio.create_task(adm.acquire("b", paced=True))
    await settle()
    stayer = asyncio.create_task(adm.acquire("c", paced=True))
    await settle()

    async def leave() -> None:
        leaver.cancel()
        await settle()

    pacer.hook = leave
    await vt.advance(1.0)
    assert leaver.cancelled()
    assert pacer.refunds == 1
    assert stayer.done() and isinstance(stayer.result(), Permit)
    assert stayer.result().granted_at == pytest.approx(1.0)
    assert adm.depth == 0


async def test_snapshot_reports_pacing_rate_and_zero_turns_pacing_off() -> None:
    # kills __init__ mutmut_60 (initial pacing rate "") and set_pacing mutmut_3 (0 kept on)
    vt = VirtualTime()
    adm = build(vt, rate=10)
    assert adm.snapshot()["pacing_rate"] is None
    adm.set_pacing(2.0)
    assert adm.snapshot()["pacing_rate"] == 2.0
    adm.set_pacing(0)
    assert adm.snapshot()["pacing_rate"] is None and adm.pacer is None
    assert isinstance(await adm.acquire("a", paced=True), Permit)


async def test_a_rate_bound_period_then_a_slot_wait_adds_no_saturated_time() -> None:
    # kills _dispatch mutmut_107 (the dispatcher left the bound flag None, then counted again)
    vt = VirtualTime(start=10.0)
    adm = build(vt, rate=10, workers=2)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("b"))
    await vt.advance(0.1)
    assert isinstance(task.result(), Permit)
    assert adm.saturated_seconds() == pytest.approx(0.1)
    await vt.advance(50.0)
    task = asyncio.create_task(adm.acquire("c"))  # both slots held: waits for a slot
    await vt.advance(1.0)
    assert not task.done()
    assert adm.saturated_seconds() == pytest.approx(0.1)
    await finish(adm, [task])


async def test_wake_admits_a_waiter_once_the_limit_was_raised_from_outside() -> None:
    # kills wake mutmut_1 (the dispatcher kept sleeping until the deadline)
    vt = VirtualTime()
    adm = build(vt, rate=10, workers=1)
    assert isinstance(await adm.acquire("a"), Permit)
    task = asyncio.create_task(adm.acquire("b"))
    await vt.advance(1.0)
    assert not task.done()
    adm.concurrency.limit = 2  # restored or adopted from the shared state
    adm.wake()
    await settle()
    assert task.done() and isinstance(task.result(), Permit)
    assert task.result().waited == pytest.approx(1.0)
