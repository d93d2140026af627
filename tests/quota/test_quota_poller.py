"""One poll of the quota monitor (`MonitorClient`) and the poll health (`PollHealth`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.support.clock import VirtualTime
from zai_proxy.quota.poller import MONITOR_PATH, MonitorClient, PollHealth
from zai_proxy.zai.monitor_report import Invalid, QuotaReport

KEY = "account-key.secret-part-123"
OK = {"code": 200, "success": True, "data": {"level": "lite", "limits": [
    {"type": "TOKENS_LIMIT", "unit": 3, "percentage": 12, "nextResetTime": 1767356758467}]}}


def client(handler: object, timeout: float = 2.0,
           sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> MonitorClient:
    return MonitorClient("https://monitor.test/", KEY, timeout=timeout, sleep=sleep,
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
    vt = VirtualTime()
    answered = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await answered.wait()  # never set: the monitor does not answer
        return httpx.Response(200, json=OK)

    monitor = client(slow, timeout=0.2, sleep=vt.sleep)
    fetch = asyncio.ensure_future(monitor.fetch())
    await vt.advance(0.19)
    assert not fetch.done()  # still within the timeout
    await vt.advance(0.01)
    assert fetch.done()
    result = fetch.result()
    assert isinstance(result, Invalid) and result.reason == "timeout"
    await monitor.aclose()


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


async def test_a_monitor_message_quoting_the_key_is_scrubbed() -> None:
    answer = {"code": 1000, "msg": f"key {KEY} is not valid for this API"}
    result = await client(lambda request: httpx.Response(200, json=answer)).fetch()
    assert isinstance(result, Invalid) and result.reason == "api_error"
    assert KEY not in result.detail and "<key>" in result.detail
