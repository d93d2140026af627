"""Admission with client classes on virtual time, the gate at a fixed rate: delivered shares by
weight, interactive ahead of a batch backlog, in-flight caps that never hold up the queue,
cancellation, retries, per-client observers and expected waits."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.support.clock import VirtualTime, settle
from zai_proxy.limiter.admission import Admission, Permit, Rejection
from zai_proxy.limiter.client_class import DEFAULT, ClientClass
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.rate_controller import RateController

Task = asyncio.Task[Permit | Rejection]


def build(vt: VirtualTime, classes: dict[str, ClientClass], *, rate: float = 10,
          workers: int = 1000, timeout: float = 1000, batch_floor: float = 0.1,
          **kwargs: object) -> Admission:
    rc = RateController(clock=vt, initial=rate, minimum=1, maximum=50, window=1000)
    cc = ConcurrencyController(clock=vt, max_workers=workers, window=1000)
    return Admission(rc, cc, queue_max=5000, queue_timeout=timeout, clock=vt, sleep=vt.sleep,
                     class_of=lambda client: classes.get(client, DEFAULT),
                     batch_floor=batch_floor, **kwargs)  # type: ignore[arg-type]


class Log:
    """Who was admitted, in order; permits released at once unless `hold`."""

    def __init__(self, adm: Admission) -> None:
        self.adm = adm
        self.order: list[str] = []
        self.held: dict[str, list[Permit]] = {}
        self.waited: dict[str, list[float]] = {}

    def start(self, client: str, n: int = 1, *, hold: bool = False,
              priority: bool = False) -> list[Task]:
        return [asyncio.create_task(self._one(client, hold, priority)) for _ in range(n)]

    async def _one(self, client: str, hold: bool, priority: bool) -> Permit | Rejection:
        result = await self.adm.acquire(client, priority=priority)
        if isinstance(result, Permit):
            self.order.append(client)
            self.waited.setdefault(client, []).append(result.waited)
            if hold:
                self.held.setdefault(client, []).append(result)
            else:
                result.release()
        return result


async def finish(adm: Admission, tasks: list[Task]) -> None:
    await adm.close()
    await settle()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_saturated_gate_delivers_rate_by_weight_and_idle_share_goes_to_the_rest() -> None:
    vt = VirtualTime()
    adm = build(vt, {"a": ClientClass(weight=3)}, rate=10)
    log = Log(adm)
    assert isinstance(await adm.acquire("warm"), Permit)  # takes the burst: the gate paces
    tasks = log.start("a", 400) + log.start("b", 400) + log.start("c", 20)
    await settle()
    await vt.advance(10.05)  # 100 dispatches at 10 req/s (0.1 s to 10.0 s)
    assert Counter(log.order) == {"a": 60, "b": 20, "c": 20}
    await vt.advance(10)  # c ran dry after its 20: a and b split 3:1 (7.5 / 2.5 req/s)
    assert Counter(log.order[100:]) == {"a": 75, "b": 25}
    await finish(adm, tasks)


async def test_interactive_arriving_behind_500_batch_waits_at_most_two_gate_intervals() -> None:
    vt = VirtualTime()
    adm = build(vt, {"agent": ClientClass(priority="interactive")}, rate=10)
    log = Log(adm)
    assert isinstance(await adm.acquire("warm"), Permit)
    tasks = log.start("bulk", 250) + log.start("nightly", 250)
    await vt.advance(3.05)
    tasks += log.start("agent")
    await vt.advance(0.3)
    assert "agent" in log.order
    assert log.waited["agent"][0] <= 2 * 0.1
    # A burst of 18 goes before the batch backlog too, batch keeping its 10 %: 20 dispatches
    # (shared fairly with the two batch clients it would take 54).
    tasks += log.start("agent", 18)
    await vt.advance(2.05)
    assert log.order.count("agent") == 19
    await finish(adm, tasks)


async def test_batch_keeps_its_floor_while_interactive_saturates() -> None:
    vt = VirtualTime()
    adm = build(vt, {"agent": ClientClass(priority="interactive")}, rate=10, batch_floor=0.2)
    log = Log(adm)
    assert isinstance(await adm.acquire("warm"), Permit)
    tasks = log.start("bulk", 100) + log.start("agent", 100)
    await vt.advance(10)
    assert Counter(log.order) == {"agent": 80, "bulk": 20}
    await finish(adm, tasks)


async def test_max_in_flight_caps_one_client_while_others_pass_it() -> None:
    vt = VirtualTime()
    adm = build(vt, {"capped": ClientClass(max_in_flight=2)}, rate=10)
    log = Log(adm)
    # The capped client is first in line: it must not hold up the one behind it.
    tasks = log.start("capped", 5, hold=True)
    await settle()
    tasks += log.start("free", 5, hold=True)
    await vt.advance(2)
    assert len(log.held["capped"]) == 2 and len(log.held["free"]) == 5
    assert adm.client_in_flight == {"capped": 2, "free": 5} and adm.depth == 3
    log.held["capped"].pop(0).release()  # one of its requests ends: its next may go
    await vt.advance(0.1)
    assert len(log.held["capped"]) == 2 and adm.depth == 2
    await vt.advance(5)
    assert len(log.held["capped"]) == 2, "still at its cap"
    await finish(adm, tasks)


async def test_a_client_at_its_cap_waits_even_with_an_empty_queue() -> None:
    vt = VirtualTime()
    adm = build(vt, {"one": ClientClass(max_in_flight=1)}, rate=10)
    first = await adm.acquire("one")
    assert isinstance(first, Permit)
    await vt.advance(1)  # the gate has slots to spare: only the cap holds it back
    second = asyncio.create_task(adm.acquire("one"))
    await vt.advance(1)
    assert not second.done() and adm.depth == 1
    first.release()
    await settle()
    assert isinstance(second.result(), Permit)
    assert adm.client_in_flight == {"one": 1}


async def test_expected_wait_counts_the_clients_own_cap() -> None:
    vt = VirtualTime()
    adm = build(vt, {"one": ClientClass(max_in_flight=1)}, rate=10, timeout=5)
    held = await adm.acquire("one")
    assert isinstance(held, Permit)
    await vt.advance(20)
    held.release()  # permits hold their slot 20 s
    held = await adm.acquire("one")
    assert isinstance(held, Permit)
    task = asyncio.create_task(adm.acquire("one"))  # one ahead for 20 s > its 5 s deadline
    await settle()
    assert task.done(), "refused at once, not queued to expire"
    refused = task.result()
    assert isinstance(refused, Rejection) and refused.reason == "queue_timeout"
    assert refused.retry_after == pytest.approx(20)
    await vt.advance(0.1)
    other = await adm.acquire("other")  # its own wait is the gate's alone
    assert isinstance(other, Permit)


async def test_cancelled_waiter_gives_its_place_to_the_next() -> None:
    vt = VirtualTime()
    adm = build(vt, {"a": ClientClass(weight=3)}, rate=10)
    log = Log(adm)
    assert isinstance(await adm.acquire("warm"), Permit)
    gone = log.start("a")
    await settle()
    tasks = log.start("b", 3)
    await settle()
    gone[0].cancel()
    await settle()
    assert adm.depth == 3 and adm.queue.waiting("a") == 0
    await vt.advance(0.1)
    assert log.order == ["b"]  # the next slot goes to b, none is lost on a
    await vt.advance(0.2)
    assert log.order == ["b"] * 3 and adm.depth == 0
    await finish(adm, gone + tasks)


async def test_retry_goes_ahead_of_new_work_of_its_class() -> None:
    vt = VirtualTime()
    adm = build(vt, {}, rate=10)
    log = Log(adm)
    assert isinstance(await adm.acquire("warm"), Permit)
    tasks = log.start("a", 5) + log.start("b", 5)
    await settle()
    tasks += log.start("c", priority=True)
    await vt.advance(0.1)
    assert log.order == ["c"]
    await finish(adm, tasks)


async def test_class_is_read_when_each_request_arrives() -> None:
    vt = VirtualTime()
    classes: dict[str, ClientClass] = {}
    adm = build(vt, classes, rate=10)
    log = Log(adm)
    assert isinstance(await adm.acquire("warm"), Permit)
    tasks = log.start("bulk", 20)
    await settle()
    classes["late"] = ClientClass(priority="interactive")  # a reload
    tasks += log.start("late")
    await vt.advance(0.1)
    assert log.order == ["late"]
    await finish(adm, tasks)


async def test_observers_see_each_admission_and_refusal_by_client() -> None:
    vt = VirtualTime()
    admitted: list[tuple[str, float]] = []
    refused: list[tuple[str, str]] = []
    adm = build(vt, {}, rate=1, timeout=1.5,
                on_admit=lambda c, w: admitted.append((c, w)),
                on_refuse=lambda c, r: refused.append((c, r)))
    assert isinstance(await adm.acquire("a"), Permit)
    waiting = asyncio.create_task(adm.acquire("b"))
    await settle()
    assert isinstance(await adm.acquire("c"), Rejection)  # 2 s > its 1.5 s
    await vt.advance(1)
    assert isinstance(waiting.result(), Permit)
    assert admitted == [("a", 0.0), ("b", 1.0)] and refused == [("c", "queue_timeout")]
