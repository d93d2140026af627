"""One `RedisLink` serving every Redis user of a process, on a fake Redis (tests/support/redis.py)
and virtual time: a Redis that hangs, lies or is down degrades the shared limiter state, the
quota share and the client quotas at once and the same way, each falls back (logged once), and
the first call that works, whoever makes it, recovers them all. One leader lease serves the
limiter's coordinator and the quota's polling. (On a real redis-server, with the connections
counted: tests/integration/test_redis_link.py.)"""

from __future__ import annotations

import asyncio
import logging

import pytest
from limits.aio.storage import MemoryStorage

from tests.support.clock import VirtualTime
from tests.support.redis import FakeRedis, Mode, virtual_timeout
from zai_proxy.clients.limits import ClientLimits
from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.rate_controller import RateController
from zai_proxy.limiter.shared import SharedCoordinator, SharedState, namespace
from zai_proxy.quota.shared import QuotaShare

ACCOUNT = "acct0"
POLL_LOCK = 30.0  # the quota's polling lock: three poll intervals, longer than the lease


class Process:
    """One proxy's Redis users, wired as create_app wires them: one link, one lease."""

    def __init__(self, fake: FakeRedis, vt: VirtualTime) -> None:
        self.link = RedisLink(fake, clock=vt, timeout=virtual_timeout(vt))
        self.lease = LeaderLease(self.link, namespace(ACCOUNT))
        self.shared = SharedState(self.link, namespace=namespace(ACCOUNT), replicas=2)
        controller = RateController(clock=vt, initial=20, minimum=1, maximum=50, window=5)
        self.coordinator = SharedCoordinator(self.shared, controller, wall=vt.wall,
                                             lease=self.lease)
        self.share = QuotaShare(self.link, ACCOUNT, self.lease)
        self.quotas = ClientLimits("1/minute", "redis://fake", link=self.link,
                                   storage=MemoryStorage())

    def degraded(self) -> list[object]:
        return [self.shared.health()["degraded"], self.share.health()["degraded"],
                self.quotas.health()["degraded"]]

    def reasons(self) -> set[object]:
        return {self.shared.health()["reason"], self.share.health()["reason"],
                self.quotas.health()["reason"]}


DEGRADED = ("shared limiter state degraded", "quota sharing degraded",
            "client quota storage degraded")
RECOVERED = ("shared limiter state recovered", "quota sharing recovered",
             "client quota storage recovered")


def count(caplog: pytest.LogCaptureFixture, texts: tuple[str, ...]) -> list[int]:
    return [sum(text in r.getMessage() for r in caplog.records) for text in texts]


@pytest.mark.parametrize("mode", ["hang", "lie", "down"])
async def test_one_failure_degrades_every_user_the_same_way_and_one_success_recovers_them(
        mode: Mode, caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    pod = Process(fake, vt)
    assert (await pod.share.lead(3.0)) and pod.degraded() == [False, False, False]
    fake.mode = mode
    with caplog.at_level(logging.INFO):
        # The limiter meets the failure (a request's gate slot) ...
        take = asyncio.create_task(pod.shared.gate("gate").take(20.0, vt()))
        await vt.advance(0.5)  # a hanging Redis costs one op_timeout, no more
        assert take.done() and take.result() == 0.0  # the local fallback admitted it
        # ... and every user of the link is degraded by it, with the same reason.
        assert pod.degraded() == [True, True, True]
        [reason] = pod.reasons()
        assert isinstance(reason, str) and reason
        assert pod.share.leader is False, "a degraded quota share does not poll"
        # Backing off for all of them: no Redis call, each user's fallback at once.
        calls = fake.calls
        assert await pod.share.sync(10.0) is None
        assert await pod.share.lead(3.0) is False
        assert await pod.coordinator.sync() == [] and pod.coordinator.controller.auto_evaluate
        assert (await pod.quotas.check("worker")).allowed
        assert (await pod.quotas.check("worker")).allowed, "1/minute not applied: degraded"
        assert fake.calls == calls
        assert count(caplog, DEGRADED) == [1, 1, 1]

        fake.mode = "ok"
        await vt.advance(5.0)  # the back-off is over: the next call of any user tries Redis
        assert await pod.share.sync(10.0) is not None
        assert pod.degraded() == [False, False, False] and pod.reasons() == {None}
        assert count(caplog, RECOVERED) == [1, 1, 1]
        assert (await pod.quotas.check("other")).allowed
        assert not (await pod.quotas.check("other")).allowed, "client quotas apply again"
    assert not any(r.exc_info for r in caplog.records)


async def test_the_limiter_and_the_quota_share_lead_under_one_lease() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    first, second = Process(fake, vt), Process(fake, vt)
    assert first.coordinator.id == first.share.me == first.lease.id
    await first.coordinator.sync()
    await second.coordinator.sync()
    assert (first.coordinator.leader, second.coordinator.leader) == (True, False)
    assert (await first.share.lead(POLL_LOCK), await second.share.lead(POLL_LOCK)) == (True, False)
    # The first replica goes silent: its lease expires, the second takes both roles.
    await vt.advance(3.0)
    await second.coordinator.sync()
    assert second.coordinator.leader
    assert await second.share.lead(POLL_LOCK) is False, "the first one's polling lock still runs"
    await first.coordinator.sync()  # it comes back: follows, and gives the polling lock back
    assert await first.share.lead(POLL_LOCK) is False and not first.coordinator.leader
    assert await second.share.lead(POLL_LOCK) is True
