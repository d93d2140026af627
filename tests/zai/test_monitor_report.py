"""The quota monitor parser on the answer shapes Z.AI sends (and the broken ones it might)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zai_proxy.zai.monitor_report import (
    MAX_RAW_CHARS,
    MAX_UNPARSED_KEPT,
    Invalid,
    Limit,
    QuotaReport,
    parse_monitor,
)

# The Coding Plan answer as published tools print it: an MCP time limit (unit 5, the month's tool
# calls) and the legacy five-hour TOKENS_LIMIT with only a percentage.
LEGACY = {
    "code": 200, "msg": "Operation successful", "success": True,
    "data": {"limits": [
        {"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 1000, "currentValue": 12,
         "remaining": 988, "percentage": 1, "nextResetTime": 1769938246998,
         "usageDetails": [{"modelCode": "search-prime", "usage": 12}]},
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 37,
         "nextResetTime": 1767356758467},
    ], "level": "pro"},
}
# A credit plan with both windows in absolute numbers, every number a string, one reset in s.
CREDITS = {
    "code": "200", "success": "true",
    "data": {"level": "max", "limits": [
        {"type": "CREDIT_LIMIT", "unit": "3", "usage": "4000", "currentValue": "1000",
         "remaining": "3000", "percentage": "25", "nextResetTime": "1767356758"},
        {"type": "CREDIT_LIMIT", "unit": 6, "usage": 40000.0, "currentValue": 39000,
         "remaining": 1000, "percentage": "97.5%", "nextResetTime": 1767900000000},
    ]},
}


def parsed(doc: Any) -> QuotaReport:
    report = parse_monitor(json.dumps(doc).encode())
    assert isinstance(report, QuotaReport), report
    return report


def test_legacy_percentage_only_answer() -> None:
    report = parsed(LEGACY)
    assert report.level == "pro"
    five = report.window("five_hour")
    assert five is not None and five.type == "TOKENS_LIMIT" and five.number == 5
    assert five.used_ratio == pytest.approx(0.37) and not five.exact and not five.spent
    assert five.reset_at == pytest.approx(1767356758.467)  # epoch ms -> s
    assert report.window("weekly") is None
    mcp = report.window("monthly")
    assert mcp is not None and (mcp.type, mcp.unit, mcp.used, mcp.remaining) == (
        "TIME_LIMIT", 5, 12, 988)
    assert mcp.measure == "calls" and mcp.window is None  # stops no chat request
    assert five.measure == "tokens" and report.unparsed == () and report.unparsed_total == 0


def test_numbers_as_strings_seconds_and_percent_signs() -> None:
    report = parsed(CREDITS)
    five, weekly = report.window("five_hour"), report.window("weekly")
    assert five is not None and weekly is not None
    assert (five.usage, five.used, five.remaining) == (4000, 1000, 3000)
    assert five.used_ratio == 0.25 and five.exact and not five.tokens
    assert five.measure == weekly.measure == "credits" and five.window == "five_hour"
    assert five.reset_at == 1767356758  # epoch seconds stay seconds
    assert weekly.percentage == 97.5 and weekly.used_ratio == pytest.approx(0.975)


@pytest.mark.parametrize(("fields", "ratio", "spent"), [
    ({"usage": 100, "currentValue": 100, "remaining": 0}, 1.0, True),
    ({"usage": 100, "remaining": 0}, 1.0, True),
    ({"usage": 100, "currentValue": 120, "remaining": -20}, 1.2, True),  # overshoot
    ({"usage": 100, "remaining": 40}, 0.6, False),
    ({"percentage": 100}, 1.0, True),
    ({"percentage": "99"}, 0.99, False),
    ({"usage": 0, "currentValue": 0, "percentage": 5}, 0.05, False),  # no allowance: percentage
    ({}, None, False),
])
def test_used_ratio_from_the_most_exact_fields(fields: dict[str, Any], ratio: float | None,
                                               spent: bool) -> None:
    report = parsed({"data": {"limits": [{"type": "CREDIT_LIMIT", "unit": 3, **fields}]}})
    limit = report.window("five_hour")
    if ratio is None:  # no number to tell: not understood
        assert limit is None and report.unparsed_counts == (("no_numbers", 1),)
        return
    assert limit is not None and limit.used_ratio == pytest.approx(ratio)
    assert limit.spent is spent


def test_malformed_fields_are_dropped_and_entries_not_understood_are_kept_raw() -> None:
    report = parsed({"data": {"limits": [
        {"type": "", "unit": "three", "usage": True, "currentValue": -3, "percentage": [1],
         "nextResetTime": "soon"},
        "not an object", None, 7,
        {"type": "TOKENS_LIMIT", "unit": 6.0, "percentage": "2", "usage": "lots",
         "nextResetTime": "2026-09-06 00:00:00"},
        {"type": "FUTURE_LIMIT", "unit": 9, "percentage": 3},
        {"type": "CREDIT_LIMIT", "unit": 4, "percentage": 3},
        {"type": "TIME_LIMIT", "unit": 5, "nextResetTime": 1767356758467},
    ]}})
    assert report.level is None and len(report.limits) == 1
    weekly = report.window("weekly")
    assert weekly is not None and weekly.used_ratio == 0.02 and weekly.usage is None
    assert weekly.reset_at == 1788624000.0  # naive date: Beijing time (UTC+8)
    assert dict(report.unparsed_counts) == {
        "unknown_type": 2, "not_an_object": 3, "unknown_unit": 1, "no_numbers": 1}
    assert report.unparsed_total == 7
    assert [(u.reason, u.raw) for u in report.unparsed] == [
        ("unknown_type", '{"type":"","unit":"three","usage":true,"currentValue":-3,'
                         '"percentage":[1],"nextResetTime":"soon"}'),
        ("not_an_object", '"not an object"'), ("not_an_object", "null"),
        ("not_an_object", "7"),
        ("unknown_type", '{"type":"FUTURE_LIMIT","unit":9,"percentage":3}'),
        ("unknown_unit", '{"type":"CREDIT_LIMIT","unit":4,"percentage":3}'),
        ("no_numbers", '{"type":"TIME_LIMIT","unit":5,"nextResetTime":1767356758467}'),
    ]


def test_mixed_tokens_credits_and_calls_with_types_in_any_case() -> None:
    report = parsed({"data": {"level": "lite", "limits": [
        {"type": "tokens_limit", "unit": 3, "number": 5, "percentage": 10},
        {"type": "CREDIT_LIMIT", "unit": 3, "usage": 2000, "currentValue": 500},
        {"type": "CREDIT_LIMIT", "unit": 6, "usage": 10000, "remaining": 10000},
        {"type": "TIME_LIMIT", "unit": 5, "usage": 100, "currentValue": 100},
    ]}})
    assert [lim.measure for lim in report.limits_of("five_hour")] == ["tokens", "credits"]
    five = report.window("five_hour")
    assert five is not None and five.measure == "credits" and five.used_ratio == 0.25
    weekly = report.window("weekly")
    assert weekly is not None and weekly.measure == "credits" and weekly.used_ratio == 0.0
    calls = report.window("monthly")
    assert calls is not None and calls.spent and calls.window is None


def test_raw_entries_are_bounded_in_size_and_number() -> None:
    big = {"type": "FUTURE_LIMIT", "unit": 3, "notes": "x" * 5000}
    report = parsed({"data": {"limits": [big] * (MAX_UNPARSED_KEPT + 5)}})
    assert report.limits == () and report.unparsed_total == MAX_UNPARSED_KEPT + 5
    assert len(report.unparsed) == MAX_UNPARSED_KEPT
    first = report.unparsed[0]
    assert len(first.raw) == MAX_RAW_CHARS and first.truncated
    assert first.raw.startswith('{"type":"FUTURE_LIMIT","unit":3,"notes":"xxx')


def test_the_binding_limit_of_a_window_is_the_most_used() -> None:
    report = parsed({"data": {"limits": [
        {"type": "TOKENS_LIMIT", "unit": 3, "percentage": 40},
        {"type": "CREDIT_LIMIT", "unit": 3, "usage": 10, "currentValue": 9},
        {"type": "OTHER", "unit": 3, "percentage": 100},
    ]}})
    five = report.window("five_hour")
    assert five is not None and five.type == "CREDIT_LIMIT"
    assert Limit(type="CREDIT_LIMIT", unit=3, measure="credits").window == "five_hour"


def test_limits_at_the_top_level_and_an_empty_plan() -> None:
    assert parsed({"limits": [{"type": "TOKENS_LIMIT", "unit": 3, "percentage": 1}]}).window(
        "five_hour") is not None
    assert parsed({"code": 200, "data": {"limits": []}}).limits == ()


@pytest.mark.parametrize(("body", "reason"), [
    (b"<html>502 Bad Gateway</html>", "invalid_response"),
    (b"", "invalid_response"),
    (b"[1, 2]", "invalid_response"),
    (b'{"code": 200, "data": "none"}', "invalid_response"),
    (b'{"code": 200, "data": {"level": "pro"}}', "invalid_response"),
    (b'{"code": 1001, "msg": "token expired or incorrect", "success": false}', "api_error"),
    (b'{"code": 500, "msg": "Internal error", "data": {"limits": []}}', "api_error"),
    (b'{"success": false, "data": {"limits": []}}', "api_error"),
    (b'{"success": "false", "data": {"limits": []}}', "api_error"),
    (b"[" * 100_000, "invalid_response"),
    (b'{"data": {"limits": []}, "pad": "' + b"x" * 300_000 + b'"}', "invalid_response"),
])
def test_unusable_answers_are_values_with_a_reason(body: bytes, reason: str) -> None:
    result = parse_monitor(body)
    assert isinstance(result, Invalid) and result.reason == reason
    assert len(result.detail) <= 220


def test_api_error_detail_carries_the_message() -> None:
    result = parse_monitor(b'{"code": 1001, "msg": "token expired or incorrect"}')
    assert isinstance(result, Invalid) and result.detail == "code 1001: token expired or incorrect"
