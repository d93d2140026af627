"""The dashboard's settings: `DashboardSettings`, declared with the shared settings idiom.

Read from the environment and the `zai-proxy dashboard` flags (flags win). An invalid value
raises `SettingsError` naming the variable or flag; `cli.main` turns it into exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from zai_proxy.settings import SettingError, add_flags, flags_from, read, setting

SettingsError = SettingError
API_KEY_MIN_LENGTH = 8


def default_db(environ: Mapping[str, str]) -> str:
    """`$XDG_STATE_HOME/zai-proxy/dashboard.sqlite3` (XDG default `~/.local/state`)."""
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "zai-proxy" / "dashboard.sqlite3")


def normalize_target(raw: str) -> str:
    """`http://host:port` -> `http://host:port/metrics`; anything but an http(s) URL is refused."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("an http(s) URL")
    path = parts.path if parts.path not in {"", "/"} else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _seconds(text: str) -> float:
    low, high = 0.05, 3600.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number of seconds") from None
    if not low <= value <= high:
        raise ValueError(f"between {low} and {high} seconds")
    return value


def _db(text: str) -> str | None:
    return None if text.strip() in {"", ":memory:"} else text


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError("a TCP port (1-65535)")
    return port


def _api_key(text: str) -> str:
    if len(text.strip()) < API_KEY_MIN_LENGTH:
        raise ValueError(f"at least {API_KEY_MIN_LENGTH} characters")
    return text


@dataclass(frozen=True)
class DashboardSettings:
    """Every setting of the dashboard. Build with `load_settings`."""

    targets: tuple[str, ...] = setting(
        "SCRAPE_TARGETS", normalize_target, "the proxies' /metrics URLs to scrape (`http://host:"
        "port` means `/metrics`); comma-separated, or `--target` once per URL", flag="--target",
        many=True, shown_default="(required)")
    interval: float = setting(
        "SCRAPE_INTERVAL", _seconds, "seconds between scrapes", flag="--interval",
        empty_is_default=False, default=5.0)
    timeout: float = setting(
        "SCRAPE_TIMEOUT", _seconds, "scrape timeout in seconds", flag="--timeout",
        empty_is_default=False, default=3.0)
    # None keeps history in memory only.
    db: str | None = setting(
        "DASHBOARD_DB", _db, "SQLite history file; `:memory:` or empty = memory only",
        flag="--db", empty_is_default=False, default=None,
        shown_default="`$XDG_STATE_HOME/zai-proxy/dashboard.sqlite3`")
    api_key: str | None = setting(
        "DASHBOARD_API_KEY", _api_key, f"when set ({API_KEY_MIN_LENGTH}+ characters), required by "
        "the page and the API (Authorization: Bearer, ?key=, or the login form)", secret=True,
        default=None)
    scrape_key: str | None = setting(
        "SCRAPE_KEY", _api_key, "presented to every target as Authorization: Bearer (the "
        "proxies' ADMIN_API_KEY): a proxy with METRICS_CLIENT_NAMES=false shows its per-client "
        "series, and so the client panels, only to a scrape that presents it", secret=True,
        default=None)
    host: str = setting(None, str, "listen address", flag="--host", default="127.0.0.1")
    port: int = setting(None, _port, "listen port", flag="--port", empty_is_default=False,
                        default=8081)
    heartbeat: float = setting(
        "DASHBOARD_HEARTBEAT", _seconds, "seconds between SSE keep-alive comments",
        flag="--heartbeat", empty_is_default=False, default=15.0)


def parser() -> argparse.ArgumentParser:
    """The `zai-proxy dashboard` parser: one flag per setting but the API key."""
    p = argparse.ArgumentParser(
        prog="zai-proxy dashboard",
        description="Live dashboard: scrapes zai-proxy /metrics and compares deployment variants.",
        epilog="DASHBOARD_API_KEY, when set, is required by the page and the API "
               "(Authorization: Bearer, ?key=, or the login form).")
    add_flags(p, DashboardSettings)
    return p


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> DashboardSettings:
    """Parse `argv` over `environ`; raise SettingsError naming the bad variable or flag."""
    flags = flags_from(parser().parse_args(list(argv)), DashboardSettings)
    values = read(DashboardSettings, environ, flags)
    targets = values.get("targets", ())
    if not targets:
        raise SettingsError("SCRAPE_TARGETS",
                            "SCRAPE_TARGETS: set it (comma-separated URLs) or pass --target URL")
    values["targets"] = tuple(dict.fromkeys(targets))
    values.setdefault("db", default_db(environ))
    return DashboardSettings(**values)
