"""The limiter as wired in the app: account-keyed persistence, admin reset and limiter-state,
/health evidence, gauges, replica shares.

In-process on virtual time: the upstream is an `httpx.MockTransport`, the app's clock, wall clock
and sleep are a `VirtualTime` the test moves forward (the limiter's background tick runs on it),
and the limiter's file I/O runs inline, so a tick that persisted has written the file when
`advance` returns. The Redis-backed tests live in tests/integration/test_limiter_shared.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.clock import WALL_EPOCH, VirtualTime
from tests.support.inprocess import InProcessProxy
from zai_proxy.limiter.rate_controller import Outcome

UPSTREAM_KEY = "upstream-secret-key-123"
ADMIN_KEY = "admin-key-0123456789"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
T = TypeVar("T")


@pytest.fixture(autouse=True)
def inline_file_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `asyncio.to_thread` work inline: a thread would finish on the real clock."""

    async def inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return func(*args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", inline)


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
        self.vt = VirtualTime()
        super().__init__(httpx.MockTransport(handler or Scripted()), {
            "TOKEN_COUNTING_ENABLED": "false", "RATE_LIMIT_INITIAL": "100",
            "RATE_LIMIT_MAX": "100", "RATE_LIMIT_WINDOW": "10", **env},
            clock=self.vt, sleep=self.vt.sleep, wall=self.vt.wall)

    async def end_window(self) -> None:
        """Let a controller window pass; the background tick evaluates it."""
        await self.vt.advance(float(self.settings.rate_limit_window))

    async def post(self, client: httpx.AsyncClient) -> httpx.Response:
        """One chat request, time moving on while it waits for its send slot."""
        task = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        while not task.done():
            await self.vt.advance(0.01)
        return task.result()


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def learn(app: App, client: httpx.AsyncClient, requests: int) -> None:
    for _ in range(requests):
        await app.post(client)
    await app.end_window()


def write_state(path: Path, **doc: Any) -> None:
    """A state file written at virtual time 0 (every `App` starts there)."""
    path.write_text(json.dumps({"version": 1, "ts": WALL_EPOCH, **doc}))


def own_state(app: App, path: Path, **doc: Any) -> None:
    """A state file this app's account wrote."""
    write_state(path, account=app.settings.account, **doc)


async def test_learned_ceiling_persists_atomically_and_a_new_app_restores_it(
        tmp_path: Path) -> None:
    state = tmp_path / "state" / "ceiling.json"
    first = App(Scripted(n_ok=30, n_1303=2, n_1302=1), RATE_LIMIT_STATE_FILE=str(state))
    async with first as client:
        await learn(first, client, 41)
        health = (await client.get("/health")).json()["rate_limit"]
    # The starting rate (100) was a guess: its 429s bound the ceiling and the rate backed off.
    assert health["ceiling"] == 100 and health["hold"] < 100
    assert health["concurrency_ceiling"] == 1  # the 1302 came at 1 in flight
    assert health["last_change"] is not None
    assert first.sample("zai_proxy_rate_limit_adjustments_total", direction="decrease") >= 1
    saved = json.loads(state.read_text())  # written on shutdown at the latest
    assert saved["account"] == first.settings.account and UPSTREAM_KEY not in state.read_text()
    assert saved["ceiling"] == saved["upper"] == 100
    assert saved["hold"] == pytest.approx(health["hold"])
    assert saved["concurrency_ceiling"] == 1
    assert WALL_EPOCH < saved["ts"] <= first.vt.wall()
    assert [p.name for p in state.parent.iterdir()] == ["ceiling.json"]  # no temp file left

    second = App(RATE_LIMIT_STATE_FILE=str(state))
    async with second as client:
        restored = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert restored["restored_from"] == "file" and restored["restored_from_state"] is True
    assert restored["ceiling"] == 100
    assert restored["current_rate"] == pytest.approx(saved["hold"])  # no 429 burst at restart
    assert restored["concurrency_ceiling"] == restored["concurrency_limit"] == 1
    assert gauge(metrics, "zai_proxy_rate_limit_ceiling_requests_per_second") == 100
    assert gauge(metrics, "zai_proxy_rate_limit_floor_requests_per_second") == \
        pytest.approx(saved["hold"])
    assert second.sample("zai_proxy_rate_limit_adjustments_total", direction="restore") == 1


async def test_state_is_written_by_the_background_task_when_it_changes(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    app = App(Scripted(n_ok=30, n_1303=2), RATE_LIMIT_STATE_FILE=str(state))
    async with app as client:
        assert not state.exists()  # nothing learned: nothing written
        await learn(app, client, 40)
        # Written by the background tick, before shutdown.
        assert json.loads(state.read_text())["ceiling"] == 100


async def test_another_accounts_state_file_is_never_restored(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, account="0" * 16, ceiling=7.0, hold=6.9)
    app = App(RATE_LIMIT_STATE_FILE=str(state))
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["restored_from_state"] is False and health["ceiling"] is None


async def test_the_default_state_file_is_per_user_and_per_account(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    app = App(RATE_LIMIT_STATE_FILE="auto")
    account = app.settings.account
    expected = tmp_path / "xdg" / "zai-proxy" / f"limiter-{account}.json"
    async with app as client:
        assert (await client.get("/health")).json()["rate_limit"]["state_file"] == str(expected)
        app.limiter.rate.restore(12.0, 11.5)
    assert json.loads(expected.read_text())["account"] == account
    # A proxy of another account (another key) looks elsewhere and finds nothing.
    other = App(RATE_LIMIT_STATE_FILE="auto", ZAI_API_KEY="another-upstream-key-456")
    assert other.settings.account != account
    async with other as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["ceiling"] is None and str(expected) != health["state_file"]
    again = App(RATE_LIMIT_STATE_FILE="auto")
    async with again as client:
        assert (await client.get("/health")).json()["rate_limit"]["ceiling"] == 12.0


async def test_a_go_format_file_without_an_account_is_read_only_when_configured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "ceiling.json"
    write_state(explicit, ceiling=7.0, hold=6.9)  # the Go proxy's shape: no account
    app = App(RATE_LIMIT_STATE_FILE=str(explicit))
    async with app as client:
        assert (await client.get("/health")).json()["rate_limit"]["ceiling"] == 7.0
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    auto = App(RATE_LIMIT_STATE_FILE="auto")
    path = tmp_path / "xdg" / "zai-proxy" / f"limiter-{auto.settings.account}.json"
    path.parent.mkdir(parents=True)
    write_state(path, ceiling=7.0, hold=6.9)
    async with auto as client:
        assert (await client.get("/health")).json()["rate_limit"]["ceiling"] is None


async def test_an_old_state_file_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, ceiling=7.0, hold=6.9, ts=WALL_EPOCH - 7200)
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
    assert health["ceiling"] == 40.0 and health["current_rate"] == 40.0  # hold clamped too
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
        await app.post(client)
        health = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    assert set(health) >= {"current_rate", "ceiling", "floor", "hold", "send_rate",
                           "congestion_factor", "ceiling_updated_seconds_ago", "probing",
                           "probe_interval_windows", "saturated_now", "last_decision",
                           "last_change", "concurrency_limit", "concurrency_ceiling",
                           "max_workers", "queue_depth", "in_flight_upstream", "state_file",
                           "restored_from_state", "restored_from", "account"}
    assert health["account"] == app.settings.account
    assert health["current_rate"] == 7 and health["ceiling"] is None
    assert health["probing"] is True  # the starting rate is tried, not trusted
    assert health["max_workers"] == health["concurrency_limit"] == 5
    assert health["queue_depth"] == health["in_flight_upstream"] == 0
    assert "shared_state" not in health  # no Redis configured
    assert gauge(metrics, "zai_proxy_rate_limit_requests_per_second") == 7
    assert gauge(metrics, "zai_proxy_rate_limit_ceiling_requests_per_second") == 0
    assert gauge(metrics, "zai_proxy_rate_limit_floor_requests_per_second") == 0
    assert gauge(metrics, "zai_proxy_rate_limit_congestion_factor") == 1
    assert gauge(metrics, "zai_proxy_concurrency_limit") == 5
    assert gauge(metrics, "zai_proxy_concurrency_ceiling") == 0
    assert gauge(metrics, "zai_proxy_queue_depth") == 0
    assert gauge(metrics, "zai_proxy_shared_state_degraded") == 0
    assert gauge(metrics, "zai_proxy_max_workers") == 5
    assert "zai_proxy_rate_limit_wait_seconds_bucket{" in metrics
    assert "zai_proxy_rate_limit_saturated_seconds_total{" in metrics


async def test_health_and_metrics_show_the_evidence_behind_a_decision() -> None:
    app = App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_INITIAL="10")
    async with app as client:
        rate = app.limiter.rate
        rate.restore(20.0, 19.6)
        # What admission reports in a window: the gate was the bottleneck for 4 s of it.
        rate.gate_bound(True)
        app.vt.jump(4)
        rate.gate_bound(False)
        for _ in range(60):
            rate.record(Outcome.ACCEPTED)
        for _ in range(40):
            rate.record(Outcome.RATE_LIMITED)
        await app.end_window()
        await app.vt.advance(2)
        health = (await client.get("/health")).json()["rate_limit"]
        metrics = (await client.get("/metrics")).text
    change = health["last_change"]
    assert change["direction"] == "decrease" and "ceiling fell" in change["reason"]
    evidence = change["evidence"]
    assert evidence["saturated_seconds"] == pytest.approx(4, abs=0.1)
    assert (evidence["accepted"], evidence["throttled"]) == (60, 40)
    assert evidence["measured_rate"] == pytest.approx(19.6 * 0.6, rel=0.01)
    assert health["ceiling"] == pytest.approx(11.76, rel=0.01)
    assert 2 <= health["ceiling_updated_seconds_ago"] < 10
    assert gauge(metrics, "zai_proxy_rate_limit_window_throttled_ratio") == pytest.approx(0.4)
    assert gauge(metrics, "zai_proxy_rate_limit_window_saturation_ratio") == \
        pytest.approx(0.4, abs=0.02)
    assert gauge(metrics, "zai_proxy_rate_limit_measured_requests_per_second") == \
        pytest.approx(11.76, rel=0.01)
    assert gauge(metrics, "zai_proxy_rate_limit_requests_per_second") == \
        pytest.approx(health["current_rate"], rel=1e-3)


async def test_replicas_without_redis_divide_the_limits() -> None:
    app = App(RATE_LIMIT_STATE_FILE="", RATE_LIMIT_REPLICAS="4", RATE_LIMIT_INITIAL="20",
              RATE_LIMIT_MIN="4", RATE_LIMIT_MAX="40")
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    controller = app.limiter.rate
    assert health["current_rate"] == 20.0  # the account's rate: this replica sends a quarter
    assert controller.rate == 5.0
    assert (controller.minimum, controller.maximum) == (1.0, 10.0)


async def test_replicas_divide_a_restored_ceiling(tmp_path: Path) -> None:
    state = tmp_path / "ceiling.json"
    write_state(state, ceiling=500.0, hold=29.4)  # account-level req/s
    app = App(RATE_LIMIT_STATE_FILE=str(state), RATE_LIMIT_REPLICAS="4",
              RATE_LIMIT_INITIAL="20", RATE_LIMIT_MAX="40")
    async with app as client:
        health = (await client.get("/health")).json()["rate_limit"]
    assert health["ceiling"] == 40.0  # clamped to RATE_LIMIT_MAX for the account
    assert app.limiter.rate.upper == 10.0  # of which this replica enforces a quarter
    assert health["current_rate"] == pytest.approx(29.4)


async def test_limiter_state_export_and_adopt_between_proxies_of_one_account(
        tmp_path: Path) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    source = App(RATE_LIMIT_STATE_FILE="", ADMIN_API_KEY=ADMIN_KEY, DEPLOYMENT_VARIANT="v1")
    async with source as client:
        source.limiter.rate.restore(20.0, 19.2)
        doc = (await client.get("/admin/limiter-state", headers=admin)).json()
        denied = await client.get("/admin/limiter-state")
    assert denied.status_code == 401
    assert doc["account"] == source.settings.account and len(doc["account"]) == 16
    assert UPSTREAM_KEY not in json.dumps(doc)
    assert doc["variant"] == "v1" and doc["shared"] is False and doc["replicas"] == 1
    assert doc["rate"] == {"ceiling": 20.0, "floor": 19.2, "upper": 20.0, "current": 19.2,
                           "learned_seconds_ago": doc["rate"]["learned_seconds_ago"]}
    # Two replicas without Redis: each holds half the account's ceiling.
    state = tmp_path / "state.json"
    target = App(RATE_LIMIT_STATE_FILE=str(state), ADMIN_API_KEY=ADMIN_KEY,
                 DEPLOYMENT_VARIANT="v2", RATE_LIMIT_REPLICAS="2")
    async with target as client:
        put = await client.put("/admin/limiter-state", headers=admin, json=doc)
        health = (await client.get("/health")).json()["rate_limit"]
        back = (await client.get("/admin/limiter-state", headers=admin)).json()
    assert put.status_code == 200, put.text
    assert put.json()["applied"] == {"rate_ceiling": 20.0, "rate_floor": 19.2,
                                     "concurrency_ceiling": None}
    assert target.limiter.rate.upper == 10.0 and target.limiter.rate.floor == 9.6
    assert health["ceiling"] == 20.0 and health["current_rate"] == 19.2  # account-level
    assert health["restored_from"] == "admin"
    assert back["rate"]["ceiling"] == 20.0 and back["replicas"] == 2
    saved = json.loads(state.read_text())
    assert saved["ceiling"] == 20.0 and saved["hold"] == 19.2
    assert saved["account"] == target.settings.account


async def test_a_document_without_an_upper_bound_climbs_on_from_its_floor() -> None:
    admin = {"x-api-key": ADMIN_KEY}
    app = App(RATE_LIMIT_STATE_FILE="", ADMIN_API_KEY=ADMIN_KEY)
    async with app as client:
        put = await client.put("/admin/limiter-state", headers=admin, json={
            "account": app.settings.account, "rate": {"ceiling": 12.0, "floor": 12.0,
                                                      "upper": None}})
    assert put.status_code == 200
    assert app.limiter.rate.upper is None and app.limiter.rate.floor == 12.0


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
