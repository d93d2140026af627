"""Each client's share of the admitted upstream attempts over time (the `shares` panel).

Pure: from stored points (see compute.py: `admitted:<client>`, `refused:<client>` counter
increases and `budget:<client>` gauges) to the answer `GET /api/metrics` carries as `clients`.

A client's share in a step is its admitted attempts over everyone's, every selected variant and
every pod together: the fleet scheduler divides one account, so a share of one variant alone
would say nothing about what the client gets. Counter increases already account for restarts
(the collector's `counter_delta`), so a share is never negative and the shares of a step add up
to 1. The answer is bounded whatever the targets report: the `top` clients by admitted
attempts over the range (then by refusals, so a client refused everything still shows), and
`others` folding in the rest. Client names are passed on verbatim, as JSON data: the page
renders them as text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from zai_proxy.dashboard.compute import ADMITTED_PREFIX, BUDGET_PREFIX, REFUSED_PREFIX, Point

TOP_CLIENTS = 8


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.6g}")


def _by_client(values: dict[str, float], prefix: str) -> Iterable[tuple[str, float]]:
    return ((key[len(prefix):], value) for key, value in values.items() if key.startswith(prefix))


def client_shares(points: Iterable[Point], step: float, since: float, now: float,
                  variants: Sequence[str] | None = None, top: int = TOP_CLIENTS
                  ) -> dict[str, Any]:
    """Shares per step of the points after `since`, and each shown client's figures over the
    whole range: admitted attempts, their rate, share, refusals per second and the budget used
    ratio as last read (the highest of any variant; None: no budget share configured)."""
    steps: dict[float, dict[str, float]] = {}  # step end -> admitted per client
    admitted: dict[str, float] = {}
    refused: dict[str, float] = {}
    seconds: dict[str, float] = {}  # per variant: variants are scraped in the same rounds
    latest: dict[str, Point] = {}
    for point in points:
        if point.ts <= since or (variants is not None and point.variant not in variants):
            continue
        in_step = steps.setdefault(step * math.ceil(point.ts / step), {})
        for client, value in _by_client(point.counters, ADMITTED_PREFIX):
            in_step[client] = in_step.get(client, 0.0) + value
            admitted[client] = admitted.get(client, 0.0) + value
        for client, value in _by_client(point.counters, REFUSED_PREFIX):
            refused[client] = refused.get(client, 0.0) + value
        seconds[point.variant] = seconds.get(point.variant, 0.0) + point.dt
        if point.variant not in latest or point.ts >= latest[point.variant].ts:
            latest[point.variant] = point
    budgets: dict[str, float] = {}
    for point in latest.values():
        for client, ratio in _by_client(point.gauges, BUDGET_PREFIX):
            budgets[client] = max(budgets.get(client, ratio), ratio)
    span = max(seconds.values(), default=0.0)
    total = sum(admitted.values())
    ranked = sorted((c for c in {*admitted, *refused} if admitted.get(c) or refused.get(c)),
                    key=lambda c: (-admitted.get(c, 0.0), -refused.get(c, 0.0), c))
    shown, rest = ranked[:top], ranked[top:]

    def figures(names: Sequence[str]) -> dict[str, Any]:
        count = sum(admitted.get(c, 0.0) for c in names)
        refusals = sum(refused.get(c, 0.0) for c in names)
        return {"admitted": count,
                "admitted_rate": _clean(count / span) if span else None,
                "share": _clean(count / total) if total else None,
                "refused_rate": _clean(refusals / span) if span else None}

    ends = sorted(steps)
    out: dict[str, Any] = {
        "t": [min(end, now) for end in ends],
        "clients": [{"client": c, **figures([c]), "budget_used_ratio": _clean(budgets.get(c)),
                     "shares": [_share(steps[end], [c]) for end in ends]} for c in shown],
        "others": None,
    }
    if rest:
        out["others"] = {"clients": len(rest), **figures(rest),
                         "shares": [_share(steps[end], rest) for end in ends]}
    return out


def _share(admitted: dict[str, float], names: Sequence[str]) -> float | None:
    """`names`' share of a step's admitted attempts; None (a gap) when nothing was admitted."""
    total = sum(admitted.values())
    return _clean(sum(admitted.get(c, 0.0) for c in names) / total) if total > 0 else None
