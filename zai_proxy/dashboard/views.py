"""Pure shaping of stored points into API answers: ranges, steps, per-variant columns."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from zai_proxy.dashboard.compute import (
    GAUGE_FIELDS,
    UNIT_GAUGES,
    Point,
    client_tokens,
    merge,
    row,
    summary,
)

RANGES: dict[str, float] = {
    "5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600,
}
MAX_POINTS = 240  # per series: enough for a chart as wide as a screen
VARIANT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class BadRequest(ValueError):
    """A query parameter the API rejects with 400."""


@dataclass(frozen=True)
class Plan:
    name: str
    span: float
    step: float
    rollups: bool  # whether one-minute roll-ups are fine enough for this step


def plan(range_name: str | None, interval: float) -> Plan:
    """The step for a range: a multiple of the scrape interval (or of a minute, for roll-ups)."""
    name = range_name or "15m"
    if name not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)}; got {name!r}")
    span = RANGES[name]
    wanted = span / MAX_POINTS
    if wanted >= 60:
        return Plan(name, span, 60.0 * math.ceil(wanted / 60), True)
    return Plan(name, span, interval * max(1, math.ceil(wanted / interval)), False)


def parse_variants(raw: str | None) -> list[str] | None:
    """`variant=v1,v2` -> ["v1", "v2"]; empty or `all` -> None (every variant)."""
    if raw is None or raw.strip() in {"", "all"}:
        return None
    names = [v.strip() for v in raw.split(",") if v.strip()]
    for name in names:
        if not VARIANT_RE.match(name):
            raise BadRequest(f"variant must be names of letters, digits, _.:- ; got {name!r}")
    return names


def clean(value: float | None) -> float | None:
    """Six significant digits, and no NaN or infinity in JSON."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


# Timestamps keep every digit (six significant ones would move a reset by an hour).
EXACT = frozenset({"quota_5h_reset", "quota_week_reset"})


def exact(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def clean_row(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: exact(v) if k in EXACT else clean(v) for k, v in values.items()}


def live_row(point: Point) -> dict[str, Any]:
    """One raw point as the page's SSE payload row."""
    return {"t": point.ts, **clean_row(row(point))}


def window_summary(points: Sequence[Point], now: float, variant: str) -> dict[str, float | None]:
    """Rates and quantiles over the whole window; gauges as last read (not averaged)."""
    values = summary(merge(points, now, variant))
    latest = max(points, key=lambda p: p.ts)
    values.update({name: latest.gauges.get(name) for name in GAUGE_FIELDS})
    return clean_row(values)


def series(points: Iterable[Point], p: Plan, now: float, variants: Sequence[str] | None
           ) -> dict[str, Any]:
    """Bucket points by step; each variant gets columns `t` plus every `row` value."""
    since = now - p.span
    buckets: dict[str, dict[float, list[Point]]] = {}
    everything: dict[str, list[Point]] = {}
    for point in points:
        if point.ts <= since or (variants is not None and point.variant not in variants):
            continue
        end = p.step * math.ceil(point.ts / p.step)  # the bucket a point ends in
        buckets.setdefault(point.variant, {}).setdefault(end, []).append(point)
        everything.setdefault(point.variant, []).append(point)
    out: dict[str, Any] = {}
    for variant, by_end in sorted(buckets.items()):
        columns: dict[str, list[float | None]] = {"t": []}
        for end, group in sorted(by_end.items()):
            columns["t"].append(min(end, now))
            for key, value in row(merge(group, end, variant)).items():
                columns.setdefault(key, []).append(exact(value) if key in EXACT else clean(value))
        out[variant] = columns
    summaries = {v: window_summary(ps, now, v) for v, ps in sorted(everything.items())}
    return {
        "range": p.name, "step": p.step, "from": since, "to": now,
        "source": "rollup" if p.rollups else "raw",
        "variants": sorted(out), "series": out, "summary": summaries,
    }


# The plan quota's windows: nominal lengths (the window started this long before its reset) and
# the point fields holding used ratio, reset time and time to exhaustion.
QUOTA_WINDOWS: dict[str, tuple[float, str, str, str]] = {
    "five_hour": (5 * 3600.0, "quota_5h", "quota_5h_reset", "quota_5h_eta"),
    "weekly": (7 * 86400.0, "quota_week", "quota_week_reset", "quota_week_eta"),
}


def window_start(name: str, reset: float | None, now: float) -> float:
    """When the current window began: its reset minus its length (else that long ago)."""
    length = QUOTA_WINDOWS[name][0]
    return min(now, reset - length) if reset is not None and reset > now else now - length


def quota_windows(latest: dict[str, Point]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant, per window: used ratio (of the binding budget), reset time and time to
    exhaustion, as last read, and `units`: each budget's used ratio by unit of account."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, point in sorted(latest.items()):
        windows = {}
        for name, (_, used, reset, eta) in QUOTA_WINDOWS.items():
            values: dict[str, Any] = {"used_ratio": clean(point.gauges.get(used)),
                                      "reset_at": exact(point.gauges.get(reset)),
                                      "eta_seconds": clean(point.gauges.get(eta))}
            if any(v is not None for v in values.values()):
                values["units"] = {unit: clean(point.gauges[key])
                                   for (window, unit), key in UNIT_GAUGES.items()
                                   if window == name and key in point.gauges}
                windows[name] = values
        out[variant] = windows
    return out


def top_clients(points: Iterable[Point], used_ratio: float | None, top: int = 10
                ) -> list[dict[str, Any]]:
    """Clients by tokens over `points` (every variant: they spend one account), with their
    share of the tokens and of the budget (the used ratio split by token share)."""
    by_client: dict[str, dict[str, float]] = {}
    for point in points:
        for client, tokens in client_tokens(point).items():
            variants = by_client.setdefault(client, {})
            variants[point.variant] = variants.get(point.variant, 0.0) + tokens
    total = sum(sum(v.values()) for v in by_client.values())
    rows: list[dict[str, Any]] = []
    for client, variants in by_client.items():
        tokens = sum(variants.values())
        share = tokens / total if total else None
        rows.append({"client": client, "tokens": tokens, "by_variant": variants,
                     "share_of_tokens": clean(share),
                     "share_of_budget": clean(share * used_ratio)
                     if share is not None and used_ratio is not None else None})
    rows.sort(key=lambda r: (-float(r["tokens"]), str(r["client"])))
    return rows[:top]
