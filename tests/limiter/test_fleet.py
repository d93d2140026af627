"""Account-wide shares between replicas on a fake Redis, on virtual time: two admission queues
draw from one shared gate and exchange their reports; the weights hold across them however the
clients are spread, an idle client's share goes to the others, and a Redis that is down, lies
or holds a stale or broken report leaves each replica sharing its own part."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

import pytest

from tests.support.clock import VirtualTime, settle
from tests.support.redis import FakeRedis, virtual_timeout
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.admission import Admission, Permit, Rejection
from zai_proxy.limiter.client_class import DEFAULT, ClientClass
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.fleet import FleetShares
from zai_proxy.limiter.fleet_shares import Demand, decode, encode
from zai_proxy.limiter.rate_controller import RateController
from zai_proxy.limiter.shared import SharedState, namespace

CLASSES = {"heavy": ClientClass(weight=3), "capped": ClientClass(max_in_flight=4),
           "agent": ClientClass(priority="interactive")}
Task = asyncio.Task[Permit | Rejection]


class Replica:
    """One proxy's admission on the shared gate, its side of the exchange, what it admitted."""

    def __init__(self, fake: FakeRedis, vt: VirtualTime, name: str, rate: float = 10) -> None:
        link = RedisLink(fake, clock=vt, timeout=virtual_timeout(vt))
        self.shared = SharedState(link, namespace=namespace("acct0"), replicas=2)
        rc = RateController(clock=vt, initial=rate, minimum=1, maximum=50, window=1000)
        cc = ConcurrencyController(clock=vt, max_workers=1000, window=1000)
        self.admission = Admission(
            rc, cc, queue_max=10_000, queue_timeout=10_000, clock=vt, sleep=vt.sleep,
            gate=self.shared.gate("gate"), class_of=lambda c: CLASSES.get(c, DEFAULT))
        self.fleet = FleetShares(self.shared, self.admission, name, wall=vt.wall, interval=0.5)
        self.admitted: Counter[str] = Counter()
        self.held: list[Permit] = []
        self.tasks: list[Task] = []

    def load(self, client: str, n: int, hold: bool = False) -> None:
        self.tasks += [asyncio.create_task(self._one(client, hold)) for _ in range(n)]

    async def _one(self, client: str, hold: bool) -> Permit | Rejection:
        result = await self.admission.acquire(client)
        if isinstance(result, Permit):
            self.admitted[client] += 1
            if hold:
                self.held.append(result)
            else:
                result.release()
        return result

    async def close(self) -> None:
        await self.admission.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def run(vt: VirtualTime, replicas: list[Replica], seconds: float,
              exchange: bool = True) -> None:
    """`seconds` of virtual time, every replica exchanging reports each half second."""
    for _ in range(int(seconds / 0.5)):
        if exchange:
            for replica in replicas:
                await replica.fleet.sync()
        await vt.advance(0.5)


def delivered(replicas: list[Replica], before: dict[str, int] | None = None) -> Counter[str]:
    total: Counter[str] = Counter()
    for replica in replicas:
        total.update(replica.admitted)
    if before:
        total.subtract(before)
    return total


async def skewed(exchange: bool, heavy_first: bool = True) -> Counter[str]:
    """heavy (weight 3) on r1 only, light1 and light2 on both; delivered over 20 s settled.
    On virtual time the replica whose dispatcher started first wins every race for a slot
    (`heavy_first`: heavy's): the shares must hold either way."""
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1, r2 = Replica(fake, vt, "r1"), Replica(fake, vt, "r2")
    for replica in (r1, r2) if heavy_first else (r2, r1):
        if replica is r1:
            r1.load("heavy", 600)
        replica.load("light1", 300)
        replica.load("light2", 300)
    await settle()
    await run(vt, [r1, r2], 5, exchange)
    before = dict(delivered([r1, r2]))
    await run(vt, [r1, r2], 20, exchange)
    got = delivered([r1, r2], before)
    await r1.close()
    await r2.close()
    return got


@pytest.mark.parametrize("heavy_first", [True, False])
async def test_weights_hold_across_replicas_however_the_clients_are_spread(
        heavy_first: bool) -> None:
    got = await skewed(exchange=True, heavy_first=heavy_first)
    assert sum(got.values()) == pytest.approx(200, abs=4), "the account's rate, no more"
    assert got["heavy"] == pytest.approx(120, rel=0.07)
    assert got["light1"] == pytest.approx(40, rel=0.07)
    assert got["light2"] == pytest.approx(40, rel=0.07)


async def test_without_the_exchange_each_replica_shares_only_its_own_part() -> None:
    """What the exchange fixes (so the test above can fail): the replica that wins the races
    shares the gate among its own clients, the weight-3 client elsewhere gets what is left."""
    got = await skewed(exchange=False, heavy_first=False)
    assert sum(got.values()) == pytest.approx(200, abs=4)
    assert got["heavy"] < 0.5 * 120
    assert got["light1"] > 1.5 * 40


async def test_an_idle_clients_share_goes_to_the_others_across_the_fleet() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1, r2 = Replica(fake, vt, "r1"), Replica(fake, vt, "r2")
    r1.load("heavy", 120)  # runs dry after ~20 s
    r2.load("light1", 600)
    r1.load("light1", 600)
    await settle()
    await run(vt, [r1, r2], 30)
    before = dict(delivered([r1, r2]))
    assert r1.admission.queue.waiting("heavy") == 0
    await run(vt, [r1, r2], 10)
    got = delivered([r1, r2], before)
    assert got["light1"] == pytest.approx(100, abs=3), "the whole rate, from both replicas"


async def test_paced_clients_report_what_waits_and_health_says_account() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1, r2 = Replica(fake, vt, "r1"), Replica(fake, vt, "r2")
    assert r1.fleet.health()["scope"] == "replica"
    r1.load("heavy", 50)
    r2.load("light1", 50)
    await settle()
    await run(vt, [r1, r2], 1)
    health = r1.fleet.health()
    assert health["scope"] == "account" and health["replicas_reporting"] == 2
    assert health["replicas_waiting"] == 2
    assert health["paced"] == {"heavy": pytest.approx(0.75, abs=0.2)}
    assert r2.fleet.health()["paced"] == {"light1": pytest.approx(0.25, abs=0.1)}
    _, report = decode(fake.data[r1.fleet.key][b"r1"])
    assert report["heavy"].waiting > 0 and report["heavy"].rate > 0, "sends are metered"
    await r1.close()
    await r2.close()


@pytest.mark.parametrize("mode", ["down", "lie", "hang"])
async def test_a_redis_that_fails_leaves_each_replica_sharing_its_own_part(
        mode: str, caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1, r2 = Replica(fake, vt, "r1"), Replica(fake, vt, "r2")
    r1.load("heavy", 50)
    r2.load("light1", 50)
    await settle()
    await run(vt, [r1, r2], 1)
    assert r1.admission.fleet.active
    fake.mode = mode  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "zai_proxy.fleet"):
        sync = asyncio.create_task(r1.fleet.sync())
        await vt.advance(1)  # a hanging Redis: the link's timeout ends the call
        await sync
    assert not r1.admission.fleet.active
    assert r1.fleet.health() == {"scope": "replica", "replicas": 2, "replicas_reporting": 0,
                                 "replicas_waiting": 0, "paced": {}, "in_flight_caps": {}}
    assert "account-wide client shares suspended" in caplog.text
    fake.mode = "ok"
    await r1.close()
    await r2.close()


async def test_stale_and_broken_reports_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime(start=100)
    fake = FakeRedis(vt)
    r1 = Replica(fake, vt, "r1")
    key = r1.fleet.key
    busy = {"ghost": Demand(1, "batch", 50)}
    fake.raw_set(key, b"")  # replaced below by a hash
    fake.data[key] = {
        b"gone": encode(busy, vt.wall() - 30).encode(),  # a replica that stopped
        b"liar": json.dumps({"at": vt.wall(), "clients": {"x": [float("nan"), "batch", 5, 0]}}
                            ).encode(),
        b"junk": b"\xff not json",
    }
    r1.load("heavy", 10)
    await settle()
    with caplog.at_level(logging.WARNING):
        await r1.fleet.sync()
    assert r1.fleet.health()["replicas_reporting"] == 1  # itself
    assert not r1.admission.fleet.active, "alone with work: the local queue decides"
    assert b"gone" not in fake.data[key], "a stale report is deleted"
    assert "fleet.liar" in caplog.text and "fleet.junk" in caplog.text
    await r1.close()


async def test_a_retry_is_not_held_back_by_its_clients_part() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1 = Replica(fake, vt, "r1")
    adm = r1.admission
    adm.set_fleet_parts({"a": 0.01})  # 0.1 req/s
    first = await adm.acquire("a")
    assert isinstance(first, Permit)
    first.release()
    await vt.advance(0.2)
    new = asyncio.create_task(adm.acquire("a"))
    retry = asyncio.create_task(adm.acquire("a", priority=True))
    await vt.advance(0.3)
    assert retry.done() and isinstance(retry.result(), Permit)
    assert not new.done(), "new work waits for the client's part"
    await vt.advance(20)
    assert new.done()
    await r1.close()


async def test_a_wait_shorter_than_the_scripts_precision_is_still_a_wait() -> None:
    """The gate's script answers waits with six decimals: 0.3 us reads "0.000000", which is not
    the "0" of a slot taken (the slot was not taken: sending would exceed the rate)."""
    vt = VirtualTime(start=50)
    fake = FakeRedis(vt)
    gate = Replica(fake, vt, "r1").shared.gate("gate")
    fake.raw_set(gate.key, f"{vt() + 3e-7:.9f}")
    assert await gate.take(10.0, vt()) == pytest.approx(1e-6)
    assert fake.raw_get(gate.key) == f"{vt() + 3e-7:.9f}".encode(), "nothing taken"
    await vt.advance(1e-6)
    assert await gate.take(10.0, vt()) == 0.0


async def test_a_clients_in_flight_cap_holds_across_the_replicas() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1, r2 = Replica(fake, vt, "r1"), Replica(fake, vt, "r2")
    r1.load("capped", 6, hold=True)
    await run(vt, [r1, r2], 2)
    assert len(r1.held) == 4, "its cap, all of it on the one replica that wants it"
    r2.load("capped", 6, hold=True)
    await run(vt, [r1, r2], 2)
    assert len(r2.held) == 0, "r1 holds the whole cap"
    for permit in r1.held[:3]:
        permit.release()
    await run(vt, [r1, r2], 2)
    held = sum(not p.released for p in r1.held) + len(r2.held)
    assert held == 4 and len(r2.held) >= 1, "freed slots go to both, never past the cap"
    caps = r2.fleet.health()["in_flight_caps"]
    assert caps["capped"] + r1.fleet.health()["in_flight_caps"]["capped"] == 4
    await r1.close()
    await r2.close()


async def test_without_reports_each_replica_holds_its_part_of_a_cap() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt, mode="down")
    r1 = Replica(fake, vt, "r1")
    await r1.fleet.sync()
    r1.load("capped", 6, hold=True)
    await vt.advance(2)
    assert len(r1.held) == 2, "half of 4: the link says two replicas share the account"
    await r1.close()


async def test_an_agent_waiting_once_leaves_the_rate_it_cannot_use_to_batch() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    r1, r2 = Replica(fake, vt, "r1"), Replica(fake, vt, "r2")
    r2.load("bulk", 100)
    await settle()
    r1.load("agent", 1)  # behind bulk's slot: it waits
    await settle()
    assert r1.admission.queue.waiting("agent") == 1
    await r1.fleet.sync()
    await r2.fleet.sync()
    # it wants one request's worth (0.1 of 10 req/s), not interactive's nine tenths
    assert r2.fleet.health()["paced"] == {"bulk": pytest.approx(0.9)}
    await r1.close()
    await r2.close()
