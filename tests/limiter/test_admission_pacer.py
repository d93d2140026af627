"""The quota pacer's slots on the paths where a paced waiter does not go upstream: a waiter
granted just as its client leaves, and a waiter that expires after taking its pacer slot, give
the slot back (the pacer counts only requests that went upstream).

Virtual time; the rate gate and the pacer are counting gates the test controls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.support.clock import VirtualTime, settle
from zai_proxy.limiter.admission import Admission, Permit, Rejection
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.gcra import LocalGate
from zai_proxy.limiter.rate_controller import RateController


class CountingGate:
    """A local gate that counts takes and refunds; `closed` answers 'wait' to every take, and
    `hook` runs inside the next take (a race in the test)."""

    def __init__(self, vt: VirtualTime) -> None:
        self.inner = LocalGate(vt())
        self.taken = self.refunds = 0
        self.closed = False
        self.hook: Callable[[], Awaitable[None]] | None = None

    async def take(self, rate: float, now: float) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        if self.closed:
            return 5.0
        wait = await self.inner.take(rate, now)
        self.taken += wait == 0.0
        return wait

    async def refund(self, rate: float, now: float) -> None:
        self.refunds += 1
        await self.inner.refund(rate, now)


def build(vt: VirtualTime, gate: CountingGate, pacer: CountingGate, *,
          rate: float) -> Admission:
    rc = RateController(clock=vt, initial=rate, minimum=0.1, maximum=50, window=5)
    cc = ConcurrencyController(clock=vt, max_workers=10, window=5)
    adm = Admission(rc, cc, queue_timeout=100, clock=vt, sleep=vt.sleep, gate=gate,
                    pacer_gate=pacer)
    adm.set_pacing(1.0)  # one paced request a second
    return adm


async def granted_at_once(adm: Admission, client: str) -> bool:
    task = asyncio.create_task(adm.acquire(client, paced=True))
    await settle()
    if not task.done():
        task.cancel()
        return False
    return isinstance(task.result(), Permit)


async def test_a_paced_waiter_granted_as_its_client_leaves_gives_its_pacer_slot_back() -> None:
    vt = VirtualTime()
    gate, pacer = CountingGate(vt), CountingGate(vt)
    adm = build(vt, gate, pacer, rate=10)
    assert isinstance(await adm.acquire("interactive"), Permit)  # the rate gate's slot
    leaving = asyncio.create_task(adm.acquire("batch", paced=True))
    await settle()
    assert pacer.taken == 1 and adm.depth == 1  # it holds its pacer slot, waits for the rate

    async def leave() -> None:  # the client leaves while the dispatcher is about to grant it
        leaving.cancel()

    gate.hook = leave
    await vt.advance(0.1)  # the rate gate's next slot
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert adm.in_flight == 1 and adm.depth == 0
    assert (gate.refunds, pacer.refunds) == (1, 1)
    # Both slots came back: another paced request goes now, not when the pacer's second is up.
    assert await granted_at_once(adm, "batch")


async def test_a_paced_waiter_that_expires_gives_its_pacer_slot_back() -> None:
    vt = VirtualTime()
    gate, pacer = CountingGate(vt), CountingGate(vt)
    adm = build(vt, gate, pacer, rate=10)
    assert isinstance(await adm.acquire("interactive"), Permit)  # the rate gate's slot
    gate.closed = True  # the rate gate has nothing for a while (say, Redis answers 'wait')
    expiring = asyncio.create_task(adm.acquire("batch", paced=True, deadline=vt() + 3))
    await settle()
    assert pacer.taken == 1 and adm.depth == 1  # it holds its pacer slot, waits for the rate
    await vt.advance(3)
    result = expiring.result()
    assert isinstance(result, Rejection) and result.reason == "queue_timeout"
    assert adm.depth == 0
    assert pacer.refunds == pacer.taken == 1  # nothing went upstream: nothing counted


async def test_a_waiter_that_took_no_pacer_slot_gives_none_back_when_it_leaves() -> None:
    vt = VirtualTime()
    gate, pacer = CountingGate(vt), CountingGate(vt)
    adm = build(vt, gate, pacer, rate=10)
    assert isinstance(await adm.acquire("interactive"), Permit)  # the rate gate's slot
    ahead = asyncio.create_task(adm.acquire("interactive"))
    await settle()
    leaving = asyncio.create_task(adm.acquire("batch", paced=True))  # queued behind it
    await settle()
    adm.set_pacing(None)  # pacing off while it waits: it is granted without a pacer slot
    await vt.advance(0.1)
    assert isinstance(ahead.result(), Permit)

    async def leave() -> None:  # pacing back on, and the client leaves as it is granted
        adm.set_pacing(1.0)
        leaving.cancel()

    gate.hook = leave
    await vt.advance(0.1)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert adm.in_flight == 2 and adm.depth == 0
    assert pacer.taken == pacer.refunds == 0  # no slot taken, none given back (no credit)


async def test_leaving_while_the_gate_answers_a_first_try_gives_the_pacer_slot_back() -> None:
    vt = VirtualTime()
    gate, pacer = CountingGate(vt), CountingGate(vt)
    adm = build(vt, gate, pacer, rate=10)
    answered = asyncio.Event()

    async def slow_answer() -> None:  # a shared gate takes its time; the client leaves
        leaving.cancel()
        await answered.wait()

    gate.hook = slow_answer
    leaving = asyncio.create_task(adm.acquire("batch", paced=True))  # nobody queued: first try
    await settle()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert pacer.taken == pacer.refunds == 1  # it never went upstream: nothing counted
    assert adm.in_flight == adm.depth == 0
