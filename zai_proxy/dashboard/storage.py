"""History: raw points for 24 h and one-minute roll-ups for 7 days, in SQLite (WAL) or memory.

`History` is the async face the app uses. All SQLite work runs on one dedicated thread, so the
event loop never waits on disk. Any SQLite failure (unwritable path, full disk, corrupt file)
switches to an in-memory store for the rest of the process: the dashboard keeps serving, reports
the error on `/healthz` and logs it once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from zai_proxy.dashboard.memstore import (
    RAW_KEEP,
    ROLLUP_KEEP,
    MemoryStore,
    Store,
    decode,
    encode,
    rollup,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS raw (ts REAL NOT NULL, variant TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS raw_ts ON raw (ts);
CREATE TABLE IF NOT EXISTS rollup (
    minute REAL NOT NULL, variant TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (minute, variant)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""


class SqliteStore:
    """The same operations as `MemoryStore`, on a SQLite file. Not thread-safe: one thread only."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        self.db.executescript(SCHEMA)
        self.db.execute("SELECT count(*) FROM raw").fetchone()  # surfaces a corrupt file now

    def add(self, rows: Sequence[tuple[float, str, str]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO raw VALUES (?, ?, ?)", rows)

    def rolled_until(self) -> float | None:
        found = self.db.execute("SELECT value FROM meta WHERE key = 'rolled_until'").fetchone()
        return None if found is None else float(found[0])

    def raw(self, since: float, until: float) -> list[tuple[float, str, str]]:
        sql = "SELECT ts, variant, data FROM raw WHERE ts >= ? AND ts < ? ORDER BY ts"
        return [(float(t), str(v), str(d)) for t, v, d in self.db.execute(sql, (since, until))]

    def rollups(self, since: float, until: float) -> list[tuple[float, str, str]]:
        sql = "SELECT minute, variant, data FROM rollup WHERE minute >= ? AND minute < ? ORDER BY 1"
        return [(float(t), str(v), str(d)) for t, v, d in self.db.execute(sql, (since, until))]

    def roll_up(self, now: float) -> None:
        """Roll every complete minute not yet rolled (also those left over from a restart)."""
        current = now - now % 60
        start = self.rolled_until()
        if start is None:
            first = self.db.execute("SELECT min(ts) FROM raw").fetchone()[0]
            start = current if first is None else first - first % 60
        rows = rollup(self.raw(start, current))
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO rollup VALUES (?, ?, ?)", rows)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('rolled_until', ?)", (current,))

    def trim(self, now: float) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM raw WHERE ts < ?", (now - RAW_KEEP,))
            self.db.execute("DELETE FROM rollup WHERE minute < ?", (now - ROLLUP_KEEP,))

    def close(self) -> None:
        self.db.close()


class History:
    """Async storage with a SQLite primary (`path`, or None for memory only) and a fallback."""

    def __init__(self, path: str | None, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self.error: str | None = None
        self._store: Store = MemoryStore()
        self._sqlite: SqliteStore | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-sqlite")

    @property
    def backend(self) -> str:
        return "sqlite" if self._sqlite is not None else "memory"

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "path": self.path, "ok": self.error is None,
                "error": self.error}

    def _fail(self, exc: BaseException) -> None:
        """Switch to memory, keeping what can still be read; log only the first failure."""
        self.error = f"{type(exc).__name__}: {exc}"
        log.error("dashboard storage %s failed, keeping history in memory: %s", self.path, exc)
        broken, self._sqlite = self._sqlite, None
        memory = MemoryStore()
        if broken is not None:
            try:
                now = self.clock()
                memory.add(broken.raw(now - 6 * 3600, float("inf")))
                memory.load_rollups(broken.rollups(now - ROLLUP_KEEP, float("inf")),
                                    broken.rolled_until())
                broken.close()
            except Exception:  # best effort: the file is already known bad
                pass
        self._store = memory

    def _guarded(self, op: Callable[[Store], T]) -> T:
        if self._sqlite is not None:
            try:
                return op(self._sqlite)
            except Exception as exc:  # any SQLite failure means fall back
                self._fail(exc)
        return op(self._store)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def open(self) -> None:
        def _open() -> None:
            if self.path is None:
                return
            try:
                self._sqlite = SqliteStore(self.path)
                self._store = self._sqlite
            except Exception as exc:  # unwritable or corrupt: serve from memory
                self._fail(exc)
            self._guarded(lambda s: s.roll_up(self.clock()))

        await self._run(_open)

    async def add(self, points: Sequence[Any]) -> None:
        rows = [(p.ts, p.variant, encode(p)) for p in points]
        await self._run(lambda: self._guarded(lambda s: s.add(rows)))

    async def maintain(self) -> None:
        """Roll up complete minutes, then trim; run every minute by the app."""
        now = self.clock()

        def _maintain(store: Store) -> None:
            store.roll_up(now)
            store.trim(now)

        await self._run(lambda: self._guarded(_maintain))

    async def query(self, since: float, until: float, rollups: bool) -> list[Any]:
        """Points in [since, until): roll-ups where rolled (if asked), raw points after that."""

        def _query(store: Store) -> list[tuple[float, str, str]]:
            if not rollups:
                return store.raw(since, until)
            edge = store.rolled_until() or since
            edge = min(max(edge, since), until)
            # Roll-ups are keyed by the minute they start; shift them to the end, like raw points.
            rolled = [(m + 60, v, d) for m, v, d in store.rollups(since - 60, edge)]
            return rolled + store.raw(edge, until)

        rows = await self._run(lambda: self._guarded(_query))
        return [decode(*r) for r in rows]

    async def close(self) -> None:
        def _close() -> None:
            if self._sqlite is not None:
                self._sqlite.close()

        await self._run(_close)
        self._pool.shutdown(wait=True)
