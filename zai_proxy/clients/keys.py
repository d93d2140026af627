"""What a client key and a client name may be, and the key list format of `PROXY_API_KEYS` and
`PROXY_API_KEYS_FILE`.

An entry is `name:key` or a bare `key`; the client a key stands for is its name, or for an
unnamed key its fingerprint `key-<12 hex of sha256>`. A key has `MIN_KEY_LENGTH`+ characters and
no whitespace; a name matches `NAME`. Every message here names a line, a position or a client,
never a key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_KEY_LENGTH = 8


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


def check_key(key: str) -> None:
    """Raises ValueError (never showing the key) when `key` may not be a client key."""
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"every key needs {MIN_KEY_LENGTH}+ characters")
    if any(c.isspace() for c in key):
        raise ValueError("a key must not contain whitespace")


def parse_entry(text: str) -> KeyEntry:
    """`name:key` or `key`. Raises ValueError (never showing the key) when it is not valid."""
    text = text.strip()
    name, sep, key = text.partition(":")
    if not sep or not NAME.fullmatch(name):
        name, key = "", text  # no name: the whole entry is the key
    try:
        check_key(key)
    except ValueError as exc:
        raise ValueError(f"{exc}" + (f" (the key named {name!r})" if name else "")) from None
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
