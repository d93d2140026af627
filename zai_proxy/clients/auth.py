"""Client authentication: which configured key a request presents, compared in constant time.

Keys come from `PROXY_API_KEYS` (comma-separated) and `PROXY_API_KEYS_FILE` (one a line, `#`
comments). An entry is `name:key` or a bare `key`; the client a request is counted, logged and
queued as is the key's name, or for an unnamed key its fingerprint `key-<12 hex of sha256>`
(several keys may share a name: rotate a worker's key by adding the new one under its name).
The key file is re-read when it changes (checked at most once a second, on a request: one
`stat`), so keys are added, rotated and revoked without a restart. At startup the file must
parse whole (a bad line is a config error, exit 2). On a reload the file says which keys are in
force, and a revocation is never ignored:

- A change is applied once the file has stopped changing: its signature (mtime, size, inode)
  must be the same at two looks `SETTLE_SECONDS` apart. A non-atomic rewrite seen half-written
  is therefore not applied (until then the keys in force stay), and a valid client is not
  refused because its line was not written yet. Write the file atomically (a rename, as a
  Kubernetes Secret volume does) and a change takes effect within about two seconds.
- Every valid line is applied; an invalid line (a short key, whitespace inside) is skipped, and a
  key listed under two names is dropped from both (its identity is ambiguous). So removing a
  key takes effect even when the same edit adds a broken line; the broken line is reported.
- An empty or deleted file means no key from it is in force. A proxy started with keys never
  turns into an open proxy by a reload: with no key left every request is refused (401).
- Problems are logged once each, and shown on /health (`auth_key_file`: `last_error`,
  `error_since`, `loaded_at`, `keys`) and in the `zai_proxy_auth_key_file_*` metrics. Messages
  name line numbers, never a key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zai_proxy.core.errors import Unauthorized
from zai_proxy.wire.headers import RawHeaders

log = logging.getLogger("zai_proxy.auth")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_KEY_LENGTH = 8
CHECK_INTERVAL = 1.0
# A changed key file is applied once its signature was the same at two looks this far apart.
SETTLE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One configured key and the client name it stands for."""

    key: str = field(repr=False)
    name: str | None = None

    @property
    def label(self) -> str:
        """The client identity: the name, else the key's fingerprint."""
        return self.name or fingerprint(self.key)


def fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def parse_entry(text: str) -> KeyEntry:
    """`name:key` or `key`. Raises ValueError (never showing the key) when it is not valid."""
    text = text.strip()
    name, sep, key = text.partition(":")
    if not sep or not NAME.fullmatch(name):
        name, key = "", text  # no name: the whole entry is the key
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"every key needs {MIN_KEY_LENGTH}+ characters"
                         + (f" (the key named {name!r})" if name else ""))
    if any(c.isspace() for c in key):
        raise ValueError("a key must not contain whitespace"
                         + (f" (the key named {name!r})" if name else ""))
    return KeyEntry(key, name or None)


def parse_entries(items: Iterable[str]) -> tuple[KeyEntry, ...]:
    """Entries from list items; a key given twice under two names is an error."""
    entries = tuple(parse_entry(item) for item in items if item.strip())
    names: dict[str, str | None] = {}
    for entry in entries:
        if names.setdefault(entry.key, entry.name) != entry.name:
            raise ValueError("a key is listed twice under different names")
    return entries


def parse_key_file(text: str) -> tuple[KeyEntry, ...]:
    """A key file's entries: one a line, blank lines and `#` comments skipped."""
    lines = [line for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    entries = parse_entries(lines)
    if not entries:
        raise ValueError("holds no key (one per line expected)")
    return entries


def scan_key_file(text: str) -> tuple[tuple[KeyEntry, ...], list[str]]:
    """A reloaded key file's valid entries, and its problems (line numbers, never a key).

    Invalid lines are skipped; a key listed under two different names is dropped from both."""
    entries: list[tuple[int, KeyEntry]] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append((number, parse_entry(line)))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    names: dict[str, set[str | None]] = {}
    for _, entry in entries:
        names.setdefault(entry.key, set()).add(entry.name)
    ambiguous = [n for n, e in entries if len(names[e.key]) > 1]
    if ambiguous:
        problems.append("a key is listed under different names (lines "
                        + ", ".join(map(str, ambiguous)) + "): not in force")
    kept = tuple(e for _, e in entries if len(names[e.key]) == 1)
    return kept, problems


def read_key_file(path: str) -> tuple[KeyEntry, ...]:
    """The entries of the key file at `path`; OSError or ValueError when it is not usable."""
    return parse_key_file(Path(path).read_text())


def presented_key(headers: RawHeaders) -> str | None:
    """The key from `Authorization: Bearer K` or `x-api-key: K`, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


@dataclass
class KeyFileStatus:
    """Where the key file's reloads stand (for /health and the metrics).

    `loaded_at`: wall time the version in force was applied; `keys`: its entries in force;
    `last_error`: what is wrong with it (None when clean), since `error_since` (wall time);
    `errors`: reloads applied with a problem (or failed) since startup, a counter."""

    path: str
    loaded_at: float
    keys: int
    last_error: str | None = None
    error_since: float | None = None
    errors: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "loaded_at": self.loaded_at, "keys": self.keys,
                "last_error": self.last_error, "error_since": self.error_since}


class ClientAuth:
    """Checks client keys; open (every request passes) when no key is configured at startup."""

    def __init__(self, entries: Iterable[str | KeyEntry] = (), *, key_file: str = "",
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._inline = tuple(e if isinstance(e, KeyEntry) else parse_entry(e) for e in entries)
        self.key_file = key_file
        self._clock = clock
        self._wall = wall
        self._signature: tuple[int, ...] | None = None
        # A changed signature seen once, and when: applied if still the same SETTLE_SECONDS on.
        self._seen: tuple[tuple[int, ...] | None, float] | None = None
        self._next_check = -float("inf")
        self._file: tuple[KeyEntry, ...] = ()
        self.file_status: KeyFileStatus | None = None
        if key_file:
            self._signature = self._stat()
            self._file = read_key_file(key_file)  # at startup a bad file is a config error
            self._next_check = clock() + CHECK_INTERVAL
            self.file_status = KeyFileStatus(key_file, wall(), len(self._file))
        # Keys configured at startup make this a keyed proxy for good: no reload opens it.
        self._keyed = bool(self._inline or self._file)
        self._install()

    @property
    def file_error(self) -> str | None:
        return self.file_status.last_error if self.file_status is not None else None

    def _install(self) -> None:
        # Compare digests so the comparison time depends on neither key length nor content.
        table = {hashlib.sha256(e.key.encode()).digest(): e.label
                 for e in (*self._inline, *self._file)}
        self._digests = list(table.items())

    @property
    def open(self) -> bool:
        return not self._keyed

    def names(self) -> list[str]:
        """The client identities keys stand for (names and fingerprints), sorted."""
        return sorted({label for _, label in self._digests})

    def refresh(self) -> None:
        """Look at the key file if it is time to (a request does this; so do /health and
        /metrics, so they show the file's state even while no request comes)."""
        if self.key_file and self._clock() >= self._next_check:
            self._reload()

    def client_id(self, headers: RawHeaders) -> str | None:
        """The client identity (the key's name or fingerprint), or None on an open proxy.

        Raises Unauthorized when keys are configured and none matches.
        """
        self.refresh()
        if not self._keyed:
            return None
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("missing API key: send Authorization: Bearer <key> or x-api-key")
        digest = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for known, label in self._digests:  # no early exit: time does not reveal which matched
            if hmac.compare_digest(digest, known):
                found = label
        if found is None:
            raise Unauthorized("invalid API key")
        return found

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.key_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)

    def _reload(self) -> None:
        """Apply the key file if it changed and has settled (see the module docstring)."""
        now = self._clock()
        self._next_check = now + CHECK_INTERVAL
        signature = self._stat()
        if signature == self._signature:
            self._seen = None
            return
        seen = self._seen
        if seen is None or seen[0] != signature:
            self._seen = (signature, now)  # changed: wait until it stops changing
            return
        if now - seen[1] < SETTLE_SECONDS:
            return
        self._seen = None
        entries: tuple[KeyEntry, ...]
        problems: list[str]
        try:
            text = Path(self.key_file).read_text()
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            # Missing or unreadable: the file no longer vouches for any key.
            error = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            entries, problems = (), [f"cannot be read ({error}): no key from it is in force"]
        else:
            entries, problems = scan_key_file(text)
            if not entries and not problems:
                problems = ["holds no key: no key from it is in force"]
        self._signature = signature
        self._apply(entries, problems)

    def _apply(self, entries: tuple[KeyEntry, ...], problems: list[str]) -> None:
        status = self.file_status
        assert status is not None
        before = {label for _, label in self._digests}
        self._file = entries
        self._install()
        after = {label for _, label in self._digests}
        wall = self._wall()
        status.loaded_at, status.keys = wall, len(entries)
        error = "; ".join(problems) if problems else None
        if error is not None:
            status.errors += 1
            if error != status.last_error:
                status.error_since = wall
                log.error("PROXY_API_KEYS_FILE %s: %s; the valid lines are in force",
                          self.key_file, error)
        else:
            status.error_since = None
        status.last_error = error
        if self._keyed and not self._digests:
            log.error("no client key is in force: every request is refused (401) until "
                      "PROXY_API_KEYS_FILE %s holds a valid key", self.key_file)
        log.warning("PROXY_API_KEYS_FILE reloaded", extra={"fields": {
            "path": self.key_file, "keys": len(self._digests),
            "clients_added": sorted(after - before), "clients_removed": sorted(before - after)}})
