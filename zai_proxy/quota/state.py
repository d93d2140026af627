"""What the proxy knows about the account's plan quota, and when to refuse locally: pure.

`QuotaState` is fed by three sources and never does I/O or reads a clock itself (every method
takes `now`, epoch seconds, because Z.AI's reset times are wall-clock times):

- monitor reports (`on_report`): per limit the used ratio, the allowance, the reset time;
- upstream quota 429s (`on_throttle`): a code whose row names a window, with a reset hint;
- the proxy's own token counts (`settled`), for a live estimate between polls (scaled to the
  account; the tokens per request stay per request).

It tracks one budget per period and unit of account (a `Track`): the five-hour and weekly
windows in tokens and in credits (a plan may report both: both are tracked, the one used the
most binds) and the month's tool calls. A spent token or credit budget blocks its window; the
tool calls (`TIME_LIMIT`) are shown but never block, because a chat request spends no tool call.

From them it answers the hot-path question `blocked(now)` (one float comparison while nothing
is blocked) and, per track, `view(now)`: used ratio now, burn rate and the projected time the
budget runs out at that rate. The burn rate comes from the proxy's recent tokens per second
times the ratio one token costs (`ratio_per_token`, learned as the used ratio's increase over
the tokens counted between polls, which works for credits as for tokens; else 1 / allowance for
a budget counted in tokens); without either (and always for tool calls, which tokens do not
drive) it falls back to the polled used ratio's slope.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from zai_proxy.zai.classify import BEIJING, next_beijing_midnight
from zai_proxy.zai.codes import Window, window_code, window_of
from zai_proxy.zai.monitor_report import (
    WINDOWS,
    Limit,
    Measure,
    Period,
    QuotaReport,
    Unparsed,
    UnparsedReason,
)

# A 1308/1310 without a reset hint, while no poll says when the window resets: refuse this long,
# then let one request find out.
UNKNOWN_RESET_BLOCK = 60.0
# No plan window resets further out than a month: a hint beyond that (an upstream's `1e999`, a
# garbled date) is noise, and refusing on it would stop the account for good.
MAX_RESET_HORIZON = 31 * 86400.0
# Evidence needed before a percentage-only budget's used ratio yields a ratio per token: whole
# percent steps make a smaller increase mostly rounding.
PERCENT_EVIDENCE = 0.05
LABELS: dict[Window, str] = {"five_hour": "5 hour", "weekly": "weekly/monthly", "daily": "daily"}

Source = Literal["upstream", "poll", "shared"]


def reset_stamp(epoch: float) -> str:
    """A reset time the way Z.AI prints it (naive Beijing time)."""
    return datetime.fromtimestamp(epoch, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


Track = tuple[Period, Measure]
TRACKS: tuple[Track, ...] = (("five_hour", "tokens"), ("five_hour", "credits"),
                             ("weekly", "tokens"), ("weekly", "credits"), ("monthly", "calls"))


@dataclass(frozen=True, slots=True)
class Block:
    """Requests are answered locally until `until` (epoch s): window `window` is spent."""

    window: Window
    code: str
    until: float
    since: float
    source: Source

    def retry_after(self, now: float) -> float:
        return max(0.0, self.until - now)


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one window: when, the used ratio, and the account tokens counted by then."""

    at: float
    used: float
    tokens: float


@dataclass(slots=True)
class WindowState:
    name: Period
    measure: Measure
    limit: Limit | None = None
    reset_at: float | None = None
    polled_at: float | None = None
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=512))
    ratio_per_token: float | None = None
    ratio_source: str | None = None  # "observed" or "allowance"


@dataclass(frozen=True, slots=True)
class WindowView:
    """One window as the proxy sees it at `now` (None where it cannot tell)."""

    name: Period
    at: float
    used_ratio: float | None  # estimated now: the last poll plus tokens counted since
    polled_used_ratio: float | None
    remaining: float | None  # as polled, in the limit's unit
    allowance: float | None
    reset_at: float | None
    polled_at: float | None
    burn_per_second: float | None  # used ratio per second at the recent rate
    eta_seconds: float | None  # until the budget is spent at that rate (inf: not burning)
    ratio_per_token: float | None
    limit_type: str | None
    measure: Measure = "tokens"  # the limit's unit of account
    spent: bool = False  # the last poll said nothing is left

    @property
    def window(self) -> Window | None:
        """The plan window this budget blocks when spent; None for the month's tool calls."""
        return self.name if self.name != "monthly" else None

    @property
    def exhausts_before_reset(self) -> bool | None:
        """True when, at the current burn, the budget runs out before the window resets."""
        if self.eta_seconds is None or self.reset_at is None:
            return None
        return self.at + self.eta_seconds < self.reset_at


class QuotaState:
    """The account's quota as known here; see the module docstring."""

    def __init__(self, *, burn_window: float = 900.0) -> None:
        self.burn_window = burn_window
        self.windows: dict[Track, WindowState] = {t: WindowState(*t) for t in TRACKS}
        self.level: str | None = None
        # The last report's entries not understood: the first few raw, all counted by reason.
        self.unparsed: tuple[Unparsed, ...] = ()
        self.unparsed_counts: tuple[tuple[UnparsedReason, int], ...] = ()
        self.report_at: float | None = None
        # Tokens the account spent through this proxy (all replicas when shared), ever.
        self.tokens = 0.0
        self.tokens_per_request: float | None = None
        self._requests = 0
        self._timeline: deque[tuple[float, float]] = deque()
        self._blocks: dict[Window, Block] = {}
        self.block: Block | None = None  # the one that lasts longest: read on every request

    # -- the hot path --------------------------------------------------------------------------

    def blocked(self, now: float) -> Block | None:
        """The block in force at `now`, or None. Expired blocks are dropped here."""
        block = self.block
        if block is None or now < block.until:
            return block
        for window in [w for w, b in self._blocks.items() if now >= b.until]:
            del self._blocks[window]
        self._recompute()
        return self.block

    def settled(self, tokens: float, *, scale: float = 1.0) -> None:
        """One request's tokens, counted when it ended; `scale`: how many of the account's tokens
        each one seen here stands for (RATE_LIMIT_REPLICAS without shared counts).

        The account total grows by `tokens * scale`; `tokens_per_request` learns the unscaled
        figure, because the account's requests are scaled alike: a per-request figure learned
        from scaled tokens would make pacing divide the account's budget by N requests too many.
        """
        self.tokens += tokens * scale
        self._requests += 1
        if self.tokens_per_request is None or self._requests <= 20:
            previous = self.tokens_per_request or 0.0
            self.tokens_per_request = previous + (tokens - previous) / self._requests
        else:
            self.tokens_per_request += 0.05 * (tokens - self.tokens_per_request)

    # -- evidence ------------------------------------------------------------------------------

    def on_throttle(self, code: str, reset_at: float | None, now: float) -> Block | None:
        """An upstream answer whose code says a window is spent (its `window` in the Z.AI code
        table): refuse locally until its reset (or the polled one). None for any other code."""
        window = window_of(code)
        if window is None:
            return None
        until = reset_at
        if until is None or until <= now:
            known = self._reset_of(window)  # the daily limit has no monitor entry
            until = (known if known is not None and known > now
                     else next_beijing_midnight(now) if window == "daily"
                     else now + UNKNOWN_RESET_BLOCK)
        block = Block(window, code, min(until, now + MAX_RESET_HORIZON), now, "upstream")
        self._set(block)
        return block

    def adopt(self, block: Block, now: float) -> None:
        """A block another replica saw (shared state); ignored once expired, or when a poll
        taken after it began shows budget (the leader lifts the shared copy a moment later)."""
        polled = [s for s in self._tracks_of(block.window) if s.limit is not None]
        if polled and all(s.polled_at is not None and s.polled_at > block.since
                          and s.limit is not None and not s.limit.spent for s in polled):
            return
        if block.until > now:
            if block.until > now + MAX_RESET_HORIZON:
                block = replace(block, until=now + MAX_RESET_HORIZON)
            current = self._blocks.get(block.window)
            if current is None or current.until < block.until:
                self._set(block)

    def on_report(self, report: QuotaReport, at: float, tokens_at: float | None = None) -> None:
        """A monitor report fetched at `at`, when `tokens_at` account tokens had been counted."""
        self.level = report.level
        self.report_at = at
        self.unparsed, self.unparsed_counts = report.unparsed, report.unparsed_counts
        tokens = self.tokens if tokens_at is None else tokens_at
        for (period, measure), state in self.windows.items():
            found = [lim for lim in report.limits_of(period) if lim.measure == measure]
            if found:  # of two of one kind, the most used
                limit = max(found, key=lambda lim: lim.used_ratio or 0.0)
                self._update(state, limit, at, tokens)
            else:  # the plan has no such budget (any more): what was learned still holds
                state.limit = state.reset_at = state.polled_at = None
                state.samples.clear()
        for window in WINDOWS:
            spent = [s.limit for s in self._tracks_of(window) if s.limit and s.limit.spent]
            if not spent:
                self._lift(window, at)
                continue
            resets = [lim.reset_at for lim in spent if lim.reset_at is not None
                      and lim.reset_at > at]
            reset = min(max(resets) if resets else at + UNKNOWN_RESET_BLOCK,
                        at + MAX_RESET_HORIZON)
            current = self._blocks.get(window)
            if current is None or current.until < reset:
                self._set(Block(window, window_code(window), reset, at, "poll"))

    def _tracks_of(self, window: str) -> list[WindowState]:
        return [s for (period, _), s in self.windows.items() if period == window]

    def _reset_of(self, window: Window) -> float | None:
        resets = [s.reset_at for s in self.windows.values()
                  if s.name == window and s.reset_at is not None]
        return max(resets) if resets else None

    def _update(self, state: WindowState, limit: Limit, at: float, tokens: float) -> None:
        used = limit.used_ratio
        previous = state.samples[-1] if state.samples else None
        # A used ratio that fell is a new window (a reset that passed is seen by `tick`); a token
        # count that fell is a shared counter that restarted. Either way: fresh evidence.
        if previous is not None and (
                tokens < previous.tokens or (used is not None and used < previous.used - 1e-9)):
            state.samples.clear()
        state.limit, state.reset_at, state.polled_at = limit, limit.reset_at, at
        if used is not None:
            state.samples.append(Sample(at, used, tokens))
            if state.measure != "calls":  # tool calls: tokens do not drive them
                self._learn(state, limit)

    def _learn(self, state: WindowState, limit: Limit) -> None:
        first, last = state.samples[0], state.samples[-1]
        d_used, d_tokens = last.used - first.used, last.tokens - first.tokens
        evidence = 0.0 if limit.exact else PERCENT_EVIDENCE
        if d_tokens > 0 and d_used > evidence:
            state.ratio_per_token, state.ratio_source = d_used / d_tokens, "observed"
        elif state.ratio_source != "observed" and limit.tokens and limit.usage:
            state.ratio_per_token, state.ratio_source = 1.0 / limit.usage, "allowance"

    def _lift(self, window: Window, at: float) -> None:
        """A poll taken after the block began shows budget again: lift it."""
        block = self._blocks.get(window)
        if block is not None and at >= block.since:
            del self._blocks[window]
            self._recompute()

    def _set(self, block: Block) -> None:
        self._blocks[block.window] = block
        self._recompute()

    def blocks(self) -> list[Block]:
        """Every window's block (expired ones included until `blocked` drops them)."""
        return list(self._blocks.values())

    def _recompute(self) -> None:
        self.block = max(self._blocks.values(), key=lambda b: b.until, default=None)

    def tick(self, now: float) -> None:
        """Once a second or so: sample the token count; forget windows whose reset passed."""
        timeline = self._timeline
        timeline.append((now, self.tokens))
        while len(timeline) > 2 and timeline[1][0] <= now - self.burn_window:
            timeline.popleft()
        for state in self.windows.values():
            if state.reset_at is not None and now >= state.reset_at:
                # The window reset: what was used is gone (a sample of 0 at the reset keeps the
                # live estimate going), the next reset is the monitor's to say.
                state.samples.clear()
                state.samples.append(Sample(state.reset_at, 0.0, self.tokens))
                state.limit, state.reset_at = None, None
        self.blocked(now)

    # -- views ---------------------------------------------------------------------------------

    def token_rate(self, now: float) -> float | None:
        """Account tokens per second over the burn window, None before a second of history."""
        if not self._timeline:
            return None
        then, tokens_then = self._timeline[0]
        span = now - then
        return (self.tokens - tokens_then) / span if span >= 1.0 else None

    def view(self, name: Period, now: float, measure: Measure | None = None) -> WindowView:
        """The budget of `name` in `measure`; without `measure` the one used the most of the
        period's (which is the one that binds)."""
        if measure is None:
            return max((self._view(s, now) for s in self._tracks_of(name)),
                       key=lambda v: (v.used_ratio is not None, v.used_ratio or 0.0,
                                      v.reset_at is not None))
        return self._view(self.windows[(name, measure)], now)

    def views(self, now: float) -> list[WindowView]:
        """Every budget the monitor reported (or whose reset passed), in TRACKS order."""
        return [self._view(s, now) for s in self.windows.values()
                if s.samples or s.reset_at is not None]

    def _view(self, state: WindowState, now: float) -> WindowView:
        name = state.name
        limit = state.limit
        last = state.samples[-1] if state.samples else None
        k = state.ratio_per_token
        polled = last.used if last is not None else None
        used = polled
        if last is not None and k is not None:
            used = last.used + k * max(0.0, self.tokens - last.tokens)
        burn = self._burn(state, now)
        eta: float | None = None
        if used is not None and burn is not None:
            eta = 0.0 if used >= 1.0 else (math.inf if burn <= 0 else (1.0 - used) / burn)
        return WindowView(
            name=name, at=now, used_ratio=used, polled_used_ratio=polled,
            remaining=limit.remaining if limit else None,
            allowance=limit.usage if limit else None, reset_at=state.reset_at,
            polled_at=state.polled_at, burn_per_second=burn,
            eta_seconds=eta, ratio_per_token=k, limit_type=limit.type if limit else None,
            measure=state.measure, spent=limit.spent if limit else False)

    def _burn(self, state: WindowState, now: float) -> float | None:
        rate = self.token_rate(now)
        if state.ratio_per_token is not None and rate is not None:
            return state.ratio_per_token * max(0.0, rate)
        recent = [s for s in state.samples if s.at >= now - self.burn_window]
        if len(recent) >= 2 and recent[-1].at > recent[0].at:
            return max(0.0, (recent[-1].used - recent[0].used) / (recent[-1].at - recent[0].at))
        return None
