"""Even pacing of the plan quota: the request rate at which the budget left lasts until its reset.

Pure: views of the windows in, a `Pacing` decision out. For each window with a known reset and a
known cost per token, the tokens left are `(1 - used) / ratio_per_token`, minus what the requests
in flight will still be charged (each at the recent tokens per request: charged at admission
with that estimate, settled with the upstream's usage when they end, because the used ratio
counts settled tokens) and a reserve of `reserve_requests` requests against the estimate's
error. Spread evenly over the time to the reset and divided by the tokens per request, that is
the request rate; the budget that allows the least binds (tokens or credits, whichever; the
month's tool calls are not paced: chat requests do not spend them). A window whose budget left
is within the reserve is spent as far as pacing is concerned: paced requests are refused until
its reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from zai_proxy.quota.state import WindowView
from zai_proxy.zai.codes import Window
from zai_proxy.zai.monitor_report import Measure

RESERVE_REQUESTS = 2.0
# Spend the last tokens no faster than over this many seconds (a reset a moment away would
# otherwise ask for an unbounded rate).
MIN_HORIZON = 1.0


@dataclass(frozen=True, slots=True)
class Pacing:
    """The pacing decision: `rate` account req/s (None: no cap); `paused_until` (epoch s) when
    the budget left is reserved; `window` the one that binds; `status` for /health."""

    rate: float | None
    paused_until: float | None
    window: Window | None
    status: str  # "paced", "paused", "calibrating" (nothing to pace by), "holding" (see Quota)
    tokens_left: float | None = None
    measure: Measure | None = None  # the binding budget's unit of account


def even_pacing(views: Iterable[WindowView], *, now: float, in_flight: float,
                tokens_per_request: float | None,
                reserve_requests: float = RESERVE_REQUESTS) -> Pacing:
    """The rate that spends each window's budget left evenly until its reset (see module).

    Everything is the account's: `views` its used ratios, `in_flight` its requests in flight,
    the rate its req/s; `tokens_per_request` is what one request costs (not scaled by replicas).
    """
    if not tokens_per_request or tokens_per_request <= 0:
        return Pacing(None, None, None, "calibrating")
    best: Pacing | None = None
    paused: Pacing | None = None
    for view in views:
        k, used, reset, window = view.ratio_per_token, view.used_ratio, view.reset_at, view.window
        if window is None or k is None or k <= 0 or used is None or reset is None or reset <= now:
            continue
        left = (1.0 - used) / k - (in_flight + reserve_requests) * tokens_per_request
        if left <= 0:
            if paused is None or (paused.paused_until or 0) < reset:
                paused = Pacing(0.0, reset, window, "paused", max(0.0, left), view.measure)
            continue
        rate = left / tokens_per_request / max(MIN_HORIZON, reset - now)
        if best is None or (best.rate is not None and rate < best.rate):
            best = Pacing(rate, None, window, "paced", left, view.measure)
    if paused is not None:
        return paused
    return best or Pacing(None, None, None, "calibrating")
