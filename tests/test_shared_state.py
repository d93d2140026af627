"""Shared state in a real Redis: one global bucket for all replicas, fallback and recovery."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.servers import RedisServer, free_port, require_binary
from zai_proxy.rate_controller import Outcome, RateController
from zai_proxy.shared_state import SharedCoordinator, SharedState

pytestmark = pytest.mark.needs("redis-server")


def spawn_redis(port: int) -> subprocess.Popen[bytes]:
    binary = require_binary("redis-server")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def own_redis() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A redis-server this test may kill and restart on the same port."""
    port = free_port()
    procs = [spawn_redis(port)]
    yield port, procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def test_replicas_share_one_bucket(redis_server: RedisServer) -> None:
    ns = f"t{time.time_ns()}"
    replicas = [SharedState(redis_server.url, namespace=ns, replicas=2) for _ in range(2)]
    rate = 20.0
    admitted = 0
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        for state in replicas:
            if await state.take(rate, time.monotonic()) == 0.0:
                admitted += 1
        await asyncio.sleep(0.002)
    elapsed = time.monotonic() - start
    # together: the starting token plus the rate, not twice the rate
    assert admitted <= 1 + rate * elapsed + 2
    assert admitted >= rate * elapsed * 0.8
    assert not any(s.degraded for s in replicas)
    for state in replicas:
        await state.close()


async def test_wait_is_reported_and_refund_returns_a_token(redis_server: RedisServer) -> None:
    state = SharedState(redis_server.url, namespace=f"r{time.time_ns()}")
    assert await state.take(2.0, 0.0) == 0.0
    wait = await state.take(2.0, 0.0)
    assert 0.0 < wait <= 0.5
    await state.refund(0.0)
    assert await state.take(2.0, 0.0) == 0.0
    await state.close()


async def test_fallback_when_redis_dies_and_recovery(
    own_redis: tuple[int, list[subprocess.Popen[bytes]]],
) -> None:
    port, procs = own_redis
    clock = [0.0]
    state = SharedState(f"redis://127.0.0.1:{port}/0", namespace="f", replicas=4,
                        retry_interval=5.0, clock=lambda: clock[0], op_timeout=0.3)
    assert await state.ping() and not state.degraded
    procs[0].terminate()
    procs[0].wait(10)
    # Redis gone: the next take falls back to a local bucket at rate / replicas, loudly.
    assert await state.take(40.0, 100.0) == 0.0
    assert state.degraded and state.reason
    assert state.health()["degraded"] is True
    assert await state.take(40.0, 100.0) == pytest.approx(0.1)  # 40 / 4 = 10 req/s
    procs.append(spawn_redis(port))
    clock[0] = 1.0  # still backing off: no attempt yet
    await state.take(40.0, 101.0)
    assert state.degraded
    clock[0] = 6.0  # back-off over: Redis is tried again and the flag clears
    await state.take(40.0, 106.0)
    assert not state.degraded and state.reason is None
    await state.close()


async def test_coordinator_leader_decides_on_global_counts(redis_server: RedisServer) -> None:
    ns = f"c{time.time_ns()}"
    wall = [1000.0]
    controllers, coordinators = [], []
    for _ in range(2):
        ctl = RateController(clock=lambda: wall[0], initial=30, minimum=1, maximum=50, window=5)
        shared = SharedState(redis_server.url, namespace=ns, replicas=2)
        controllers.append(ctl)
        coordinators.append(SharedCoordinator(shared, ctl, wall=lambda: wall[0], grace=0.5))
    # each replica saw half of a window in which 20 of 30 req/s were accepted
    for ctl in controllers:
        for _ in range(50):
            ctl.record(Outcome.ACCEPTED)
        for _ in range(25):
            ctl.record(Outcome.RATE_LIMITED)
        ctl.note_demand(3)
    wall[0] = 1005.0  # the window ended: both add their counts, nobody decides yet
    assert await coordinators[0].sync() == []
    assert await coordinators[1].sync() == []
    wall[0] = 1005.5  # grace over: the first to sync leads and decides on the sum
    decided = await coordinators[0].sync()
    assert [a.direction for a in decided] == ["decrease"]
    assert controllers[0].ceiling == pytest.approx(20.0)  # 100 accepted in 5 s, both replicas
    adopted = await coordinators[1].sync()
    assert [a.reason for a in adopted] == ["adopted from leader"]
    assert controllers[1].rate == controllers[0].rate == pytest.approx(19.6)
    assert controllers[1].ceiling == controllers[0].ceiling
    # the lock is sticky: the next window is decided by the same leader
    wall[0] = 1010.0
    await coordinators[1].sync()
    await coordinators[0].sync()
    wall[0] = 1010.5
    assert await coordinators[1].sync() == []
    for c in coordinators:
        await c.shared.close()


async def test_coordinator_decides_alone_when_degraded() -> None:
    wall = [1000.0]
    ctl = RateController(clock=lambda: wall[0], initial=30, minimum=1, maximum=50, window=5)
    shared = SharedState(f"redis://127.0.0.1:{free_port()}/0", replicas=2, op_timeout=0.2)
    coordinator = SharedCoordinator(shared, ctl, wall=lambda: wall[0])
    for _ in range(50):
        ctl.record(Outcome.ACCEPTED)
    for _ in range(25):
        ctl.record(Outcome.RATE_LIMITED)
    wall[0] = 1005.0
    adjustments = await coordinator.sync()
    assert shared.degraded
    assert [a.direction for a in adjustments] == ["decrease"]
    # 50 accepted in 5 s here, with 2 replicas: about 20 req/s for the account
    assert ctl.ceiling == pytest.approx(20.0)
    await shared.close()
