"""Table tests for the 429 classifier over the body shapes Z.AI sends."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from zai_proxy.relay.retry import parse_retry_after
from zai_proxy.zai.classify import (
    BEIJING,
    MAX_BODY_BYTES,
    business_error,
    classify_429,
    classify_doc,
    classify_error,
    is_error_object,
    next_beijing_midnight,
    parse_time,
)
from zai_proxy.zai.codes import ThrottleClass

NOW = datetime(2026, 9, 5, 12, 0, 0, tzinfo=UTC).timestamp()
C = ThrottleClass


@pytest.mark.parametrize(
    ("body", "cls", "code"),
    [
        (b'{"error":{"code":"1302","message":"High concurrency"}}', C.CONCURRENCY, "1302"),
        (b'{"code":1302,"msg":"concurrency"}', C.CONCURRENCY, "1302"),
        (b'{"type":"error","error":{"type":"rate_limit_error","code":"1303","message":"x"}}',
         C.FREQUENCY, "1303"),
        (b'{"error":{"message":"1302: High concurrency usage"}}', C.CONCURRENCY, "1302"),
        (b'{"error":{"code":1305,"message":"too frequent"}}', C.FREQUENCY, "1305"),
        (b'{"error":{"code":"1308","message":"5-hour quota"}}', C.QUOTA_5H, "1308"),
        (b'{"code":"1310","msg":"weekly limit"}', C.QUOTA_PERIOD, "1310"),
        (b'{"error":{"code":1312.0,"message":"model busy"}}', C.CONGESTION, "1312"),
        (b'{"error":{"code":"9999","message":"?"}}', C.UNKNOWN, "9999"),
        (b'{"error":{"message":"rate limited"}}', C.UNKNOWN, None),
        (b'{"msg":"1303: slow down"}', C.FREQUENCY, "1303"),
        (b"1302: plain text body", C.CONCURRENCY, "1302"),
        (b"<html>429 Too Many Requests</html>", C.UNKNOWN, None),
        (b"", C.UNKNOWN, None),
        (b"{not json", C.UNKNOWN, None),
        (b"[1302]", C.UNKNOWN, None),
        (b'{"error":"1302"}', C.UNKNOWN, None),
        (b'{"error":{"code":true}}', C.UNKNOWN, None),
        (b"\xff\xfe\x00garbage", C.UNKNOWN, None),
        (b"[" * 100_000 + b"]" * 100_000, C.UNKNOWN, None),
    ],
)
def test_codes_in_every_envelope(body: bytes, cls: ThrottleClass, code: str | None) -> None:
    throttle = classify_429(body, {}, NOW)
    assert (throttle.cls, throttle.code) == (cls, code)


def test_huge_body_is_unknown_without_parsing() -> None:
    body = json.dumps({"error": {"code": "1302", "pad": "x" * MAX_BODY_BYTES}}).encode()
    assert classify_429(body, {"Retry-After": "3"}, NOW).cls is C.UNKNOWN
    assert classify_429(body, {"Retry-After": "3"}, NOW).retry_after == 3.0


def test_deep_nesting_never_raises() -> None:
    assert classify_429(b'{"a":' * 5000 + b"1" + b"}" * 5000, {}, NOW).cls is C.UNKNOWN


@pytest.mark.parametrize(
    ("cls", "retryable", "feeds"),
    [
        (C.CONCURRENCY, True, "concurrency"),
        (C.FREQUENCY, True, "rate"),
        (C.UNKNOWN, True, "rate"),
        (C.CONGESTION, True, None),
        (C.QUOTA_5H, False, None),
        (C.QUOTA_PERIOD, False, None),
    ],
)
def test_decisions(cls: ThrottleClass, retryable: bool, feeds: str | None) -> None:
    from zai_proxy.zai.classify import Throttle

    assert Throttle(cls).retryable is retryable
    assert Throttle(cls).feeds == feeds


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"Retry-After": "Sat, 05 Sep 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "Sat, 05 Sep 2026 11:00:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-4"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_header(headers: dict[str, str], expected: float | None) -> None:
    assert classify_429(b'{"code":1303}', headers, NOW).retry_after == expected


def test_body_retry_hints() -> None:
    body = b'{"error":{"code":"1303","retry_after":4}}'
    assert classify_429(body, {}, NOW).retry_after == 4.0
    body = b'{"code":1303,"retryAfter":"6"}'
    assert classify_429(body, {}, NOW).retry_after == 6.0
    # the header wins over the body
    assert classify_429(body, {"Retry-After": "1"}, NOW).retry_after == 1.0


RESET = datetime(2026, 9, 6, 0, 0, 0, tzinfo=UTC).timestamp()  # 08:00 Beijing


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("reset_time", RESET),
        ("resetTime", int(RESET * 1000)),
        ("reset_at", str(int(RESET))),
        ("resetAt", str(int(RESET * 1000))),
        ("next_reset_time", "2026-09-06T00:00:00Z"),
        ("nextResetTime", "2026-09-06T08:00:00+08:00"),
        ("reset_time", "2026-09-06 08:00:00"),  # naive = Beijing time
    ],
)
def test_reset_keys_and_formats(key: str, value: object) -> None:
    body = json.dumps({"error": {"code": "1308", "message": "quota", key: value}}).encode()
    throttle = classify_429(body, {}, NOW)
    assert throttle.cls is C.QUOTA_5H
    assert throttle.reset_at == pytest.approx(RESET)
    assert throttle.wait_seconds(NOW) == pytest.approx(RESET - NOW)


def test_reset_from_message_text_in_beijing_time() -> None:
    body = (b'{"error":{"code":"1310","message":"Weekly/Monthly Limit Exhausted. '
            b'Your limit will reset at 2026-09-06 08:00:00"}}')
    throttle = classify_429(body, {}, NOW)
    assert throttle.cls is C.QUOTA_PERIOD and not throttle.retryable
    assert throttle.reset_at == pytest.approx(RESET)


def test_top_level_reset_with_data_envelope() -> None:
    body = b'{"code":1308,"msg":"x","data":{"nextResetTime":1788652800000}}'
    assert classify_429(body, {}, NOW).reset_at == 1788652800.0


@pytest.mark.parametrize("bad", [None, True, "tomorrow", -5, float("nan"), [1], {"a": 1}])
def test_parse_time_rejects_garbage(bad: object) -> None:
    assert parse_time(bad) is None


def test_parse_retry_after_accepts_datetime_now() -> None:
    now = datetime(2026, 9, 5, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sat, 05 Sep 2026 12:00:10 GMT", now) == 10.0
    assert parse_retry_after(3, now) == 3.0
    assert parse_retry_after(None, now) is None


# --------------------------------------------------------------------------- edges
# Boundaries and odd inputs found by mutation testing (scripts/mutation.py): each case fails
# against a mutant of classify.py that the table tests above let through.


def test_body_of_exactly_the_cap_is_still_parsed() -> None:
    doc = b'{"error":{"code":"1302"}}'
    body = doc + b" " * (MAX_BODY_BYTES - len(doc))
    assert len(body) == MAX_BODY_BYTES
    assert classify_429(body, {}, NOW).cls is C.CONCURRENCY
    assert classify_429(body + b" ", {}, NOW).cls is C.UNKNOWN


def test_wait_seconds_is_the_time_left_to_the_reset_never_negative() -> None:
    from zai_proxy.zai.classify import Throttle

    assert Throttle(C.QUOTA_5H, "1308", None, NOW + 0.25).wait_seconds(NOW) == 0.25
    assert Throttle(C.QUOTA_5H, "1308", None, NOW - 30).wait_seconds(NOW) == 0.0
    assert Throttle(C.QUOTA_5H, "1308", 0.5, NOW + 60).wait_seconds(NOW) == 0.5
    assert Throttle(C.UNKNOWN).wait_seconds(NOW) is None


@pytest.mark.parametrize(("value", "expected"), [
    (0, None), (-5, None), (0.5, 0.5), (1, 1.0), (2.0, 2.0),
    (1e11, 1e11),  # the largest number still read as seconds
    (1e11 + 0.5, (1e11 + 0.5) / 1000.0),  # anything bigger is milliseconds
    (1788652800000, 1788652800.0), ("1788652800", 1788652800.0),
])
def test_parse_time_numbers_and_the_ms_boundary(value: object, expected: float | None) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (0.5, 0.5), (0, 0.0), (-3, 0.0), (float("nan"), None), ("nan", None), ("0.25", 0.25),
    ("-2", 0.0), (True, None), (None, None), ("soon", None),
])
def test_parse_retry_after_values(value: str | float | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date_without_zone_is_utc_whatever_the_local_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    # "-0000" makes parsedate_to_datetime return a naive datetime; it means UTC (RFC 5322),
    # not the machine's zone, which is set far from UTC here so the two cannot coincide.
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert parse_retry_after("Sat, 05 Sep 2026 12:00:30 -0000", NOW) == 30.0
        assert parse_retry_after("Sat, 05 Sep 2026 12:00:30 GMT", NOW) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_body_retry_hint_as_an_http_date_and_hints_of_the_wrong_type() -> None:
    body = json.dumps({"error": {"code": "1302",
                                 "retry_after": "Sat, 05 Sep 2026 12:00:07 GMT"}}).encode()
    assert classify_429(body, {}, NOW).retry_after == 7.0
    for bad in ([1], {"s": 1}, True, None):
        body = json.dumps({"error": {"code": "1302", "retry_after": bad}}).encode()
        throttle = classify_429(body, {}, NOW)
        assert (throttle.cls, throttle.retry_after) == (C.CONCURRENCY, None), bad


# ---- other carriers: errors only when they say so ----------------------------------------------


@pytest.mark.parametrize(("doc", "error"), [
    ({"error": {"code": "1303", "message": "x"}}, True),
    ({"code": 1305, "msg": "overloaded", "success": False}, True),
    ({"type": "error", "error": {"type": "rate_limit_error", "code": "1303"}}, True),
    ({"code": 1305, "msg": "overloaded"}, True),
    ({"code": 1305, "message": "overloaded"}, True),  # either spelling of the message
    ({"type": "error", "error": "overloaded"}, True),  # Anthropic's envelope, a bare message
    ({"success": False}, True),  # the monitor-style envelope says so itself
    ({"code": 1305}, False),  # a code alone is a field of some answer, not an error object
    ({"code": 200, "msg": "ok", "success": True, "data": {}}, False),
    ({"choices": [], "error": {"code": "1303"}}, False),
    ({"content": [], "type": "error"}, False),
    ({"id": "x", "object": "list", "data": []}, False),
    ([{"error": {"code": "1303"}}], False),
    (None, False),
])
def test_a_2xx_body_is_an_error_only_as_an_error_object(doc: object, error: bool) -> None:
    assert is_error_object(doc) is error


@pytest.mark.parametrize(("doc", "code"), [
    ({"error": {"code": "1302", "message": "x"}}, "1302"),
    ({"error": {"message": "1308: spent"}}, "1308"),
    ({"error": {"code": "1214", "message": "bad parameter"}}, None),  # no row: no throttle
    ({"error": {"message": "no code at all"}}, None),
])
def test_a_business_error_is_one_whose_code_has_a_row(doc: object, code: str | None) -> None:
    found = business_error(doc, {}, NOW)
    assert (found.code if found is not None else None) == code


def test_classify_error_is_the_one_classifier_of_429s() -> None:
    assert classify_429 is classify_error


def test_the_raw_text_is_read_only_when_the_body_was_not_json() -> None:
    doc = {"error": {"message": "no code in the parsed body"}}
    assert classify_doc(doc, {}, NOW, text="1305: overloaded").code is None
    assert classify_doc(None, {}, NOW, text="1305: overloaded").code == "1305"


@pytest.mark.parametrize(("beijing", "midnight"), [
    # A Beijing afternoon with seconds and microseconds: the coming midnight, to the second.
    (datetime(2026, 12, 7, 15, 30, 45, 500_000, tzinfo=BEIJING),
     datetime(2026, 12, 8, 0, 0, 0, tzinfo=BEIJING)),
    # Early morning in Beijing is still the previous day in UTC: Beijing's date counts.
    (datetime(2026, 12, 8, 1, 0, 0, tzinfo=BEIJING),
     datetime(2026, 12, 9, 0, 0, 0, tzinfo=BEIJING)),
    # Exactly midnight: the limit that resets now resets again a day later.
    (datetime(2026, 12, 8, 0, 0, 0, tzinfo=BEIJING),
     datetime(2026, 12, 9, 0, 0, 0, tzinfo=BEIJING)),
    (datetime(2026, 12, 31, 23, 59, 59, tzinfo=BEIJING),
     datetime(2027, 1, 1, 0, 0, 0, tzinfo=BEIJING)),
])
def test_the_daily_limit_resets_at_the_next_midnight_beijing_time(
        beijing: datetime, midnight: datetime) -> None:
    assert next_beijing_midnight(beijing.timestamp()) == midnight.timestamp()
