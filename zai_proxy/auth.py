"""Client authentication: which configured key a request presents, compared in constant time.

Keys come from `PROXY_API_KEYS` (comma-separated) and `PROXY_API_KEYS_FILE` (one a line, `#`
comments). An entry is `name:key` or a bare `key`; the client a request is counted, logged and
queued as is the key's name, or for an unnamed key its fingerprint `key-<12 hex of sha256>`
(several keys may share a name: rotate a worker's key by adding the new one under its name).
The key file is re-read when it changes (checked at most once a second, on a request: one
`stat`), so keys are added and rotated without a restart; a change that does not parse keeps the
keys in force and is logged once.
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

from zai_proxy.errors import Unauthorized
from zai_proxy.headers import RawHeaders

log = logging.getLogger("zai_proxy.auth")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_KEY_LENGTH = 8
CHECK_INTERVAL = 1.0


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


class ClientAuth:
    """Checks client keys; open (every request passes) when no key is configured."""

    def __init__(self, entries: Iterable[str | KeyEntry] = (), *, key_file: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inline = tuple(e if isinstance(e, KeyEntry) else parse_entry(e) for e in entries)
        self.key_file = key_file
        self.file_error: str | None = None
        self._clock = clock
        self._signature: tuple[int, ...] | None = None
        self._next_check = -float("inf")
        self._file: tuple[KeyEntry, ...] = ()
        if key_file:
            self._signature = self._stat()
            self._file = read_key_file(key_file)  # at startup a bad file is a config error
            self._next_check = clock() + CHECK_INTERVAL
        self._install()

    def _install(self) -> None:
        # Compare digests so the comparison time depends on neither key length nor content.
        table = {hashlib.sha256(e.key.encode()).digest(): e.label
                 for e in (*self._inline, *self._file)}
        self._digests = list(table.items())

    @property
    def open(self) -> bool:
        return not self._digests

    def names(self) -> list[str]:
        """The client identities keys stand for (names and fingerprints), sorted."""
        return sorted({label for _, label in self._digests})

    def client_id(self, headers: RawHeaders) -> str | None:
        """The client identity (the key's name or fingerprint), or None on an open proxy.

        Raises Unauthorized when keys are configured and none matches.
        """
        if self.key_file and self._clock() >= self._next_check:
            self._reload()
        if not self._digests:
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
        """Re-read the key file if it changed since the last look (one stat when it did not)."""
        self._next_check = self._clock() + CHECK_INTERVAL
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            entries = read_key_file(self.key_file)
        except (OSError, ValueError) as exc:
            error = exc.strerror if isinstance(exc, OSError) else str(exc)
            if error != self.file_error:
                log.error("PROXY_API_KEYS_FILE %s changed but cannot be used (%s): the keys "
                          "loaded before stay in force", self.key_file, error)
            self.file_error = error
            return
        before = {label for _, label in self._digests}
        self._file, self.file_error = entries, None
        self._install()
        after = {label for _, label in self._digests}
        log.warning("PROXY_API_KEYS_FILE reloaded", extra={"fields": {
            "path": self.key_file, "keys": len(self._digests),
            "clients_added": sorted(after - before), "clients_removed": sorted(before - after)}})
