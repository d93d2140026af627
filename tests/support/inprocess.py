"""The proxy app in-process: httpx.ASGITransport in front, any httpx transport as upstream.

`InProcessProxy` is what every in-process test module builds its harness on: settings from a
small env dict over test defaults, a fresh Prometheus registry, `async with` running the app's
lifespan and yielding a client.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from zai_proxy.server.app import ProxyApp, create_app
from zai_proxy.server.config import Settings, load_settings

UPSTREAM_KEY = "upstream-secret-key-123"
# No state file, no retries unless a test asks: each test sees one attempt per request.
TEST_ENV = {"ZAI_API_KEY": UPSTREAM_KEY, "RATE_LIMIT_STATE_FILE": "", "MAX_RETRIES": "0",
            "QUOTA_POLL_SECONDS": "0"}


class InProcessProxy:
    """create_app(...) with test defaults; `async with` yields an httpx client to it."""

    def __init__(self, transport: httpx.AsyncBaseTransport, env: Mapping[str, str], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] | None = None,
                 wall: Callable[[], float] | None = None,
                 client_timeout: float = 10.0) -> None:
        self.settings: Settings = load_settings({**TEST_ENV, **env})
        self.registry = CollectorRegistry()
        extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        if wall is not None:
            extra["wall"] = wall
        self.app: ProxyApp = create_app(self.settings, transport=transport, clock=clock,
                                        registry=self.registry, **extra)
        self._client_timeout = client_timeout

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(self.app),
                                        base_url="http://proxy", timeout=self._client_timeout)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self._lifespan.__aexit__(None, None, None)

    def sample(self, name: str, **labels: str) -> float:
        """A metric sample of this app's registry (0 when absent)."""
        variant = self.settings.deployment_variant
        value = self.registry.get_sample_value(name, {"deployment_variant": variant, **labels})
        return value or 0.0

    @property
    def limiter(self) -> Any:
        return self.app.state.limiter

    @property
    def admission(self) -> Any:
        return self.app.state.limiter.admission
