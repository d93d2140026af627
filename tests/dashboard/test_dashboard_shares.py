"""The client shares panel's figures (zai_proxy/dashboard/shares.py, fed by compute.py): shares
of the admitted upstream attempts from counter increases (restarts included), every pod and
variant together, bounded to the top clients plus `others`, client names carried as JSON data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import Counter, Gauge

from tests.support.dashboard import Rig
from zai_proxy.dashboard.collector import Reading, parse_metrics, points_from_readings
from zai_proxy.dashboard.compute import Point
from zai_proxy.dashboard.shares import client_shares

EVIL = '<img src=x onerror=alert(1)></script><script>alert("c")</script>'


def exposition(variant: str, admitted: dict[str, float], rejected: dict[str, float] | None = None,
               refused: dict[str, float] | None = None,
               budget: dict[tuple[str, str], float] | None = None) -> str:
    """A proxy's /metrics text with the per-client series the fleet scheduler exports."""
    lines = ["# TYPE zai_proxy_client_admitted_total counter"]
    lines += [f'zai_proxy_client_admitted_total{{client="{c}",deployment_variant="{variant}"}} {n}'
              for c, n in admitted.items()]
    lines.append("# TYPE zai_proxy_client_rejections_total counter")
    lines += [f'zai_proxy_client_rejections_total{{client="{c}",reason="queue_full",'
              f'deployment_variant="{variant}"}} {n}' for c, n in (rejected or {}).items()]
    lines.append("# TYPE zai_proxy_client_budget_refusals_total counter")
    lines += [f'zai_proxy_client_budget_refusals_total{{client="{c}",window="five_hour",'
              f'deployment_variant="{variant}"}} {n}' for c, n in (refused or {}).items()]
    lines.append("# TYPE zai_proxy_client_budget_used_ratio gauge")
    lines += [f'zai_proxy_client_budget_used_ratio{{client="{c}",window="{w}",'
              f'deployment_variant="{variant}"}} {r}' for (c, w), r in (budget or {}).items()]
    return "\n".join(lines) + "\n"


def rounds(*rounds: tuple[float, list[str]]) -> list[Point]:
    """Scrape rounds of several targets (one text per target and round) -> stored points."""
    points: list[Point] = []
    previous: list[Reading | None] | None = None
    last_ts = 0.0
    for ts, texts in rounds:
        readings = [parse_metrics(text, ts) for text in texts]
        pairs = list(zip(previous or [None] * len(texts), readings, strict=True))
        points += points_from_readings(pairs, ts, ts - last_ts if previous else 0.0).values()
        previous, last_ts = list(readings), ts
    return points


def by_name(answer: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = answer["clients"]
    assert isinstance(rows, list)
    return {str(row["client"]): row for row in rows}


def test_shares_per_step_from_counter_increases_across_a_restart() -> None:
    points = rounds((100, [exposition("v1", {"a": 100, "b": 50})]),
                    (110, [exposition("v1", {"a": 130, "b": 60})]),   # +30, +10
                    (120, [exposition("v1", {"a": 5, "b": 75})]))     # a restarted: +5, +15
    answer = client_shares(points, step=10, since=0, now=120)
    assert answer["t"] == [100, 110, 120]
    rows = by_name(answer)
    assert rows["a"]["shares"] == [None, 0.75, 0.25]  # the baseline round admits nothing: a gap
    assert rows["b"]["shares"] == [None, 0.25, 0.75]
    assert rows["a"]["admitted"] == 35 and rows["b"]["admitted"] == 25
    assert rows["a"]["share"] == pytest.approx(35 / 60, rel=1e-5)
    assert rows["a"]["admitted_rate"] == 1.75  # 35 over the 20 s the increases cover
    assert rows["a"]["refused_rate"] == 0 and rows["a"]["budget_used_ratio"] is None
    assert answer["others"] is None


def test_pods_and_variants_add_up_and_the_most_used_budget_shows() -> None:
    first = [exposition("v1", {"a": 0, "b": 0}), exposition("v1", {"a": 0}),
             exposition("v2", {"a": 0, "b": 0})]
    second = [exposition("v1", {"a": 10, "b": 10}, rejected={"b": 4},
                         budget={("b", "five_hour"): 0.5, ("b", "weekly"): 0.9}),
              exposition("v1", {"a": 20}, budget={("b", "five_hour"): 0.7}),
              exposition("v2", {"a": 30, "b": 30}, refused={"b": 6},
                         budget={("b", "five_hour"): 0.6})]
    points = rounds((100, first), (110, second))
    rows = by_name(client_shares(points, step=10, since=0, now=110))
    assert rows["a"]["shares"][-1] == 0.6  # (10 + 20 + 30) of 100 admitted, both pods of v1
    assert rows["b"]["shares"][-1] == 0.4
    assert rows["a"]["admitted_rate"] == 6  # 60 in the 10 s both variants' round covers
    assert rows["b"]["refused_rate"] == 1  # queue rejections on v1 + budget refusals on v2
    assert rows["b"]["budget_used_ratio"] == 0.9  # the weekly window of one pod binds
    only_v2 = by_name(client_shares(points, step=10, since=0, now=110, variants=["v2"]))
    assert only_v2["a"]["shares"][-1] == 0.5


def test_at_most_the_top_clients_and_others_for_the_rest() -> None:
    names = [f"c{i}" for i in range(10)]
    start = exposition("v1", {n: 0 for n in names}, rejected={"starved": 0})
    end = exposition("v1", {n: 10 * (i + 1) for i, n in enumerate(names)}, rejected={"starved": 3})
    points = rounds((100, [start]), (110, [end]))
    answer = client_shares(points, step=10, since=0, now=110, top=8)
    shown = [row["client"] for row in answer["clients"]]
    assert shown == ["c9", "c8", "c7", "c6", "c5", "c4", "c3", "c2"]  # by admitted, largest first
    others = answer["others"]
    assert others["clients"] == 3  # c1, c0 and `starved`, refused everything it asked
    assert others["admitted"] == 30 and others["refused_rate"] == 0.3
    assert others["shares"][-1] == pytest.approx(30 / 550, rel=1e-5)
    total = sum(row["shares"][-1] for row in answer["clients"]) + others["shares"][-1]
    assert total == pytest.approx(1.0, rel=1e-4)
    # A client refused everything still shows when there is room.
    assert "starved" in by_name(client_shares(points, step=10, since=0, now=110, top=11))


def test_points_before_the_range_are_left_out() -> None:
    points = rounds((100, [exposition("v1", {"a": 0, "b": 0})]),
                    (110, [exposition("v1", {"a": 10})]),
                    (120, [exposition("v1", {"a": 10, "b": 10})]))
    answer = client_shares(points, step=10, since=110, now=120)
    assert [row["client"] for row in answer["clients"]] == ["b"]
    assert answer["t"] == [120]


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    r = Rig()
    async with r.app.router.lifespan_context(r.app):
        transport = httpx.ASGITransport(app=r.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            yield r, client


async def test_a_hostile_client_name_travels_as_json_data_only(
    rig: tuple[Rig, httpx.AsyncClient]
) -> None:
    r, client = rig
    labels = ["deployment_variant", "client"]
    admitted = Counter("zai_proxy_client_admitted", "admitted", labels, registry=r.proxy.registry)
    used = Gauge("zai_proxy_client_budget_used_ratio", "used", [*labels, "window"],
                 registry=r.proxy.registry)
    admitted.labels("v1", "ok").inc(0)
    admitted.labels("v1", EVIL).inc(0)
    await r.round()
    admitted.labels("v1", EVIL).inc(3)
    admitted.labels("v1", "ok").inc(1)
    used.labels("v1", EVIL, "five_hour").set(0.42)
    await r.round()
    answer = await client.get("/api/metrics?range=5m")
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-content-type-options"] == "nosniff"
    rows = answer.json()["clients"]["clients"]
    assert [row["client"] for row in rows] == [EVIL, "ok"]  # verbatim, as a JSON string
    assert rows[0]["shares"][-1] == 0.75 and rows[0]["budget_used_ratio"] == 0.42
    page = await client.get("/")
    assert "<img" not in page.text and "alert" not in page.text
