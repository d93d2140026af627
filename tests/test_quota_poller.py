"""One poll of the quota monitor (`MonitorClient`), the poll health, and the poll loop."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from zai_proxy.quota_monitor import Invalid, QuotaReport
from zai_proxy.quota_poller import MONITOR_PATH, MonitorClient, PollHealth, PollLoop

KEY = "account-key.secret-part-123"
OK = {"code": 200, "success": True, "data": {"level": "lite", "limits": [
    {"type": "TOKENS_LIMIT", "unit": 3, "percentage": 12, "nextResetTime": 1767356758467}]}}


def client(handler: object, timeout: float = 2.0) -> MonitorClient:
    return MonitorClient("https://monitor.test/", KEY, timeout=timeout,
                         transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


async def test_a_poll_sends_the_raw_key_and_parses_the_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK)

    monitor = client(handler)
    result = await monitor.fetch()
    await monitor.aclose()
    assert isinstance(result, QuotaReport) and result.level == "lite"
    [request] = seen
    assert request.method == "GET" and str(request.url) == "https://monitor.test" + MONITOR_PATH
    assert request.headers["authorization"] == KEY  # no "Bearer"


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"refused ({request.headers['authorization']})")


def status(code: int) -> object:
    return lambda request: httpx.Response(code, text="<html>nope</html>")


@pytest.mark.parametrize(("handler", "reason"), [
    (refuse, "unreachable"),
    (status(401), "unauthorized"),
    (status(403), "unauthorized"),
    (status(404), "http_error"),
    (status(502), "http_error"),
    (lambda request: httpx.Response(200, text="not json"), "invalid_response"),
    (lambda request: httpx.Response(200, content=b"{" + b" " * 300_000 + b"}"),
     "invalid_response"),
    (lambda request: httpx.Response(200, json={"code": 1001, "msg": "expired"}), "api_error"),
])
async def test_failures_are_values_with_a_bounded_reason_and_never_the_key(
        handler: object, reason: str) -> None:
    result = await client(handler).fetch()
    assert isinstance(result, Invalid) and result.reason == reason
    assert KEY not in result.detail and "secret-part" not in result.detail


async def test_a_slow_monitor_times_out() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=OK)

    started = asyncio.get_running_loop().time()
    result = await client(slow, timeout=0.2).fetch()
    assert isinstance(result, Invalid) and result.reason == "timeout"
    assert asyncio.get_running_loop().time() - started < 2


def test_poll_health_reports_each_change_of_state_once() -> None:
    health = PollHealth()
    report = QuotaReport(None, ())
    logged = [health.record(report, 1.0)]
    logged += [health.record(Invalid("timeout", "slow"), t) for t in (2.0, 3.0, 4.0)]
    logged += [health.record(Invalid("unauthorized", "HTTP 401"), 5.0)]
    assert (health.state, health.reason, health.failures, health.since) == (
        "failing", "unauthorized", 4, 5.0)
    logged += [health.record(report, 6.0), health.record(report, 7.0)]
    messages = [m for m in logged if m is not None]
    assert [level for level, _ in messages] == [logging.INFO, logging.WARNING, logging.WARNING,
                                                logging.INFO]
    assert [text.split(" (")[0].split(":")[0] for _, text in messages] == [
        "quota poll ok", "quota poll failing", "quota poll now failing", "quota poll recovered"]
    assert health.as_dict()["last_success_at"] == 7.0 and health.failures == 0
    shared = PollHealth()
    assert shared.adopt({"at": 9.0, "ok": False, "reason": "bogus", "detail": "x"}) is not None
    assert shared.reason == "invalid_response"  # unknown reasons stay bounded


async def test_the_loop_polls_on_its_interval_and_soon_after_a_poke() -> None:
    polls: list[float] = []
    loop = asyncio.get_running_loop()

    async def poll_once() -> None:
        polls.append(loop.time())
        if len(polls) == 2:
            raise RuntimeError("one bad poll must not end the loop")

    poller = PollLoop(poll_once, interval=30.0, min_gap=0.1)
    task = loop.create_task(poller.run())
    await asyncio.sleep(0.05)
    assert len(polls) == 1  # at once, then not before the interval
    poller.poke()
    await asyncio.sleep(0.3)
    assert len(polls) == 2 and polls[1] - polls[0] >= 0.1  # poked, but not closer than min_gap
    poller.poke()
    await asyncio.sleep(0.3)
    assert len(polls) == 3  # the failed poll did not stop it
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_monitor_message_quoting_the_key_is_scrubbed() -> None:
    answer = {"code": 1000, "msg": f"key {KEY} is not valid for this API"}
    result = await client(lambda request: httpx.Response(200, json=answer)).fetch()
    assert isinstance(result, Invalid) and result.reason == "api_error"
    assert KEY not in result.detail and "<key>" in result.detail
