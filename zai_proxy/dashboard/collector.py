"""Scrape every target in parallel, parse the Prometheus text, turn readings into points.

Parsing (`parse_metrics`) and the delta step (`points_from_readings`) are pure; `Collector` adds
the HTTP client, the clock and per-target state. A failing target is marked down with its error
and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from zai_proxy.dashboard.compute import Point, add_counter, add_gauge, counter_delta

log = logging.getLogger(__name__)

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
VARIANT_LABEL = "deployment_variant"


@dataclass
class Reading:
    """Cumulative values of one scrape: counters (and histogram buckets) and gauges."""

    ts: float
    counters: dict[SeriesKey, float] = field(default_factory=dict)
    gauges: dict[SeriesKey, float] = field(default_factory=dict)

    def variants(self) -> list[str]:
        keys = [*self.counters, *self.gauges]
        return sorted({dict(labels)[VARIANT_LABEL] for _, labels in keys})


@dataclass
class TargetStatus:
    """What the page shows per target."""

    url: str
    up: bool = False
    last_error: str | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    duration_ms: float | None = None
    variants: list[str] = field(default_factory=list)
    series: int = 0


def parse_metrics(text: str, ts: float) -> Reading:
    """Keep the `zai_proxy_*` series that carry a deployment_variant; drop `_created`/`_sum`."""
    reading = Reading(ts)
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("zai_proxy_"):
            continue
        for sample in family.samples:
            if VARIANT_LABEL not in sample.labels:
                continue
            key: SeriesKey = (sample.name, tuple(sorted(sample.labels.items())))
            if family.type == "gauge":
                reading.gauges[key] = sample.value
            elif (family.type == "counter" and sample.name.endswith("_total")) or (
                family.type == "histogram" and sample.name.endswith("_bucket")
            ):
                reading.counters[key] = sample.value
    return reading


def points_from_readings(
    pairs: Sequence[tuple[Reading | None, Reading]], ts: float, dt: float
) -> dict[str, Point]:
    """One point per variant from (previous, current) readings of every target that answered.

    A target with no previous reading only contributes gauges; a series new since the previous
    reading counts from zero, as counters do.
    """
    points: dict[str, Point] = {}

    def point(labels: dict[str, str]) -> Point:
        variant = labels[VARIANT_LABEL]
        return points.setdefault(variant, Point(ts=ts, variant=variant))

    for previous, current in pairs:
        for (name, items), value in current.gauges.items():
            labels = dict(items)
            add_gauge(point(labels), name, value, labels)
        for (name, items), value in current.counters.items():
            labels = dict(items)
            p = point(labels)
            if previous is None:
                continue
            p.dt = dt
            before = previous.counters.get((name, items))
            add_counter(p, name, labels, value if before is None else counter_delta(before, value))
    return points


class Collector:
    """Scrapes `targets` every `interval` seconds; keeps each target's last reading and status."""

    def __init__(
        self,
        targets: Sequence[str],
        interval: float = 5.0,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        key: str | None = None,
    ) -> None:
        """`key`: presented to every target as `Authorization: Bearer` (SCRAPE_KEY)."""
        self.targets = list(targets)
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self._transport = transport
        self._headers = {} if key is None else {"authorization": f"Bearer {key}"}
        self._client: httpx.AsyncClient | None = None
        self._readings: dict[str, Reading] = {}
        self._status = {url: TargetStatus(url) for url in self.targets}
        self._last_round: float | None = None

    def statuses(self) -> list[TargetStatus]:
        return [self._status[url] for url in self.targets]

    async def _scrape(self, client: httpx.AsyncClient, url: str, now: float) -> Reading | None:
        status = self._status[url]
        started = time.perf_counter()
        status.last_attempt = now
        try:
            response = await client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code} from {url}")
            reading = parse_metrics(response.text, status.last_attempt)
        except Exception as exc:  # any failure marks only this target down
            status.up, status.last_error = False, f"{type(exc).__name__}: {exc}".rstrip(": ")
            log.debug("scrape of %s failed: %s", url, status.last_error)
            return None
        finally:
            status.duration_ms = round((time.perf_counter() - started) * 1000, 1)
        status.up, status.last_error, status.last_success = True, None, reading.ts
        status.variants = reading.variants()
        status.series = len(reading.counters) + len(reading.gauges)
        return reading

    async def scrape_once(self) -> list[Point]:
        """One round over all targets at once; returns a point per variant seen."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport,
                                             headers=self._headers)
        now = self.clock()
        dt = 0.0 if self._last_round is None else max(now - self._last_round, 0.0)
        self._last_round = now
        readings = await asyncio.gather(*(self._scrape(self._client, u, now) for u in self.targets))
        pairs: list[tuple[Reading | None, Reading]] = []
        for url, reading in zip(self.targets, readings, strict=True):
            if reading is None:
                continue
            previous = self._readings.get(url)
            if previous is not None and reading.ts - previous.ts > 3 * self.interval:
                previous = None  # after an outage the delta would cover unknown time: re-baseline
            pairs.append((previous, reading))
            self._readings[url] = reading
        return sorted(points_from_readings(pairs, now, dt).values(), key=lambda p: p.variant)

    async def run(self, on_points: Callable[[list[Point]], Awaitable[None]]) -> None:
        """Scrape forever on a fixed schedule; a slow round delays, never stacks, the next."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await on_points(await self.scrape_once())
            except Exception:
                log.exception("scrape round failed")
            next_at += self.interval
            delay = next_at - loop.time()
            if delay < 0:
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
