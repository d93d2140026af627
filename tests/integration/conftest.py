"""Real processes on real sockets: the simulator as upstream, the proxy in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import Process, running_zai_proxy

UPSTREAM_KEY = "zai-upstream-key-never-leaks-7f3a"
CLIENT_KEY = "worker-client-key-9c1d"


def proxy_env(upstream: Process | str, **extra: str) -> dict[str, str]:
    """A proxy's environment in front of `upstream` (the simulator, or any base URL)."""
    base = upstream if isinstance(upstream, str) else upstream.url
    return {
        "ZAI_API_KEY": UPSTREAM_KEY,
        "ZAI_TARGET_URL": f"{base}/api/paas/v4",
        "ZAI_ANTHROPIC_URL": f"{base}/api/anthropic",
        "RATE_LIMIT_STATE_FILE": "",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@pytest.fixture(scope="module")
def simulator() -> Iterator[Process]:
    with running_zai_proxy("simulate", "--chunk-gap-ms", "20", "--chunks", "8") as process:
        yield process


@pytest.fixture(scope="module")
def proxy(simulator: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(simulator, PROXY_API_KEYS=CLIENT_KEY),
                           ready_path="/ready") as process:
        yield process
