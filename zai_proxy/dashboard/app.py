"""The dashboard's HTTP app: page, JSON API, SSE, and the background scrape and trim loops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zai_proxy import __version__
from zai_proxy.dashboard.auth import AuthMiddleware
from zai_proxy.dashboard.collector import Collector
from zai_proxy.dashboard.compute import Point
from zai_proxy.dashboard.events import Broker
from zai_proxy.dashboard.settings import DashboardSettings
from zai_proxy.dashboard.shares import client_shares
from zai_proxy.dashboard.storage import History
from zai_proxy.dashboard.views import (
    QUOTA_WINDOWS,
    RANGES,
    BadRequest,
    live_row,
    parse_variants,
    plan,
    quota_windows,
    series,
    top_clients,
    window_start,
    window_summary,
)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAINTAIN_EVERY = 60.0


class Dashboard:
    """The state the routes share: settings, collaborators, recent points for status."""

    def __init__(self, settings: DashboardSettings, collector: Collector, storage: History,
                 broker: Broker, clock: Callable[[], float]) -> None:
        self.settings, self.collector, self.storage = settings, collector, storage
        self.broker, self.clock = broker, clock
        self.recent: deque[Point] = deque(maxlen=4096)
        self.last_round: float | None = None

    async def on_points(self, points: list[Point]) -> None:
        """After each scrape round: store, remember, and push to live clients."""
        self.last_round = self.clock()
        self.recent.extend(points)
        while self.recent and self.recent[0].ts < self.last_round - 300:
            self.recent.popleft()
        await self.storage.add(points)
        self.broker.publish("metrics", {"ts": self.last_round,
                                        "points": {p.variant: live_row(p) for p in points}})
        self.broker.publish("status", self.status())

    def status(self) -> dict[str, Any]:
        now = self.clock()
        by_variant: dict[str, list[Point]] = {}
        for point in self.recent:
            if point.ts > now - 60:
                by_variant.setdefault(point.variant, []).append(point)
        return {
            "now": now, "last_round": self.last_round, "interval": self.settings.interval,
            "targets": [dataclasses.asdict(s) for s in self.collector.statuses()],
            "variants": {v: window_summary(ps, now, v) for v, ps in sorted(by_variant.items())},
            "storage": self.storage.health(),
        }

    async def maintain_forever(self) -> None:
        while True:
            try:
                await self.storage.maintain()
            except Exception:
                log.exception("history maintenance failed")
            await asyncio.sleep(MAINTAIN_EVERY)


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def create_dashboard_app(
    settings: DashboardSettings,
    *,
    collector: Collector | None = None,
    storage: History | None = None,
    broker: Broker | None = None,
    clock: Callable[[], float] = time.time,
    background: bool = True,
) -> Starlette:
    """Build the app; `background=False` skips the scrape/trim loops (tests drive them)."""
    collector = collector or Collector(settings.targets, settings.interval, settings.timeout, clock,
                                       key=settings.scrape_key)
    storage = storage or History(settings.db, clock)
    broker = broker or Broker(heartbeat=settings.heartbeat,
                              retry_ms=int(max(1000, settings.interval * 1000)))
    dash = Dashboard(settings, collector, storage, broker, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await storage.open()
        tasks = [asyncio.create_task(dash.collector.run(dash.on_points)),
                 asyncio.create_task(dash.maintain_forever())] if background else []
        try:
            yield
        finally:
            broker.close_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await collector.aclose()
            await storage.close()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def metrics(request: Request) -> Response:
        unknown = set(request.query_params) - {"range", "variant", "key"}
        try:
            if unknown:
                raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}")
            p = plan(request.query_params.get("range"), settings.interval)
            variants = parse_variants(request.query_params.get("variant"))
        except BadRequest as exc:
            return _bad(str(exc))
        now = clock()
        points = await storage.query(now - p.span - p.step, now + 1, p.rollups)
        body = series(points, p, now, variants)
        body["clients"] = client_shares(points, p.step, now - p.span, now, variants)
        body["storage"] = storage.health()
        return JSONResponse(body)

    async def quota(request: Request) -> Response:
        """The plan quota per variant and the top clients of each window (tokens since the
        window began, every variant together: they spend one account)."""
        now = clock()
        latest: dict[str, Point] = {}
        for point in dash.recent:
            if point.ts > now - 300 and (point.variant not in latest
                                         or point.ts >= latest[point.variant].ts):
                latest[point.variant] = point
        windows = quota_windows(latest)
        clients = {}
        for name in QUOTA_WINDOWS:
            readings = [w[name] for w in windows.values() if name in w]
            resets = [r["reset_at"] for r in readings if r["reset_at"] is not None]
            used = [r["used_ratio"] for r in readings if r["used_ratio"] is not None]
            since = window_start(name, max(resets) if resets else None, now)
            points = await storage.query(since, now + 1, now - since > 6 * 3600)
            units: dict[str, float] = {}  # each budget's most used reading: which one binds
            for reading in readings:
                for unit, ratio in reading.get("units", {}).items():
                    if ratio is not None:
                        units[unit] = max(units.get(unit, ratio), ratio)
            clients[name] = {"since": since, "used_ratio": max(used) if used else None,
                             "unit": max(units, key=lambda u: units[u]) if units else None,
                             "clients": top_clients(points, max(used) if used else None)}
        return JSONResponse({"now": now, "variants": windows, "windows": clients})

    async def status(request: Request) -> Response:
        return JSONResponse(dash.status())

    async def config(request: Request) -> Response:
        return JSONResponse({
            "version": __version__, "targets": list(settings.targets),
            "interval": settings.interval, "timeout": settings.timeout,
            "ranges": list(RANGES), "auth": settings.api_key is not None,
            "storage": storage.backend, "heartbeat": settings.heartbeat,
        })

    async def healthz(request: Request) -> Response:
        statuses = collector.statuses()
        health = storage.health()
        return JSONResponse({
            "status": "ok" if health["ok"] else "degraded", "storage": health,
            "targets": {"up": sum(s.up for s in statuses), "total": len(statuses)},
            "sse_clients": broker.clients,
        })

    async def events(request: Request) -> Response:
        last = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
        sub = broker.subscribe(last)
        hello = {"boot": broker.boot, "interval": settings.interval, "status": dash.status()}
        return StreamingResponse(broker.stream(sub, hello), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app = Starlette(
        routes=[
            Route("/", index), Route("/api/metrics", metrics), Route("/api/status", status),
            Route("/api/quota", quota),
            Route("/api/config", config), Route("/healthz", healthz),
            Route("/api/events", events), Mount("/static", StaticFiles(directory=STATIC)),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    app.add_middleware(AuthMiddleware, key=settings.api_key)
    app.add_middleware(NoSniff)
    return app


class NoSniff:
    """Every answer carries `X-Content-Type-Options: nosniff`.

    The JSON API passes on what the targets report verbatim (variant labels, client names,
    error strings), as data; the page renders it as text. A browser must never guess such an
    answer to be HTML and run markup from a scraped label.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_nosniff)
