"""Persist the learned ceilings so a restart does not re-learn them with a burst of 429s.

The state belongs to the Z.AI account: the file carries the account hash (never the key) and a
proxy never restores another account's file. By default it lives under the user's state
directory, one file per account (`state_path`). Rates in it are account-level req/s; `hold` is
the clean floor (the rate proven without 429s).

JSON written atomically (temp file in the same directory, fsync, os.replace, directory fsync).
Reading is forgiving: a missing, unreadable, malformed, too old or foreign file gives None and a
logged reason, never an exception. Values are clamped to the configured bounds on restore. The
file's JSON and its validation are `LearnedState.to_file` / `from_file`
(zai_proxy/limiter/learned.py); the original Go proxy's file, which names no account, is read
when the path was configured explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from zai_proxy.limiter.learned import ForeignState, InvalidState, LearnedState, StaleState

log = logging.getLogger("zai_proxy.limiter_state")
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


def save_state(path: str | os.PathLike[str], state: LearnedState) -> None:
    """Write `state` atomically; raises OSError on failure (the caller logs and carries on)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state.to_file(), out)
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
) -> LearnedState | None:
    """The saved state if it is readable, valid (`LearnedState.from_file`), younger than
    `max_age` seconds and `account`'s, clamped. A file without an account (the Go proxy's, ours
    before v2) is read only when `legacy` (the path was configured explicitly)."""
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
    try:
        state = LearnedState.from_file(doc, ignored=lambda bad, value: log.warning(
            "limiter state %s: %.80r dropped: %s", path, value, bad))
        state = state.validate(account=account, now=now, max_age=max_age)
    except ForeignState:
        log.warning("limiter state %s ignored: it belongs to another Z.AI account", path)
        return None
    except StaleState as stale:  # expected after a long stop: not worth a warning
        log.info("limiter state %s ignored: %s", path, stale)
        return None
    except InvalidState as invalid:
        log.warning("limiter state %s ignored: %s", path, invalid)
        return None
    if account is not None and state.account is None:
        if not legacy:
            log.warning("limiter state %s ignored: it names no account", path)
            return None
        log.warning("limiter state %s names no account (an older or the Go proxy's file): "
                    "adopted because RATE_LIMIT_STATE_FILE points at it", path)

    def clamp(rate: float | None) -> float | None:
        return None if rate is None else min(rate_max, max(rate_min, rate))

    conc = state.concurrency_ceiling
    return replace(state, rate_ceiling=clamp(state.rate_ceiling), rate_hold=clamp(state.rate_hold),
                   rate_upper=clamp(state.rate_upper),
                   concurrency_ceiling=None if conc is None else min(max_workers, conc))
