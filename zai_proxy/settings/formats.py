"""Value formats shared by the programs' settings: durations, sizes, booleans, URLs, lists.

Each parser takes the text of one environment variable or flag and returns the value, or raises
`ValueError` whose message is the expected form ("a duration such as 30s ..."): the reader
(`zai_proxy.settings.read`) puts the variable's name in front of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|kb|mib|mb|gib|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1024, "kb": 1000, "mib": 1024**2, "mb": 1000**2, "gib": 1024**3,
               "gb": 1000**3, None: 1}


def parse_duration(text: str) -> float:
    """Seconds from `30`, `30s`, `1.5m`, `6h`, `250ms`, `1d`."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("a duration such as 30, 30s, 250ms, 5m or 6h")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512KiB`, `10MiB`, `1GB`."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("a size in bytes such as 10485760 or 10MiB")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_bool(text: str) -> bool:
    """`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("a boolean: true or false (also 1/0, yes/no, on/off)")


def parse_url(text: str) -> str:
    """An http(s) base URL with a host and no query or fragment, without its final `/`."""
    parts = urlsplit(text.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("a base URL without query or fragment")
    return text.strip().rstrip("/")


def parse_list(text: str) -> tuple[str, ...]:
    """Comma-separated items, each stripped; empty items dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_int(text: str) -> int:
    """A whole number (surrounding blanks allowed)."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("a whole number") from None


def parse_float(text: str) -> float:
    """A number (surrounding blanks allowed; `inf` and `nan` are numbers too)."""
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("a number") from None


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """`kind`, refusing anything but a finite number above 0."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            raise ValueError("a positive number")
        return value

    return parse


def non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """`kind`, refusing a negative or infinite number."""
    def parse(text: str) -> Any:
        value = kind(text)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError("a number >= 0")
        return value

    return parse
