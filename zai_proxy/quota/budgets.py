"""Per-client budgets wired to the request path, the replicas, /health and /metrics.

`BudgetGate` owns the account's `quota.client_budgets.ClientBudgets` and does what the pure
counts cannot:

- the request path: `check` (a client past its share of a window, or paced and ahead of it,
  gets `ClientBudgetExhausted`: a 429 `proxy_client_budget_exhausted` / `_paced` with
  Retry-After, counted in `zai_proxy_client_budget_refusals_total{client,window}`), `settled`
  (a request's tokens, scaled to the account like the quota's own count);
- what the quota knows (`observe`, after every tick and poll): each window's reset and the used
  ratio one token moves, read from the `QuotaState`;
- sharing (`sync`, in the quota's one-second Redis sync): this replica's counts are added to
  the account's per window period and the totals read back (`QuotaShare.sync_clients`), so every
  replica of both variants refuses a client on its account-wide use; when Redis does not answer,
  the counts wait for the next sync that works and each replica refuses on what it knows;
- `health` and the `zai_proxy_client_budget_used_ratio{client,window}` gauge (used share over
  allowed share: 1 is the share spent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from zai_proxy.core.errors import ClientBudgetExhausted
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.client_budgets import (
    BUDGET_WINDOWS,
    BudgetRefusal,
    ClientBudgets,
    SharesOf,
    WindowFacts,
)
from zai_proxy.quota.shared import QuotaShare
from zai_proxy.quota.state import QuotaState, reset_stamp

_WORDS = {"five_hour": "five-hour", "weekly": "weekly"}


def no_shares(client: str) -> tuple[float | None, float | None]:
    """The shares of a proxy without a roster: no client has a cap."""
    return None, None


def budget_refusal(refused: BudgetRefusal) -> ClientBudgetExhausted:
    """The local 429 for a client past its share of a window (or, paced, ahead of it): names
    the client, its share and the window, and when the window resets."""
    words, field = _WORDS[refused.window], f"{refused.window}_share"
    why = (f"it spends its {field} of {100 * refused.share:.4g}% of the {words} budget faster "
           "than evenly until the reset (QUOTA_PACING=even)" if refused.paced
           else f"it has used {100 * refused.used:.1f}% of the account's {words} budget, and its "
           f"{field} is {100 * refused.share:.4g}%")
    until = ("" if refused.reset_at is None
             else f" The {words} budget resets at {reset_stamp(refused.reset_at)}.")
    return ClientBudgetExhausted(f"Client '{refused.client}' is refused by zai-proxy: {why}."
                                 f"{until}", retry_after=refused.retry_after, paced=refused.paced)


class BudgetGate:
    """One account's per-client budgets as the proxy acts on them; see the module docstring.

    `paced(client)`: whether the client's requests are paced (QUOTA_PACING=even, not exempt).
    """

    def __init__(self, shares_of: SharesOf, metrics: Metrics, *, wall: Callable[[], float],
                 paced: Callable[[str], bool]) -> None:
        self.budgets = ClientBudgets(shares_of, now=wall())
        self.metrics, self.wall, self.paced = metrics, wall, paced
        self._series: set[tuple[str, str]] = set()

    def check(self, client: str) -> ClientBudgetExhausted | None:
        """The local 429 for `client` now, or None (one roster lookup for a client without a
        share)."""
        if self.budgets.shares_of(client) == (None, None):
            return None  # the usual case: no clock read, no pacing question
        refused = self.budgets.check(client, self.wall(), pacing=self.paced(client))
        if refused is None:
            return None
        self.metrics.client_budget_refusals.labels(client, refused.window).inc()
        return budget_refusal(refused)

    def settled(self, client: str, tokens: float, *, scale: float) -> None:
        self.budgets.settled(client, tokens, scale=scale)

    def observe(self, state: QuotaState) -> None:
        """Each window's reset (the latest of its budgets') and the used ratio a token moves
        (the largest: the budget a token spends faster), as `state` knows them now."""
        facts = {}
        for window in BUDGET_WINDOWS:
            tracks = [s for (period, _), s in state.windows.items() if period == window]
            resets = [s.reset_at for s in tracks if s.reset_at is not None]
            ratios = [s.ratio_per_token for s in tracks if s.ratio_per_token]
            facts[window] = WindowFacts(max(resets) if resets else None,
                                        max(ratios) if ratios else None)
        self.budgets.observe(facts, self.wall())

    async def sync(self, sharing: QuotaShare) -> None:
        """Add this replica's counts to the account's and take the account's totals back."""
        flushes = self.budgets.take_unflushed(self.wall())
        if not flushes:
            return
        totals = await sharing.sync_clients(flushes)
        if totals is None:
            self.budgets.give_back(flushes)  # counted again at the next sync that works
            return
        for flush, counts in zip(flushes, totals, strict=True):
            self.budgets.adopt(flush, counts)

    def health(self) -> dict[str, Any]:
        return self.budgets.health(self.wall())

    def refresh_gauges(self) -> None:
        """Used share / allowed share of each client with a share, per window. A client idle in
        the period reads 0 while it has a share; the series goes with the share (or while the
        window is calibrating, when no used share is known)."""
        budgets, gauge = self.budgets, self.metrics.client_budget_used
        seen: set[tuple[str, str]] = set()
        for use in budgets.uses(self.wall()):
            if use.ratio is not None:
                gauge.labels(use.client, use.window).set(use.ratio)
                seen.add((use.client, use.window))
        for client, window in self._series - seen:
            index = [str(w) for w in BUDGET_WINDOWS].index(window)
            if (budgets.shares_of(client)[index] is not None
                    and budgets.facts[BUDGET_WINDOWS[index]].ratio_per_token is not None):
                gauge.labels(client, window).set(0.0)
                seen.add((client, window))
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(client, window)
        self._series = seen
