"""Quota blocks shared by the replicas of one account through Redis, and only by them: two
`Quota`s of one account and one of another account on one fake Redis, on virtual time.
(Two real proxies on a real redis-server: tests/integration/test_quota_shared.py.)"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime
from tests.support.redis import FakeRedis
from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.limiter import Limiter
from zai_proxy.limiter.shared import namespace
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.quota import Quota
from zai_proxy.server.accounts import account_of, limiter_config, quota_config
from zai_proxy.server.config import Settings, load_settings
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.classify import Throttle, next_beijing_midnight
from zai_proxy.zai.codes import ThrottleClass

KEY = "upstream-key-of-account-a"
OTHER_KEY = "upstream-key-of-account-b"


def settings(key: str, redis: bool = True) -> Settings:
    env = {"ZAI_API_KEY": key, "QUOTA_POLL_SECONDS": "0", "RATE_LIMIT_STATE_FILE": ""}
    if redis:
        env["RATE_LIMIT_STORAGE_URI"] = "redis://fake:6379/0"
    return load_settings(env)


def replica(key: str, fake: FakeRedis, vt: VirtualTime) -> Quota:
    metrics = Metrics(CollectorRegistry(), "v1")
    # The limiter is only the pacing target here; it keeps its state in this process.
    local = settings(key, redis=False)
    limiter = Limiter(limiter_config(local, account_of(local)), metrics, clock=vt, wall=vt.wall)
    shared = settings(key)
    link = RedisLink(fake, clock=vt)
    lease = LeaderLease(link, namespace(shared.account))
    return Quota(quota_config(shared, account_of(shared)), metrics, limiter, wall=vt.wall,
                 clock=vt, sleep=vt.sleep, link=link, lease=lease)


async def test_a_quota_block_one_replica_meets_stops_the_others_of_the_account_only() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    first, second = replica(KEY, fake, vt), replica(KEY, fake, vt)
    stranger = replica(OTHER_KEY, fake, vt)
    reset = vt.wall() + 3600.0

    first.observe(Throttle(ThrottleClass.QUOTA_5H, "1308", None, reset))
    refused = first.check("worker")
    assert refused is not None and refused.zai_code == "1308"
    assert second.check("worker") is None, "not shared before a tick"

    for quota in (first, second, stranger):
        await quota.tick()
    shared = second.check("worker")
    assert shared is not None, "a replica of the same account stops too"
    assert shared.zai_code == "1308" and 3599 <= shared.retry_after <= 3600
    assert second.health()["blocked"]["source"] == "shared"
    assert stranger.check("worker") is None, "another account's replicas are not stopped"

    await vt.advance(3601.0)
    for quota in (first, second):
        await quota.tick()
        assert quota.check("worker") is None, "the block ends at the reset"


async def test_every_quota_key_lives_under_the_account() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    first = replica(KEY, fake, vt)
    first.observe(Throttle(ThrottleClass.QUOTA_PERIOD, "1310", None, vt.wall() + 86400))
    first.settled("worker", {"input": 10, "output": 5})
    await first.tick()
    prefix = f"zai-proxy:acct:{settings(KEY).account}:quota:"
    assert fake.data and all(key.startswith(prefix) for key in fake.data), sorted(fake.data)
    assert prefix + "block:weekly" in fake.data and prefix + "tokens" in fake.data


def request(name: str) -> Exchange:
    return Exchange(request_id=name, method="POST", started=0.0)


async def test_a_daily_limit_one_replica_meets_stops_the_others() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    first, second = replica(KEY, fake, vt), replica(KEY, fake, vt)
    first.observe(Throttle(ThrottleClass.QUOTA_DAILY, "1304"))
    for quota in (first, second):
        await quota.tick()
    shared = second.check("worker")
    assert shared is not None and shared.zai_code == "1304"
    assert shared.retry_after == next_beijing_midnight(vt.wall()) - vt.wall()


async def test_an_account_stop_stops_every_replica_and_one_probe_lifts_it_for_all() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    first, second = replica(KEY, fake, vt), replica(KEY, fake, vt)
    stranger = replica(OTHER_KEY, fake, vt)
    first.observe(Throttle(ThrottleClass.FAIR_USE, "1313", message="fair use"))
    assert await first.stops.check(request("a")) is not None
    assert await second.stops.check(request("b")) is None, "not shared before a tick"
    for quota in (first, second, stranger):
        await quota.tick()
    refused = await second.stops.check(request("c"))
    assert refused is not None and refused.zai_code == "1313" and refused.status == 429
    assert "fair use" in refused.message
    assert second.stops.health()["account_stop"]["source"] == "shared"
    assert await stranger.stops.check(request("d")) is None, "another account goes on"

    await vt.advance(60.0)
    probe = request("probe")
    assert await second.stops.check(probe) is None, "the second replica's probe goes"
    assert await first.stops.check(request("e")) is not None, "the interval's probe is taken"
    assert second.stops.recheck(probe) is None
    assert second.stops.answered(probe, 200, None) is None
    assert await second.stops.check(request("f")) is None, "lifted here at once"
    await first.tick()
    assert await first.stops.check(request("g")) is not None, "not before the lift is shared"
    await second.tick()
    await first.tick()
    assert await first.stops.check(request("h")) is None, "lifted for every replica"
    assert first.stops.health()["account"] == "ok"
