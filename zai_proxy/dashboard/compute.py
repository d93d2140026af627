"""Pure windowed math: counter deltas, histogram quantiles, points and the rows the page plots.

A `Point` holds what one variant did during `dt` seconds: counter increases, cumulative histogram
bucket increases (summed over label sets) and gauge readings. Points merge by addition, so any
window's rates and quantiles come from the merged point, exactly like PromQL's `rate` and
`histogram_quantile(sum by (le) (increase(...)))`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Labels = Mapping[str, str]

# Counters the proxy exports, keyed by sample name, and the point field each one feeds.
COUNTERS: dict[str, str] = {
    "zai_proxy_upstream_429_total": "upstream_429",
    "zai_proxy_upstream_errors_total": "upstream_errors",
    "zai_proxy_retry_attempts_total": "retries",
    "zai_proxy_rate_limit_rejections_total": "rl_rejections",
    "zai_proxy_estimated_cost_usd_total": "cost_usd",
}
TOKEN_DIRECTIONS = {
    "input": "tokens_input",
    "output": "tokens_output",
    "cache_read": "tokens_cache",
    "cache_write": "tokens_cache",
}
HISTOGRAMS = {
    "zai_proxy_request_duration_seconds_bucket": "latency",
    "zai_proxy_upstream_time_to_first_byte_seconds_bucket": "ttfb",
}
GAUGES: dict[str, str] = {
    "zai_proxy_concurrent_requests": "inflight",
    "zai_proxy_max_workers": "max_workers",
    "zai_proxy_concurrency_limit": "conc_limit",
    "zai_proxy_concurrency_ceiling": "conc_ceiling",
    "zai_proxy_rate_limit_requests_per_second": "rl_rps",
    "zai_proxy_rate_limit_ceiling_requests_per_second": "rl_ceiling",
    "zai_proxy_queue_depth": "queue",
    "zai_proxy_ready": "ready",
    "zai_proxy_shared_state_degraded": "degraded",
}
# The account's plan quota (by `window`, whatever the `unit`: the most used budget binds): every
# replica of one account exports its reading of the same budget, so targets combine by the most
# alarming one (max used, min time to exhaustion), never by sum.
WINDOW_GAUGES: dict[tuple[str, str], str] = {
    ("zai_proxy_quota_used_ratio", "five_hour"): "quota_5h",
    ("zai_proxy_quota_used_ratio", "weekly"): "quota_week",
    ("zai_proxy_quota_exhaustion_eta_seconds", "five_hour"): "quota_5h_eta",
    ("zai_proxy_quota_exhaustion_eta_seconds", "weekly"): "quota_week_eta",
    ("zai_proxy_quota_reset_timestamp_seconds", "five_hour"): "quota_5h_reset",
    ("zai_proxy_quota_reset_timestamp_seconds", "weekly"): "quota_week_reset",
}
# Each budget's used ratio by window and unit of account (a plan may count tokens and credits
# in one window; a proxy that exports no `unit` counted tokens): the chart draws them apart,
# while the fields above hold the window's binding (most used) budget. The month's tool calls
# (`monthly`, `calls`) stop no chat request: shown in the panel's head, not charted.
UNIT_GAUGES: dict[tuple[str, str], str] = {
    ("five_hour", "tokens"): "quota_5h_tokens",
    ("five_hour", "credits"): "quota_5h_credits",
    ("weekly", "tokens"): "quota_week_tokens",
    ("weekly", "credits"): "quota_week_credits",
    ("monthly", "calls"): "quota_month_calls",
}
GAUGE_FIELDS = (*GAUGES.values(), *WINDOW_GAUGES.values(), *UNIT_GAUGES.values())
QUOTA_SERIES = frozenset(name for name, _ in WINDOW_GAUGES)
# Tokens by client key name, kept per client: `client:<name>` counter fields.
CLIENT_PREFIX = "client:"
# The fleet scheduler's view per client (see shares.py): upstream attempts admitted, requests
# refused (by the admission queue for any reason, or for the client's budget share) and the
# budget used over its share, the most used window (the one that refuses first) of any pod.
ADMITTED_PREFIX = "admitted:"
REFUSED_PREFIX = "refused:"
BUDGET_PREFIX = "budget:"
CLIENT_REFUSALS = frozenset({"zai_proxy_client_rejections_total",
                             "zai_proxy_client_budget_refusals_total"})
# Row column -> counter field; the page plots these as per-second rates.
RATES = {
    "rps": "requests",
    "err_rate": "errors_5xx",
    "r429_rate": "status_429",
    "up429_rate": "upstream_429",
    "upstream_err_rate": "upstream_errors",
    "retry_rate": "retries",
    "rejection_rate": "rl_rejections",
    "tok_in": "tokens_input",
    "tok_out": "tokens_output",
    "tok_cache": "tokens_cache",
    "cost_rate": "cost_usd",
}
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


@dataclass
class Point:
    """What one variant did over `dt` seconds ending (or, for roll-ups, starting) at `ts`."""

    ts: float
    variant: str
    dt: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)
    hists: dict[str, dict[float, float]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    samples: int = 1  # raw points merged into this one: the weight of its gauge averages


def counter_delta(previous: float, current: float) -> float:
    """Increase of a counter between two readings; a drop means the process restarted."""
    return current - previous if current >= previous else current


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative `{le: count}`; None when there is no data."""
    if not buckets or math.inf not in buckets:
        return None
    bounds = sorted(buckets)
    counts = [buckets[le] for le in bounds]
    for i in range(1, len(counts)):  # deltas of separately reset series can dip: force monotone
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total <= 0 or math.isnan(q):
        return None
    q = min(max(q, 0.0), 1.0)
    rank = q * total
    i = bisect.bisect_left(counts, rank)
    if i >= len(bounds) - 1:  # landed in +Inf: the best answer is the highest finite bound
        return bounds[-2] if len(bounds) > 1 else None
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0.0) if i == 0 else (bounds[i - 1], counts[i - 1])
    if counts[i] == below:
        return bounds[i]
    return start + (bounds[i] - start) * (rank - below) / (counts[i] - below)


def _add(target: dict[str, float], key: str, value: float) -> None:
    target[key] = target.get(key, 0.0) + value


def add_counter(point: Point, name: str, labels: Labels, delta: float) -> None:
    """Fold one series' counter (or histogram bucket) increase into `point`."""
    if name == "zai_proxy_requests_total":
        if not labels.get("route", "").startswith("/v1/"):
            return  # scrapes and health checks are not API traffic
        _add(point.counters, "requests", delta)
        code = labels.get("status_code", "")
        if code.startswith("5"):
            _add(point.counters, "errors_5xx", delta)
        elif code == "429":
            _add(point.counters, "status_429", delta)
    elif name == "zai_proxy_client_tokens_total":
        _add(point.counters, CLIENT_PREFIX + labels.get("client", "?"), delta)
    elif name == "zai_proxy_client_admitted_total":
        _add(point.counters, ADMITTED_PREFIX + labels.get("client", "?"), delta)
    elif name in CLIENT_REFUSALS:
        _add(point.counters, REFUSED_PREFIX + labels.get("client", "?"), delta)
    elif name == "zai_proxy_tokens_total":
        direction = TOKEN_DIRECTIONS.get(labels.get("direction", ""))
        if direction:
            _add(point.counters, direction, delta)
    elif name in COUNTERS:
        _add(point.counters, COUNTERS[name], delta)
    elif name in HISTOGRAMS and "le" in labels:
        if name.startswith("zai_proxy_request_") and not labels.get("route", "").startswith("/v1/"):
            return
        buckets = point.hists.setdefault(HISTOGRAMS[name], {})
        le = float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + delta


def add_gauge(point: Point, name: str, value: float, labels: Labels | None = None) -> None:
    """Gauges add up across label sets and targets (each pod holds its own share); the
    account's quota readings combine by the most alarming value instead (see WINDOW_GAUGES)."""
    if math.isnan(value):
        return
    if name in GAUGES:
        _add(point.gauges, GAUGES[name], value)
    elif name == "zai_proxy_client_budget_used_ratio" and labels is not None:
        _most_alarming(point, BUDGET_PREFIX + labels.get("client", "?"), value)
    elif labels is not None and name in QUOTA_SERIES:
        window = labels.get("window", "")
        keys = [WINDOW_GAUGES.get((name, window))]
        if name == "zai_proxy_quota_used_ratio":
            keys.append(UNIT_GAUGES.get((window, labels.get("unit") or "tokens")))
        for key in keys:
            if key is not None:
                _most_alarming(point, key, value)


def _most_alarming(point: Point, key: str, value: float) -> None:
    if key in point.gauges:
        value = (min if key.endswith("_eta") else max)(point.gauges[key], value)
    point.gauges[key] = value


def merge(points: Iterable[Point], ts: float, variant: str) -> Point:
    """One point covering all of `points`: counters and buckets summed, gauges averaged."""
    out = Point(ts=ts, variant=variant, samples=0)
    weights: dict[str, float] = {}
    for p in points:
        out.dt += p.dt
        out.samples += p.samples
        for key, value in p.counters.items():
            _add(out.counters, key, value)
        for hist, buckets in p.hists.items():
            target = out.hists.setdefault(hist, {})
            for le, count in buckets.items():
                target[le] = target.get(le, 0.0) + count
        for key, value in p.gauges.items():
            _add(out.gauges, key, value * p.samples)
            _add(weights, key, p.samples)
    out.gauges = {k: v / weights[k] for k, v in out.gauges.items() if weights[k] > 0}
    return out


def row(point: Point) -> dict[str, float | None]:
    """The values the page plots for one point: rates per second, quantiles in s, gauges."""
    out: dict[str, float | None] = {}
    for column, counter in RATES.items():
        out[column] = point.counters.get(counter, 0.0) / point.dt if point.dt > 0 else None
    for prefix, hist in (("", "latency"), ("ttfb_", "ttfb")):
        buckets = point.hists.get(hist, {})
        for name, q in QUANTILES.items():
            out[prefix + name] = histogram_quantile(q, buckets)
    for name in GAUGE_FIELDS:
        out[name] = point.gauges.get(name)
    return out


def client_tokens(point: Point) -> dict[str, float]:
    """Tokens per client name in a point (from `zai_proxy_client_tokens_total`)."""
    return {key[len(CLIENT_PREFIX):]: value for key, value in point.counters.items()
            if key.startswith(CLIENT_PREFIX)}


def summary(point: Point) -> dict[str, float | None]:
    """`row` plus the window's totals (requests, tokens, cost)."""
    out = row(point)
    out["requests"] = point.counters.get("requests", 0.0)
    out["cost_usd"] = point.counters.get("cost_usd", 0.0)
    out["tokens"] = sum(point.counters.get(k, 0.0) for k in set(TOKEN_DIRECTIONS.values()))
    out["seconds"] = point.dt
    return out
