"""History: durability across a restart, roll-ups, trimming, and the in-memory fallback."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.dashboard.compute import Point
from zai_proxy.dashboard.storage import History

DAY = 86400.0
T0 = 1_700_000_040.0  # a minute boundary


def point(ts: float, variant: str = "v1", requests: float = 5.0) -> Point:
    return Point(ts=ts, variant=variant, dt=5.0, counters={"requests": requests},
                 hists={"latency": {0.5: requests, float("inf"): requests}},
                 gauges={"inflight": 2.0})


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite3")
    now = VirtualTime(T0 + 30)
    first = History(path, clock=now)
    await first.open()
    await first.add([point(T0 + 5), point(T0 + 10, "v2"), point(T0 + 15)])
    await first.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    second = History(path, clock=now)
    await second.open()
    got = await second.query(T0, T0 + 60, rollups=False)
    await second.close()
    assert [(p.ts, p.variant) for p in got] == [(T0 + 5, "v1"), (T0 + 10, "v2"), (T0 + 15, "v1")]
    assert got[0].hists["latency"][float("inf")] == 5.0 and got[0].gauges == {"inflight": 2.0}
    assert second.health() == {"backend": "sqlite", "path": path, "ok": True, "error": None}


@pytest.mark.parametrize("on_disk", [True, False])
async def test_rollups_cover_seven_days_and_trimming_keeps_24h_raw(
    tmp_path: Path, on_disk: bool
) -> None:
    now = VirtualTime(T0)
    history = History(str(tmp_path / "h.sqlite3") if on_disk else None, clock=now)
    await history.open()
    # One point a minute (at :30) for 8 days, rolled up and trimmed every simulated hour.
    for hour in range(8 * 24):
        base = T0 + hour * 3600
        await history.add([point(base + m * 60 + 30, requests=1.0) for m in range(60)])
        now.t = base + 3600
        await history.maintain()
    end = now()
    raw = await history.query(end - 8 * DAY, end, rollups=False)
    assert raw[0].ts >= end - DAY and len(raw) == 24 * 60
    rolled = await history.query(end - 7 * DAY, end, rollups=True)
    assert len(rolled) == 7 * 24 * 60  # every minute of the 7 days, and nothing older
    assert rolled[0].ts == end - 7 * DAY + 60  # roll-ups carry the end of their minute
    assert all(p.counters == {"requests": 1.0} and p.dt == 5.0 for p in rolled)
    await history.close()


async def test_rollup_query_adds_raw_points_after_the_last_rolled_minute() -> None:
    now = VirtualTime(T0 + 150)
    history = History(None, clock=now)
    await history.open()
    await history.add([point(T0 + 10), point(T0 + 50), point(T0 + 70), point(T0 + 130)])
    await history.maintain()  # rolls the minutes starting at T0 and T0 + 60
    got = await history.query(T0 - 60, T0 + 200, rollups=True)
    assert [(p.ts, p.counters["requests"], p.samples) for p in got] == [
        (T0 + 60, 10.0, 2), (T0 + 120, 5.0, 1), (T0 + 130, 5.0, 1)]
    await history.close()


async def test_unwritable_path_falls_back_to_memory_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    history = History(str(blocker / "sub" / "h.sqlite3"), clock=lambda: T0)
    with caplog.at_level(logging.ERROR):
        await history.open()
        await history.add([point(T0)])
        await history.add([point(T0 + 5)])
    assert len(await history.query(T0 - 1, T0 + 10, rollups=False)) == 2
    health = history.health()
    assert health["backend"] == "memory" and not health["ok"] and health["error"]
    assert len([r for r in caplog.records if "storage" in r.getMessage()]) == 1
    await history.close()


async def test_corrupt_file_falls_back_to_memory(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(os.urandom(4096))
    history = History(str(path), clock=lambda: T0)
    await history.open()
    await history.add([point(T0)])
    assert history.backend == "memory" and "DatabaseError" in str(history.error)
    assert len(await history.query(T0 - 1, T0 + 1, rollups=False)) == 1
    await history.close()


async def test_failure_while_running_keeps_recent_history(tmp_path: Path) -> None:
    history = History(str(tmp_path / "h.sqlite3"), clock=lambda: T0 + 20)
    await history.open()
    await history.add([point(T0), point(T0 + 5)])
    assert history._sqlite is not None
    # Simulate the disk filling up: every write from now on fails.
    history._sqlite.db.execute("PRAGMA query_only = ON")
    await history.add([point(T0 + 10)])
    assert history.backend == "memory" and history.error is not None
    got = await history.query(T0 - 1, T0 + 60, rollups=False)
    assert [p.ts for p in got] == [T0, T0 + 5, T0 + 10]
    await history.close()
