"""The request-hook contract, as the relay keeps it with the hooks `create_app` wires (the plan
quota, then the per-client limits): `check` once per request, in order, and a refusal stops
the later hooks and the upstream; `recheck` before every attempt; `observe` once, for the
relayed 429; `answered` once, for the relayed answer; `settled` once, with the name usage is
reported under.

Each real hook is wrapped in a spy that records its calls and passes them on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.support.forwarding import Harness, Script, ok, z429
from zai_proxy.core.errors import ProxyError
from zai_proxy.relay.hooks import RequestHook
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.classify import Throttle

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
Call = tuple[Any, ...]


class Spy:
    """A `RequestHook` that records `(name, point, detail)` in `calls` and asks `inner`."""

    def __init__(self, name: str, inner: RequestHook, calls: list[Call]) -> None:
        self.name, self.inner, self.calls = name, inner, calls

    async def check(self, ex: Exchange) -> ProxyError | None:
        refused = await self.inner.check(ex)
        self.calls.append((self.name, "check", refused is not None))
        return refused

    def recheck(self, ex: Exchange) -> ProxyError | None:
        self.calls.append((self.name, "recheck", ex.attempts))
        return self.inner.recheck(ex)

    def observe(self, ex: Exchange, throttle: Throttle) -> None:
        self.calls.append((self.name, "observe", throttle.code))
        self.inner.observe(ex, throttle)

    def answered(self, ex: Exchange, status: int, throttle: Throttle | None) -> ProxyError | None:
        self.calls.append((self.name, "answered", status))
        return self.inner.answered(ex, status, throttle)

    async def settled(self, ex: Exchange, client: str, counts: Mapping[str, int]) -> None:
        self.calls.append((self.name, "settled", client, dict(counts)))
        await self.inner.settled(ex, client, counts)


def spied(harness: Harness) -> list[Call]:
    """Wrap the app's hooks (in the handler and the forwarder alike); the calls they see."""
    calls: list[Call] = []
    proxy = harness.app.proxy
    assert [type(h).__name__ for h in proxy.hooks] == ["QuotaHook", "ClientLimitsHook"]
    assert proxy.forwarder.hooks == proxy.hooks
    hooks = tuple(Spy(name, hook, calls) for name, hook in zip(("quota", "client"),
                                                                  proxy.hooks, strict=True))
    proxy.hooks = proxy.forwarder.hooks = hooks
    return calls


async def test_each_point_is_called_in_order_and_usage_settles_once() -> None:
    script = Script(z429("1302"), ok)  # a retryable 429, then the answer
    harness = Harness(script, CLIENT_RATE_LIMITS="100/minute", TOKEN_COUNTING_ENABLED="true")
    calls = spied(harness)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and len(script.seen) == 2
    counts = {"input": 3, "output": 2, "cache_read": 0, "cache_write": 0}
    assert calls == [
        ("quota", "check", False), ("client", "check", False),
        ("quota", "recheck", 0), ("client", "recheck", 0),
        ("quota", "recheck", 1), ("client", "recheck", 1),
        ("quota", "answered", 200), ("client", "answered", 200),
        ("quota", "settled", "anonymous", counts), ("client", "settled", "anonymous", counts),
    ]


async def test_the_relayed_429_is_observed_once_and_a_refusal_stops_the_later_hooks() -> None:
    script = Script(z429("1308"))  # the five-hour quota is spent
    harness = Harness(script, CLIENT_RATE_LIMITS="100/minute")
    calls = spied(harness)
    async with harness as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        observed = list(calls)
        calls.clear()
        second = await client.post("/v1/chat/completions", json=CHAT)
    assert first.status_code == 429
    assert observed == [("quota", "check", False), ("client", "check", False),
                        ("quota", "recheck", 0), ("client", "recheck", 0),
                        ("quota", "observe", "1308"), ("client", "observe", "1308"),
                        ("quota", "answered", 429), ("client", "answered", 429)]
    assert second.status_code == 429 and second.json()["error"]["code"] == "proxy_quota_exhausted"
    assert calls == [("quota", "check", True)], "the client limits were not asked"
    assert len(script.seen) == 1, "the refused request never went upstream"
