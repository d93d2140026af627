"""Point encoding, minute roll-ups, and the in-memory store used when SQLite is off or broken.

Stores keep points as compact JSON strings (a few hundred bytes each), which keeps a day of
raw points for two variants at a 5 s interval in tens of MB even in the memory fallback.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from typing import Protocol

from zai_proxy.dashboard.compute import Point, merge

Row = tuple[float, str, str]  # (ts or minute, variant, encoded point)
RAW_KEEP = 24 * 3600.0
ROLLUP_KEEP = 7 * 24 * 3600.0


def encode(point: Point) -> str:
    """JSON without the timestamp and variant (those are columns)."""
    hists = {h: [[le if math.isfinite(le) else "+Inf", c] for le, c in sorted(b.items())]
             for h, b in point.hists.items()}
    body = {"dt": point.dt, "n": point.samples, "c": point.counters, "h": hists, "g": point.gauges}
    return json.dumps(body, separators=(",", ":"))


def decode(ts: float, variant: str, data: str) -> Point:
    body = json.loads(data)
    hists = {h: {float(le): float(c) for le, c in b} for h, b in body["h"].items()}
    return Point(ts=ts, variant=variant, dt=float(body["dt"]), counters=body["c"], hists=hists,
                 gauges=body["g"], samples=int(body["n"]))


def rollup(rows: Sequence[Row]) -> list[Row]:
    """Merge raw rows into one row per (minute, variant); the minute is its start time."""
    groups: dict[tuple[float, str], list[Point]] = {}
    for ts, variant, data in rows:
        minute = ts - ts % 60
        groups.setdefault((minute, variant), []).append(decode(ts, variant, data))
    return [(minute, variant, encode(merge(points, minute, variant)))
            for (minute, variant), points in sorted(groups.items())]


class Store(Protocol):
    """What `History` needs from a backend; both implementations are synchronous."""

    def add(self, rows: Sequence[Row]) -> None: ...
    def rolled_until(self) -> float | None: ...
    def raw(self, since: float, until: float) -> list[Row]: ...
    def rollups(self, since: float, until: float) -> list[Row]: ...
    def roll_up(self, now: float) -> None: ...
    def trim(self, now: float) -> None: ...


class MemoryStore:
    """Rows in lists sorted by time; trimming drops from the front."""

    def __init__(self) -> None:
        self._raw: list[Row] = []
        self._rollups: dict[tuple[float, str], str] = {}
        self._rolled_until: float | None = None

    def add(self, rows: Sequence[Row]) -> None:
        for row in rows:
            if self._raw and row[0] < self._raw[-1][0]:
                bisect.insort(self._raw, row)
            else:
                self._raw.append(row)

    def load_rollups(self, rows: Sequence[Row], rolled_until: float | None) -> None:
        self._rollups.update({(minute, variant): data for minute, variant, data in rows})
        self._rolled_until = rolled_until

    def rolled_until(self) -> float | None:
        return self._rolled_until

    def raw(self, since: float, until: float) -> list[Row]:
        lo = bisect.bisect_left(self._raw, (since,))
        hi = bisect.bisect_left(self._raw, (until,))
        return self._raw[lo:hi]

    def rollups(self, since: float, until: float) -> list[Row]:
        return [(m, v, d) for (m, v), d in sorted(self._rollups.items()) if since <= m < until]

    def roll_up(self, now: float) -> None:
        current = now - now % 60
        start = self._rolled_until
        if start is None:
            start = current if not self._raw else self._raw[0][0] - self._raw[0][0] % 60
        for minute, variant, data in rollup(self.raw(start, current)):
            self._rollups[(minute, variant)] = data
        self._rolled_until = current

    def trim(self, now: float) -> None:
        del self._raw[: bisect.bisect_left(self._raw, (now - RAW_KEEP,))]
        for key in [k for k in self._rollups if k[0] < now - ROLLUP_KEEP]:
            del self._rollups[key]
