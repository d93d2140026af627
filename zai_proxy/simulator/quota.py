"""The simulator's plan quota: token budgets per window that real use consumes, and the monitor.

Two windows, like Z.AI's Coding Plan: `five_hour` (answered 1308 once spent) and `weekly`
(1310). Each has a budget in tokens (0 = unlimited) and a length in seconds (compress both to
seconds for tests). A request is refused while a budget it needs is spent (the weekly one
first: its reset is the later one); an admitted request consumes its prompt + completion tokens,
so the last request of a window may overshoot, as on the real API. Windows reset either
`rolling` (a window opens at the first use after the previous one closed, as Z.AI's five-hour
window does) or `fixed` (back to back from the simulator's start or last `/_stats/reset`).

Credits (`CREDIT_LIMIT`, Z.AI's accounting since mid-2026) run beside the tokens: two more
windows of the same lengths and reset mode, with budgets in credits, refused with the same codes
(1308 five-hour, 1310 weekly; the weekly windows are checked first). The caller says what a
request costs in tokens and in credits.

`monitor_answer` is the body of `GET /api/monitor/usage/quota/limit`, shaped like Z.AI's: a
`TOKENS_LIMIT` entry per token budget and a `CREDIT_LIMIT` entry per credit budget (unit 3 =
five hours, 6 = weekly), a `TIME_LIMIT` entry (unit 5, monthly tool calls, none used: the
simulator runs no tools) when `time_limit` is set, and a `FUTURE_LIMIT` entry of a type no
parser knows when `unknown_entry` is set. Pure:
time comes from an injected clock (monotonic) and epoch conversion from an injected wall clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

Clock = Callable[[], float]
Mode = Literal["rolling", "fixed"]
UNITS = {"five_hour": (3, 5), "weekly": (6, 1)}  # monitor `unit` and `number` per window
CODES = {"five_hour": 1308, "weekly": 1310}
REFUSALS_KEPT = 200
TIME_UNIT = 5  # the monitor's unit of the monthly TIME_LIMIT entry
MONTH_S = 30 * 86400.0


class TokenWindow:
    """One budget: `limit` tokens per `length_s` seconds; records its refusals for `/_stats`."""

    def __init__(self, name: str, limit: int, length_s: float, mode: Mode, clock: Clock,
                 wall: Clock, entry_type: str = "TOKENS_LIMIT") -> None:
        self.name, self.limit, self.length_s, self.mode = name, limit, length_s, mode
        self.entry_type = entry_type
        self._clock, self._wall = clock, wall
        self.used = 0
        self.opened: float | None = None
        self.origin = clock()
        self.refusals: list[float] = []  # epoch arrival times, the first REFUSALS_KEPT
        self.refused = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=50)

    def _roll(self, now: float) -> None:
        if self.mode == "fixed":
            start = self.origin + ((now - self.origin) // self.length_s) * self.length_s
            if self.opened != start:
                if self.opened is not None:
                    self._close()
                self.opened = start
        elif self.opened is not None and now >= self.opened + self.length_s:
            self._close()

    def _close(self) -> None:
        assert self.opened is not None
        self.history.append({
            "opened_at": self._epoch(self.opened), "reset_at": self._epoch(
                self.opened + self.length_s), "limit": self.limit, "used": self.used,
            "refused": self.refused, "first_refusal_at": self.refusals[0] if self.refusals
            else None, "refusals": list(self.refusals)})
        self.opened, self.used, self.refused, self.refusals = None, 0, 0, []

    def _epoch(self, monotonic: float) -> float:
        return self._wall() + (monotonic - self._clock())

    def spent(self) -> bool:
        if not self.limit:
            return False
        self._roll(self._clock())
        return self.used >= self.limit

    def refuse(self) -> None:
        """Count one refused request (its arrival time kept for the bench)."""
        self.refused += 1
        if len(self.refusals) < REFUSALS_KEPT:
            self.refusals.append(self._wall())

    def consume(self, tokens: int) -> None:
        now = self._clock()
        self._roll(now)
        if self.opened is None:
            self.opened = now
        self.used += tokens

    def seconds_to_reset(self) -> float | None:
        """Until this window resets; None for a rolling window not opened yet."""
        now = self._clock()
        self._roll(now)
        if self.opened is None:
            return None
        return max(0.0, self.opened + self.length_s - now)

    def reset(self) -> None:
        self.origin = self._clock()
        self.opened, self.used, self.refused, self.refusals = None, 0, 0, []
        self.history.clear()

    def limit_entry(self) -> dict[str, Any]:
        """This window as one entry of the monitor's `data.limits`."""
        unit, number = UNITS[self.name]
        to_reset = self.seconds_to_reset()
        remaining = max(0, self.limit - self.used)
        entry: dict[str, Any] = {
            "type": self.entry_type, "unit": unit, "number": number, "usage": self.limit,
            "currentValue": self.used, "remaining": remaining,
            "percentage": min(100, int(100 * self.used / self.limit)),
        }
        if to_reset is not None:
            entry["nextResetTime"] = int((self._wall() + to_reset) * 1000)
        return entry

    def snapshot(self) -> dict[str, Any]:
        to_reset = self.seconds_to_reset()
        return {
            "limit": self.limit, "used": self.used, "remaining": max(0, self.limit - self.used)
            if self.limit else None, "window_s": self.length_s, "mode": self.mode,
            "reset_at": None if to_reset is None else self._wall() + to_reset,
            "refused": self.refused, "first_refusal_at": self.refusals[0] if self.refusals
            else None, "history": list(self.history)}


class PlanQuota:
    """Both windows; `refusal()` before admission, `consume()` once a reply's usage is known."""

    def __init__(self, *, five_hour: int = 0, weekly: int = 0, five_hour_s: float = 5 * 3600.0,
                 weekly_s: float = 7 * 86400.0, mode: Mode = "rolling", level: str = "pro",
                 clock: Clock = time.monotonic, wall: Clock = time.time,
                 five_hour_credits: int = 0, weekly_credits: int = 0, time_limit: int = 0,
                 unknown_entry: bool = False) -> None:
        self.level = level
        self.time_limit, self.unknown_entry = time_limit, unknown_entry
        self._wall = wall
        self.windows = {
            "five_hour": TokenWindow("five_hour", five_hour, five_hour_s, mode, clock, wall),
            "weekly": TokenWindow("weekly", weekly, weekly_s, mode, clock, wall),
        }
        self.credit_windows = {
            "five_hour": TokenWindow("five_hour", five_hour_credits, five_hour_s, mode, clock,
                                     wall, "CREDIT_LIMIT"),
            "weekly": TokenWindow("weekly", weekly_credits, weekly_s, mode, clock, wall,
                                  "CREDIT_LIMIT"),
        }

    def configure(self, *, five_hour: int, weekly: int, five_hour_s: float, weekly_s: float,
                  level: str, five_hour_credits: int = 0, weekly_credits: int = 0,
                  time_limit: int = 0, unknown_entry: bool = False) -> None:
        """New budgets and lengths, live; what was used so far is kept."""
        self.level = level
        self.time_limit, self.unknown_entry = time_limit, unknown_entry
        for windows, five, week in ((self.windows, five_hour, weekly),
                                    (self.credit_windows, five_hour_credits, weekly_credits)):
            for window, limit, length in (("five_hour", five, five_hour_s),
                                          ("weekly", week, weekly_s)):
                windows[window].limit, windows[window].length_s = limit, length

    def refusal(self) -> tuple[int, float] | None:
        """(code, seconds to reset) when a budget, tokens or credits, is spent (weekly first),
        else None."""
        for name in ("weekly", "five_hour"):
            for window in (self.windows[name], self.credit_windows[name]):
                if window.spent():
                    window.refuse()
                    return CODES[name], window.seconds_to_reset() or 0.0
        return None

    def consume(self, tokens: int, credits: int = 0) -> None:
        """Charge a reply: `tokens` to the token budgets, `credits` to the credit budgets."""
        for windows, amount in ((self.windows, tokens), (self.credit_windows, credits)):
            for window in windows.values():
                if window.limit:
                    window.consume(amount)

    def seconds_to_reset(self, code: int) -> float:
        """For a forced 1308/1310: the window's reset (its full length when not opened)."""
        window = self.windows["weekly" if code == 1310 else "five_hour"]
        to_reset = window.seconds_to_reset()
        return window.length_s if to_reset is None else to_reset

    def monitor_answer(self) -> dict[str, Any]:
        limits = [w.limit_entry() for w in self.windows.values() if w.limit]
        limits += [w.limit_entry() for w in self.credit_windows.values() if w.limit]
        if self.time_limit:
            limits.append({
                "type": "TIME_LIMIT", "unit": TIME_UNIT, "number": 1, "usage": self.time_limit,
                "currentValue": 0, "remaining": self.time_limit, "percentage": 0,
                "nextResetTime": int((self._wall() + MONTH_S) * 1000), "usageDetails": []})
        if self.unknown_entry:
            # A shape no parser knows yet: the proxy must say it did not understand it.
            limits.append({"type": "FUTURE_LIMIT", "unit": 9, "number": 1, "quantum": 42,
                           "window": "lunar"})
        return {"code": 200, "msg": "Operation successful", "success": True,
                "data": {"limits": limits, "level": self.level}}

    def snapshot(self) -> dict[str, Any]:
        """Per window; the credit windows (`five_hour_credits`, ...) only when budgeted."""
        result = {name: window.snapshot() for name, window in self.windows.items()}
        result.update({f"{name}_credits": window.snapshot()
                       for name, window in self.credit_windows.items() if window.limit})
        return result

    def reset(self) -> None:
        for window in (*self.windows.values(), *self.credit_windows.values()):
            window.reset()
