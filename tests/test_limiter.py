"""The limiter as wired in the app: persistence, admin reset, /health, gauges, replica shares.

In-process: the upstream is an `httpx.MockTransport`; the app's clock is the real monotonic clock
plus an offset the test moves forward to end a controller window without waiting for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess import InProcessProxy
from tests.servers import RedisServer

UPSTREAM_KEY = "upstream-secret-key-123"
ADMIN_KEY = "admin-key-0123456789"
# 100 accepted in a 10 s window (the first outcome comes a moment after the window opened).
approx_10 = pytest.approx(10.0, rel=0.05)
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


class OffsetClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class Scripted:
    """`n_ok` 200s, then `n_1303` frequency 429s, then `n_1302` concurrency 429s, then 200s."""

    def __init__(self, n_ok: int = 0, n_1303: int = 0, n_1302: int = 0) -> None:
        self.plan = ["ok"] * n_ok + ["1303"] * n_1303 + ["1302"] * n_1302
        self.count = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        kind = self.plan[self.count] if self.count < len(self.plan) else "ok"
        self.count += 1
        if kind == "ok":
            return httpx.Response(200, json={"id": "x", "choices": []})
        return httpx.Response(429, json={"error": {"code": kind, "message": "slow down"}},
                              headers={"retry-after": "1"})


class App(InProcessProxy):
    def __init__(self, handler: Any = None, **env: str) -> None:
        self.clock = OffsetClock()
        super().__init__(httpx.MockTransport(handler or Scripted()), {
            "TOKEN_COUNTING_ENABLED": "false", "RATE_LIMIT_INITIAL": "100",
            "RATE_LIMIT_MAX": "100", "RATE_LIMIT_WINDOW": "10", **env}, clock=self.clock)

    async def end_window(self) -> None:
        self.clock.offset += float(self.settings.rate_limit_window)
        self.limiter.admission.tick()


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def learn(app: App, client: httpx.AsyncClient, requests: int) -> None:
    for _ in range(requests):
        await client.post("/v1/chat/completions", json=CHAT)
    await app.end_window()


def write_state(path: Path, **doc: Any) -> None:
    path.write_text(json.dumps({"version": 1, "ts": time.time(), **doc}))


async def test_learned_ceiling_persists_atomically_and_a_new_app_restores_it(
        tmp_path: Path) -> None:
    state = tmp_path / "state" / "ceiling.json"
    first = App(Scripted(n_ok=100, n_1303=20, n_1302=1), RATE_LIMIT_STATE_FILE=str(state))
    async with first as client:
        await learn(first, client, 121)
        health = (await client.get("/health")).json()["rate_limit"]
    # 100 accepted in a 10 s window with 17% throttled: the ceiling is measured at 10 req/s.
    assert health["ceiling"] == approx_10
    assert health["current_rate"] == pytest.approx(0.98 * health["ceiling"])
    assert health["concurrency_ceiling"] == 1  # the 1302 came at 1 in flight
    assert first.sample("zai_proxy_rate_limit_adjustments_total", direction="decrease") >= 1
    saved = json.loads(state.read_text())  # written on shutdown at the latest
    assert saved["ceiling"] == approx_10
    assert saved["hold"] == pytest.approx(0.98 * saved["ceiling"])
    assert saved["concurrency_ceiling"] == 1
    assert abs(saved["ts"] - time.time()) < 60
    assert [p.name for p in state.parent.iterdir()] == ["ceiling.json"]  # no temp file left

    second = App(RATE_LIMIT_STATE_FILE=str(state))
    async with second as client:
        restored = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert restored["restored_from_state"] is True
    assert restored["ceiling"] == approx_10
    assert restored["current_rate"] == pytest.approx(saved["hold"])
    assert restored["concurrency_ceiling"] == restored["concurrency_limit"] == 1
    assert gauge(metrics, "zai_proxy_rate_limit_ceiling_requests_per_second") == \
        approx_10
    assert second.sample("zai_proxy_rate_limit_adjustments_total", direction="restore") == 1


async def test_state_is_written_by_the_background_task_when_it_changes(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    app = App(Scripted(n_ok=100, n_1303=20), RATE_LIMIT_STATE_FILE=str(state))
    async with app as client:
        assert not state.exists()  # nothing learned: nothing written
        await learn(app, client, 120)
        deadline = time.monotonic() + 5
        while not state.exists():
            assert time.monotonic() < deadline, "state not persisted by the limiter task"
            await asyncio.sleep(0.05)
        assert json.loads(state.read_text())["ceiling"] == approx_10


async def test_an_old_state_file_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, ceiling=7.0, hold=6.9, ts=time.time() - 7200)
    app = App(RATE_LIMIT_STATE_FILE=str(state), RATE_LIMIT_STATE_MAX_AGE="1h")
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["restored_from_state"] is False
    assert health["ceiling"] is None and health["current_rate"] == 100


@pytest.mark.parametrize("doc", [{"ceiling": "nope"}, {}, {"ceiling": -3}])
async def test_a_state_file_without_a_valid_ceiling_is_ignored(tmp_path: Path,
                                                               doc: dict[str, Any]) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, **doc)
    app = App(RATE_LIMIT_STATE_FILE=str(state))
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["restored_from_state"] is False and health["ceiling"] is None


async def test_a_garbled_state_file_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    state.write_text("{not json")
    app = App(RATE_LIMIT_STATE_FILE=str(state))
    async with app as client:
        assert (await client.get("/health")).json()["rate_limit"]["ceiling"] is None


async def test_restored_state_is_clamped_to_the_configured_bounds(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, ceiling=500.0, hold=490.0, concurrency_ceiling=999)
    app = App(RATE_LIMIT_STATE_FILE=str(state), RATE_LIMIT_INITIAL="10", RATE_LIMIT_MAX="40",
              MAX_WORKERS="8")
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["ceiling"] == 40.0 and health["current_rate"] == pytest.approx(39.2)
    assert health["concurrency_ceiling"] == health["concurrency_limit"] == 8


async def test_admin_reset_is_off_without_admin_key() -> None:
    app = App(RATE_LIMIT_STATE_FILE="")
    async with app as client:
        response = await client.post("/admin/reset-rate-limit",
                                     headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "proxy_not_found"


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong-admin-key-xx"},
                                     {"x-api-key": "wrong-admin-key-xx"}])
async def test_admin_reset_needs_the_key(headers: dict[str, str]) -> None:
    app = App(RATE_LIMIT_STATE_FILE="", ADMIN_API_KEY=ADMIN_KEY)
    async with app as client:
        response = await client.post("/admin/reset-rate-limit", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "proxy_invalid_api_key"


async def test_admin_reset_forgets_the_ceilings_and_persists(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, ceiling=12.0, hold=11.76, concurrency_ceiling=3)
    app = App(RATE_LIMIT_STATE_FILE=str(state), ADMIN_API_KEY=ADMIN_KEY,
              PROXY_API_KEYS="client-key-abcdef")
    async with app as client:
        before = (await client.get("/health")).json()["rate_limit"]
        client_key = await client.post("/admin/reset-rate-limit",
                                       headers={"authorization": "Bearer client-key-abcdef"})
        response = await client.post("/admin/reset-rate-limit",
                                     headers={"x-api-key": ADMIN_KEY})
        after = (await client.get("/health")).json()["rate_limit"]
        saved = json.loads(state.read_text())  # persisted at once, not at shutdown
    assert before["ceiling"] == 12.0 and before["concurrency_limit"] == 3
    assert client_key.status_code == 401  # a client key is not the admin key
    assert response.status_code == 200 and response.json()["reset"] is True
    assert after["ceiling"] is None and after["concurrency_ceiling"] is None
    assert after["current_rate"] == 100 and after["concurrency_limit"] == 10
    assert saved["ceiling"] is None and saved["concurrency_ceiling"] is None
    assert app.sample("zai_proxy_rate_limit_adjustments_total", direction="reset") >= 1
    fresh = App(RATE_LIMIT_STATE_FILE=str(state))
    async with fresh as client:  # nothing to restore after a reset
        assert (await client.get("/health")).json()["rate_limit"]["restored_from_state"] is False


async def test_health_rate_limit_section_and_gauges() -> None:
    app = App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_INITIAL="7", MAX_WORKERS="5")
    async with app as client:
        await client.post("/v1/chat/completions", json=CHAT)
        health = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert set(health) >= {"current_rate", "ceiling", "hold", "ceiling_updated_seconds_ago",
                           "concurrency_limit", "concurrency_ceiling", "max_workers",
                           "queue_depth", "in_flight_upstream", "state_file",
                           "restored_from_state"}
    assert health["current_rate"] == 7 and health["ceiling"] is None
    assert health["max_workers"] == health["concurrency_limit"] == 5
    assert health["queue_depth"] == health["in_flight_upstream"] == 0
    assert "shared_state" not in health  # no Redis configured
    assert gauge(metrics, "zai_proxy_rate_limit_requests_per_second") == 7
    assert gauge(metrics, "zai_proxy_rate_limit_ceiling_requests_per_second") == 0
    assert gauge(metrics, "zai_proxy_concurrency_limit") == 5
    assert gauge(metrics, "zai_proxy_concurrency_ceiling") == 0
    assert gauge(metrics, "zai_proxy_queue_depth") == 0
    assert gauge(metrics, "zai_proxy_shared_state_degraded") == 0
    assert gauge(metrics, "zai_proxy_max_workers") == 5
    assert "zai_proxy_rate_limit_wait_seconds_bucket{" in metrics


async def test_health_shows_a_learned_ceiling_and_its_age() -> None:
    app = App(Scripted(n_ok=100, n_1303=20), RATE_LIMIT_STATE_FILE="")
    async with app as client:
        await learn(app, client, 120)
        app.clock.offset += 3
        health = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert health["ceiling"] == approx_10
    assert health["hold"] == pytest.approx(0.98 * health["ceiling"])
    assert 3 <= health["ceiling_updated_seconds_ago"] < 10
    assert gauge(metrics, "zai_proxy_rate_limit_ceiling_requests_per_second") == \
        approx_10
    assert gauge(metrics, "zai_proxy_rate_limit_requests_per_second") == \
        pytest.approx(health["hold"])


async def test_replicas_without_redis_divide_the_limits() -> None:
    app = App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_REPLICAS="4", RATE_LIMIT_INITIAL="20",
              RATE_LIMIT_MIN="4", RATE_LIMIT_MAX="40")
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    controller = app.limiter.rate
    assert health["current_rate"] == 5.0
    assert (controller.minimum, controller.maximum) == (1.0, 10.0)


async def test_replicas_divide_a_restored_ceiling_bound(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, ceiling=30.0, hold=29.4)
    app = App(RATE_LIMIT_STATE_FILE=str(state), RATE_LIMIT_REPLICAS="4",
              RATE_LIMIT_INITIAL="20", RATE_LIMIT_MAX="40")
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["ceiling"] == 10.0  # clamped to this replica's share of RATE_LIMIT_MAX


async def test_replicas_with_redis_share_the_whole_limit(redis_server: RedisServer) -> None:
    app = App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_REPLICAS="4", RATE_LIMIT_INITIAL="20",
              RATE_LIMIT_MAX="40", RATE_LIMIT_STORAGE_URI=redis_server.url,
              DEPLOYMENT_VARIANT="limiter-test")
    async with app as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        health = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert health["current_rate"] == 20.0  # Redis holds the global rate: no division
    assert health["shared_state"] == {"degraded": False, "reason": None, "replicas": 4}
    assert 'zai_proxy_shared_state_degraded{deployment_variant="limiter-test"} 0.0' in metrics


def test_a_busy_spell_starting_mid_window_is_measured_over_its_busy_part() -> None:
    from zai_proxy.rate_controller import Outcome, RateController

    now = [1000.0]
    ctl = RateController(clock=lambda: now[0], initial=30, minimum=1, maximum=50, window=5)
    now[0] = 1002.0  # idle for the first 2 s of the window, then 3 s of traffic
    for _ in range(57):
        ctl.record(Outcome.ACCEPTED)
    for _ in range(10):
        ctl.record(Outcome.RATE_LIMITED)
    now[0] = 1005.0
    ctl.tick()
    assert ctl.ceiling == pytest.approx(19.0)  # 57 accepted in 3 s, not in 5 s
    for _ in range(95):  # a window busy from its start: the whole window counts
        ctl.record(Outcome.ACCEPTED)
    for _ in range(10):
        ctl.record(Outcome.RATE_LIMITED)
    now[0] = 1010.0
    ctl.tick()
    assert ctl.ceiling == pytest.approx(19.0)


async def test_limiter_state_export_and_adopt_between_proxies_of_one_account(
        tmp_path: Path) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    source = App(Scripted(n_ok=100, n_1303=20), RATE_LIMIT_STATE_FILE="", ADMIN_API_KEY=ADMIN_KEY,
                 DEPLOYMENT_VARIANT="v1")
    async with source as client:
        await learn(source, client, 120)
        doc = (await client.get("/admin/limiter-state", headers=admin)).json()
        denied = await client.get("/admin/limiter-state")
    assert denied.status_code == 401
    assert doc["account"] == source.settings.account and len(doc["account"]) == 16
    assert UPSTREAM_KEY not in json.dumps(doc)
    assert doc["variant"] == "v1" and doc["shared"] is False
    assert doc["rate"]["ceiling"] == approx_10
    # Two replicas without Redis: each holds half the account's ceiling.
    state = tmp_path / "state.json"
    target = App(RATE_LIMIT_STATE_FILE=str(state), ADMIN_API_KEY=ADMIN_KEY,
                 DEPLOYMENT_VARIANT="v2", RATE_LIMIT_REPLICAS="2")
    async with target as client:
        put = await client.put("/admin/limiter-state", headers=admin, json=doc)
        health = (await client.get("/health")).json()["rate_limit"]
        back = (await client.get("/admin/limiter-state", headers=admin)).json()
    assert put.status_code == 200, put.text
    assert health["ceiling"] == pytest.approx(doc["rate"]["ceiling"] / 2)
    assert back["rate"]["ceiling"] == pytest.approx(doc["rate"]["ceiling"])
    assert json.loads(state.read_text())["ceiling"] == pytest.approx(health["ceiling"])


async def test_limiter_state_of_another_account_or_malformed_is_refused() -> None:
    admin = {"x-api-key": ADMIN_KEY}
    app = App(RATE_LIMIT_STATE_FILE="", ADMIN_API_KEY=ADMIN_KEY)
    async with app as client:
        before = (await client.get("/health")).json()["rate_limit"]
        other = await client.put("/admin/limiter-state", headers=admin,
                                 json={"account": "0" * 16, "rate": {"ceiling": 5}})
        garbled = await client.put("/admin/limiter-state", headers=admin, content=b"[[[")
        negative = await client.put("/admin/limiter-state", headers=admin, json={
            "account": app.settings.account, "rate": {"ceiling": -3}})
        after = (await client.get("/health")).json()["rate_limit"]
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "proxy_account_mismatch"
    assert garbled.status_code == 400 and negative.status_code == 400
    assert negative.json()["error"]["param"] == "rate.ceiling"
    assert after["ceiling"] == before["ceiling"] is None
