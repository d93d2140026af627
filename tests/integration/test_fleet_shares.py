"""Account-wide client shares through a real Redis: two replicas' admission queues on one gate
exchange their reports (HSET / HGETALL / HDEL on the real server) and pace a skewed spread of
clients to their weights; a replica that stops reporting is dropped after its reports go stale;
a burst of first requests on an idle proxy, each taking a send slot at once, waits for the
link's connections instead of degrading it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.support.servers import RedisServer
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.admission import Admission, Permit
from zai_proxy.limiter.client_class import DEFAULT, ClientClass
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.fleet import FleetShares
from zai_proxy.limiter.rate_controller import RateController
from zai_proxy.limiter.shared import SharedState, namespace

pytestmark = pytest.mark.needs("redis-server")

CLASSES = {"heavy": ClientClass(weight=3)}
RATE = 20.0


class Replica:
    def __init__(self, url: str, ns: str, name: str) -> None:
        self.shared = SharedState(RedisLink.connect(url), namespace=ns, replicas=2)
        rc = RateController(clock=time.monotonic, initial=RATE, minimum=1, maximum=50,
                            window=1000)
        cc = ConcurrencyController(clock=time.monotonic, max_workers=1000, window=1000)
        self.admission = Admission(rc, cc, queue_max=10_000, queue_timeout=60,
                                   gate=self.shared.gate("gate"),
                                   class_of=lambda c: CLASSES.get(c, DEFAULT))
        self.fleet = FleetShares(self.shared, self.admission, name, interval=0.2)
        self.sent: list[tuple[float, str]] = []

    async def worker(self, client: str, until: float) -> None:
        while time.monotonic() < until:
            permit = await self.admission.acquire(client)
            if isinstance(permit, Permit):
                self.sent.append((time.monotonic(), client))
                permit.release()

    async def exchange(self, until: float) -> None:
        while time.monotonic() < until:
            await self.fleet.sync()
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.admission.close()
        await self.shared.link.aclose()


async def test_a_skewed_spread_keeps_its_weights_through_a_real_redis(
        redis_server: RedisServer) -> None:
    ns = namespace(f"fleet{time.time_ns()}")
    one, two = Replica(redis_server.url, ns, "one"), Replica(redis_server.url, ns, "two")
    start = time.monotonic()
    until = start + 8.0
    work = [one.exchange(until), two.exchange(until)]
    work += [one.worker("heavy", until) for _ in range(6)]
    for replica in (one, two):
        work += [replica.worker(c, until) for c in ("light1", "light2") for _ in range(3)]
    await asyncio.gather(*work)
    health = one.fleet.health()
    assert health["scope"] == "account" and health["replicas_reporting"] == 2
    # the last 5 s, once the reports and the correction settled
    counts = Counter(c for t, c in one.sent + two.sent if start + 3.0 <= t < until)
    total = sum(counts.values())
    assert total <= RATE * 5.0 + 2, "never past the account's rate"
    assert counts["heavy"] / total == pytest.approx(0.6, abs=0.08)
    assert counts["light1"] / total == pytest.approx(0.2, abs=0.06)
    await one.close()
    await two.close()


async def test_a_replica_that_stops_reporting_is_left_out(redis_server: RedisServer) -> None:
    ns = namespace(f"fleet{time.time_ns()}")
    one, two = Replica(redis_server.url, ns, "one"), Replica(redis_server.url, ns, "two")
    one.fleet.stale_after = two.fleet.stale_after = 0.5
    tasks = [asyncio.create_task(one.admission.acquire("a")) for _ in range(200)]
    tasks += [asyncio.create_task(two.admission.acquire("b")) for _ in range(200)]
    for _ in range(200):  # until both queues hold work past their first take
        if one.admission.depth >= 100 and two.admission.depth >= 100:
            break
        await asyncio.sleep(0.01)
    await two.fleet.sync()
    await one.fleet.sync()
    assert one.admission.fleet.active and one.fleet.health()["replicas_waiting"] == 2
    await asyncio.sleep(0.7)  # two says nothing more: its report goes stale
    await one.fleet.sync()
    assert one.fleet.health()["replicas_reporting"] == 1
    assert not one.admission.fleet.active, "alone: its own queue decides"
    raw = await one.shared.redis.hgetall(one.fleet.key)
    assert set(raw) == {b"one"}, "the stale report was deleted"
    assert not one.shared.degraded and not two.shared.degraded, "400 takes at once: no failure"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await one.close()
    await two.close()
