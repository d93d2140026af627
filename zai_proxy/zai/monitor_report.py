"""Z.AI's quota monitor answer, parsed: a pure function from bytes to a report or a failure.

`GET /api/monitor/usage/quota/limit` answers `{code, msg, success, data: {level, limits}}`;
each limit has `type`, `unit` (the monitor's period code), `number`, `usage` (the allowance),
`currentValue` (used), `remaining`, `percentage` (0-100) and `nextResetTime` (epoch ms, sometimes
s or a date string). Every field is optional and numbers may come as strings. The `type` gives
the limit's unit of account (`measure`): `TOKENS_LIMIT` tokens (percentage-only on legacy
plans), `CREDIT_LIMIT` credits (plans since mid-2026), `TIME_LIMIT` calls (the monthly MCP
tool-call allowance). The `unit` gives its period: 3 the five-hour window and 6 the weekly one
for tokens and credits, 5 the month for calls.

The shape has changed several times, so an entry is understood only when its type and unit are
known ones and it carries a number a used ratio comes from; any other is `Unparsed`: counted by
reason in the report and kept raw (its JSON, bounded) for /health, never dropped silently.
`parse_monitor` never raises: a body it cannot use at all is an `Invalid` value naming why (a
bounded reason, the `reason` label of `zai_proxy_quota_poll_errors_total`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from zai_proxy.zai.classify import parse_time
from zai_proxy.zai.codes import Window

Measure = Literal["tokens", "credits", "calls"]
MEASURES: tuple[Measure, ...] = ("tokens", "credits", "calls")
# A limit's period: the two plan windows that stop chat requests, and the tool-call month.
Period = Literal["five_hour", "weekly", "monthly"]
PERIODS: tuple[Period, ...] = ("five_hour", "weekly", "monthly")
WINDOWS: tuple[Window, ...] = ("five_hour", "weekly")
TYPE_MEASURES: dict[str, Measure] = {
    "TOKENS_LIMIT": "tokens", "TOKEN_LIMIT": "tokens",
    "CREDIT_LIMIT": "credits", "CREDITS_LIMIT": "credits",
    "TIME_LIMIT": "calls",
}
_PLAN_UNITS: dict[int, Period] = {3: "five_hour", 6: "weekly"}
UNIT_PERIODS: dict[Measure, dict[int, Period]] = {
    "tokens": _PLAN_UNITS, "credits": _PLAN_UNITS, "calls": {5: "monthly"}}
MAX_BODY_BYTES = 256 * 1024  # the real answer is well under 2 KiB
# Entries not understood are kept raw for /health: this many, each cut to this many characters.
MAX_UNPARSED_KEPT = 8
MAX_RAW_CHARS = 1024
_OK_CODES = frozenset({"0", "200"})

UnparsedReason = Literal["not_an_object", "unknown_type", "unknown_unit", "no_numbers"]
UNPARSED_REASONS: tuple[UnparsedReason, ...] = (
    "not_an_object", "unknown_type", "unknown_unit", "no_numbers")


def measure_of(kind: str | None) -> Measure | None:
    """The unit of account a limit `type` counts in, or None for a type not known here."""
    return TYPE_MEASURES.get(kind.strip().upper()) if kind else None


@dataclass(frozen=True, slots=True)
class Limit:
    """One understood entry of `data.limits`; None where the monitor did not say."""

    type: str | None = None
    unit: int | None = None
    number: int | None = None
    usage: float | None = None  # the allowance, in `measure`
    used: float | None = None  # `currentValue`
    remaining: float | None = None
    percentage: float | None = None  # 0-100
    reset_at: float | None = None  # epoch seconds
    measure: Measure | None = None  # what the numbers count: from `type` unless given

    def __post_init__(self) -> None:
        if self.measure is None:  # frozen: set once, here, from the type
            object.__setattr__(self, "measure", measure_of(self.type))

    @property
    def period(self) -> Period | None:
        """The limit's period (`five_hour`, `weekly`, `monthly`), None when not known."""
        if self.measure is None or self.unit is None:
            return None
        return UNIT_PERIODS[self.measure].get(self.unit)

    @property
    def window(self) -> Window | None:
        """The plan window this limit stops chat requests in (five_hour or weekly), else None:
        tool calls (`calls`) are not what the proxy spends, so their month stops nothing."""
        period = self.period
        return period if period is not None and period != "monthly" else None

    @property
    def exact(self) -> bool:
        """True when the allowance is given in absolute numbers (not only a percentage)."""
        return bool(self.usage) and (self.used is not None or self.remaining is not None)

    @property
    def used_ratio(self) -> float | None:
        """Used / allowance (may pass 1 when a last request overshot), from the most exact
        fields present: currentValue / usage, else 1 - remaining / usage, else percentage."""
        if self.usage:
            if self.used is not None:
                return max(0.0, self.used / self.usage)
            if self.remaining is not None:
                return max(0.0, 1.0 - self.remaining / self.usage)
        if self.percentage is not None:
            return max(0.0, self.percentage / 100.0)
        return None

    @property
    def spent(self) -> bool:
        """True when the monitor says nothing is left of this budget."""
        if self.remaining is not None and self.usage:
            return self.remaining <= 0
        ratio = self.used_ratio
        return ratio is not None and ratio >= 1.0

    @property
    def tokens(self) -> bool:
        """True for a budget counted in tokens (so `usage` converts tokens to a ratio)."""
        return self.measure == "tokens"


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A `data.limits` entry not understood: why, and its JSON as sent (cut to MAX_RAW_CHARS;
    `truncated` says when it was)."""

    reason: UnparsedReason
    raw: str
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """A parsed monitor answer: the plan level, every limit understood, and what was not:
    `unparsed` the first MAX_UNPARSED_KEPT such entries, `unparsed_counts` all of them by
    reason (only reasons that occurred)."""

    level: str | None
    limits: tuple[Limit, ...]
    unparsed: tuple[Unparsed, ...] = ()
    unparsed_counts: tuple[tuple[UnparsedReason, int], ...] = ()

    def window(self, name: Period) -> Limit | None:
        """The binding limit of a period: of several (tokens and credits), the most used."""
        found = self.limits_of(name)
        if not found:
            return None
        return max(found, key=lambda lim: (lim.used_ratio is not None, lim.used_ratio or 0.0))

    def limits_of(self, name: Period) -> list[Limit]:
        """Every limit of period `name`, in the monitor's order."""
        return [lim for lim in self.limits if lim.period == name]

    @property
    def unparsed_total(self) -> int:
        return sum(n for _, n in self.unparsed_counts)


Reason = Literal["unreachable", "timeout", "unauthorized", "http_error", "invalid_response",
                 "api_error"]
REASONS: tuple[Reason, ...] = ("unreachable", "timeout", "unauthorized", "http_error",
                               "invalid_response", "api_error")


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a poll gave nothing usable; `detail` is safe to log (never holds the key)."""

    reason: Reason
    detail: str


def number(value: object) -> float | None:
    """A finite number from a JSON number or a numeric string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip().removesuffix("%"))
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def _integer(value: object) -> int | None:
    result = number(value)
    return int(result) if result is not None and result.is_integer() else None


def parse_limit(item: dict[str, Any]) -> Limit:
    """One limit entry's fields; those missing or malformed are None (whether the entry is
    understood is `understood`'s to say)."""
    kind = item.get("type")
    kind = kind.strip() if isinstance(kind, str) and kind.strip() else None
    return Limit(
        type=kind,
        unit=_integer(item.get("unit")),
        number=_integer(item.get("number")),
        usage=_non_negative(number(item.get("usage"))),
        used=_non_negative(number(item.get("currentValue"))),
        remaining=number(item.get("remaining")),
        percentage=_non_negative(number(item.get("percentage"))),
        reset_at=parse_time(item.get("nextResetTime")),
    )


def understood(limit: Limit) -> UnparsedReason | None:
    """None when `limit` can be used; else why not."""
    if limit.measure is None:
        return "unknown_type"
    if limit.period is None:
        return "unknown_unit"
    if limit.used_ratio is None:
        return "no_numbers"
    return None


def raw_entry(item: object, reason: UnparsedReason) -> Unparsed:
    """`item` as JSON, cut to MAX_RAW_CHARS."""
    try:
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(item)
    return Unparsed(reason, text[:MAX_RAW_CHARS], len(text) > MAX_RAW_CHARS)


def parse_limits(items: list[Any]) -> tuple[tuple[Limit, ...], tuple[Unparsed, ...],
                                             tuple[tuple[UnparsedReason, int], ...]]:
    """The understood limits of `data.limits`, the first entries not understood (raw), and
    how many were not, by reason."""
    limits: list[Limit] = []
    kept: list[Unparsed] = []
    counts: dict[UnparsedReason, int] = {}
    for item in items:
        reason: UnparsedReason = "not_an_object"
        if isinstance(item, dict):
            limit = parse_limit(item)
            why = understood(limit)
            if why is None:
                limits.append(limit)
                continue
            reason = why
        counts[reason] = counts.get(reason, 0) + 1
        if len(kept) < MAX_UNPARSED_KEPT:
            kept.append(raw_entry(item, reason))
    return tuple(limits), tuple(kept), tuple(
        (reason, counts[reason]) for reason in UNPARSED_REASONS if reason in counts)


def _non_negative(value: float | None) -> float | None:
    return value if value is None or value >= 0 else None


def parse_monitor(body: bytes) -> QuotaReport | Invalid:
    """The report in a monitor answer's body, or `Invalid` saying what was wrong with it."""
    if len(body) > MAX_BODY_BYTES:
        return Invalid("invalid_response", f"answer of {len(body)} bytes is too large")
    try:
        doc: object = json.loads(body)
    except (ValueError, RecursionError):
        return Invalid("invalid_response", "answer is not JSON")
    if not isinstance(doc, dict):
        return Invalid("invalid_response", "answer is not a JSON object")
    code = doc.get("code")
    message = doc.get("msg") if isinstance(doc.get("msg"), str) else doc.get("message")
    detail = message[:200] if isinstance(message, str) else ""
    if doc.get("success") in (False, "false") or (
            code is not None and _code_text(code) not in _OK_CODES):
        return Invalid("api_error", f"code {_code_text(code)}: {detail}".strip(": "))
    data = doc.get("data", doc)
    if not isinstance(data, dict):
        return Invalid("invalid_response", "answer has no data object")
    limits = data.get("limits")
    if not isinstance(limits, list):
        return Invalid("invalid_response", "answer has no limits list")
    level = data.get("level")
    understood_limits, unparsed, counts = parse_limits(limits)
    return QuotaReport(
        level=level.strip() if isinstance(level, str) and level.strip() else None,
        limits=understood_limits, unparsed=unparsed, unparsed_counts=counts)


def _code_text(code: object) -> str:
    if isinstance(code, float) and code.is_integer():
        return str(int(code))
    return str(code).strip()
