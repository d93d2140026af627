"""The plan quota as a request hook (the relay's `RequestHook` protocol, met structurally).

check: a spent quota (or, for a paced client, a pacing pause) is a local 429 before the request
asks for admission; otherwise it marks the request paced when the client's requests wait for the
quota pacer. recheck: a block that began while the request queued. observe: a quota 429 from the
upstream starts or extends a local block. settled: the request's tokens count towards the
quota's burn and the per-client token metric.
"""

from __future__ import annotations

from collections.abc import Mapping

from zai_proxy.core.errors import ProxyError
from zai_proxy.quota.quota import Quota
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.classify import Throttle


class QuotaHook:
    """One account's plan quota, called by the relay at the hook points."""

    __slots__ = ("quota",)

    def __init__(self, quota: Quota) -> None:
        self.quota = quota

    async def check(self, ex: Exchange) -> ProxyError | None:
        refused = self.quota.check(ex.client)
        if refused is None:
            ex.paced = self.quota.paced(ex.client)
        return refused

    def recheck(self, ex: Exchange) -> ProxyError | None:
        return self.quota.recheck(ex)

    def observe(self, ex: Exchange, throttle: Throttle) -> None:
        self.quota.observe(throttle)

    async def settled(self, ex: Exchange, client: str, counts: Mapping[str, int]) -> None:
        self.quota.settled(client, counts)
