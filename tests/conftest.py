"""Shared fixtures.

Tests that need a real external program (redis-server, prometheus, chromium, docker, ...) find it
with `servers.require_binary`; locally a missing program skips the test, but with
`ZAI_PROXY_REQUIRE_SERVICES=1` (set by `.ci/run`) every skip is turned into a failure, so CI can
never pass on a test that did not really run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import RedisServer, start_redis

REQUIRE_SERVICES = os.environ.get("ZAI_PROXY_REQUIRE_SERVICES") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
