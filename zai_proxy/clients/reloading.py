"""A configuration file the running proxy re-reads when it changes (the key file, the clients
file): one mechanism, so both settle, report and refuse the same way.

- The file is looked at when a request comes (`poll`), at most once every `CHECK_INTERVAL`: one
  `stat` of the file and of the files it names (a client's `keys_file`), which together make its
  signature (mtime, size, inode, device of each).
- A change is applied once the file has stopped changing: the signature must be the same at two
  looks `SETTLE_SECONDS` apart. A non-atomic rewrite seen half-written is therefore not applied
  (until then the version in force stays), and a valid client is not refused because its line
  was not written yet. Written atomically (a rename, as a Kubernetes Secret volume does), a
  change takes effect within about two seconds.
- The file's `scan` says what is in force and what is wrong: what is valid is applied, what is
  not is skipped and reported, so a revocation is never ignored because the same edit broke
  something else. A file that cannot be read vouches for nothing (`empty`).
- `FileStatus` is the file's reload state (/health and the metrics). Each distinct problem is
  logged once, naming the variable, the path and lines or clients, never a key.

At startup the owner reads the file strictly (`load`: an invalid file is a config error).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("zai_proxy.auth")
CHECK_INTERVAL = 1.0
# A changed file is applied once its signature was the same at two looks this far apart.
SETTLE_SECONDS = 1.0

T = TypeVar("T")
Signature = tuple[tuple[int, ...] | None, ...]


@dataclass
class FileStatus:
    """Where a file's reloads stand (for /health and the metrics).

    `loaded_at`: wall time the version in force was applied; `count`: what of it is in force
    (keys, clients: `noun` names it on /health); `last_error`: what is wrong with it (None when
    clean), since `error_since` (wall time); `errors`: reloads applied with a problem (or failed)
    since startup, a counter."""

    path: str
    noun: str
    loaded_at: float
    count: int
    last_error: str | None = None
    error_since: float | None = None
    errors: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "loaded_at": self.loaded_at, self.noun: self.count,
                "last_error": self.last_error, "error_since": self.error_since}


@dataclass(frozen=True)
class Scan(Generic[T]):
    """A file's contents as read: `value` (what is valid), `problems` (what was skipped, and
    why), `also` (other files `value` was read from: their changes are changes of this file)."""

    value: T
    problems: tuple[str, ...] = ()
    also: tuple[str, ...] = field(default=())


class ReloadingFile(Generic[T]):
    """The file at `path`, named `variable` in messages; `value` is the version in force.

    `load(path)` reads it strictly at startup (raises OSError or ValueError); `scan(path, text)`
    reads a changed version leniently; `empty` is in force while the file cannot be read, and
    `nothing` ends the message that says so ("no key from it is in force")."""

    def __init__(self, path: str, *, variable: str, noun: str, nothing: str, valid: str,
                 load: Callable[[str], Scan[T]], scan: Callable[[str, str], Scan[T]],
                 empty: T, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.path = path
        self.variable = variable
        self._nothing = nothing
        self._valid = valid
        self._scan = scan
        self._empty = empty
        self._clock = clock
        self._wall = wall
        main = _stat(path)
        first = load(path)  # at startup a bad file is a config error
        self._also = first.also
        self._signature: Signature = (main, *map(_stat, first.also))
        # A changed signature seen once, and when: applied if still the same SETTLE_SECONDS on.
        self._seen: tuple[Signature, float] | None = None
        self._next_check = clock() + CHECK_INTERVAL
        self.value: T = first.value
        self.problems: tuple[str, ...] = first.problems
        self.status = FileStatus(path, noun, wall(), 0)

    def poll(self) -> bool:
        """Look at the file if it is time to; True when a new version became `value` (its
        owner then installs it and calls `report`)."""
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_INTERVAL
        signature = (_stat(self.path), *map(_stat, self._also))
        if signature == self._signature:
            self._seen = None
            return False
        seen = self._seen
        if seen is None or seen[0] != signature:
            self._seen = (signature, now)  # changed: wait until it stops changing
            return False
        if now - seen[1] < SETTLE_SECONDS:
            return False
        self._seen = None
        try:
            text = Path(self.path).read_text()
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            # Missing or unreadable: the file no longer vouches for anything.
            error = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            scan: Scan[T] = Scan(self._empty, (f"cannot be read ({error}): {self._nothing}",))
        else:
            scan = self._scan(self.path, text)
        self._also = scan.also
        # The files it names are stat'ed after the read: a change between the two is seen at
        # the next change of any of them.
        self._signature = (signature[0], *map(_stat, scan.also))
        self.value, self.problems = scan.value, scan.problems
        self.status.loaded_at = self._wall()
        return True

    def report(self, count: int, extra: tuple[str, ...] = (), *, reread: bool = True) -> None:
        """Show the version in force on the status: `count` of it in force, its own problems
        and `extra` ones its owner found (a key also configured elsewhere). `reread`: this file
        was just read again (a problem found then counts as one more error)."""
        status = self.status
        status.count = count
        problems = (*self.problems, *extra)
        error = "; ".join(problems) if problems else None
        if error is not None:
            if reread or error != status.last_error:
                status.errors += 1
            if error != status.last_error:
                status.error_since = self._wall()
                log.error("%s %s: %s; %s", self.variable, self.path, error, self._valid)
        else:
            status.error_since = None
        status.last_error = error


def _stat(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)
