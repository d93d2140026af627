"""Persist the learned ceilings so a restart does not re-learn them with a burst of 429s.

The state belongs to the Z.AI account: the file carries the account hash (never the key) and a
proxy never restores another account's file. By default it lives under the user's state
directory, one file per account (`state_path`). Rates in it are account-level req/s; `hold` is
the clean floor (the rate proven without 429s).

JSON written atomically (temp file in the same directory, fsync, os.replace, directory fsync).
Reading is forgiving: a missing, unreadable, malformed, too old or foreign file gives None and a
logged reason, never an exception. Values are clamped to the configured bounds on restore. The
original Go proxy's `{"ceiling", "hold", "ts"}` (ts as RFC 3339 or epoch, no account) is read
when the path was configured explicitly, and our file keeps `ceiling` / `hold` so the Go proxy
could read ours.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger("zai_proxy.limiter_state")
VERSION = 2
AUTO = "auto"


def state_path(setting: str, account: str,
               environ: Mapping[str, str] | None = None) -> Path | None:
    """Where RATE_LIMIT_STATE_FILE says the account's state lives (None: persistence off)."""
    if not setting:
        return None
    if setting == AUTO:
        env = os.environ if environ is None else environ
        base = env.get("XDG_STATE_HOME", "")
        root = Path(base) if base and Path(base).is_absolute() else \
            Path(env.get("HOME") or Path.home()) / ".local" / "state"
        return root / "zai-proxy" / f"limiter-{account}.json"
    return Path(setting.replace("{account}", account))


@dataclass(frozen=True)
class LimiterState:
    """Learned ceilings (account-level req/s); `ts` is the epoch second they were saved."""

    rate_ceiling: float | None
    rate_hold: float | None  # the clean floor
    concurrency_ceiling: int | None
    ts: float
    account: str | None = None
    rate_upper: float | None = None  # the lowest rate seen throttled (None: never)
    upper_known: bool = True  # False for files that do not say (older versions, Go)

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "account": self.account,
            "ceiling": self.rate_ceiling,
            "upper": self.rate_upper,
            "hold": self.rate_hold,
            "concurrency_ceiling": self.concurrency_ceiling,
            "ts": self.ts,
            "saved_at": datetime.fromtimestamp(self.ts).astimezone().isoformat(),
        }


def save_state(path: str | os.PathLike[str], state: LimiterState) -> None:
    """Write `state` atomically; raises OSError on failure (the caller logs and carries on)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state.to_json(), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _timestamp(value: object) -> float | None:
    if isinstance(value, str):
        text = value.strip()
        # Go marshals time.Time as RFC 3339 with up to nanoseconds; Python takes microseconds.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = head + "." + rest[: min(digits, 6)] + rest[digits:]
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    number = _number(value)
    if number is None:
        return None
    return number / 1000.0 if number > 1e11 else number


def load_state(
    path: str | os.PathLike[str],
    *,
    now: float,
    max_age: float,
    rate_min: float,
    rate_max: float,
    max_workers: int,
    account: str | None = None,
    legacy: bool = True,
) -> LimiterState | None:
    """The saved state if it is readable, younger than `max_age` seconds and `account`'s,
    clamped. A file without an account (the Go proxy's, ours before v2) is read only when
    `legacy` (the path was configured explicitly)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        log.info("limiter state %s: none saved yet", path)
        return None
    except (OSError, ValueError) as exc:
        log.warning("limiter state %s ignored: unreadable (%s)", path, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("limiter state %s ignored: not a JSON object", path)
        return None
    owner = doc.get("account")
    if account is not None and owner is not None and owner != account:
        log.warning("limiter state %s ignored: it belongs to another Z.AI account", path)
        return None
    if account is not None and owner is None:
        if not legacy:
            log.warning("limiter state %s ignored: it names no account", path)
            return None
        log.warning("limiter state %s names no account (an older or the Go proxy's file): "
                    "adopted because RATE_LIMIT_STATE_FILE points at it", path)
    ts = _timestamp(doc.get("ts"))
    if ts is None:
        log.warning("limiter state %s ignored: no valid ts", path)
        return None
    age = now - ts
    if age > max_age:
        log.info("limiter state %s ignored: %.0f s old (max %.0f s)", path, age, max_age)
        return None
    ceiling = _number(doc.get("rate_ceiling", doc.get("ceiling")))
    upper_known = "upper" in doc
    upper = _number(doc.get("upper"))
    hold = _number(doc.get("rate_hold", doc.get("hold")))
    concurrency = _number(doc.get("concurrency_ceiling"))
    if ceiling is None and concurrency is None:
        log.warning("limiter state %s ignored: no ceiling in it", path)
        return None
    if ceiling is not None:
        ceiling = min(rate_max, max(rate_min, ceiling))
    if hold is not None:
        hold = min(rate_max, max(rate_min, hold))
    if upper is not None:
        upper = min(rate_max, max(rate_min, upper))
    conc = None if concurrency is None else min(max_workers, max(1, int(concurrency)))
    return LimiterState(ceiling, hold, conc, ts, owner if isinstance(owner, str) else None,
                        upper, upper_known)
