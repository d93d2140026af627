"""The Z.AI business-code table is the only place a code is decided, and its rows drive behaviour.

Two kinds of test. The scan reads every proxy module (not the simulator, a separate program with
its own Z.AI emulation, and not the table itself) and fails on any business-code literal, naming
file and line. The behaviour tests change or add a row and watch classification, retries, the
controller feeds, the quota block and the local refusal follow it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import pytest
from prometheus_client import CollectorRegistry

from zai_proxy.limiter.rate_controller import Outcome
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.quota import refusal
from zai_proxy.quota.state import Block, QuotaState
from zai_proxy.relay.forwarding import Forwarder, Opened
from zai_proxy.relay.retry import RetryPolicy, RetryReason, retry_reason
from zai_proxy.zai import codes
from zai_proxy.zai.classify import Throttle, classify_429
from zai_proxy.zai.codes import TABLE, UNKNOWN, ThrottleClass, ZaiCode, lookup
from zai_proxy.zai.monitor_report import Limit, QuotaReport

PACKAGE = Path(codes.__file__).resolve().parents[1]
NOT_SCANNED = (PACKAGE / "simulator", PACKAGE / "zai" / "codes.py")
T0 = 1_800_000_000.0
CODE_TEXT = re.compile(r"1\d{3}")
# Ints from 1100 up are Z.AI's account, API and policy code families; 1000-1099 stay out
# because 1000 (ms per s) and 1024 (bytes per KiB) are everyday units.
CODE_INTS = range(1100, 2000)

# ---- the scan -------------------------------------------------------------------------------


def code_literals(source: str) -> list[tuple[int, object]]:
    """(line, value) of every literal in `source` that is a Z.AI business code."""
    found: list[tuple[int, object]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Constant):
            continue
        value = node.value
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if isinstance(text, str) and CODE_TEXT.fullmatch(text):
            found.append((node.lineno, value))
        elif isinstance(value, int) and not isinstance(value, bool) and value in CODE_INTS:
            found.append((node.lineno, value))
    return sorted(found, key=lambda hit: hit[0])


def scanned_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py")
                  if not any(path == skip or skip in path.parents for skip in NOT_SCANNED))


def test_the_scan_finds_codes_and_nothing_else() -> None:
    source = '''
"""Docstring naming 1308 and 1310."""
PORT, MS, KIB = 8080, 1000, 1024
A = "1308"
B = b"1302"
C = 1312
D = "13080"
E = f"code {1305}"
'''
    assert code_literals(source) == [(4, "1308"), (5, b"1302"), (6, 1312), (8, 1305)]


def test_business_codes_are_written_only_in_the_table() -> None:
    modules = scanned_modules()
    assert PACKAGE / "quota" / "state.py" in modules and len(modules) > 50
    hits = [f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
            for path in modules for line, value in code_literals(path.read_text("utf-8"))]
    assert not hits, "Z.AI business codes outside zai_proxy/zai/codes.py:\n" + "\n".join(hits)


# ---- the table ------------------------------------------------------------------------------


def test_every_code_has_one_row_and_every_quota_window_one_code() -> None:
    written = [row.code for row in TABLE]
    assert None not in written and len(set(written)) == len(written)
    assert UNKNOWN not in TABLE and lookup(None) is UNKNOWN and lookup("1999") is UNKNOWN
    assert {window: codes.window_code(window) for window in get_args(codes.Window)} == {
        row.window: row.code for row in TABLE if row.window is not None}


def test_every_retry_reason_in_the_table_is_a_retry_metric_label() -> None:
    labels = {reason.value for reason in RetryReason}
    assert {row.retry for row in (*TABLE, UNKNOWN) if row.retry is not None} <= labels


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Put a row into the table for one test (a new code, or a changed one)."""

    def put(row: ZaiCode) -> ZaiCode:
        assert row.code is not None
        monkeypatch.setitem(codes._BY_CODE, row.code, row)
        return row

    return put


# ---- classification -------------------------------------------------------------------------


def test_a_new_row_is_classified_by_its_code(table: Any) -> None:
    table(ZaiCode("1399", ThrottleClass.CONGESTION, learns="congestion", retry="429_congestion"))
    throttle = classify_429(b'{"error":{"code":"1399","message":"busy"}}', {}, T0)
    assert (throttle.cls, throttle.code) == (ThrottleClass.CONGESTION, "1399")
    assert throttle.row is lookup("1399")


def test_an_answer_known_only_by_its_class_reads_that_class_row(table: Any) -> None:
    table(replace(lookup("1302"), learns=None))
    assert Throttle(ThrottleClass.CONCURRENCY).feeds is None


# ---- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("row", [*TABLE, UNKNOWN], ids=lambda row: str(row.code))
def test_each_row_decides_its_retry(row: ZaiCode) -> None:
    reason = retry_reason(status=429, throttle=Throttle(row.cls, row.code))
    assert reason == (None if row.retry is None else RetryReason(row.retry))
    assert Throttle(row.cls, row.code).retryable is row.retryable


def test_a_code_marked_not_retryable_is_not_retried(table: Any) -> None:
    table(replace(lookup("1303"), retry=None))
    assert retry_reason(status=429, throttle=Throttle(ThrottleClass.FREQUENCY, "1303")) is None
    assert retry_reason(status=429, throttle=Throttle(ThrottleClass.FREQUENCY, "1305")) is (
        RetryReason.FREQUENCY)


def test_a_code_marked_retryable_is_retried_under_its_reason(table: Any) -> None:
    table(replace(lookup("1310"), retry="429_unknown"))
    throttle = Throttle(ThrottleClass.QUOTA_PERIOD, "1310")
    assert retry_reason(status=429, throttle=throttle) is RetryReason.UNKNOWN


# ---- what the controllers learn ---------------------------------------------------------------


class Permit:
    def __init__(self) -> None:
        self.seen: list[Outcome] = []

    def observe(self, outcome: Outcome) -> list[object]:
        self.seen.append(outcome)
        return []


def judged(code: str, reason: str = "quota_exhausted") -> tuple[
        list[Outcome], RetryReason | None, float]:
    """What the forwarder tells the controllers of a 429 with `code`, its retry reason, and the
    rejections it counted under `reason`."""
    registry = CollectorRegistry()
    forwarder = Forwarder(upstream=None, admission=None, policy=RetryPolicy(),  # type: ignore[arg-type]
                          metrics=Metrics(registry, "v1"), wall_clock=lambda: T0)
    permit = Permit()
    body = b'{"error":{"code":"%s","message":"no"}}' % code.encode()
    opened = Opened(429, [], "application/json", None, permit, body=body)  # type: ignore[arg-type]
    retry, _ = forwarder._judge(opened, expect_json=True)
    refused = registry.get_sample_value("zai_proxy_rate_limit_rejections_total",
                                        {"reason": reason, "deployment_variant": "v1"})
    return permit.seen, retry, refused or 0.0


LEARNED = {"rate": Outcome.RATE_LIMITED, "concurrency": Outcome.CONCURRENCY_LIMITED,
           "congestion": Outcome.CONGESTED, None: Outcome.OTHER}


@pytest.mark.parametrize("row", TABLE, ids=lambda row: str(row.code))
def test_each_row_decides_what_the_controllers_learn(row: ZaiCode) -> None:
    assert row.code is not None
    # A spent quota and a stopped account are counted apart.
    seen, reason, refused = judged(row.code, "account_stopped" if row.stop else "quota_exhausted")
    assert seen == [LEARNED[row.learns]]
    assert reason == (None if row.retry is None else RetryReason(row.retry))
    assert refused == (0.0 if row.retryable else 1.0)


@pytest.mark.parametrize(("learns", "outcome"), LEARNED.items())
def test_a_changed_row_changes_what_the_controllers_learn(
        table: Any, learns: Any, outcome: Outcome) -> None:
    table(replace(lookup("1312"), learns=learns))
    assert judged("1312")[0] == [outcome]


# ---- the plan quota ---------------------------------------------------------------------------


@pytest.mark.parametrize("row", TABLE, ids=lambda row: str(row.code))
def test_each_row_blocks_its_quota_window_or_none(row: ZaiCode) -> None:
    assert row.code is not None
    block = QuotaState().on_throttle(row.code, T0 + 600, T0)
    if row.window is None:
        assert block is None
    else:
        assert block == Block(row.window, row.code, T0 + 600, T0, "upstream")


def test_a_new_row_with_a_window_blocks_that_window(table: Any) -> None:
    table(ZaiCode("1399", ThrottleClass.QUOTA_PERIOD, learns=None, retry=None, window="weekly"))
    state = QuotaState()
    block = state.on_throttle("1399", T0 + 600, T0)
    assert block == Block("weekly", "1399", T0 + 600, T0, "upstream")
    assert state.blocked(T0 + 1) == block


def test_a_row_without_its_window_blocks_nothing(table: Any) -> None:
    table(replace(lookup("1308"), window=None))
    assert QuotaState().on_throttle("1308", T0 + 600, T0) is None


def test_a_spent_window_polled_is_blocked_under_the_code_the_table_gives_it(
        table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(codes._BY_CODE, "1310")
    table(ZaiCode("1398", ThrottleClass.QUOTA_PERIOD, learns=None, retry=None, window="weekly"))
    state = QuotaState()
    spent = Limit(type="TOKENS_LIMIT", unit=6, usage=100.0, used=100.0, remaining=0.0,
                  reset_at=T0 + 600)
    state.on_report(QuotaReport("pro", (spent,)), T0)
    block = state.blocked(T0 + 1)
    assert block is not None and (block.window, block.code) == ("weekly", "1398")


def test_the_local_refusal_carries_the_rows_code_and_status(table: Any) -> None:
    table(replace(lookup("1308"), status=503))
    refused = refusal(Block("five_hour", "1308", T0 + 60, T0, "poll"), T0)
    assert refused.status == 503 and refused.zai_code == "1308" and refused.retry_after == 60
    assert refusal(Block("weekly", "1310", T0 + 60, T0, "poll"), T0).status == 429
