"""Per-client quotas on a real redis-server (shared, stalled and back), and on a Redis address
nothing listens on."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.support.servers import RedisServer, free_port, start_redis
from zai_proxy.clients.limits import ClientLimits


@pytest.mark.needs("redis-server")
async def test_redis_storage_is_shared(redis_server: RedisServer) -> None:
    uri = redis_server.url
    one = ClientLimits("2/minute", uri, prefix="q-test")
    two = ClientLimits("2/minute", uri, prefix="q-test")
    assert (await one.check("shared")).allowed
    assert (await two.check("shared")).allowed
    assert not (await one.check("shared")).allowed  # the other replica's hit counted
    assert one.health() == {"degraded": False, "reason": None}


async def test_storage_failure_fails_open() -> None:
    quotas = ClientLimits("1/minute", f"redis://127.0.0.1:{free_port()}/0")
    assert (await quotas.check("a")).allowed
    assert (await quotas.check("a")).allowed  # degraded: allowed without trying
    assert quotas.health()["degraded"] is True


@pytest.mark.needs("redis-server")
async def test_a_stalled_redis_is_skipped_then_counts_again_without_losing_its_place() -> None:
    """SIGSTOP: one check waits op_timeout and is allowed; after SIGCONT and the retry
    interval the quotas apply again, and the command cut off by the timeout has not left the
    connection answering the wrong command (the count is exactly the hits that went through)."""
    server = start_redis()
    try:
        quotas = ClientLimits("3/minute", server.url, prefix="stall", retry_interval=0.2)
        assert (await quotas.check("a")).allowed
        os.kill(server.proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        assert (await quotas.check("a")).allowed
        assert time.monotonic() - start < 1.0
        assert quotas.health()["degraded"] is True
        os.kill(server.proc.pid, signal.SIGCONT)
        await asyncio.sleep(0.3)  # the retry interval, on the real clock of a real Redis
        decisions = [(await quotas.check("a")).allowed for _ in range(4)]
        assert decisions == [True, True, False, False]
        assert quotas.health() == {"degraded": False, "reason": None}
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
