"""The settings table: fields that know their variable, flag, parser, default and doc text.

A program's settings are a frozen dataclass whose fields are made by `setting`. The contract:

- `read` takes the environment and the flags given (by attribute) and returns the parsed value
  of every field that was set; a flag wins over its variable. A field left out keeps its
  dataclass default. An empty text means "unset" unless the field takes it as a value (plain
  text fields, by default: empty text is "off" there).
- An invalid value raises `SettingError` naming the flag or the variable it came from, the text
  (hidden for a secret) and the expected form. No silent fallback to a default.
- Secrets have no flag: a flag would show them in `ps` and /proc/PID/cmdline.
- A `many` field is a list: its variable is comma-separated, its flag repeatable; `parse`
  takes one item.
- `markdown_table` lists every field, grouped by its section, for docs/configuration.md.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_KEY = "zai_proxy.settings"
# The flag a field gets unless it names one: `--` and its attribute with dashes.
AUTO = "auto"


class SettingError(ValueError):
    """An invalid setting; the message names the variable or flag and the expected form."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Field:
    """One setting. `attr` and `default` are filled in by `fields_of` from the dataclass."""

    env: str | None
    parse: Callable[[str], Any]
    doc: str
    flag: str | None = AUTO
    secret: bool = False
    empty_is_default: bool = True
    many: bool = False
    section: str = ""
    shown_default: str | None = None
    attr: str = ""
    default: Any = None

    @property
    def names(self) -> str:
        """How the doc and `--help` name it: the variable, else the flag."""
        return self.env or self.flag or self.attr


def setting(env: str | None, parse: Callable[[str], Any], doc: str, *,
            default: Any = dataclasses.MISSING, flag: str | None = AUTO, secret: bool = False,
            empty_is_default: bool | None = None, many: bool = False, section: str = "",
            shown_default: str | None = None) -> Any:
    """A dataclass field declaring one setting.

    `env` None: flag only. `flag` None: environment only (always so for a secret).
    `empty_is_default` defaults to "unless `parse` is `str`". `shown_default` replaces the
    default in the doc (for a default computed at run time).
    """
    meta = Field(env=env, parse=parse, doc=doc, flag=None if secret else flag, secret=secret,
                 empty_is_default=parse is not str if empty_is_default is None
                 else empty_is_default,
                 many=many, section=section, shown_default=shown_default)
    if default is dataclasses.MISSING:
        return dataclasses.field(repr=not secret, metadata={_KEY: meta})
    return dataclasses.field(default=default, repr=not secret, metadata={_KEY: meta})


@dataclass(frozen=True)
class Section:
    """A titled group of settings: the doc lists each section under its own heading."""

    title: str

    def setting(self, env: str | None, parse: Callable[[str], Any], doc: str,
                **kw: Any) -> Any:
        """`setting(...)` in this section."""
        return setting(env, parse, doc, section=self.title, **kw)


def fields_of(table: type | Iterable[Field]) -> tuple[Field, ...]:
    """The settings of a dataclass made with `setting` (other fields are skipped), in order."""
    if not isinstance(table, type):
        return tuple(table)
    found = []
    for f in dataclasses.fields(table):
        meta = f.metadata.get(_KEY)
        if meta is None:
            continue
        flag = "--" + f.name.replace("_", "-") if meta.flag == AUTO else meta.flag
        default = None if f.default is dataclasses.MISSING else f.default
        found.append(dataclasses.replace(meta, attr=f.name, flag=flag, default=default))
    return tuple(found)


def read(table: type | Iterable[Field], env: Mapping[str, str],
         flags: Mapping[str, str | Sequence[str]] | None = None) -> dict[str, Any]:
    """Parsed values of the fields set by a flag (by attribute; wins) or their variable.

    Raises `SettingError` naming where the bad value came from.
    """
    flags = flags or {}
    values: dict[str, Any] = {}
    for f in fields_of(table):
        given = flags.get(f.attr)
        if given is not None and f.flag:
            items = [given] if isinstance(given, str) else list(given)
            source = f.flag
        elif f.env is not None and f.env in env:
            text = env[f.env]
            items = [t for t in text.split(",") if t.strip()] if f.many else [text]
            source = f.env
        else:
            continue
        if f.many:
            if items:
                values[f.attr] = tuple(_parse(f, source, item) for item in items)
        elif not (items[0] == "" and f.empty_is_default):
            values[f.attr] = _parse(f, source, items[0])
    return values


def _parse(f: Field, source: str, text: str) -> Any:
    try:
        return f.parse(text)
    except ValueError as exc:
        shown = "<hidden>" if f.secret else repr(text)
        raise SettingError(source, f"{source}={shown} is invalid: expected {exc}") from None


def _shown(f: Field) -> str:
    if f.shown_default is not None:
        return f.shown_default
    default = f.default
    if isinstance(default, tuple):
        default = ",".join(str(item) for item in default)
    text = "" if default is None else str(default)
    return f"`{text}`" if text else "(unset)"


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
              table: type | Iterable[Field], dest_prefix: str = "") -> None:
    """One flag per field that has one, as text (parsed by `read`); help names the variable."""
    for f in fields_of(table):
        if not f.flag:
            continue
        where = f"env {f.env}, " if f.env else ""
        shown = _shown(f).replace("`", "")
        help_ = f"{f.doc} [{where}default {shown}]".replace("%", "%%")
        parser.add_argument(f.flag, dest=dest_prefix + f.attr, default=None,
                            action="append" if f.many else "store",
                            metavar=f.env or f.attr.upper(), help=help_)


def flags_from(ns: argparse.Namespace, table: type | Iterable[Field],
               dest_prefix: str = "") -> dict[str, Any]:
    """The flags given on the command line, by attribute (for `read`)."""
    given = {f.attr: getattr(ns, dest_prefix + f.attr, None) for f in fields_of(table) if f.flag}
    return {attr: value for attr, value in given.items() if value is not None}


def markdown_table(table: type | Iterable[Field], heading: str = "###") -> list[str]:
    """Markdown lines: each section's heading, then a table of its fields."""
    lines: list[str] = []
    section: str | None = None
    for f in fields_of(table):
        if f.section != section:
            section = f.section
            if lines:
                lines.append("")
            if section:
                lines += [f"{heading} {section}", ""]
            lines += ["| variable | flag | default | meaning |", "|---|---|---|---|"]
        env = f"`{f.env}`" if f.env else "(flag only)"
        flag = f"`{f.flag}`" if f.flag else "(environment only)"
        lines.append(f"| {env} | {flag} | {_shown(f)} | {f.doc} |")
    return lines
