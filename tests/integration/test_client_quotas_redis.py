"""Per-client quotas on a real redis-server, and on a Redis address nothing listens on."""

from __future__ import annotations

import pytest

from tests.servers import RedisServer, free_port
from zai_proxy.client_quotas import ClientQuotas


@pytest.mark.needs("redis-server")
async def test_redis_storage_is_shared(redis_server: RedisServer) -> None:
    uri = redis_server.url
    one = ClientQuotas("2/minute", uri, prefix="q-test")
    two = ClientQuotas("2/minute", uri, prefix="q-test")
    assert (await one.check("shared")).allowed
    assert (await two.check("shared")).allowed
    assert not (await one.check("shared")).allowed  # the other replica's hit counted
    assert one.health() == {"degraded": False, "reason": None}


async def test_storage_failure_fails_open() -> None:
    quotas = ClientQuotas("1/minute", f"redis://127.0.0.1:{free_port()}/0")
    assert (await quotas.check("a")).allowed
    assert (await quotas.check("a")).allowed  # degraded: allowed without trying
    assert quotas.health()["degraded"] is True
