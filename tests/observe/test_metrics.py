"""Metrics: `deployment_variant` is bound once, on every series, and no call site can set it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import InProcessProxy
from zai_proxy.observe.metrics import Labelled, Metrics

VARIANT = "v2"


def _labelled(metrics: Metrics) -> dict[str, Labelled[Any]]:
    return {name: value for name, value in vars(metrics).items() if isinstance(value, Labelled)}


def _touch(child: object) -> None:
    for action in ("inc", "observe", "set"):
        if hasattr(child, action):
            getattr(child, action)(1)
            return


def _assert_variant_once(text: str) -> int:
    """Every sample line names deployment_variant exactly once, with VARIANT; the count."""
    samples = 0
    for line in text.splitlines():
        if line.startswith("zai_proxy_"):
            samples += 1
            assert line.count("deployment_variant=") == 1, line
            assert f'deployment_variant="{VARIANT}"' in line, line
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels["deployment_variant"] == VARIANT, sample
    return samples


def test_every_series_of_the_registry_carries_the_variant_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, VARIANT)
    for series in _labelled(metrics).values():
        _touch(series.labels(*(f"own{i}" for i in range(len(series.labelnames)))))
    metrics.client_admitted("own0", 0.5)  # counted in a plain dict, exposed by a collector
    # Every family shows a sample now: one created outside Metrics' binding would stay empty
    # (a labelled series nobody bound) or show up here without the variant.
    empty = [family.name for family in registry.collect() if not family.samples]
    assert empty == []
    assert _assert_variant_once(generate_latest(registry).decode()) > 50


def test_the_variant_is_the_last_label_of_every_series() -> None:
    metrics = Metrics(CollectorRegistry(), VARIANT)
    for name, series in _labelled(metrics).items():
        assert "deployment_variant" not in series.labelnames, name
        parent = series._series  # the label order Prometheus exposes
        assert parent._labelnames == (*series.labelnames, "deployment_variant"), name


@pytest.mark.parametrize("extra", ["v1", VARIANT])
def test_a_call_site_cannot_pass_the_variant(extra: str) -> None:
    metrics = Metrics(CollectorRegistry(), VARIANT)
    for name, series in _labelled(metrics).items():
        own = [f"own{i}" for i in range(len(series.labelnames))]
        with pytest.raises(TypeError):
            series.labels(*own, extra)
        assert series.labels(*own) is series.labels(*own), name  # the child is cached
    with pytest.raises(TypeError):
        metrics.client_bounds.labels("max_connections", extra)


def test_a_removed_child_is_made_anew() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, VARIANT)
    labels = {"window": "weekly", "unit": "credits", "deployment_variant": VARIANT}
    metrics.quota_used.labels("weekly", "credits").set(0.5)
    metrics.quota_used.remove("weekly", "credits")
    assert registry.get_sample_value("zai_proxy_quota_used_ratio", labels) is None
    metrics.quota_used.labels("weekly", "credits").set(0.25)
    assert registry.get_sample_value("zai_proxy_quota_used_ratio", labels) == 0.25


async def test_every_series_the_app_exposes_carries_the_configured_variant_once() -> None:
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json={
        "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    proxy = InProcessProxy(upstream, {"DEPLOYMENT_VARIANT": VARIANT,
                                      "PROXY_API_KEYS": "worker-key-123456"})
    async with proxy as client:
        chat = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
        auth = {"authorization": "Bearer worker-key-123456"}
        await client.post("/v1/chat/completions", json=chat, headers=auth)
        await client.post("/v1/chat/completions", json=chat)  # refused: no key
        await client.get("/v1/nope")
        text = (await client.get("/metrics")).text
    assert _assert_variant_once(text) > 50
    assert 'zai_proxy_requests_total{deployment_variant="v2",method="POST"' in text
