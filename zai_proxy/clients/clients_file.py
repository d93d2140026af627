"""The clients file (`PROXY_CLIENTS_FILE`): the fleet's clients declared in TOML, one
`[[client]]` table each (format and a worked example: docs/clients.md).

    [[client]]
    name = "agents"            # required: the client's name in metrics, logs, /health
    keys = ["..."]             # or keys_file = "/run/secrets/agents" (one key a line, # comments)
    weight = 3                 # > 0, default 1
    priority = "interactive"   # or "batch" (the default)
    max_in_flight = 8          # optional, >= 1
    five_hour_share = 0.2      # optional, 0 < x <= 1 (also weekly_share)

`load_clients_file` reads it strictly (startup: any problem is an error). `scan_clients` reads a
changed version as the key file is read: each `[[client]]` table is parsed on its own, so a
table that does not parse or validate is skipped and reported while every other client is in
force; two tables with one name are both dropped, and so is a key listed under two clients
(their identity is ambiguous). Messages name the line, the client and the field, never a key.
A relative `keys_file` is read from the clients file's directory.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zai_proxy.clients.keys import NAME, check_key
from zai_proxy.clients.reloading import Scan
from zai_proxy.limiter.client_class import PRIORITIES, ClientClass, Priority

FIELDS = ("name", "keys", "keys_file", "weight", "priority", "max_in_flight",
          "five_hour_share", "weekly_share")
# A line that opens a client's table; the file is cut into tables at these lines.
HEADER = re.compile(r"\s*\[\[\s*client\s*\]\]\s*(#.*)?")
AT_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One declared client: its keys (never shown), its class in the admission queue, its
    optional shares of the five-hour and weekly budgets, and the line its table starts on."""

    name: str
    keys: tuple[str, ...] = field(repr=False)
    client_class: ClientClass
    five_hour_share: float | None = None
    weekly_share: float | None = None
    line: int = 0


Clients = tuple[ClientSpec, ...]
ReadText = Callable[[Path], str]


def load_clients_file(path: str, read: ReadText = Path.read_text) -> Scan[Clients]:
    """The clients at `path`, read at startup. Raises OSError when it cannot be read and
    ValueError naming every problem (lines, clients, fields; never a key)."""
    scan = scan_clients(path, read(Path(path)), read)
    if scan.problems:
        raise ValueError("; ".join(scan.problems))
    if not scan.value:
        raise ValueError("declares no client ([[client]] tables expected)")
    return scan


def scan_clients(path: str, text: str, read: ReadText = Path.read_text) -> Scan[Clients]:
    """The valid clients of `text` (the file at `path`), the problems of the others, and the
    key files they name."""
    base = Path(path).parent
    problems: list[str] = []
    found: list[ClientSpec] = []
    also: list[str] = []
    for start, table in _tables(text, problems):
        try:
            spec, keys_file = _client(table, start, base, read)
        except ValueError as exc:
            problems.append(str(exc))
            if isinstance(table.get("keys_file"), str):
                also.append(str(base / table["keys_file"]))
            continue
        found.append(spec)
        if keys_file:
            also.append(keys_file)
    kept = _unambiguous(found, problems)
    return Scan(kept, tuple(problems), tuple(dict.fromkeys(also)))


def _tables(text: str, problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """Each client table with the line it starts on; what does not parse goes to `problems`."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if HEADER.fullmatch(line.rstrip("\r\n"))]
    cuts = [0, *starts] if not starts or starts[0] else starts
    tables: list[tuple[int, dict[str, Any]]] = []
    for at, end in zip(cuts, [*cuts[1:], len(lines)], strict=True):
        start = at + 1
        try:
            doc = tomllib.loads("".join(lines[at:end]))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"line {start}: not valid TOML: {_located(str(exc), start, end)}")
            continue
        extra = sorted(set(doc) - {"client"})
        if extra:
            problems.append(f"line {start}: only [[client]] tables are read, not "
                            + ", ".join(map(repr, extra)))
        clients = doc.get("client", [])
        if not isinstance(clients, list):
            problems.append(f"line {start}: `client` must be [[client]] tables")
            continue
        tables.extend((start, table) for table in clients)
    return tables


def _located(message: str, start: int, end: int) -> str:
    """tomllib's `message` about a table cut from the file at line `start` (up to line `end`),
    with the file's line numbers."""
    message = AT_LINE.sub(lambda m: f"(at line {start + int(m[1]) - 1}, column {m[2]})",
                          message)
    return message.replace("at end of document", f"at line {end}")


def _client(table: Any, line: int, base: Path, read: ReadText) -> tuple[ClientSpec, str]:
    """One client table as a spec, and the path of its keys_file ("" for none)."""
    if not isinstance(table, dict):
        raise ValueError(f"line {line}: a client must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"line {line}: a client needs `name`, 1-64 letters, digits, '.', '_' "
                         "or '-' starting with a letter or digit")
    where = f"client {name!r} (line {line})"
    if unknown := sorted(set(table) - set(FIELDS)):
        raise ValueError(f"{where}: unknown field " + ", ".join(f"`{k}`" for k in unknown)
                         + " (known: " + ", ".join(FIELDS) + ")")
    keys, keys_file = _keys(table, where, base, read)
    weight = _number(table, "weight", where, 1.0, lambda v: v > 0, "a number > 0") or 1.0
    priority = table.get("priority", "batch")
    if priority not in PRIORITIES:
        raise ValueError(f"{where}: `priority` must be " + " or ".join(map(repr, PRIORITIES)))
    cap = table.get("max_in_flight")
    if cap is not None and (type(cap) is not int or cap < 1):
        raise ValueError(f"{where}: `max_in_flight` must be a whole number >= 1")
    shares = [_number(table, f, where, None, lambda v: 0 < v <= 1, "a number in (0, 1]")
              for f in ("five_hour_share", "weekly_share")]
    klass = ClientClass(weight, _priority(priority), cap)
    return ClientSpec(name, keys, klass, shares[0], shares[1], line), keys_file


def _priority(value: str) -> Priority:
    return "interactive" if value == "interactive" else "batch"


def _number(table: Mapping[str, Any], name: str, where: str, default: float | None,
            ok: Callable[[float], bool], form: str) -> float | None:
    if name not in table:
        return default
    value = table[name]
    if type(value) not in (int, float) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{where}: `{name}` must be {form}")
    return float(value)


def _keys(table: Mapping[str, Any], where: str, base: Path,
          read: ReadText) -> tuple[tuple[str, ...], str]:
    """A client's keys, from `keys` or `keys_file` (exactly one of them)."""
    if ("keys" in table) == ("keys_file" in table):
        raise ValueError(f"{where}: give exactly one of `keys` and `keys_file`")
    if "keys" in table:
        keys = table["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"{where}: `keys` must be a list of strings")
        for index, key in enumerate(keys):
            try:
                check_key(key)
            except ValueError as exc:
                raise ValueError(f"{where}: keys[{index}]: {exc}") from None
        if not keys:
            raise ValueError(f"{where}: `keys` holds no key")
        return tuple(dict.fromkeys(keys)), ""
    if not isinstance(table["keys_file"], str) or not table["keys_file"]:
        raise ValueError(f"{where}: `keys_file` must be a path")
    path = base / table["keys_file"]
    try:
        text = read(path)
    except (OSError, ValueError) as exc:
        error = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{where}: keys_file {path} cannot be read ({error})") from None
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        key = raw.strip()
        if not key or key.startswith("#"):
            continue
        try:
            check_key(key)
        except ValueError as exc:
            raise ValueError(f"{where}: keys_file {path} line {number}: {exc}") from None
        keys.append(key)
    if not keys:
        raise ValueError(f"{where}: keys_file {path} holds no key (one a line expected)")
    return tuple(dict.fromkeys(keys)), str(path)


def _unambiguous(found: list[ClientSpec], problems: list[str]) -> Clients:
    """`found` without the clients whose name is declared twice and without the keys listed
    under two clients (both ambiguous: dropped from every client, and reported)."""
    lines: dict[str, list[int]] = {}
    for spec in found:
        lines.setdefault(spec.name, []).append(spec.line)
    for name, at in lines.items():
        if len(at) > 1:
            problems.append(f"client {name!r} is declared more than once (lines "
                            + ", ".join(map(str, at)) + "): not in force")
    owners: dict[str, set[str]] = {}
    for spec in found:
        for key in spec.keys:
            owners.setdefault(key, set()).add(spec.name)
    shared = sorted({" and ".join(f"{name!r} (line {lines[name][0]})" for name in sorted(o))
                     for o in owners.values() if len(o) > 1})
    problems.extend(f"a key is listed under clients {pair}: not in force for either"
                    for pair in shared)
    kept = []
    for spec in found:
        if len(lines[spec.name]) > 1:
            continue
        keys = tuple(k for k in spec.keys if len(owners[k]) == 1)
        kept.append(spec if keys == spec.keys else ClientSpec(
            spec.name, keys, spec.client_class, spec.five_hour_share, spec.weekly_share,
            spec.line))
    return tuple(kept)
