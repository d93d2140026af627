"""Client authentication: which configured key a request presents, compared in constant time.

Keys come from `PROXY_API_KEYS` (comma-separated), `PROXY_API_KEYS_FILE` (one a line, `#`
comments; format in `clients.keys`) and the clients file `PROXY_CLIENTS_FILE` (each
`[[client]]`'s keys; format in `clients.clients_file`). The client a request is counted, logged
and queued as is the key's name (a client's name in the clients file), or for an unnamed key its
fingerprint `key-<12 hex of sha256>` (several keys may share a name: rotate a worker's key by
adding the new one under its name). Both files are re-read when they change
(`clients.reloading`: checked at most once a second, on a request; applied once settled; every
valid part applied, a revocation never ignored), so keys and clients are added, rotated and
revoked without a restart. At startup each file must parse whole (a config error, exit 2).

- An empty or deleted file means nothing from it is in force. A proxy started with keys never
  turns into an open proxy by a reload: with no key left every request is refused (401).
- A key that is both in the clients file and in `PROXY_API_KEYS` or its file is refused at start
  (`server.config`); if a reload makes it so, it is in force in neither (its identity is
  ambiguous) and reported on the clients file's state.
- Problems are logged once each, and shown on /health (`auth_key_file`, `clients_file`:
  `last_error`, `error_since`, `loaded_at`, `keys` / `clients`) and in the
  `zai_proxy_auth_key_file_*` and `zai_proxy_clients_file_*` metrics. Messages name lines and
  clients, never a key.

`roster` is the roster of clients (`clients.roster`), replaced whenever a file is reloaded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable

from zai_proxy.clients.clients_file import (
    Clients,
    ClientSpec,
    load_clients_file,
    scan_clients,
)
from zai_proxy.clients.keys import (
    MIN_KEY_LENGTH,
    NAME,
    KeyEntry,
    fingerprint,
    parse_entries,
    parse_entry,
    parse_key_file,
    read_key_file,
    scan_key_file,
)
from zai_proxy.clients.reloading import (
    CHECK_INTERVAL,
    SETTLE_SECONDS,
    FileStatus,
    ReloadingFile,
    Scan,
)
from zai_proxy.clients.roster import Roster
from zai_proxy.core.errors import Unauthorized
from zai_proxy.wire.headers import RawHeaders

__all__ = [
    "CHECK_INTERVAL", "MIN_KEY_LENGTH", "NAME", "SETTLE_SECONDS", "ClientAuth", "FileStatus",
    "KeyEntry", "fingerprint", "parse_entries", "parse_entry", "parse_key_file",
    "presented_key", "read_key_file", "scan_key_file",
]

log = logging.getLogger("zai_proxy.auth")
Entries = tuple[KeyEntry, ...]


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


def _load_keys(path: str) -> Scan[Entries]:
    return Scan(read_key_file(path))


def _scan_keys(path: str, text: str) -> Scan[Entries]:
    entries, problems = scan_key_file(text)
    if not entries and not problems:
        problems = ["holds no key: no key from it is in force"]
    return Scan(entries, tuple(problems))


def _scan_clients(path: str, text: str) -> Scan[Clients]:
    scan = scan_clients(path, text)
    if not scan.value and not scan.problems:
        return Scan((), ("declares no client: no client from it is in force",), scan.also)
    return scan


class ClientAuth:
    """Checks client keys; open (every request passes) when no key is configured at startup."""

    def __init__(self, entries: Iterable[str | KeyEntry] = (), *, key_file: str = "",
                 clients_file: str = "", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._inline = tuple(e if isinstance(e, KeyEntry) else parse_entry(e) for e in entries)
        self.key_file = key_file
        self._key_file: ReloadingFile[Entries] | None = None
        self._clients_file: ReloadingFile[Clients] | None = None
        if key_file:
            self._key_file = ReloadingFile(
                key_file, variable="PROXY_API_KEYS_FILE", noun="keys",
                nothing="no key from it is in force", valid="the valid lines are in force",
                load=_load_keys, scan=_scan_keys, empty=(), clock=clock, wall=wall)
        if clients_file:
            self._clients_file = ReloadingFile(
                clients_file, variable="PROXY_CLIENTS_FILE", noun="clients",
                nothing="no client from it is in force", valid="the valid clients are in force",
                load=load_clients_file, scan=_scan_clients, empty=(), clock=clock, wall=wall)
        # Only the files configured: without any, a request's look at them is an empty loop.
        self._files = tuple(f for f in (self._key_file, self._clients_file) if f is not None)
        self.roster = Roster()
        self._digests: list[tuple[bytes, str]] = []
        self._install(None)
        # Keys configured at startup make this a keyed proxy for good: no reload opens it.
        self._keyed = bool(self._digests)

    @property
    def file_status(self) -> FileStatus | None:
        """The key file's reload state (None without PROXY_API_KEYS_FILE)."""
        return self._key_file.status if self._key_file is not None else None

    @property
    def clients_status(self) -> FileStatus | None:
        """The clients file's reload state (None without PROXY_CLIENTS_FILE)."""
        return self._clients_file.status if self._clients_file is not None else None

    @property
    def file_error(self) -> str | None:
        return self.file_status.last_error if self.file_status is not None else None

    @property
    def open(self) -> bool:
        return not self._keyed

    def names(self) -> list[str]:
        """The client identities keys stand for (names and fingerprints), sorted."""
        return sorted({label for _, label in self._digests})

    def refresh(self) -> None:
        """Look at the files if it is time to (a request does this; so do /health and
        /metrics, so they show the files' state even while no request comes)."""
        for file in self._files:
            if file.poll():
                self._install(file)

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

    def _install(self, reloaded: ReloadingFile[Entries] | ReloadingFile[Clients] | None) -> None:
        """Put the keys of every source in force, and the roster: after startup (`reloaded`
        None) and after a reload of `reloaded`."""
        before = {label for _, label in self._digests}
        listed = self._inline + (self._key_file.value if self._key_file else ())
        declared = self._clients_file.value if self._clients_file else ()
        declared, conflicts = _apart(listed, declared)
        listed = tuple(e for e in listed if e.key not in conflicts)
        # Compare digests so the comparison time depends on neither key length nor content.
        table = {hashlib.sha256(e.key.encode()).digest(): e.label for e in listed}
        table.update((hashlib.sha256(k.encode()).digest(), spec.name)
                     for spec in declared for k in spec.keys)
        self._digests = list(table.items())
        keyed: dict[str, int] = {}
        for entry in {e.key: e for e in listed}.values():
            keyed[entry.label] = keyed.get(entry.label, 0) + 1
        self.roster.replace(declared, keyed)
        if self._key_file is not None:
            file_keys = {e.key for e in self._key_file.value} - conflicts
            self._key_file.report(len(file_keys), reread=reloaded is self._key_file)
        if self._clients_file is not None:
            notes = tuple(f"client {name!r}: a key is also in PROXY_API_KEYS or "
                          "PROXY_API_KEYS_FILE: in force in neither"
                          for name in sorted({s.name for s in self._clients_file.value
                                              if conflicts & set(s.keys)}))
            self._clients_file.report(len(declared), notes,
                                      reread=reloaded is self._clients_file)
        if reloaded is None:
            return
        after = {label for _, label in self._digests}
        if self._keyed and not self._digests:
            log.error("no client key is in force: every request is refused (401) until "
                      "%s %s holds a valid key", reloaded.variable, reloaded.path)
        log.warning("%s reloaded", reloaded.variable, extra={"fields": {
            "path": reloaded.path, "keys": len(self._digests),
            "clients_added": sorted(after - before), "clients_removed": sorted(before - after)}})


def _apart(listed: Entries, declared: Clients) -> tuple[Clients, set[str]]:
    """`declared` without the keys that are also `listed`, and those keys (in neither)."""
    listed_keys = {e.key for e in listed}
    conflicts = {k for spec in declared for k in spec.keys if k in listed_keys}
    if not conflicts:
        return declared, conflicts
    return tuple(ClientSpec(s.name, tuple(k for k in s.keys if k not in conflicts),
                            s.client_class, s.five_hour_share, s.weekly_share, s.line)
                 for s in declared), conflicts
