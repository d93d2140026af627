"""The dashboard app in process: API answers, 400s, auth, settings, and the SSE broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.dashboard import Rig
from zai_proxy.dashboard.cli import main
from zai_proxy.dashboard.events import Broker
from zai_proxy.dashboard.settings import SettingsError, load_settings


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    r = Rig()
    async with r.app.router.lifespan_context(r.app):
        transport = httpx.ASGITransport(app=r.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            yield r, client


async def test_metrics_series_and_summary(rig: tuple[Rig, httpx.AsyncClient]) -> None:
    r, client = rig
    r.proxy.set_gauges("v1", concurrent_requests=2, max_workers=10)
    await r.round()
    for _ in range(10):
        r.proxy.request("v1", duration=0.2)
        r.proxy.request("v2", duration=0.7, status="500")
    await r.round()
    body = (await client.get("/api/metrics?range=5m")).json()
    assert body["variants"] == ["v1", "v2"] and body["step"] == 5 and body["source"] == "raw"
    assert body["series"]["v1"]["rps"] == [None, 2.0]  # first round is only the baseline
    assert body["summary"]["v1"]["requests"] == 10 and body["summary"]["v1"]["inflight"] == 2
    assert body["summary"]["v2"]["err_rate"] == 2.0
    # 10 observations in (0.5, 1]: rank 5 of 10 gives .5 + .5 * 5/10
    assert body["summary"]["v2"]["p50"] == pytest.approx(0.75)
    only = (await client.get("/api/metrics?range=5m&variant=v2")).json()
    assert only["variants"] == ["v2"]
    week = (await client.get("/api/metrics?range=7d")).json()
    assert week["source"] == "rollup" and week["step"] == 2520


@pytest.mark.parametrize("query, message", [
    ("range=2h", "range must be one of 5m, 15m, 1h, 6h, 24h, 7d"),
    ("variant=%3Cscript%3E", "variant must be"),
    ("rnage=5m", "unknown parameter(s): rnage"),
])
async def test_bad_parameters_get_400(rig: tuple[Rig, httpx.AsyncClient], query: str,
                                      message: str) -> None:
    response = await rig[1].get(f"/api/metrics?{query}")
    assert response.status_code == 400 and message in response.json()["error"]


async def test_status_config_health(rig: tuple[Rig, httpx.AsyncClient]) -> None:
    r, client = rig
    await r.round()
    r.proxy.request("v1")
    await r.round()
    status = (await client.get("/api/status")).json()
    up, down = status["targets"]
    assert up["up"] and up["variants"] == ["v1"] and not down["up"]
    assert "ConnectError" in down["last_error"]
    assert status["variants"]["v1"]["requests"] == 1
    config = (await client.get("/api/config")).json()
    assert config["interval"] == 5 and config["auth"] is False and "7d" in config["ranges"]
    health = (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["targets"] == {"up": 1, "total": 2}
    page = await client.get("/")
    assert page.status_code == 200 and 'id="panels"' in page.text
    assert (await client.get("/static/app.js")).status_code == 200


async def test_health_reports_storage_fallback(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    r = Rig(db=str(tmp_path / "f" / "x.sqlite3"))
    async with r.app.router.lifespan_context(r.app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=r.app),
                                     base_url="http://dash") as client:
            await r.round()
            health = (await client.get("/healthz")).json()
    assert health["status"] == "degraded" and health["storage"]["backend"] == "memory"


async def test_api_key_protects_page_and_api() -> None:
    r = Rig(api_key="s3cret-key")
    async with r.app.router.lifespan_context(r.app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=r.app),
                                     base_url="http://dash") as client:
            assert (await client.get("/api/status")).status_code == 401
            page = await client.get("/")
            assert page.status_code == 303 and page.headers["location"] == "/login"
            assert (await client.get("/healthz")).status_code == 200
            bearer = {"Authorization": "Bearer s3cret-key"}
            assert (await client.get("/api/status", headers=bearer)).status_code == 200
            assert (await client.get("/api/config?key=s3cret-key")).status_code == 200
            assert (await client.get("/api/config?key=wrong")).status_code == 401
            bad = await client.post("/login", content="key=nope",
                                    headers={"content-type": "application/x-www-form-urlencoded"})
            assert bad.status_code == 401 and "not right" in bad.text
            good = await client.post("/login", content="key=s3cret-key",
                                     headers={"content-type": "application/x-www-form-urlencoded"})
            assert good.status_code == 303 and "s3cret-key" not in good.headers["set-cookie"]
            assert (await client.get("/")).status_code == 200  # the cookie now works


def test_settings_from_env_and_flags() -> None:
    env = {"SCRAPE_TARGETS": "http://a:9090, http://b:9090/custom", "SCRAPE_INTERVAL": "2",
           "DASHBOARD_DB": ":memory:"}
    s = load_settings([], env)
    assert s.targets == ("http://a:9090/metrics", "http://b:9090/custom")
    assert (s.interval, s.timeout, s.db, s.port) == (2.0, 3.0, None, 8081)
    s = load_settings(["--target", "http://c", "--interval", "1", "--port", "9000"], env)
    assert s.targets == ("http://c/metrics",) and s.interval == 1.0 and s.port == 9000


@pytest.mark.parametrize("argv, env, name", [
    ([], {"SCRAPE_TARGETS": "http://a", "SCRAPE_INTERVAL": "soon"}, "SCRAPE_INTERVAL"),
    ([], {"SCRAPE_TARGETS": "http://a", "SCRAPE_TIMEOUT": "-1"}, "SCRAPE_TIMEOUT"),
    ([], {"SCRAPE_TARGETS": "ftp://a"}, "SCRAPE_TARGETS"),
    ([], {}, "SCRAPE_TARGETS"),
    (["--target", "http://a", "--port", "http"], {}, "--port"),
    ([], {"SCRAPE_TARGETS": "http://a", "DASHBOARD_API_KEY": "short"}, "DASHBOARD_API_KEY"),
])
def test_invalid_settings_name_the_variable(argv: list[str], env: dict[str, str],
                                            name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(argv, env)


def test_cli_exits_nonzero_with_message(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SCRAPE_TARGETS", "http://a")
    monkeypatch.setenv("SCRAPE_INTERVAL", "0")
    assert main([]) == 2
    assert "SCRAPE_INTERVAL" in capsys.readouterr().err


async def test_broker_resume_reset_and_slow_client() -> None:
    broker = Broker(ring_size=3, queue_size=2)
    first = broker.publish("metrics", {"n": 1})
    broker.publish("metrics", {"n": 2})
    resumed = broker.subscribe(first.id)
    assert [json.loads(e.data)["n"] for e in resumed.replay] == [2]
    for n in range(3, 7):
        broker.publish("metrics", {"n": n})
    assert [e.name for e in broker.subscribe(first.id).replay] == ["reset"]  # fell off the ring
    assert [e.name for e in broker.subscribe("other-process-7").replay] == ["reset"]
    slow, fast = broker.subscribe(None), broker.subscribe(None)
    got: list[bytes] = []

    async def read_fast() -> None:
        async for chunk in broker.stream(fast, {}):
            got.append(chunk)

    reader = asyncio.create_task(read_fast())
    for n in range(10):  # `slow` never reads: its queue fills and it is dropped
        broker.publish("metrics", {"n": n})
        await asyncio.sleep(0)
    assert slow.dropped and not fast.dropped and broker.dropped_total >= 1
    broker.close_all()
    await asyncio.wait_for(reader, 1)
    assert sum(b"event: metrics" in chunk for chunk in got) == 10
