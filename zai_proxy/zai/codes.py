"""Z.AI business codes: the one table of what each code means to the proxy.

Z.AI answers several different conditions with the same HTTP status and tells them apart by a
business code in the body (`classify` finds it). Every decision the proxy takes on such an
answer reads the code's row here, and nowhere else:

- `cls`: what the answer is counted as (the `class` label of `zai_proxy_upstream_429_total`
  and `zai_proxy_upstream_business_errors_total`, the `x-zai-error-class` header, the
  `upstream_429_<class>` / `upstream_error_<class>` log outcome);
- `learns`: which controller learns from it - the rate controller (`rate`), the concurrency
  controller (`concurrency`), the congestion backoff (`congestion`), or none (None);
- `retry`: the `reason` label a retry of it is counted under (a value of
  `relay.retry.RetryReason`); None means it is never retried;
- `window`: the plan-quota window it says is spent, which the proxy then refuses locally until
  the window resets; None for answers that say nothing about the quota;
- `stop`: the account itself is stopped (plan expired, no subscription, fair-usage restriction,
  no balance) until someone acts: the proxy refuses locally and lets one probe through now and
  then to notice when it is lifted;
- `status`: the HTTP status a client gets for this code (the proxy's own refusal, and the error
  it answers in place of the upstream's);
- `cause`: what the code means, in words a client's error message can carry;
- `prompt_sensitive`: the code is known to come back again and again for one particular request
  body (the prompt, not the account's load): a repeat of it for a body that drew it before is
  read by the `OVERLOADED_PROMPT` row instead (the relay remembers the bodies);
- `max_retries`: at most this many retries, within one request, of answers carrying the code
  (None: as many as the retry policy allows).

The carrier does not matter: a code is read by its row whether it came in a 429, in another
4xx, in the error object of a 200 body or in an error event before a stream's first content.

A code not in the table gets the `UNKNOWN` row: retried carefully and taught to the rate
controller, as the safest reading of an unexplained throttle. Adding a code is adding a row;
a kind of answer no column describes yet is one more column, read where that behaviour lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Learns = Literal["rate", "concurrency", "congestion"]
# The plan-quota windows Z.AI's codes name as spent: the monitor's units 3 and 6, and the daily
# call limit (no monitor entry; it resets at midnight Beijing time).
Window = Literal["five_hour", "weekly", "daily"]


class ThrottleClass(StrEnum):
    """Why Z.AI refused; values are the `class` label of `zai_proxy_upstream_429_total` and of
    the business-error and stream-error counters."""

    CONCURRENCY = "concurrency"
    FREQUENCY = "frequency"
    QUOTA_5H = "quota_5h"
    QUOTA_PERIOD = "quota_period"
    CONGESTION = "congestion"
    QUOTA_DAILY = "quota_daily"
    PLAN_EXPIRED = "plan_expired"
    NO_SUBSCRIPTION = "no_subscription"
    FAIR_USE = "fair_use"
    NO_BALANCE = "no_balance"
    # A 1305 that keeps coming back for one request body: about the prompt, not the account.
    OVERLOADED_PROMPT = "overloaded_prompt"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ZaiCode:
    """One business code and everything the proxy does about it (see the module docstring)."""

    code: str | None  # as Z.AI writes it; None for the rows no code is written in
    cls: ThrottleClass
    learns: Learns | None
    retry: str | None
    window: Window | None = None
    stop: bool = False
    status: int = 429
    cause: str = ""
    prompt_sensitive: bool = False
    max_retries: int | None = None

    @property
    def retryable(self) -> bool:
        """Whether an answer with this code is worth another attempt (with backoff)."""
        return self.retry is not None


TABLE: tuple[ZaiCode, ...] = (
    # Too many requests in flight: the concurrency ceiling was reached.
    ZaiCode("1302", ThrottleClass.CONCURRENCY, learns="concurrency", retry="429_concurrency",
            cause="too many concurrent requests"),
    # Request frequency too high: the rate ceiling was reached.
    ZaiCode("1303", ThrottleClass.FREQUENCY, learns="rate", retry="429_frequency",
            cause="request frequency too high"),
    # Also seen repeating for one particular prompt, whatever the rate: see OVERLOADED_PROMPT.
    ZaiCode("1305", ThrottleClass.FREQUENCY, learns="rate", retry="429_frequency",
            cause="the platform is overloaded", prompt_sensitive=True),
    # Plan quota spent: nothing to learn about load, nothing to gain by retrying before the reset.
    ZaiCode("1308", ThrottleClass.QUOTA_5H, learns=None, retry=None, window="five_hour",
            cause="the plan's five-hour quota is spent"),
    ZaiCode("1310", ThrottleClass.QUOTA_PERIOD, learns=None, retry=None, window="weekly",
            cause="the plan's weekly/monthly quota is spent"),
    ZaiCode("1304", ThrottleClass.QUOTA_DAILY, learns=None, retry=None, window="daily",
            cause="the account's daily call limit is reached"),
    # The model is busy: it passed the account's limits, so it slows sends but lowers no ceiling.
    ZaiCode("1312", ThrottleClass.CONGESTION, learns="congestion", retry="429_congestion",
            cause="the model is congested"),
    # Account states, not load: nothing retries into them (retries into a fair-usage restriction
    # are reported to count against the account); an operator has to act.
    ZaiCode("1309", ThrottleClass.PLAN_EXPIRED, learns=None, retry=None, stop=True, status=403,
            cause="the account's plan has expired"),
    ZaiCode("1311", ThrottleClass.NO_SUBSCRIPTION, learns=None, retry=None, stop=True,
            status=403, cause="the account has no active subscription for this model"),
    ZaiCode("1313", ThrottleClass.FAIR_USE, learns=None, retry=None, stop=True,
            cause="the account is restricted by Z.AI's fair-usage policy"),
    # Often a Coding Plan key sent to the pay-as-you-go base, or the reverse.
    ZaiCode("1113", ThrottleClass.NO_BALANCE, learns=None, retry=None, stop=True,
            cause="the account has no balance or resource package for this base"),
)
UNKNOWN = ZaiCode(None, ThrottleClass.UNKNOWN, learns="rate", retry="429_unknown",
                  cause="an unexplained throttle")
# A prompt-sensitive code again for a request body that drew it before: evidence about that
# prompt, not about the account's rate, so no controller learns from it; retried twice at most
# (counting the retry of the first answer), then relayed.
OVERLOADED_PROMPT = ZaiCode(None, ThrottleClass.OVERLOADED_PROMPT, learns=None,
                            retry="429_overloaded_prompt", max_retries=2,
                            cause="the platform keeps answering this prompt as overloaded")
# Rows no code is written in: an answer reaches them only by its class.
_DERIVED = (OVERLOADED_PROMPT,)

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
    return next((row for row in (*_BY_CODE.values(), *_DERIVED) if row.cls is cls), UNKNOWN)


def known(code: str | None) -> bool:
    """Whether `code` has a row of its own (an answer that is not a 429 is read by its code only
    then: a 400's parameter-error code, say, is no throttle)."""
    return code is not None and code in _BY_CODE


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
