"""The quota share's Redis logic on a fake Redis (tests/support/redis.py), on virtual time: a
Redis that hangs or lies degrades it, documents that are not usable are ignored. Two proxies on
a real redis-server: tests/integration/test_quota_shared.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.support.clock import VirtualTime
from tests.support.redis import FakeRedis, virtual_timeout
from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.shared import namespace
from zai_proxy.quota.shared import QuotaShare, block_from_doc, report_from_doc, report_to_doc
from zai_proxy.quota.state import Block
from zai_proxy.zai.monitor_report import QuotaReport, parse_monitor


def share(fake: FakeRedis, vt: VirtualTime) -> QuotaShare:
    link = RedisLink(fake, clock=vt, timeout=virtual_timeout(vt))
    return QuotaShare(link, "acct0", LeaderLease(link, namespace("acct0")))


async def test_one_leader_and_the_shared_documents() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    one, two = share(fake, vt), share(fake, vt)
    assert await one.lead(3.0) and not await two.lead(3.0)
    await one.publish({"at": vt.wall(), "ok": True, "tokens_at": 10.0, "report": {}})
    await one.publish_block(Block("five_hour", "1308", vt.wall() + 60, vt.wall(), "poll"),
                            vt.wall())
    answer = await two.sync(5.0)
    assert answer is not None
    total, doc, [block], stop = answer
    assert stop is None
    assert total == 5.0 and doc is not None and doc["tokens_at"] == 10.0
    assert (block.window, block.code, block.source) == ("five_hour", "1308", "shared")


async def test_a_redis_that_answers_ok_to_everything_degrades_without_an_exception(
        caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt, mode="lie")
    quota = share(fake, vt)
    with caplog.at_level(logging.INFO):
        assert await quota.lead(3.0) is False  # "OK" is not the script's 1: not the poller
        assert quota.degraded and "heartbeat" in (quota.reason or "")  # the lease, beaten first
        quota.link._retry_at = 0.0
        assert await quota.sync(12.0) is None  # redis-py's float("OK") fails: degraded too
        assert quota.degraded and "ValueError" in (quota.reason or "")
        await quota.publish({"at": 1.0, "ok": True})
    assert sum("degraded" in r.getMessage() for r in caplog.records) == 1
    assert quota.health() == {"degraded": True, "reason": quota.reason, "leader": False}


async def test_a_hanging_redis_costs_one_timeout() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt, mode="hang")
    quota = share(fake, vt)
    lead = asyncio.create_task(quota.lead(3.0))
    await vt.advance(0.5)
    try:
        assert lead.done() and lead.result() is False
    finally:
        lead.cancel()
    assert quota.degraded and "0.5 s" in (quota.reason or "")
    assert await quota.sync(1.0) is None and fake.calls == 1  # backing off: not tried


@pytest.mark.parametrize("doc", [
    {"at": float("nan"), "ok": True}, {"at": float("inf"), "ok": True}, {"at": "1", "ok": True},
    {"ok": True}, {"at": 1.0, "ok": "yes"}, {"at": 1.0, "ok": True, "tokens_at": float("inf")},
    [1, 2], "OK"], ids=repr)
async def test_an_unusable_report_is_ignored_and_logged_once(
        doc: object, caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    quota = share(fake, vt)
    fake.raw_set(quota.key("report"), json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            answer = await quota.sync(1.0)
            assert answer is not None and answer[1] is None
    assert not quota.degraded
    assert sum("quota report" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("tokens", [b"nan", b"inf", b"-5", b"many"])
async def test_a_token_total_that_is_no_count_degrades(tokens: bytes) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    quota = share(fake, vt)

    def lie(key: str, amount: float) -> bytes:
        return tokens

    fake._incrbyfloat = lie  # type: ignore[method-assign]
    assert await quota.sync(1.0) is None
    assert quota.degraded and "tokens" in (quota.reason or "")


@pytest.mark.parametrize("doc", [
    {"window": "five_hour", "code": "1308", "until": float("inf"), "since": 1.0},
    {"window": "five_hour", "code": "1308", "until": float("nan"), "since": 1.0},
    {"window": "five_hour", "code": "1308", "until": "2e9", "since": 1.0},
    {"window": "five_hour", "code": "1308", "until": 2e9},
    {"window": "monthly", "code": "1308", "until": 2e9, "since": 1.0},
    {"window": "five_hour", "until": 2e9, "since": 1.0}], ids=repr)
def test_an_unusable_block_is_no_block(doc: dict[str, object]) -> None:
    assert block_from_doc(json.dumps(doc)) is None


def test_a_block_and_a_report_that_are_usable() -> None:
    block = block_from_doc(json.dumps({"window": "weekly", "code": "1310", "until": 2e9,
                                       "since": 1.9e9}))
    assert block == Block("weekly", "1310", 2e9, 1.9e9, "shared")
    report = report_from_doc({"level": "pro", "limits": [
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "usage": 1000.0, "used": 10.0},
        {"type": "TOKENS_LIMIT", "unit": 3, "usage": float("nan")},
        {"type": "TOKENS_LIMIT", "unit": "3"},
        {"type": 5}]})
    assert report is not None and len(report.limits) == 1
    assert report.limits[0].usage == 1000.0


def test_units_of_account_and_entries_not_understood_survive_the_round_trip() -> None:
    body = json.dumps({"data": {"level": "max", "limits": [
        {"type": "CREDIT_LIMIT", "unit": 3, "usage": 28000, "currentValue": 7000},
        {"type": "TOKENS_LIMIT", "unit": 6, "percentage": 12},
        {"type": "TIME_LIMIT", "unit": 5, "usage": 4000, "currentValue": 4000},
        {"type": "FUTURE_LIMIT", "unit": 9, "quantum": 42}, [1], [2],
    ]}}).encode()
    report = parse_monitor(body)
    assert isinstance(report, QuotaReport)
    again = report_from_doc(json.loads(json.dumps(report_to_doc(report))))
    assert again == report
    assert again is not None and [lim.measure for lim in again.limits] == [
        "credits", "tokens", "calls"]
    assert again.unparsed_counts == (("not_an_object", 2), ("unknown_type", 1))


def test_a_previous_versions_report_gets_its_measures_from_the_types() -> None:
    report = report_from_doc({"level": "pro", "limits": [
        {"type": "CREDIT_LIMIT", "unit": 3, "usage": 10.0, "used": 1.0},
        {"type": "TOKENS_LIMIT", "unit": 3, "percentage": 5.0, "measure": "furlongs"}],
        "unparsed": [{"reason": "bored", "raw": "{}"}, {"reason": "unknown_type", "raw": 7}],
        "unparsed_counts": [["unknown_type", True], ["no_numbers", -1], "x"]})
    assert report is not None and [lim.measure for lim in report.limits] == ["credits"]
    assert report.unparsed == () and report.unparsed_counts == ()
