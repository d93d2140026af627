"""`zai-proxy dashboard`: settings from the environment and flags (flags win), then serve.

Invalid values exit 2 with a message naming the variable or flag.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


class SettingsError(ValueError):
    """An invalid value; the message names the variable or flag."""


@dataclass(frozen=True)
class DashboardSettings:
    targets: tuple[str, ...]
    interval: float = 5.0
    timeout: float = 3.0
    db: str | None = None  # None keeps history in memory only
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8081
    heartbeat: float = 15.0


def default_db(environ: Mapping[str, str]) -> str:
    """`$XDG_STATE_HOME/zai-proxy/dashboard.sqlite3` (XDG default `~/.local/state`)."""
    state = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "zai-proxy" / "dashboard.sqlite3")


def normalize_target(raw: str, name: str) -> str:
    """`http://host:port` -> `http://host:port/metrics`; anything but an http(s) URL is an error."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SettingsError(f"{name}: {raw!r} is not an http(s) URL")
    path = parts.path if parts.path not in {"", "/"} else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _seconds(raw: str, name: str, low: float = 0.05, high: float = 3600.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: must be between {low} and {high} seconds, got {raw!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zai-proxy dashboard",
        description="Live dashboard: scrapes zai-proxy /metrics and compares deployment variants.",
    )
    p.add_argument(
        "--target", action="append", default=[], metavar="URL",
        help="a /metrics URL to scrape (repeatable; env SCRAPE_TARGETS, comma-separated)",
    )
    p.add_argument("--interval", help="seconds between scrapes (env SCRAPE_INTERVAL, default 5)")
    p.add_argument("--timeout", help="scrape timeout in seconds (env SCRAPE_TIMEOUT, default 3)")
    p.add_argument("--db", help="SQLite history file, ':memory:' for none (env DASHBOARD_DB, "
                                "default $XDG_STATE_HOME/zai-proxy/dashboard.sqlite3)")
    p.add_argument("--heartbeat", help="seconds between SSE keep-alive comments "
                                       "(env DASHBOARD_HEARTBEAT, default 15)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", default="8081", help="listen port (default 8081)")
    p.epilog = ("DASHBOARD_API_KEY, when set, is required by the page and the API "
                "(Authorization: Bearer, ?key=, or the login form).")
    return p


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> DashboardSettings:
    """Parse `argv` over `environ`; raise SettingsError naming the bad variable or flag."""
    args = parser().parse_args(list(argv))
    if args.target:
        raw_targets, name = list(args.target), "--target"
    else:
        raw_targets = [t for t in environ.get("SCRAPE_TARGETS", "").split(",") if t.strip()]
        name = "SCRAPE_TARGETS"
    if not raw_targets:
        raise SettingsError("SCRAPE_TARGETS: set it (comma-separated URLs) or pass --target URL")
    targets = tuple(dict.fromkeys(normalize_target(t, name) for t in raw_targets))

    def pick(flag: str | None, var: str, default: str) -> tuple[str, str]:
        if flag is not None:
            return flag, "--" + var.split("_", 1)[1].lower()
        return environ.get(var, default), var

    interval = _seconds(*pick(args.interval, "SCRAPE_INTERVAL", "5"))
    timeout = _seconds(*pick(args.timeout, "SCRAPE_TIMEOUT", "3"))
    heartbeat = _seconds(*pick(args.heartbeat, "DASHBOARD_HEARTBEAT", "15"))
    db_raw = args.db if args.db is not None else environ.get("DASHBOARD_DB", default_db(environ))
    db = None if db_raw.strip() in {"", ":memory:"} else db_raw
    try:
        port = int(args.port)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise SettingsError(f"--port: expected a TCP port (1-65535), got {args.port!r}")
    api_key = environ.get("DASHBOARD_API_KEY") or None
    if api_key is not None and len(api_key.strip()) < 8:
        raise SettingsError("DASHBOARD_API_KEY: use at least 8 characters")
    return DashboardSettings(targets=targets, interval=interval, timeout=timeout, db=db,
                             api_key=api_key, host=args.host, port=port, heartbeat=heartbeat)


def from_environment(argv: Sequence[str]) -> DashboardSettings:
    return load_settings(argv, os.environ)


def main(argv: list[str]) -> int:
    """Exit 2 with a message naming the variable when a setting is invalid."""
    try:
        settings = from_environment(argv)
    except SettingsError as exc:
        print(f"zai-proxy dashboard: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from zai_proxy.dashboard.app import create_dashboard_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_dashboard_app(settings)
    print(f"zai-proxy dashboard on http://{settings.host}:{settings.port}/ scraping "
          f"{', '.join(settings.targets)} every {settings.interval:g}s "
          f"(history: {settings.db or 'memory'})", flush=True)
    # SSE streams never end by themselves: bound the wait for them at shutdown.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=3)
    return 0
