"""Per-client quotas with the `limits` library, on memory storage and on a storage that
hangs or answers nonsense (tests/support/redis.py). Real Redis: tests/integration/
test_client_limits_redis.py."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from tests.support.redis import StalledStorage, virtual_timeout
from zai_proxy.clients.limits import ClientLimits, parse_client_limits


def test_parse_spec() -> None:
    requests, tokens = parse_client_limits("600/minute; 10/second, tokens:100000/minute")
    assert [str(r) for r in requests] == ["600 per 1 minute", "10 per 1 second"]
    assert [(t.amount, t.GRANULARITY.name) for t in tokens] == [(100000, "minute")]
    assert parse_client_limits("") == ([], [])
    assert len(parse_client_limits("requests:5/hour")[0]) == 1


@pytest.mark.parametrize("bad", ["lots", "tokens:many/minute", "5/fortnight"])
def test_parse_spec_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="CLIENT_RATE_LIMITS"):
        parse_client_limits(bad)


async def test_disabled_allows_everything() -> None:
    quotas = ClientLimits("")
    assert not quotas.enabled
    assert (await quotas.check("a", tokens=10**9)).allowed


async def test_request_limit_per_client() -> None:
    quotas = ClientLimits("3/minute")
    for _ in range(3):
        assert (await quotas.check("a")).allowed
    refused = await quotas.check("a")
    assert not refused.allowed and refused.limit == "requests 3 per 1 minute"
    assert 1.0 <= refused.retry_after <= 60.0
    assert (await quotas.check("b")).allowed  # other clients have their own counters


async def test_token_limit_counts_input_and_recorded_output() -> None:
    quotas = ClientLimits("tokens:1000/minute")
    assert (await quotas.check("a", tokens=400)).allowed
    await quotas.record_tokens("a", 500)  # output known after the response
    refused = await quotas.check("a", tokens=200)
    assert not refused.allowed and refused.limit is not None and refused.limit.startswith("tokens")
    assert (await quotas.check("a", tokens=50)).allowed
    await quotas.record_tokens("a", 100)
    assert not (await quotas.check("a")).allowed  # past the limit: even a tiny request waits


async def test_a_stalled_storage_costs_one_timeout_then_is_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis SIGSTOPped: each request once waited the client's whole timeout; now the first
    waits op_timeout (0.5 s), the next ones skip the storage until the retry interval."""
    vt = VirtualTime()
    storage = StalledStorage()
    quotas = ClientLimits("1/minute; tokens:100/minute", storage=storage, clock=vt,
                          timeout=virtual_timeout(vt))
    assert (await quotas.check("a")).allowed
    storage.hang = True
    with caplog.at_level(logging.WARNING):
        check = asyncio.create_task(quotas.check("a"))
        await vt.advance(0.5)
        try:
            assert check.done(), "a stalled storage must not hold a request past op_timeout"
            assert check.result().allowed  # allowed while the storage fails (over its quota)
        finally:
            check.cancel()
        assert quotas.health() == {"degraded": True,
                                   "reason": "TimeoutError: no answer within 0.5 s"}
        calls = storage.calls
        assert (await quotas.check("a")).allowed  # at once: not even tried
        await quotas.record_tokens("a", 500)
        assert storage.calls == calls
        storage.hang = False
        vt.jump(5.0)
        refused = await quotas.check("a")  # tried again: the quota applies again
        assert not refused.allowed and refused.limit == "requests 1 per 1 minute"
    assert quotas.health() == {"degraded": False, "reason": None}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("degraded" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1


async def test_a_storage_answering_nonsense_lets_the_request_through() -> None:
    storage = StalledStorage()

    async def nonsense(*args: object, **kwargs: object) -> object:
        return b"OK"

    storage.get_moving_window = nonsense  # type: ignore[method-assign]
    quotas = ClientLimits("5/minute", storage=storage)
    assert (await quotas.check("a")).allowed
    assert quotas.health()["degraded"] is True


async def test_health_shows_whether_the_client_limits_are_applied() -> None:
    """/health says when a degraded storage lets requests through unchecked (and says nothing
    when no client limit is configured)."""
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    async with InProcessProxy(upstream, {"CLIENT_RATE_LIMITS": "5/second"}) as client:
        health = (await client.get("/health")).json()
        assert health["client_rate_limits"] == {"degraded": False, "reason": None}
    async with InProcessProxy(upstream, {}) as client:
        assert "client_rate_limits" not in (await client.get("/health")).json()
