"""The limiter's per-client view of its admission queue: the per-client series (admitted, queue
wait, rejections by reason, fair share) under bounded labels, and the /health clients list."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime, settle
from zai_proxy.limiter.admission import Permit, Rejection
from zai_proxy.limiter.client_class import DEFAULT, ClientClass
from zai_proxy.limiter.limiter import Limiter
from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.accounts import account_of, limiter_config
from zai_proxy.server.config import load_settings

CLASSES = {"agents": ClientClass(weight=3, priority="interactive", max_in_flight=4)}


def build(vt: VirtualTime, label: str | None = None) -> tuple[Limiter, CollectorRegistry]:
    settings = load_settings({"RATE_LIMIT_STATE_FILE": "", "RATE_LIMIT_INITIAL": "1",
                              "RATE_LIMIT_MIN": "1", "QUEUE_MAX": "3",
                              "ADMISSION_BATCH_FLOOR": "0.25"})
    registry = CollectorRegistry()
    limiter = Limiter(limiter_config(settings, account_of(settings)), Metrics(registry, "v1"),
                      clock=vt, wall=vt.wall, sleep=vt.sleep,
                      class_of=lambda client: CLASSES.get(client, DEFAULT),
                      client_label=(lambda client: label) if label else str)
    return limiter, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**labels, "deployment_variant": "v1"})


async def test_per_client_series_and_health_follow_the_queue() -> None:
    vt = VirtualTime()
    limiter, registry = build(vt)
    adm = limiter.admission
    assert isinstance(await adm.acquire("agents"), Permit)  # the gate's one slot
    tasks = [asyncio.create_task(adm.acquire(c)) for c in ("agents", "ci", "ci")]
    await settle()
    full = await adm.acquire("ci")
    assert isinstance(full, Rejection) and full.reason == "queue_full"
    limiter.refresh_gauges()
    assert sample(registry, "zai_proxy_client_rate_share_ratio", client="agents") == 0.75
    assert sample(registry, "zai_proxy_client_rate_share_ratio", client="ci") == 0.25
    assert sample(registry, "zai_proxy_client_rejections_total", client="ci",
                  reason="queue_full") == 1
    health = limiter.health()
    assert health["batch_floor"] == 0.25
    assert health["clients"] == [
        {"client": "ci", "priority": "batch", "weight": 1.0, "waiting": 2, "in_flight": 0,
         "at_cap": False, "share": 0.25},
        {"client": "agents", "priority": "interactive", "weight": 3, "waiting": 1,
         "in_flight": 1, "at_cap": False, "share": 0.75}]
    await vt.advance(1)  # one slot a second: the interactive one goes first
    assert isinstance(tasks[0].result(), Permit) and not tasks[1].done()
    assert sample(registry, "zai_proxy_client_admitted_total", client="agents") == 2
    # Only the attempt that queued is in the wait histogram (the first went at once).
    assert sample(registry, "zai_proxy_client_queue_wait_seconds_sum", client="agents") == 1
    assert sample(registry, "zai_proxy_client_queue_wait_seconds_count", client="agents") == 1
    await vt.advance(2)
    limiter.refresh_gauges()  # nothing waits: the share gauges are gone
    assert sample(registry, "zai_proxy_client_rate_share_ratio", client="ci") is None
    assert sample(registry, "zai_proxy_client_admitted_total", client="ci") == 2
    assert limiter.health()["clients"] == []
    await limiter.stop()


async def test_labels_are_the_client_label_not_the_raw_identity() -> None:
    vt = VirtualTime()
    limiter, registry = build(vt, label="anonymous")
    assert isinstance(await limiter.admission.acquire("ip-10.0.0.7"), Permit)
    assert sample(registry, "zai_proxy_client_admitted_total", client="anonymous") == 1
    assert sample(registry, "zai_proxy_client_admitted_total", client="ip-10.0.0.7") is None
    await limiter.stop()
