"""Z.AI business codes: the one table of what each code means to the proxy.

Z.AI answers several different conditions with the same HTTP status and tells them apart by a
business code in the body (`classify` finds it). Every decision the proxy takes on such an
answer reads the code's row here, and nowhere else:

- `cls`: what the answer is counted as (the `class` label of `zai_proxy_upstream_429_total`,
  the `x-zai-error-class` header, the `upstream_429_<class>` log outcome);
- `learns`: which controller learns from it - the rate controller (`rate`), the concurrency
  controller (`concurrency`), the congestion backoff (`congestion`), or none (None);
- `retry`: the `reason` label a retry of it is counted under (a value of
  `relay.retry.RetryReason`); None means it is never retried;
- `window`: the plan-quota window it says is spent, which the proxy then refuses locally until
  the window resets; None for answers that say nothing about the quota;
- `status`: the HTTP status a client gets when the proxy answers for this code itself.

A code not in the table gets the `UNKNOWN` row: retried carefully and taught to the rate
controller, as the safest reading of an unexplained throttle. Adding a code is adding a row;
a kind of answer no column describes yet (an account that must stop until an operator acts,
say) is one more column, read where that behaviour lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Learns = Literal["rate", "concurrency", "congestion"]
# The plan-quota windows Z.AI counts (the monitor's units 3 and 6) and its codes name as spent.
Window = Literal["five_hour", "weekly"]


class ThrottleClass(StrEnum):
    """Why Z.AI said 429; values are the `class` label of `zai_proxy_upstream_429_total`."""

    CONCURRENCY = "concurrency"
    FREQUENCY = "frequency"
    QUOTA_5H = "quota_5h"
    QUOTA_PERIOD = "quota_period"
    CONGESTION = "congestion"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ZaiCode:
    """One business code and everything the proxy does about it (see the module docstring)."""

    code: str | None  # as Z.AI writes it; None only for the row of codes not in the table
    cls: ThrottleClass
    learns: Learns | None
    retry: str | None
    window: Window | None = None
    status: int = 429

    @property
    def retryable(self) -> bool:
        """Whether an answer with this code is worth another attempt (with backoff)."""
        return self.retry is not None


TABLE: tuple[ZaiCode, ...] = (
    # Too many requests in flight: the concurrency ceiling was reached.
    ZaiCode("1302", ThrottleClass.CONCURRENCY, learns="concurrency", retry="429_concurrency"),
    # Request frequency too high: the rate ceiling was reached.
    ZaiCode("1303", ThrottleClass.FREQUENCY, learns="rate", retry="429_frequency"),
    ZaiCode("1305", ThrottleClass.FREQUENCY, learns="rate", retry="429_frequency"),
    # Plan quota spent: nothing to learn about load, nothing to gain by retrying before the reset.
    ZaiCode("1308", ThrottleClass.QUOTA_5H, learns=None, retry=None, window="five_hour"),
    ZaiCode("1310", ThrottleClass.QUOTA_PERIOD, learns=None, retry=None, window="weekly"),
    # The model is busy: it passed the account's limits, so it slows sends but lowers no ceiling.
    ZaiCode("1312", ThrottleClass.CONGESTION, learns="congestion", retry="429_congestion"),
)
UNKNOWN = ZaiCode(None, ThrottleClass.UNKNOWN, learns="rate", retry="429_unknown")

# Read by the lookups below on every call (not copied), so a row added here takes effect
# everywhere at once.
_BY_CODE: dict[str, ZaiCode] = {row.code: row for row in TABLE if row.code is not None}


def lookup(code: str | None) -> ZaiCode:
    """The row of `code` as found in an answer; `UNKNOWN` for None or a code not in the table."""
    if code is None:
        return UNKNOWN
    return _BY_CODE.get(code, UNKNOWN)


def of_class(cls: ThrottleClass) -> ZaiCode:
    """The first row counted as `cls` (for an answer known only by its class)."""
    return next((row for row in _BY_CODE.values() if row.cls is cls), UNKNOWN)


def window_of(code: str) -> Window | None:
    """The quota window `code` says is spent, or None."""
    return lookup(code).window


def window_code(window: Window) -> str:
    """The code Z.AI answers when `window` is spent (what a local refusal for it carries)."""
    for row in _BY_CODE.values():
        if row.window == window and row.code is not None:
            return row.code
    raise KeyError(f"no Z.AI code means the {window} window is spent")


def refusal_status(window: Window) -> int:
    """The HTTP status of the proxy's own refusal while `window` is spent."""
    return lookup(window_code(window)).status
