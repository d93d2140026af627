"""The dashboard's quota panel data: account gauges combined by max, client tokens, top clients.

Targets export the proxy's own `Metrics` (the real names and labels), one registry per pod.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.clock import VirtualTime
from zai_proxy.dashboard.app import create_dashboard_app
from zai_proxy.dashboard.collector import Collector, parse_metrics, points_from_readings
from zai_proxy.dashboard.compute import Point, client_tokens, row
from zai_proxy.dashboard.settings import DashboardSettings
from zai_proxy.dashboard.storage import History
from zai_proxy.dashboard.views import quota_windows, top_clients, window_start
from zai_proxy.observe.metrics import Metrics

T0 = 1_767_000_000.0


class Pod:
    """One proxy pod's metrics."""

    def __init__(self, variant: str) -> None:
        self.metrics = Metrics(CollectorRegistry(), variant)

    def quota(self, window: str, used: float, reset: float, eta: float,
              unit: str = "tokens") -> None:
        m = self.metrics
        m.quota_used.labels(window, unit).set(used)
        m.quota_reset.labels(window, unit).set(reset)
        m.quota_eta.labels(window, unit).set(eta)

    def tokens(self, client: str, count: int, direction: str = "output") -> None:
        self.metrics.client_tokens.labels(client, direction).inc(count)

    def text(self) -> str:
        return generate_latest(self.metrics.registry).decode()


def test_pods_of_one_account_report_the_same_quota_so_they_combine_by_max() -> None:
    a, b = Pod("v1"), Pod("v1")
    for pod in (a, b):
        pod.quota("five_hour", 0.4, T0 + 600, float("inf"))
        pod.quota("weekly", 0.1, T0 + 86_400, 90_000)
    b.quota("five_hour", 0.41, T0 + 600, 1200)  # b polled a moment later
    before = [parse_metrics(p.text(), T0) for p in (a, b)]
    a.tokens("batch", 100)
    b.tokens("batch", 50)
    b.tokens("chat", 30, "input")
    after = [parse_metrics(p.text(), T0 + 5) for p in (a, b)]
    point = points_from_readings(list(zip(before, after, strict=True)), T0 + 5, 5.0)["v1"]
    values = row(point)
    assert values["quota_5h"] == 0.41 and values["quota_week"] == 0.1  # not 0.81
    assert values["quota_5h_eta"] == 1200 and values["quota_5h_reset"] == T0 + 600
    assert client_tokens(point) == {"batch": 150, "chat": 30}
    assert values["inflight"] == 0  # ordinary gauges still add up across pods


def test_token_and_credit_budgets_are_charted_apart_and_the_most_used_binds() -> None:
    pod = Pod("v1")
    pod.quota("five_hour", 0.6, T0 + 900, 2000, unit="credits")  # exported first
    pod.quota("five_hour", 0.3, T0 + 600, 5000)
    pod.quota("monthly", 1.0, T0 + 86_400, 0, unit="calls")
    reading = parse_metrics(pod.text(), T0)
    # A pod of a version that exports no unit: it counted tokens.
    old = parse_metrics("# TYPE zai_proxy_quota_used_ratio gauge\n"
                        'zai_proxy_quota_used_ratio{deployment_variant="v1",window="weekly"} 0.2\n',
                        T0)
    point = points_from_readings([(reading, reading), (old, old)], T0 + 5, 5.0)["v1"]
    values = row(point)
    assert (values["quota_5h_tokens"], values["quota_5h_credits"]) == (0.3, 0.6)
    assert values["quota_5h"] == 0.6 and values["quota_5h_eta"] == 2000  # the most alarming
    assert values["quota_5h_reset"] == T0 + 900
    assert values["quota_week_tokens"] == 0.2 and values["quota_week_credits"] is None
    assert values["quota_month_calls"] == 1.0
    windows = quota_windows({"v1": point})["v1"]
    assert windows["five_hour"]["units"] == {"tokens": 0.3, "credits": 0.6}
    assert set(windows) == {"five_hour", "weekly"}  # tool calls: no top clients to show


def test_top_clients_split_the_used_budget_by_their_tokens() -> None:
    points = [Point(T0, "v1", counters={"client:batch": 600, "client:chat": 100}),
              Point(T0 + 5, "v2", counters={"client:batch": 200, "client:anonymous": 100,
                                            "requests": 9})]
    rows = top_clients(points, used_ratio=0.5)
    assert [r["client"] for r in rows] == ["batch", "anonymous", "chat"]
    batch = rows[0]
    assert batch["tokens"] == 800 and batch["by_variant"] == {"v1": 600, "v2": 200}
    assert batch["share_of_tokens"] == 0.8 and batch["share_of_budget"] == 0.4
    assert top_clients(points, None)[0]["share_of_budget"] is None  # budget never polled
    assert len(top_clients(points, 0.5, top=1)) == 1 and top_clients([], 0.5) == []


def test_the_current_window_starts_one_window_length_before_its_reset() -> None:
    assert window_start("five_hour", T0 + 3600, T0) == T0 + 3600 - 5 * 3600
    assert window_start("weekly", T0 + 86_400, T0) == T0 + 86_400 - 7 * 86_400
    assert window_start("five_hour", None, T0) == T0 - 5 * 3600  # unknown: the last 5 h
    assert window_start("five_hour", T0 - 1, T0) == T0 - 5 * 3600  # a reset already past
    latest = {"v1": Point(T0, "v1", gauges={"quota_5h": 0.3}), "v2": Point(T0, "v2")}
    assert quota_windows(latest) == {"v1": {"five_hour": {
        "used_ratio": 0.3, "reset_at": None, "eta_seconds": None, "units": {}}}, "v2": {}}


async def test_api_quota_lists_each_variants_windows_and_the_windows_top_clients() -> None:
    now = VirtualTime(T0)
    pods = {"v1": Pod("v1"), "v2": Pod("v2")}
    clock = now

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=pods[request.url.host.split(".")[0]].text())

    settings = DashboardSettings(targets=("http://v1.test/metrics", "http://v2.test/metrics"),
                                 interval=5, db=None)
    collector = Collector(settings.targets, 5, 3, clock, transport=httpx.MockTransport(handler))
    app = create_dashboard_app(settings, collector=collector, storage=History(None, clock),
                               clock=clock, background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://dash") as client:
            dash = app.state.dashboard
            for pod in pods.values():
                pod.quota("five_hour", 0.2, T0 + 3600, 7200)
            await dash.on_points(await collector.scrape_once())
            for step in range(3):
                now.jump(5)
                pods["v1"].tokens("batch", 300)
                pods["v2"].tokens("chat", 100)
                pods["v2"].tokens("batch", 100 * step)
                await dash.on_points(await collector.scrape_once())
            body = (await client.get("/api/quota")).json()
            summary = (await client.get("/api/metrics?range=5m")).json()["summary"]["v1"]
    # Six significant digits would move a reset by an hour: timestamps keep every digit.
    assert summary["quota_5h_reset"] == T0 + 3600 and summary["quota_5h"] == 0.2
    assert body["variants"]["v1"]["five_hour"] == {"used_ratio": 0.2, "reset_at": T0 + 3600,
                                                   "eta_seconds": 7200, "units": {"tokens": 0.2}}
    five = body["windows"]["five_hour"]
    assert five["since"] == T0 + 3600 - 5 * 3600 and five["used_ratio"] == 0.2
    assert five["unit"] == "tokens"
    batch, chat = five["clients"]
    assert batch["client"] == "batch" and batch["tokens"] == 900 + 300
    assert batch["by_variant"] == {"v1": 900, "v2": 300}
    assert chat["tokens"] == 300 and chat["share_of_budget"] == pytest.approx(0.2 * 300 / 1500)
    assert body["windows"]["weekly"]["used_ratio"] is None
