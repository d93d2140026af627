"""Retry decisions and backoff delays."""

from __future__ import annotations

import random

import pytest

from zai_proxy.relay.retry import RetryPolicy, RetryReason, retry_reason
from zai_proxy.zai.classify import Throttle
from zai_proxy.zai.codes import ThrottleClass


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"connection_error": True}, RetryReason.CONNECTION),
        ({"status": 502}, RetryReason.SERVER),
        ({"status": 503}, RetryReason.SERVER),
        ({"status": 504}, RetryReason.SERVER),
        ({"status": 500}, None),
        ({"status": 400}, None),
        ({"status": 200}, None),
        ({"status": 200, "empty_or_truncated": True}, RetryReason.EMPTY_RESPONSE),
        ({"status": 429}, RetryReason.UNKNOWN),
        ({"status": 429, "throttle": Throttle(ThrottleClass.FREQUENCY)}, RetryReason.FREQUENCY),
        ({"status": 429, "throttle": Throttle(ThrottleClass.CONCURRENCY)},
         RetryReason.CONCURRENCY),
        ({"status": 429, "throttle": Throttle(ThrottleClass.CONGESTION)}, RetryReason.CONGESTION),
        ({"status": 429, "throttle": Throttle(ThrottleClass.QUOTA_5H)}, None),
        ({"status": 429, "throttle": Throttle(ThrottleClass.QUOTA_PERIOD)}, None),
        ({"connection_error": True, "client_started": True}, None),
        ({"status": 503, "client_started": True}, None),
        ({}, None),
    ],
)
def test_retry_reason(kwargs: dict[str, object], expected: RetryReason | None) -> None:
    assert retry_reason(**kwargs) == expected  # type: ignore[arg-type]


def test_full_jitter_exponential_within_bounds() -> None:
    policy = RetryPolicy(max_retries=5, base=0.5, cap=3.0, jitter=1.0, rng=random.Random(7))
    for attempt, ceiling in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        for _ in range(50):
            delay = policy.next_delay(attempt, None)
            assert delay is not None and 0.0 <= delay <= ceiling
    assert policy.next_delay(5, None) is None


def test_no_jitter_is_deterministic() -> None:
    policy = RetryPolicy(max_retries=3, base=1.0, cap=10.0, jitter=0.0)
    assert [policy.next_delay(a) for a in range(4)] == [1.0, 2.0, 4.0, None]


def test_retry_after_is_honoured_and_long_hints_stop_retrying() -> None:
    policy = RetryPolicy(max_retries=3, base=0.5, cap=5.0, jitter=1.0, max_hint=30.0,
                         rng=random.Random(1))
    delay = policy.next_delay(0, 4.0)
    assert delay is not None and 4.0 <= delay <= 4.5
    assert policy.next_delay(0, 31.0) is None
    assert policy.next_delay(3, 1.0) is None


def test_zero_retries_never_retries() -> None:
    assert RetryPolicy(max_retries=0).next_delay(0, None) is None


def test_invalid_policy_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2.0)


def test_a_request_the_upstream_may_have_read_is_retried_only_when_safe() -> None:
    assert retry_reason(connection_error=True, maybe_delivered=True,
                        idempotent=False) is None
    assert retry_reason(connection_error=True, maybe_delivered=True,
                        idempotent=True) is RetryReason.CONNECTION
    assert retry_reason(connection_error=True, maybe_delivered=False,
                        idempotent=False) is RetryReason.CONNECTION
