"""The limiter's learned state as one document: what it holds, what makes it valid, its encodings.

`LearnedState` is what a proxy has learned about its Z.AI account's limits: the rate ceiling,
the lowest rate seen throttled (`rate_upper`), the rate to resume at (`rate_hold`), the clean
floor, the current rate, the concurrency ceiling, the account and when it was written, plus the
few fields one encoding carries (the Redis sequence and writer, the admin export's variant and
replica count). Every value is checked when the state is built (`__post_init__`): rates and the
concurrency ceiling finite and positive, times finite, `seq` a whole number >= 0. `validate`
adds what depends on the reader: the account (a state naming another account is foreign) and
the age (older than the reader's max age is too old). Both raise `InvalidState` (`ForeignState`
for the account, `StaleState` for the age) whose `field` names the offending key as the
encoding spells it.

Three encodings, each a contract another version reads (blue-green: the old variant must read
what the new one writes and the other way round), each with its `to_*` and `from_*` here:
- the state file (`to_file`, `from_file`): `ceiling`, `upper`, `hold`, `concurrency_ceiling`,
  `ts`, `account`; the Go proxy's `{"ceiling", "hold", "ts"}` with an RFC 3339 or epoch `ts`
  is read too;
- the shared Redis document (`to_redis`, `from_redis`): `seq`, `rate`, `ceiling` (the upper
  bound), `floor`, `hold`, `by`, `at`; the account is the key's namespace;
- the admin export (`to_admin`, `from_admin`, `GET`/`PUT /admin/limiter-state`), account-level
  rates under `rate`, the concurrency ceiling under `concurrency`.
A reader either refuses a whole document with a bad value (`from_admin`: the admin API answers
400 naming the key) or drops the bad values and keeps the good ones (`from_file`, `from_redis`:
`ignored` is told each one, since a restarting proxy must take what it can); the checks are the
same ones either way. The keys differ between encodings (`ceiling` is the upper bound in Redis,
`floor` the rate to resume at in the admin export) because each is read by released versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

FILE_VERSION = 2
ADMIN_VERSION = 1

# Told each value a lenient reader drops: why (its `field` the key as encoded), and the value.
Ignored = Callable[["InvalidState", object], None]


class InvalidState(ValueError):
    """A learned-state document that must not be adopted; `field` is the key at fault."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.field = reason, field


class ForeignState(InvalidState):
    """A learned state of another Z.AI account (another key or upstream base)."""


class StaleState(InvalidState):
    """A learned state older than the reader's max age: too old to describe the account now."""


def _positive(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value) or value <= 0:
        raise InvalidState(f"{field} must be a finite positive number", field)
    return float(value)


def _concurrency(value: object, field: str) -> int:
    return max(1, int(_positive(value, field)))


def _time(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(value):
        raise InvalidState(f"{field} must be a finite time", field)
    return float(value)


def _age(value: object, field: str) -> float:
    seconds = _time(value, field)
    if seconds < 0:
        raise InvalidState(f"{field} must not be negative", field)
    return seconds


def _seq(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidState(f"{field} must be a whole number >= 0", field)
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidState(f"{field} must be a non-empty string", field)
    return value


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidState(f"{field} must be true or false", field)
    return value


Check = Callable[[object, str], Any]
# Each attribute's one check; None is always "not known" and passes.
_CHECKS: dict[str, Check] = {
    "rate_ceiling": _positive, "rate_hold": _positive, "concurrency_ceiling": _concurrency,
    "ts": _time, "account": _text, "rate_upper": _positive, "upper_known": _flag,
    "rate_floor": _positive, "rate_current": _positive, "seq": _seq, "by": _text,
    "variant": _text, "shared": _flag, "replicas": _concurrency, "learned_seconds_ago": _age,
}


def _decode(keys: Mapping[str, tuple[str, object]], *, ignored: Ignored | None) -> dict[str, Any]:
    """Attribute values from `{attribute: (key as encoded, raw value)}`: each one checked; a bad
    one raises (`ignored` None) or is reported to `ignored` and left out."""
    out: dict[str, Any] = {}
    for attr, (key, raw) in keys.items():
        if raw is None:
            continue
        try:
            out[attr] = _CHECKS[attr](raw, key)
        except InvalidState as bad:
            if ignored is None:
                raise
            ignored(bad, raw)
    return out


@dataclass(frozen=True)
class LearnedState:
    """Learned limits, account-level req/s (the concurrency ceiling is per replica).

    `ts`: epoch second the state was written (saved, published, exported); None when unknown.
    `upper_known` is False for a document that does not say whether a rate was ever throttled
    (older files, the Go proxy's, an admin document without `upper`): then `rate_ceiling` is
    the best guess of the upper bound.
    """

    rate_ceiling: float | None
    rate_hold: float | None  # the rate to resume at: the clean floor, else the backed-off rate
    concurrency_ceiling: int | None
    ts: float | None
    account: str | None = None
    rate_upper: float | None = None  # the lowest rate seen throttled (None: never)
    upper_known: bool = True
    rate_floor: float | None = None  # the highest rate proven clean
    rate_current: float | None = None
    seq: int | None = None  # Redis: the publication's order
    by: str | None = None  # Redis: the publishing replica
    variant: str | None = None  # admin: the exporting variant
    shared: bool | None = None  # admin: whether the exporter shares state through Redis
    replicas: int | None = None  # admin: how many replicas share the account's rate
    learned_seconds_ago: float | None = None  # admin: age of the rate ceiling at export

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                _CHECKS[f.name](value, f.name)

    # -- what the reader decides -----------------------------------------------------------

    def validate(self, *, account: str | None, now: float | None = None,
                 max_age: float | None = None, time_field: str = "ts") -> LearnedState:
        """This state, if `account` may adopt it and it is not older than `max_age` at `now`.

        A state naming no account passes (the reader knows whose it is by where it read it);
        one naming another raises ForeignState; one written more than `max_age` seconds before
        `now` raises StaleState (`time_field`: the key of the time as the reader's encoding
        spells it). A state of unknown time passes: a reader that needs one checks `ts`.
        """
        if account is not None and self.account is not None and self.account != account:
            raise ForeignState("it belongs to another Z.AI account", "account")
        if now is not None and max_age is not None and self.ts is not None and \
                now - self.ts > max_age:
            raise StaleState(f"{time_field} is {now - self.ts:.0f} s old (max {max_age:.0f} s)",
                             time_field)
        return self

    @property
    def resume_upper(self) -> float | None:
        """The upper bound to restore: `rate_upper` when the document knows it, else the best
        guess, the ceiling."""
        return self.rate_upper if self.upper_known else self.rate_ceiling

    @property
    def learned(self) -> bool:
        """Whether the state holds any learned ceiling worth adopting."""
        return self.rate_ceiling is not None or self.concurrency_ceiling is not None

    # -- the state file --------------------------------------------------------------------

    def to_file(self) -> dict[str, object]:
        """The state file's JSON; `ceiling` and `hold` keep it readable by the Go proxy."""
        ts = 0.0 if self.ts is None else self.ts
        return {
            "version": FILE_VERSION,
            "account": self.account,
            "ceiling": self.rate_ceiling,
            "upper": self.rate_upper,
            "hold": self.rate_hold,
            "concurrency_ceiling": self.concurrency_ceiling,
            "ts": ts,
            "saved_at": datetime.fromtimestamp(ts).astimezone().isoformat(),
        }

    @classmethod
    def from_file(cls, doc: Mapping[str, Any], *, ignored: Ignored) -> LearnedState:
        """A state file's state (ours or the Go proxy's); bad values dropped (told to
        `ignored`). InvalidState when it has no valid `ts` or no ceiling at all."""
        ts = file_timestamp(doc.get("ts"))
        if ts is None:
            raise InvalidState("no valid ts", "ts")
        # A bad account is not dropped: a file that names someone else is never ours.
        account = _decode({"account": ("account", doc.get("account"))}, ignored=None)
        values = _decode({
            "rate_ceiling": ("ceiling", doc.get("rate_ceiling", doc.get("ceiling"))),
            "rate_upper": ("upper", doc.get("upper")),
            "rate_hold": ("hold", doc.get("rate_hold", doc.get("hold"))),
            "concurrency_ceiling": ("concurrency_ceiling", doc.get("concurrency_ceiling")),
        }, ignored=ignored)
        state = cls(values.get("rate_ceiling"), values.get("rate_hold"),
                    values.get("concurrency_ceiling"), ts, account.get("account"),
                    values.get("rate_upper"), "upper" in doc)
        if not state.learned:
            raise InvalidState("no ceiling in it", "ceiling")
        return state

    # -- the shared Redis document ---------------------------------------------------------

    def to_redis(self, *, known_only: bool = False) -> dict[str, Any]:
        """The account's published state in Redis (`ceiling` there is the upper bound); with
        `known_only` without the keys whose value is unknown (null)."""
        doc = {"seq": self.seq, "rate": self.rate_current, "ceiling": self.rate_upper,
               "floor": self.rate_floor, "hold": self.rate_hold, "by": self.by, "at": self.ts}
        return {k: v for k, v in doc.items() if v is not None} if known_only else doc

    @classmethod
    def from_redis(cls, doc: Mapping[str, Any], *, ignored: Ignored) -> LearnedState:
        """A published state's usable values; each bad one told to `ignored` (as `state.<key>`)
        and left out, so nothing downstream has to doubt them."""
        values = _decode({attr: (f"state.{key}", doc.get(key)) for attr, key in _REDIS.items()},
                         ignored=ignored)
        upper, floor = values.get("rate_upper"), values.get("rate_floor")
        return cls(upper if upper is not None else floor, values.get("rate_hold"), None,
                   values.get("ts"), rate_upper=upper, rate_floor=floor,
                   rate_current=values.get("rate_current"), seq=values.get("seq"),
                   by=values.get("by"))

    # -- the admin export ------------------------------------------------------------------

    def to_admin(self) -> dict[str, Any]:
        """`GET /admin/limiter-state`: rates for the whole account, `floor` the rate to resume
        at, the concurrency ceiling per replica."""
        return {
            "version": ADMIN_VERSION,
            "account": self.account,
            "variant": self.variant,
            "shared": self.shared,
            "replicas": self.replicas,
            "exported_at": self.ts,
            "rate": {
                "ceiling": self.rate_ceiling,
                "floor": self.rate_hold,
                "upper": self.rate_upper,
                "current": self.rate_current,
                "learned_seconds_ago": self.learned_seconds_ago,
            },
            "concurrency": {"ceiling": self.concurrency_ceiling},
        }

    @classmethod
    def from_admin(cls, doc: object) -> LearnedState:
        """A `PUT /admin/limiter-state` document, refused whole (InvalidState naming the key,
        e.g. `rate.ceiling`) if any value is bad or it names no account."""
        if not isinstance(doc, dict):
            raise InvalidState("not a JSON object")
        if not isinstance(doc.get("account"), str):
            raise InvalidState("it names no account", "account")
        rate, conc = (part if isinstance(part := doc.get(key), dict) else {}
                      for key in ("rate", "concurrency"))
        values = _decode({
            "account": ("account", doc.get("account")),
            "variant": ("variant", doc.get("variant")),
            "shared": ("shared", doc.get("shared")),
            "replicas": ("replicas", doc.get("replicas")),
            "ts": ("exported_at", doc.get("exported_at")),
            "rate_ceiling": ("rate.ceiling", rate.get("ceiling")),
            "rate_hold": ("rate.floor", rate.get("floor")),
            "rate_upper": ("rate.upper", rate.get("upper")),
            "rate_current": ("rate.current", rate.get("current")),
            "learned_seconds_ago": ("rate.learned_seconds_ago", rate.get("learned_seconds_ago")),
            "concurrency_ceiling": ("concurrency.ceiling", conc.get("ceiling")),
        }, ignored=None)
        # Our own document says whether an upper bound is known (null: never throttled).
        return cls(values.pop("rate_ceiling", None), values.pop("rate_hold", None),
                   values.pop("concurrency_ceiling", None), values.pop("ts", None), **values,
                   upper_known="upper" in rate)


def clean_state(doc: Mapping[str, Any], ignored: Callable[[str, object], None]) -> dict[str, Any]:
    """The usable keys of a published Redis state (`LearnedState.from_redis`), as published;
    `ignored` is told the key (`state.<key>`) and value of each one dropped."""
    state = LearnedState.from_redis(doc, ignored=lambda bad, value: ignored(str(bad.field), value))
    return state.to_redis(known_only=True)


_REDIS = {"seq": "seq", "rate_current": "rate", "rate_upper": "ceiling", "rate_floor": "floor",
          "rate_hold": "hold", "by": "by", "ts": "at"}


def file_timestamp(value: object) -> float | None:
    """A state file's `ts`: epoch seconds or milliseconds, or RFC 3339 text (as Go writes it,
    with up to nanoseconds); None when it is none of these or not after the epoch."""
    if isinstance(value, str):
        text = value.strip()
        # Python's fromisoformat takes at most microseconds.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = head + "." + rest[: min(digits, 6)] + rest[digits:]
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    try:
        number = _positive(value, "ts")
    except InvalidState:
        return None
    return number / 1000.0 if number > 1e11 else number
