"""Z.AI's quota monitor answer, parsed: a pure function from bytes to a report or a failure.

`GET /api/monitor/usage/quota/limit` answers `{code, msg, success, data: {level, limits}}`;
each limit has `type` (`TOKENS_LIMIT`, percentage-only on legacy plans, or `CREDIT_LIMIT`, or
one we do not know yet: kept), `unit` (3 = the five-hour window, 6 = the weekly one), `number`,
`usage` (the allowance), `currentValue` (used), `remaining`, `percentage` (0-100) and
`nextResetTime` (epoch ms, sometimes s or a date string). Every field is optional and numbers may
come as strings. `parse_monitor` never raises: a body it cannot use is an `Invalid` value naming
why (a bounded reason, the `reason` label of `zai_proxy_quota_poll_errors_total`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from zai_proxy.zai.classify import parse_time
from zai_proxy.zai.codes import Window

WINDOWS: tuple[Window, ...] = ("five_hour", "weekly")
UNIT_WINDOWS: dict[int, Window] = {3: "five_hour", 6: "weekly"}
MAX_BODY_BYTES = 256 * 1024  # the real answer is well under 2 KiB
_OK_CODES = frozenset({"0", "200"})


@dataclass(frozen=True, slots=True)
class Limit:
    """One entry of `data.limits`; None where the monitor did not say."""

    type: str | None = None
    unit: int | None = None
    number: int | None = None
    usage: float | None = None  # the allowance, in the limit's own unit (tokens, credits)
    used: float | None = None  # `currentValue`
    remaining: float | None = None
    percentage: float | None = None  # 0-100
    reset_at: float | None = None  # epoch seconds

    @property
    def window(self) -> Window | None:
        """`five_hour` or `weekly` for the units we know, else None (kept, not labelled)."""
        return UNIT_WINDOWS.get(self.unit) if self.unit is not None else None

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
        return self.type is not None and "TOKEN" in self.type.upper()


@dataclass(frozen=True, slots=True)
class QuotaReport:
    """A parsed monitor answer: the plan level and every limit, unknown ones included."""

    level: str | None
    limits: tuple[Limit, ...]

    def window(self, name: Window) -> Limit | None:
        """The binding limit of a window: of several, the one used the most."""
        found = [lim for lim in self.limits if lim.window == name]
        if not found:
            return None
        return max(found, key=lambda lim: (lim.used_ratio is not None, lim.used_ratio or 0.0))


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
    """One limit entry; fields that are missing or malformed are None."""
    kind = item.get("type")
    return Limit(
        type=kind.strip() if isinstance(kind, str) and kind.strip() else None,
        unit=_integer(item.get("unit")),
        number=_integer(item.get("number")),
        usage=_non_negative(number(item.get("usage"))),
        used=_non_negative(number(item.get("currentValue"))),
        remaining=number(item.get("remaining")),
        percentage=_non_negative(number(item.get("percentage"))),
        reset_at=parse_time(item.get("nextResetTime")),
    )


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
    return QuotaReport(
        level=level.strip() if isinstance(level, str) and level.strip() else None,
        limits=tuple(parse_limit(item) for item in limits if isinstance(item, dict)))


def _code_text(code: object) -> str:
    if isinstance(code, float) and code.is_integer():
        return str(int(code))
    return str(code).strip()
