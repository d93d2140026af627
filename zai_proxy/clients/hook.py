"""The per-client limits as a request hook (the relay's `RequestHook` protocol, met
structurally).

check: counts the request against its client's request limits and refuses it (429
`proxy_client_quota`, counted as a `client_quota` rejection) while one of them is exhausted.
settled: the request's tokens count against the client's token limits. The limits do not look
at upstream attempts or answers (observe, answered).
"""

from __future__ import annotations

from collections.abc import Mapping

from zai_proxy.clients.limits import ClientLimits
from zai_proxy.core.errors import ProxyError, RateLimited
from zai_proxy.observe.recorder import Recorder
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.classify import Throttle


class ClientLimitsHook:
    """The configured per-client limits, called by the relay at the hook points."""

    __slots__ = ("limits", "recorder")

    def __init__(self, limits: ClientLimits, recorder: Recorder) -> None:
        self.limits = limits
        self.recorder = recorder

    async def check(self, ex: Exchange) -> ProxyError | None:
        decision = await self.limits.check(ex.client)
        if decision.allowed:
            return None
        self.recorder.rejected("client_quota")
        return RateLimited(f"client quota {decision.limit} exceeded", code="proxy_client_quota",
                           retry_after=decision.retry_after)

    def recheck(self, ex: Exchange) -> ProxyError | None:
        return None

    def observe(self, ex: Exchange, throttle: Throttle) -> None:
        return None

    def answered(self, ex: Exchange, status: int, throttle: Throttle | None) -> ProxyError | None:
        return None

    async def settled(self, ex: Exchange, client: str, counts: Mapping[str, int]) -> None:
        await self.limits.record_tokens(ex.client, sum(counts.values()))
