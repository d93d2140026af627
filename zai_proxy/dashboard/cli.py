"""`zai-proxy dashboard`: settings from the environment and flags (flags win), then serve.

Invalid values exit 2 with a message naming the variable or flag. The settings are declared in
`zai_proxy.dashboard.settings`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from zai_proxy.dashboard.settings import DashboardSettings, SettingsError, load_settings


def from_environment(argv: Sequence[str]) -> DashboardSettings:
    """Settings from `argv` over the process environment."""
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
