"""The account stopped by Z.AI, and the probes that notice when it is lifted: pure.

Some answers are not about load or a quota window but about the account itself: its plan
expired, it has no subscription for the model, a fair-usage restriction, no balance (the rows
with `stop` in `zai.codes`). Nothing the proxy does makes them pass, and retrying into them is
reported to count against the account; an operator has to act. So while one is in force the
proxy answers every request itself (`check` gives the `Stopped` to refuse with) and lets one
request through (`check` gives `PROBE`) every `probe_seconds`, to notice the lift:

- a probe answered OK (`probe_ended(ok=True)`) lifts the stop at once;
- an answer with a stop code again (`on_stop`, for the probe or any request still in flight)
  keeps it and restarts the probe timer;
- a probe that ended any other way (another error, refused by the proxy, the client left)
  leaves the stop as it is; the next probe goes when the timer says;
- while a probe is in flight no second one goes.

A stop seen by another replica (`adopt`) stops this one too, unless this replica lifted the
stop after the other saw it. A 1113 (no balance) before any request of this account succeeded
since start is most often a key sent to the other kind's base: `hint` then says which mismatch
it looks like, from the key kind the configured base implies.

Every method takes `now` (epoch seconds); nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from zai_proxy.zai.codes import ThrottleClass, ZaiCode

# Z.AI's own message is carried in the client's error and /health: bounded.
MESSAGE_MAX = 300
PROBE: Literal["probe"] = "probe"
Source = Literal["upstream", "shared"]

_HINTS = {
    "standard": "a Coding Plan key on the pay-as-you-go base? (the OpenAI base is /api/paas/v4)",
    "coding": "a pay-as-you-go key on the Coding Plan base? (the OpenAI base is "
              "/api/coding/paas/v4)",
}


def mismatch_hint(key_kind: str | None) -> str | None:
    """What a no-balance answer before any success suggests, for a key spent at a base of
    `key_kind` (`Account.key_kind`); None when the base tells no kind."""
    return _HINTS.get(key_kind or "")


@dataclass(frozen=True, slots=True)
class Stopped:
    """The stop in force: the code's row as the client is told it, Z.AI's own message (scrubbed
    before it got here), since when (epoch s), and who saw it first."""

    code: str
    cls: str
    status: int
    cause: str
    message: str | None
    since: float
    source: Source


class AccountStop:
    """Whether the account is stopped, and when the next probe goes; see the module docstring.

    `stopped` is read on every request: None while the account is fine (the usual case)."""

    def __init__(self, probe_seconds: float, *, key_kind: str | None = None) -> None:
        self.probe_seconds = probe_seconds
        self.key_kind = key_kind
        self.stopped: Stopped | None = None
        self.next_probe = 0.0
        self.probing = False  # a probe is in flight
        self.lifted_at = 0.0
        self.succeeded = False  # a request of this account succeeded since start
        self.hint: str | None = None

    def on_stop(self, row: ZaiCode, message: str | None, now: float) -> bool:
        """An upstream answer with a stop code (`row.stop`): the stop starts (True) or goes on
        (False); either way the next probe is an interval from now."""
        assert row.stop and row.code is not None
        current = self.stopped
        if current is None or current.code != row.code:
            text = message.strip()[:MESSAGE_MAX] if message and message.strip() else None
            self.stopped = Stopped(row.code, row.cls.value, row.status, row.cause, text,
                                   now if current is None else current.since, "upstream")
        self.next_probe = now + self.probe_seconds
        if (row.cls is ThrottleClass.NO_BALANCE and not self.succeeded
                and self.hint is None):
            self.hint = mismatch_hint(self.key_kind)
        return current is None

    def check(self, now: float) -> Stopped | Literal["probe"] | None:
        """None while not stopped; `PROBE` when this request is the one to go upstream (the
        caller must end it with `probe_ended` or `probe_elsewhere`); else the stop to refuse
        with."""
        stopped = self.stopped
        if stopped is None:
            return None
        if not self.probing and now >= self.next_probe:
            self.probing = True
            self.next_probe = now + self.probe_seconds
            return PROBE
        return stopped

    def probe_ended(self, now: float, *, ok: bool) -> bool:
        """The probe in flight ended: answered OK (lifts the stop: True) or not."""
        self.probing = False
        if ok and self.stopped is not None:
            self.lift(now)
            return True
        return False

    def probe_elsewhere(self, now: float) -> None:
        """Another replica sends this interval's probe: this one waits for the next."""
        self.probing = False
        self.next_probe = now + self.probe_seconds

    def answered_ok(self) -> None:
        """A request of this account succeeded (a later no-balance answer is no mismatch)."""
        self.succeeded = True

    def lift(self, now: float) -> None:
        """The stop is over (a probe here or at another replica was answered OK)."""
        self.stopped = None
        self.probing = False
        self.hint = None
        self.lifted_at = now

    def adopt(self, stopped: Stopped, now: float) -> bool:
        """A stop another replica saw: in force here too (True), unless this replica is stopped
        already or lifted the stop after the other saw it began."""
        if self.stopped is not None or stopped.since <= self.lifted_at:
            return False
        self.stopped = replace(stopped, source="shared")
        self.next_probe = now + self.probe_seconds
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the next probe may go (what a refused client is told to wait)."""
        return max(0.0, self.next_probe - now)
