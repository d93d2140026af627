"""The plan quota as a request hook (the relay's `RequestHook` protocol, met structurally).

check: a spent quota (or, for a paced client, a pacing pause) is a local 429 before the request
asks for admission, and a stopped account (`quota.stops`) a local 403/429, but for the one probe
an interval; a client past its share of a window's budget (`quota.budgets`) a local 429 while the
others go on; otherwise it marks the request paced when the client's requests wait for the quota
pacer. recheck: a block, a stop or a client's spent share that began while the request queued.
observe: a quota 429 from the upstream starts or extends a local block, a stop code stops the
account. answered: the probe's result, and the proxy's own error in place of Z.AI's stop answer.
settled: the request's tokens count towards the quota's burn, the client's budgets and the
per-client token metric."""

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
        refused: ProxyError | None = self.quota.check(ex.client)
        stops = self.quota.stops
        if refused is None and stops.state.stopped is not None:  # no coroutine on the hot path
            refused = await stops.check(ex)
        if refused is None:
            refused = self.quota.budgets.check(ex.client)
        if refused is None:
            ex.paced = self.quota.paced(ex.client)
        return refused

    def recheck(self, ex: Exchange) -> ProxyError | None:
        return (self.quota.recheck(ex) or self.quota.stops.recheck(ex)
                or self.quota.budgets.check(ex.client))

    def observe(self, ex: Exchange, throttle: Throttle) -> None:
        self.quota.observe(throttle)

    def answered(self, ex: Exchange, status: int, throttle: Throttle | None) -> ProxyError | None:
        return self.quota.stops.answered(ex, status, throttle)

    async def settled(self, ex: Exchange, client: str, counts: Mapping[str, int]) -> None:
        self.quota.settled(client, counts)
