"""The limiter wires the fleet's exchange: with Redis its tick reports and reads the other
replicas' queues, the share gauge shows each client's share of the account (the same on every
replica) and /health says the shares are account-wide; without Redis they are the replica's own,
and each replica holds its part of every in-flight cap."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime, settle
from tests.support.redis import FakeRedis, virtual_timeout
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.admission import Permit
from zai_proxy.limiter.client_class import DEFAULT, ClientClass
from zai_proxy.limiter.limiter import Limiter
from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.accounts import account_of, limiter_config
from zai_proxy.server.config import load_settings

CLASSES = {"heavy": ClientClass(weight=3), "capped": ClientClass(max_in_flight=5)}


def build(vt: VirtualTime, fake: FakeRedis | None,
          **env: str) -> tuple[Limiter, CollectorRegistry]:
    settings = load_settings({"RATE_LIMIT_STATE_FILE": "", "RATE_LIMIT_INITIAL": "2",
                              "RATE_LIMIT_MIN": "1", "RATE_LIMIT_REPLICAS": "2", **env})
    registry = CollectorRegistry()
    link = None if fake is None else RedisLink(fake, clock=vt, timeout=virtual_timeout(vt))
    limiter = Limiter(limiter_config(settings, account_of(settings)), Metrics(registry, "v1"),
                      clock=vt, wall=vt.wall, sleep=vt.sleep, link=link,
                      class_of=lambda client: CLASSES.get(client, DEFAULT))
    return limiter, registry


def share(registry: CollectorRegistry, client: str) -> float | None:
    return registry.get_sample_value("zai_proxy_client_rate_share_ratio",
                                     {"client": client, "deployment_variant": "v1"})


async def test_with_redis_the_tick_shares_clients_across_the_replicas() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    one, reg_one = build(vt, fake)
    two, reg_two = build(vt, fake)
    tasks = [asyncio.create_task(one.admission.acquire("heavy")) for _ in range(20)]
    tasks += [asyncio.create_task(two.admission.acquire("light")) for _ in range(20)]
    await settle()
    for _ in range(2):  # the second round reads the report the other wrote in the first
        await one.tick()
        await two.tick()
    for limiter, registry in ((one, reg_one), (two, reg_two)):
        limiter.refresh_gauges()
        assert share(registry, "heavy") == 0.75 and share(registry, "light") == 0.25, \
            "the account's shares, on every replica"
        assert limiter.health()["shares"]["scope"] == "account"
    assert one.health()["shares"]["paced"] == {"heavy": 0.75}
    assert two.health()["shares"]["paced"] == {"light": 0.25}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await one.stop()
    await two.stop()


async def test_without_redis_shares_and_caps_are_the_replicas_own() -> None:
    vt = VirtualTime()
    limiter, registry = build(vt, None, RATE_LIMIT_INITIAL="100", RATE_LIMIT_MAX="100")
    held = []
    for _ in range(3):
        permit = asyncio.create_task(limiter.admission.acquire("capped"))
        await vt.advance(0.1)
        if permit.done() and isinstance(permit.result(), Permit):
            held.append(permit.result())
    assert len(held) == 3, "5 across two replicas: 3 here (rounded up)"
    waiting = asyncio.create_task(limiter.admission.acquire("capped"))
    other = asyncio.create_task(limiter.admission.acquire("light"))
    await vt.advance(1)
    assert not waiting.done() and other.done()
    limiter.refresh_gauges()
    assert share(registry, "capped") == 1.0, "its share of this replica's queue"
    assert limiter.health()["shares"] == {"scope": "replica", "replicas": 2}
    held[0].release()
    await settle()
    assert waiting.done()
    await limiter.stop()
