"""Per-client budgets: each client's share of the plan's five-hour and weekly budgets: pure.

A client declared with `five_hour_share` / `weekly_share` (the clients file) may spend at most
that share of the account's budget in each period of the window; past it, its requests are
refused until the window resets, while every other client goes on. `shares_of(name)` (the
roster's, injected: a reload takes effect at the next request) says what each client may.

What a client used: its tokens counted in the window's current period (the account's: times
`scale` without shared counts, or the totals every replica adds up through Redis), times the
window's `ratio_per_token` (the used ratio one account token moves, learned by `QuotaState`
from the polls: it works for credits as for tokens; 1 / allowance for a token budget until two
polls say better). So a client's used share is in the units of the polled used ratio: a client
at 0.2 spent a fifth of the window's budget. A window with a token and a credit budget takes
the larger ratio (the budget a token spends faster). Before any ratio is known (a credit or
percentage-only budget before its second poll) the window is *calibrating*: counted, never
refused on.

Periods: a window's period ends at its reset time (the monitor's). Counting starts when the
proxy first counts in the period (so a proxy started mid-period knows only what it saw since,
unless Redis kept the account's counts). When the reset passes, the counts start over; a reset
time the monitor moves by more than RESET_TOLERANCE is a new period too. Tokens settled before
the period's reset is polled count locally and are shared once it is.

Even pacing (`pacing=True`, QUOTA_PACING=even and the client not exempt): a client may also not
run ahead of spending its share evenly over the period: at a fraction f of the window's length
elapsed (from reset - WINDOW_SECONDS), it may have used `share * f`, PACING_AHEAD_SECONDS of the
window's even spend ahead at most; a client ahead of that is refused (`paced`) until the even
line catches up with what it used.

Nothing here does I/O or reads a clock: every method takes `now` (epoch seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from zai_proxy.zai.codes import Window

SharesOf = Callable[[str], tuple[float | None, float | None]]
# The windows a client's share caps, in the order of `SharesOf`'s answer.
BUDGET_WINDOWS: tuple[Window, ...] = ("five_hour", "weekly")
# A window's length: where its period began, for even pacing (its reset minus this).
WINDOW_SECONDS: dict[Window, float] = {"five_hour": 5 * 3600.0, "weekly": 7 * 86400.0}
# A reset the monitor moves by more than this is another period (jitter is not).
RESET_TOLERANCE = 60.0
# A refusal while the period's reset is not known (it just passed): ask again this soon.
UNKNOWN_RESET_RETRY = 60.0
# How far ahead of the even line a paced client may run (in seconds of its even spend).
PACING_AHEAD_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """A client over its share (`paced`: ahead of spending it evenly) of `window`: refuse it
    for `retry_after` seconds (until `reset_at`, or until pacing lets it go)."""

    client: str
    window: Window
    share: float
    used: float  # the share of the window's budget the client used
    reset_at: float | None
    retry_after: float
    paced: bool = False


@dataclass(frozen=True, slots=True)
class WindowFacts:
    """What the quota knows of a window now: its reset (None: not known) and the used ratio
    one account token moves (None: not learned yet)."""

    reset_at: float | None
    ratio_per_token: float | None


@dataclass(slots=True)
class Period:
    """One window's current period: when counting began, when it ends (None: not polled
    yet), the account tokens of each client in it, and those not yet shared."""

    since: float
    reset_at: float | None = None
    tokens: dict[str, float] = field(default_factory=dict)
    unflushed: dict[str, float] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        """The period's name, the same on every replica that polled (or adopted) the same
        reset: the reset time to the minute; None while the reset is not known."""
        return None if self.reset_at is None else str(round(self.reset_at / 60.0))


@dataclass(frozen=True, slots=True)
class Flush:
    """A period's deltas to add to the account's counts (`take_unflushed`)."""

    window: Window
    period: str
    deltas: dict[str, float]
    ttl: float  # seconds the shared counts must outlive: past the reset


@dataclass(frozen=True, slots=True)
class ClientUse:
    """A client with a share, in one window's period (for /health and the metrics)."""

    client: str
    window: Window
    share: float
    used: float | None  # share of the budget used; None while calibrating
    refused: int
    reset_at: float | None

    @property
    def ratio(self) -> float | None:
        """Used / share: 1 is the share spent."""
        return None if self.used is None else self.used / self.share


class ClientBudgets:
    """Every client's use of each window's period; see the module docstring."""

    def __init__(self, shares_of: SharesOf, *, now: float) -> None:
        self.shares_of = shares_of
        self.periods: dict[Window, Period] = {w: Period(now) for w in BUDGET_WINDOWS}
        self.facts: dict[Window, WindowFacts] = {w: WindowFacts(None, None)
                                                 for w in BUDGET_WINDOWS}

    # -- the request path ------------------------------------------------------------------

    def settled(self, client: str, tokens: float, *, scale: float = 1.0) -> None:
        """A request's tokens, when it ended; `scale` as in `QuotaState.settled`."""
        if tokens <= 0:
            return
        account = tokens * scale
        for period in self.periods.values():
            period.tokens[client] = period.tokens.get(client, 0.0) + account
            period.unflushed[client] = period.unflushed.get(client, 0.0) + account

    def check(self, client: str, now: float, *, pacing: bool = False) -> BudgetRefusal | None:
        """The refusal for `client` now, or None: over its share of a window (of two, the one
        refused longest), or, `pacing`, ahead of spending it evenly."""
        shares = self.shares_of(client)
        if shares == (None, None):
            return None
        worst: BudgetRefusal | None = None
        for window, share in zip(BUDGET_WINDOWS, shares, strict=True):
            if share is None:
                continue
            refusal = self._check(client, window, share, now, pacing)
            if refusal is not None and (worst is None or refusal.retry_after > worst.retry_after):
                worst = refusal
        if worst is not None:
            refused = self.periods[worst.window].refused
            refused[client] = refused.get(client, 0) + 1
        return worst

    def _check(self, client: str, window: Window, share: float, now: float,
               pacing: bool) -> BudgetRefusal | None:
        period = self._current(window, now)
        used = self.used(client, window)
        if used is None:
            return None
        reset = period.reset_at
        if used >= share:
            retry = reset - now if reset is not None else UNKNOWN_RESET_RETRY
            return BudgetRefusal(client, window, share, used, reset, retry)
        if pacing and reset is not None:
            length = WINDOW_SECONDS[window]
            elapsed = min(length, max(0.0, now - (reset - length)))
            if used > share * min(1.0, (elapsed + PACING_AHEAD_SECONDS) / length):
                # The even line `share * (elapsed + ahead) / length` reaches `used` at:
                retry = used / share * length - PACING_AHEAD_SECONDS - elapsed
                return BudgetRefusal(client, window, share, used, reset, max(1.0, retry),
                                     paced=True)
        return None

    def used(self, client: str, window: Window) -> float | None:
        """The share of `window`'s budget `client` used in the period; None while calibrating."""
        k = self.facts[window].ratio_per_token
        if k is None or k <= 0:
            return None
        return self.periods[window].tokens.get(client, 0.0) * k

    def _current(self, window: Window, now: float) -> Period:
        period = self.periods[window]
        if period.reset_at is not None and now >= period.reset_at:
            # The reset passed (maybe between two ticks): what was used is gone.
            period = self.periods[window] = Period(period.reset_at)
        return period

    # -- what the quota knows ----------------------------------------------------------------

    def observe(self, facts: Mapping[Window, WindowFacts], now: float) -> None:
        """The windows' resets and ratios as the quota knows them now (every tick, every poll):
        a passed reset starts a new period, a reset first polled names the current one."""
        for window in BUDGET_WINDOWS:
            fact = facts.get(window, WindowFacts(None, None))
            self.facts[window] = fact
            period = self._current(window, now)
            reset = fact.reset_at
            if reset is None or reset <= now:
                continue
            if period.reset_at is None:
                period.reset_at = reset  # the period counted so far ends then
            elif abs(reset - period.reset_at) > RESET_TOLERANCE:
                self.periods[window] = Period(now, reset)  # the monitor moved it: a new one

    # -- sharing -----------------------------------------------------------------------------

    def take_unflushed(self, now: float) -> list[Flush]:
        """Each window's period with a known reset, with the deltas counted here since the last
        flush (possibly none: the account's totals are read back either way)."""
        flushes = []
        for window in BUDGET_WINDOWS:
            period = self._current(window, now)
            key = period.key
            if key is None or period.reset_at is None:
                continue  # counted locally until the period's reset is polled
            flushes.append(Flush(window, key, period.unflushed,
                                 max(1.0, period.reset_at - now) + 3600.0))
            period.unflushed = {}
        return flushes

    def give_back(self, flushes: list[Flush]) -> None:
        """Deltas Redis did not take: counted again at the next flush (same period only)."""
        for flush in flushes:
            period = self.periods[flush.window]
            if period.key != flush.period:
                continue
            for client, delta in flush.deltas.items():
                period.unflushed[client] = period.unflushed.get(client, 0.0) + delta

    def adopt(self, flush: Flush, totals: Mapping[str, float]) -> None:
        """The account's counts of the flushed period (every replica's, ours included), plus
        what was counted here since the flush."""
        period = self.periods[flush.window]
        if period.key != flush.period:
            return  # the period changed meanwhile: those counts are the old one's
        tokens = dict(totals)
        for client, delta in period.unflushed.items():
            tokens[client] = tokens.get(client, 0.0) + delta
        period.tokens = tokens

    # -- views -------------------------------------------------------------------------------

    def uses(self, now: float) -> list[ClientUse]:
        """Every client with a share that counted or was refused in a current period."""
        result = []
        for index, window in enumerate(BUDGET_WINDOWS):
            period = self._current(window, now)
            for client in sorted(set(period.tokens) | set(period.refused)):
                share = self.shares_of(client)[index]
                if share is not None:
                    result.append(ClientUse(client, window, share, self.used(client, window),
                                            period.refused.get(client, 0), period.reset_at))
        return result

    def health(self, now: float) -> dict[str, object]:
        """The periods and each client's use of its shares, for /health."""
        windows = {}
        for window in BUDGET_WINDOWS:
            period, k = self._current(window, now), self.facts[window].ratio_per_token
            windows[window] = {"since": period.since, "reset_at": period.reset_at,
                               "status": "calibrating" if k is None else "enforced",
                               "ratio_per_token": None if k is None else _round(k)}
        return {"windows": windows, "clients": [
            {"name": u.client, "window": u.window, "share": u.share, "used": _round(u.used),
             "used_ratio": _round(u.ratio), "refused": u.refused, "reset_at": u.reset_at}
            for u in self.uses(now)]}


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.6g}")
