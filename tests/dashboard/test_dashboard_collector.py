"""Collector math against hand-computed values: deltas, resets, quantiles, label sets, targets."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.fixtures.metrics import FakeProxy, fixture_text
from tests.support.clock import VirtualTime
from zai_proxy.dashboard.collector import (
    Collector,
    Reading,
    parse_metrics,
    points_from_readings,
)
from zai_proxy.dashboard.compute import Point, counter_delta, histogram_quantile, merge, row

INF = math.inf


def test_histogram_quantile_matches_promql_interpolation() -> None:
    buckets = {0.1: 10.0, 0.25: 20.0, 0.5: 30.0, 1.0: 62.0, INF: 64.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.53125)  # .5 + .5 * 2/32
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.98125)  # .5 + .5 * 30.8/32
    assert histogram_quantile(0.99, buckets) == 1.0  # rank in +Inf: highest finite bound
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.032)  # first bucket from 0
    assert histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    assert histogram_quantile(0.5, {0.1: 3.0}) is None  # no +Inf bucket: PromQL gives NaN
    assert histogram_quantile(0.5, {}) is None


def test_counter_delta_handles_resets() -> None:
    assert counter_delta(10, 15) == 5
    assert counter_delta(10, 3) == 3  # restarted process: counts from zero again


def _points(*texts_and_times: tuple[str, float]) -> list[dict[str, Point]]:
    out, previous = [], None
    for text, ts in texts_and_times:
        current = parse_metrics(text, ts)
        dt = 0.0 if previous is None else ts - previous.ts
        out.append(points_from_readings([(previous, current)], ts, dt))
        previous = current
    return out


def test_recorded_text_rates_and_quantiles_summed_across_label_sets() -> None:
    first, second = _points((fixture_text("handmade_t0.prom"), 100.0),
                            (fixture_text("handmade_t1.prom"), 110.0))
    assert first["v1"].counters == {}  # a first reading only sets the baseline
    assert first["v1"].gauges["inflight"] == 3
    values = row(second["v1"])
    assert values["rps"] == pytest.approx(6.4)  # (60 + 4) / 10 s; route "other" left out
    assert values["err_rate"] == pytest.approx(0.4)
    assert values["p50"] == pytest.approx(0.53125)  # the 200 and 500 series summed by le
    assert values["p95"] == pytest.approx(0.98125)
    assert values["p99"] == pytest.approx(1.0)
    assert values["ttfb_p50"] == pytest.approx(0.21)  # .1 + .15 * 22/30
    assert values["ttfb_p95"] == pytest.approx(0.6)
    assert values["ttfb_p99"] == pytest.approx(0.92)
    assert values["cost_rate"] == pytest.approx(0.025)
    assert values["inflight"] == 5 and values["max_workers"] == 16
    assert values["rl_rps"] is None  # a gauge the target does not export stays missing


def test_counter_reset_and_missing_series() -> None:
    *_, after = _points((fixture_text("handmade_t1.prom"), 0.0),
                        (fixture_text("handmade_t2_reset.prom"), 5.0))
    point = after["v1"]
    assert point.counters["requests"] == 5  # reset: the new value is the increase
    assert "errors_5xx" not in point.counters  # the 500 series vanished: no negative delta
    assert point.hists["latency"] == {0.1: 1, 0.25: 3, 0.5: 4, 1.0: 5, INF: 5}


def test_new_series_counts_from_zero_and_variants_come_from_labels() -> None:
    proxy = FakeProxy()
    proxy.request("v1")
    before = parse_metrics(proxy.text(), 0.0)
    proxy.request("v1", status="429")
    proxy.request("v2", duration=2.0, tokens_in=10, tokens_out=5, cache_read=7)
    points = points_from_readings([(before, parse_metrics(proxy.text(), 5.0))], 5.0, 5.0)
    assert sorted(points) == ["v1", "v2"]
    assert points["v1"].counters["requests"] == 1
    assert points["v1"].counters["status_429"] == 1
    v2 = row(points["v2"])
    assert v2["tok_in"] == 2.0 and v2["tok_out"] == 1.0 and v2["tok_cache"] == 1.4
    assert v2["p50"] == pytest.approx(1.75)  # 1 observation in (1, 2.5]: 1 + 1.5 * 0.5


def test_several_targets_per_variant_add_up() -> None:
    a, b = FakeProxy(), FakeProxy()
    a.set_gauges("v1", concurrent_requests=2, max_workers=8)
    b.set_gauges("v1", concurrent_requests=3, max_workers=8)
    a_before, b_before = parse_metrics(a.text(), 0), parse_metrics(b.text(), 0)
    for _ in range(3):
        a.request("v1", duration=0.07)
    b.request("v1", duration=0.4)
    pairs = [(a_before, parse_metrics(a.text(), 10)), (b_before, parse_metrics(b.text(), 10))]
    v1 = points_from_readings(pairs, 10, 10)["v1"]
    assert v1.counters["requests"] == 4
    assert v1.gauges == {"inflight": 5, "max_workers": 16}
    # rank 2 of the 3 observations in (.05, .1]
    assert histogram_quantile(0.5, v1.hists["latency"]) == pytest.approx(0.05 + 0.05 * 2 / 3)


def test_merge_sums_counters_and_weights_gauges() -> None:
    p1 = Point(ts=5, variant="v1", dt=5, counters={"requests": 10}, gauges={"inflight": 2},
               hists={"latency": {1.0: 1, INF: 2}})
    p2 = Point(ts=10, variant="v1", dt=5, counters={"requests": 20}, gauges={"inflight": 4},
               hists={"latency": {1.0: 3, INF: 3}})
    merged = merge([p1, p2], 10, "v1")
    assert merged.dt == 10 and merged.samples == 2
    assert merged.counters == {"requests": 30}
    assert merged.hists["latency"] == {1.0: 4, INF: 5}
    assert merged.gauges == {"inflight": 3}
    assert row(merged)["rps"] == 3


async def test_failing_target_is_down_with_error_and_others_continue() -> None:
    proxy = FakeProxy()
    proxy.set_gauges("v2", concurrent_requests=1)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("connection refused")
        if request.url.host == "broken.test":
            return httpx.Response(503, text="draining")
        return httpx.Response(200, text=proxy.text())

    clock = iter(range(0, 100, 5))
    collector = Collector(["http://down.test/metrics", "http://broken.test/metrics",
                           "http://up.test/metrics"], interval=5, clock=lambda: next(clock),
                          transport=httpx.MockTransport(handler))
    await collector.scrape_once()
    proxy.request("v2")
    points = await collector.scrape_once()
    await collector.aclose()
    assert [p.variant for p in points] == ["v2"] and points[0].counters["requests"] == 1
    down, broken, up = collector.statuses()
    assert not down.up and down.last_error is not None and "ConnectError" in down.last_error
    assert not broken.up and broken.last_error is not None and "HTTP 503" in broken.last_error
    assert up.up and up.variants == ["v2"] and up.last_error is None


async def test_stale_baseline_after_an_outage_is_not_used() -> None:
    proxy, now, fail = FakeProxy(), VirtualTime(), [False]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if fail[0] else 200, text=proxy.text())

    collector = Collector(["http://t.test/metrics"], interval=5, clock=now,
                          transport=httpx.MockTransport(handler))
    proxy.request("v1")
    await collector.scrape_once()
    fail[0], now.t = True, 5.0
    await collector.scrape_once()
    fail[0], now.t = False, 60.0
    proxy.request("v1")
    (point,) = await collector.scrape_once()
    await collector.aclose()
    assert point.counters == {}  # 60 s of unknown history is not reported as one spike


def test_recorded_proxy_output() -> None:
    """Text recorded from a real `zai-proxy serve` (9 chat completions, a 404, /v1/models)."""
    reading = parse_metrics(fixture_text("recorded_proxy_v1.prom"), 10.0)
    assert reading.variants() == ["v1"]
    point = points_from_readings([(Reading(0.0), reading)], 10.0, 10.0)["v1"]
    assert point.counters["requests"] == 11
    assert point.hists["latency"][INF] == 11 and point.hists["ttfb"][INF] == 11
    assert point.gauges["max_workers"] > 0 and point.gauges["ready"] == 1
    values = row(point)
    assert values["p50"] is not None and 0 < values["p50"] < 5
