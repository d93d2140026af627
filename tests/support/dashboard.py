"""The dashboard app in process: `Rig` wires it to a fake proxy to scrape and a clock the test
drives, with no background loops.

Of its two targets `http://up.test/metrics` answers with the `FakeProxy`'s exposition and
`http://down.test/metrics` refuses the connection; `round` moves the clock on by one scrape
interval and hands one scrape to the app, as its collector loop would.
"""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from tests.fixtures.metrics import FakeProxy
from tests.support.clock import VirtualTime
from zai_proxy.dashboard.app import create_dashboard_app
from zai_proxy.dashboard.collector import Collector
from zai_proxy.dashboard.settings import DashboardSettings
from zai_proxy.dashboard.storage import History

T0 = 1_700_000_000.0


class Rig:
    """An app with a fake target, a hand-driven clock, and no background loops."""

    def __init__(self, api_key: str | None = None, db: str | None = None) -> None:
        self.clock = clock = VirtualTime(T0)  # shared by all parts
        self.proxy = FakeProxy()

        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "down.test":
                raise httpx.ConnectError("refused")
            return httpx.Response(200, text=self.proxy.text())

        self.settings = DashboardSettings(targets=("http://up.test/metrics",
                                                   "http://down.test/metrics"),
                                          interval=5, db=db, api_key=api_key)
        self.collector = Collector(self.settings.targets, 5, 3, clock,
                                   transport=httpx.MockTransport(handler))
        self.storage = History(db, clock)
        self.app: Starlette = create_dashboard_app(
            self.settings, collector=self.collector, storage=self.storage, clock=clock,
            background=False)

    async def round(self, seconds: float = 5) -> None:
        self.clock.jump(seconds)
        await self.app.state.dashboard.on_points(await self.collector.scrape_once())
