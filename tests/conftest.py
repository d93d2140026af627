"""Shared fixtures.

Tests that need a real external program (redis-server, prometheus, chromium, docker, ...) say so
with `@pytest.mark.needs("redis-server")` (several programs: several arguments; alternatives:
`"chromium|chromium-browser"`), checked here before the test is set up, and find its path with
`servers.require_binary`. Locally a missing program skips the test, but with
`ZAI_PROXY_REQUIRE_SERVICES=1` (set by `.ci/run`) every skip is turned into a failure, so CI can
never pass on a test that did not really run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.servers import RedisServer, start_redis

REQUIRE_SERVICES = os.environ.get("ZAI_PROXY_REQUIRE_SERVICES") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose `needs` marker names a program that is not installed."""
    for marker in item.iter_markers(name="needs"):
        for program in marker.args:
            if not any(shutil.which(name) for name in str(program).split("|")):
                pytest.skip(f"{program} is not installed (.ci/run installs it)")


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
