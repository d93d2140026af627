"""Shared limiter state in a real Redis: one GCRA gate for every replica of the account, the
leader/follower coordinator, fallback and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.clock import VirtualTime
from tests.support.servers import RedisServer, free_port, start_redis
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.rate_controller import Outcome, RateController
from zai_proxy.limiter.shared import SharedCoordinator, SharedState, namespace

pytestmark = pytest.mark.needs("redis-server")


@pytest.fixture
def own_redis() -> Iterator[list[RedisServer]]:
    """A redis-server this test may stop and bring back on the same port (appended)."""
    servers = [start_redis()]
    yield servers
    for server in servers:
        if server.proc.poll() is None:
            server.stop()


def replica(url: str, **kw: Any) -> SharedState:
    """One replica's shared state on a Redis link of its own."""
    return SharedState(RedisLink.connect(url), **kw)


def ns() -> str:
    return namespace(f"{time.time_ns():016x}"[-16:])


async def test_replicas_share_one_evenly_spaced_gate(redis_server: RedisServer) -> None:
    name = ns()
    replicas = [replica(redis_server.url, namespace=name, replicas=2) for _ in range(2)]
    gates = [state.gate("gate") for state in replicas]
    rate = 20.0
    admitted = 0
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        for gate in gates:
            if await gate.take(rate, time.monotonic()) == 0.0:
                admitted += 1
        await asyncio.sleep(0.002)
    elapsed = time.monotonic() - start
    # together one slot per 1/20 s (burst 1), not twice that; a loaded machine sends fewer
    assert 5 <= admitted <= 1 + rate * elapsed + 1
    assert not any(s.degraded for s in replicas)
    for state in replicas:
        await state.link.aclose()


async def test_wait_is_reported_and_refund_returns_a_slot(redis_server: RedisServer) -> None:
    state = replica(redis_server.url, namespace=ns())
    gate = state.gate("gate")
    assert await gate.take(2.0, 0.0) == 0.0
    wait = await gate.take(2.0, 0.0)
    assert 0.3 < wait <= 0.5  # the next slot is 1/2 s after the first, on Redis' clock
    await gate.refund(2.0, 0.0)
    assert await gate.take(2.0, 0.0) == 0.0
    burst = state.gate("burst", burst=3)
    assert [await burst.take(1.0, 0.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    await state.link.aclose()


async def test_fallback_when_redis_dies_and_recovery(
    own_redis: list[RedisServer],
) -> None:
    port = own_redis[0].port
    clock = VirtualTime(0.0)
    link = RedisLink.connect(f"redis://127.0.0.1:{port}/0", retry_interval=5.0,
                             clock=clock, op_timeout=0.3)
    state = SharedState(link, namespace=ns(), replicas=4)
    gate = state.gate("gate")
    assert await state.ping() and not state.degraded
    own_redis[0].stop()
    # Redis gone: the next take falls back to a local gate at rate / replicas, loudly.
    assert await gate.take(40.0, 100.0) == 0.0
    assert state.degraded and state.reason
    assert state.health()["degraded"] is True
    assert await gate.take(40.0, 100.0) == pytest.approx(0.1)  # 40 / 4 = 10 req/s
    own_redis.append(start_redis(port))
    clock.t = 1.0  # still backing off: no attempt yet
    await gate.take(40.0, 101.0)
    assert state.degraded
    clock.t = 6.0  # back-off over: Redis is tried again and the flag clears
    await gate.take(40.0, 106.0)
    assert not state.degraded and state.reason is None
    await state.link.aclose()


def controller(clock: VirtualTime, initial: float = 30) -> RateController:
    return RateController(clock=clock, initial=initial, minimum=1, maximum=50,
                          window=5)


async def test_one_leader_decides_on_every_replicas_counts(redis_server: RedisServer) -> None:
    name = ns()
    clock = VirtualTime(1000.0)
    controllers = [controller(clock), controller(clock)]
    coordinators = [SharedCoordinator(replica(redis_server.url, namespace=name, replicas=2),
                                      c, wall=clock) for c in controllers]
    assert await coordinators[0].sync() == [] and coordinators[0].leader
    assert await coordinators[1].sync() == [] and not coordinators[1].leader
    assert coordinators[1].shared.live_replicas == 2
    assert controllers[0].auto_evaluate and not controllers[1].auto_evaluate
    for c in controllers:
        c.restore(20.0, 19.6)
    # Both saw half of a window in which 12 of 19.6 req/s were accepted, saturated throughout.
    for c in controllers:
        c.gate_bound(True)
    clock.jump(4.9)
    for c in controllers:
        for _ in range(30):
            c.record(Outcome.ACCEPTED)
        for _ in range(19):
            c.record(Outcome.RATE_LIMITED)
        c.gate_bound(False)
    assert await coordinators[1].sync() == []  # the follower pushes its counts
    clock.jump(0.2)  # the leader's window ends: it decides on both replicas' counts
    [decision] = await coordinators[0].sync()
    assert decision.direction == "decrease" and decision.evidence is not None
    assert (decision.evidence.ok, decision.evidence.limited) == (60, 38)
    assert controllers[0].upper == pytest.approx(19.6 * 60 / 98, rel=0.01)
    [adopted] = await coordinators[1].sync()
    assert adopted.reason == "adopted from the shared leader"
    assert (controllers[1].rate, controllers[1].upper) == (controllers[0].rate,
                                                           controllers[0].upper)
    # The leader goes away: another replica takes over from the published state.
    await coordinators[0].shared.redis.delete(coordinators[0].shared.key("leader"))
    await coordinators[1].sync()
    assert coordinators[1].leader and controllers[1].auto_evaluate
    state = await coordinators[1].load() or {}
    assert state["by"] == coordinators[1].id  # it publishes from what it had adopted
    assert state["ceiling"] == pytest.approx(controllers[0].upper)
    for c in coordinators:
        await c.shared.link.aclose()


async def test_a_state_put_on_any_replica_reaches_the_leader(redis_server: RedisServer) -> None:
    name = ns()
    clock = VirtualTime(1000.0)
    lead, follow = controller(clock), controller(clock)
    leader = SharedCoordinator(replica(redis_server.url, namespace=name), lead,
                               wall=clock)
    follower = SharedCoordinator(replica(redis_server.url, namespace=name), follow,
                                 wall=clock)
    await leader.sync()
    await follower.sync()
    follow.restore(12.0, 11.5)  # what an admin PUT does on the follower
    await follower.publish()
    await leader.sync()
    assert (lead.upper, lead.floor) == (12.0, 11.5)
    for c in (leader, follower):
        await c.shared.link.aclose()


async def test_coordinator_decides_alone_when_degraded() -> None:
    clock = VirtualTime(1000.0)
    ctl = controller(clock)
    shared = SharedState(RedisLink.connect(f"redis://127.0.0.1:{free_port()}/0", op_timeout=0.2),
                         replicas=2)
    coordinator = SharedCoordinator(shared, ctl, wall=clock)
    assert not ctl.auto_evaluate
    assert await coordinator.sync() == []
    assert shared.degraded and ctl.auto_evaluate and not coordinator.leader
    await shared.link.aclose()
