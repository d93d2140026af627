"""`create_app`: the only place the proxy's parts are wired together.

The FastAPI app serves the operational routes (/health, /ready, /metrics, /admin); every
`/v1/...` request goes straight to the pure-ASGI `ProxyHandler`, skipping the framework's
routing and middleware on the hot path.

Who sees what: with ADMIN_API_KEY configured, /health shows client names (`quota.pacing.exempt`)
and the account hash (`rate_limit.account`) only to a request that presents it (`"detail":
"full"`); anyone else gets the rest (`"detail": "public"`): status, variant, version, readiness,
retirement, limiter and quota state, which the switch and probes read. Without ADMIN_API_KEY
there is no operator credential to ask for, and /health is full for everyone. /metrics shows the
per-client series to every scrape unless METRICS_CLIENT_NAMES=false; then only to a scrape that
presents ADMIN_API_KEY (to none when it is not configured).
The roster of clients (`clients`) names them too: it is in the full detail only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import time as dt_time
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from zai_proxy import __version__
from zai_proxy.accounting.catalog import ModelCatalog
from zai_proxy.accounting.ledger import Accounting
from zai_proxy.accounting.pricing import PeakWindow, PricingTable
from zai_proxy.accounting.tokenizer import load_tokenizer
from zai_proxy.clients.auth import ClientAuth, KeyEntry
from zai_proxy.clients.hook import ClientLimitsHook
from zai_proxy.clients.limits import ClientLimits
from zai_proxy.core.errors import (
    ConfigError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ProxyError,
    Unauthorized,
    error_body,
)
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.observe.metrics import Metrics
from zai_proxy.observe.recorder import Recorder
from zai_proxy.relay.forwarding import Forwarder
from zai_proxy.relay.handler import ProxyHandler
from zai_proxy.relay.hooks import RequestHook
from zai_proxy.relay.lifecycle import Lifecycle
from zai_proxy.relay.outbound import ClientFacing, Outbound
from zai_proxy.relay.prompt_memory import PromptMemory
from zai_proxy.relay.retry import RetryPolicy
from zai_proxy.server import operational as ops
from zai_proxy.server.accounts import AccountRuntime, account_of
from zai_proxy.server.config import Settings
from zai_proxy.server.connections import ClientBounds, ClientConnections
from zai_proxy.server.retirement import Retirement

log = logging.getLogger("zai_proxy")


class ProxyApp(FastAPI):
    """FastAPI for the operational routes; every other HTTP request goes to the proxy handler,
    which also answers (and records) the 404s for paths it does not serve."""

    proxy: ProxyHandler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif scope["path"] not in ops.PATHS:
            await self.proxy(scope, receive, send)
        elif scope["path"] in ops.STAMPED:
            await super().__call__(scope, receive, self.proxy.stamped(scope, send))
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None,
               clock: Callable[[], float] = time.monotonic,
               registry: CollectorRegistry | None = None,
               sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
               wall: Callable[[], float] = time.time) -> ProxyApp:
    """Build the proxy app from validated settings; collaborators are injectable for tests."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series are noise
    version = settings.version or __version__
    metrics = Metrics(registry, settings.deployment_variant)
    metrics.set_build(version, settings.commit, settings.build_time)
    metrics.max_workers.set(settings.max_workers)
    lifecycle = Lifecycle(clock)
    # Retirement and the client connections it releases (the server builds its protocol
    # from `connections`; in-process tests have no server and only see the flag).
    retirement = Retirement(clock)
    recorder = Recorder(metrics, settings.max_workers)
    connections = ClientConnections(metrics, recorder, ClientBounds(
        max_header_bytes=settings.max_header_bytes, read_timeout=settings.client_read_timeout,
        write_timeout=settings.client_write_timeout, send_buffer=settings.client_send_buffer,
        max_connections=settings.max_connections))
    retirement.subscribe(connections.retire)
    retirement.subscribe(lambda retired: metrics.retired.set(1 if retired else 0))
    auth = ClientAuth(settings.proxy_api_keys, key_file=settings.proxy_api_keys_file,
                      clients_file=settings.proxy_clients_file, clock=clock, wall=wall)
    errors_counted: dict[str, int] = {}

    def refresh_auth() -> None:
        """Look at the key file and the clients file now, and show their state in the
        metrics (the same four series each)."""
        auth.refresh()
        metrics.set_auth_mode("open" if auth.open else "keys")
        for status, (loaded, count, error, errors) in (
                (auth.file_status, (metrics.auth_key_file_loaded, metrics.auth_key_file_keys,
                                    metrics.auth_key_file_error, metrics.auth_key_file_errors)),
                (auth.clients_status, (metrics.clients_file_loaded, metrics.clients_file_clients,
                                       metrics.clients_file_error, metrics.clients_file_errors))):
            if status is None:
                continue
            loaded.set(status.loaded_at)
            count.set(status.count)
            error.set(1 if status.last_error else 0)
            errors.inc(status.errors - errors_counted.get(status.noun, 0))
            errors_counted[status.noun] = status.errors

    refresh_auth()
    metrics.upstream_simulated.set(1 if settings.upstream_simulated else 0)
    # One Redis link per process (one client, one pool, one degrade state), shared by the
    # account's limiter and quota (under the account's one leader lease) and the client limits.
    link = (RedisLink.connect(settings.rate_limit_storage_uri, clock=clock)
            if RedisLink.names_redis(settings.rate_limit_storage_uri) else None)
    # The roster is read at every request (weights, priorities and caps by the admission queue,
    # shares by the client budgets): a reload of the clients file takes effect at once. Clients
    # in the per-client admission metrics are their key's name (or fingerprint); an open proxy
    # knows clients only by address, which would make the labels unbounded.
    account = AccountRuntime(account_of(settings), settings, metrics, transport=transport,
                             clock=clock, wall=wall, sleep=sleep, link=link,
                             shares_of=auth.roster.shares_of, class_of=auth.roster.class_of,
                             client_label=lambda client: "anonymous" if auth.open else client)
    limiter, quota, upstream = account.limiter, account.quota, account.upstream
    pricing = load_pricing(settings)
    # The one known-model list: /v1/models answers it, metric labels are bounded by it.
    catalog = ModelCatalog.from_pricing(pricing, settings.models)
    accounting = (build_accounting(settings, metrics, pricing, catalog)
                  if settings.token_counting_enabled else None)
    client_limits = (ClientLimits(",".join(settings.client_rate_limits),
                                  settings.rate_limit_storage_uri, link=link)
                     if settings.client_rate_limits else None)
    # The request hooks, in the order the relay calls them: the plan quota first (a spent
    # quota answers before a client's request budget is counted), then the per-client limits.
    hooks: list[RequestHook] = [account.quota_hook]
    if client_limits is not None:
        hooks.append(ClientLimitsHook(client_limits, recorder))
    forwarder = Forwarder(upstream=upstream, admission=limiter.admission,
                          policy=RetryPolicy(settings.max_retries), metrics=metrics, sleep=sleep,
                          max_response_bytes=settings.max_response_bytes, hooks=hooks,
                          wall_clock=wall, prompts=PromptMemory(clock=clock))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if auth.open:
            log.warning("PROXY_API_KEYS is not set: the proxy is open to every client "
                        "that can reach it")
        if accounting is not None and accounting.tokenizer.warning:
            log.warning("token estimates use a heuristic: %s", accounting.tokenizer.warning)
        await account.start()
        if unknown := sorted(quota.exempt - set(auth.names())):
            log.warning("QUOTA_PACING_EXEMPT names no configured key: %s", ", ".join(unknown))
        lifecycle.serving()
        metrics.ready.set(1)
        try:
            yield
        finally:
            lifecycle.drain()
            metrics.ready.set(0)
            await account.stop()
            if link is not None:
                await link.aclose()
            if accounting is not None:
                accounting.tokenizer.close()

    app = ProxyApp(title="zai-proxy", version=version, lifespan=lifespan, docs_url=None,
                   redoc_url=None)
    app.proxy = ProxyHandler(
        outbound=Outbound(account.account, account.router, forwarder), hooks=hooks, auth=auth,
        accounting=accounting,
        facing=ClientFacing(settings.deployment_variant, settings.max_request_bytes,
                            json.dumps(catalog.openai_models_payload()).encode()),
        lifecycle=lifecycle, recorder=recorder, wall=wall)
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    app.state.upstream = upstream
    app.state.limiter = limiter
    app.state.accounting = accounting
    app.state.retirement = retirement
    app.state.connections = connections
    app.state.quota = quota
    app.state.auth = auth

    admin = AdminGuard(settings.admin_api_key)

    @ops.handler(app, ops.HEALTH, "GET")
    async def health(request: Request) -> JSONResponse:
        """Liveness: answers 200 whenever the process can serve; never asks the upstream."""
        refresh_auth()
        full = admin.allows(request.headers)
        body: dict[str, Any] = {
            "status": "draining" if lifecycle.draining else "ok",
            "deployment_variant": settings.deployment_variant,
            "version": version,
            "commit": settings.commit,
            "uptime_seconds": round(lifecycle.uptime(), 3),
            "in_flight": lifecycle.in_flight,
            "ready": lifecycle.ready,
            "retired": retirement.retired,
            "upstream": "simulated" if settings.upstream_simulated else "z.ai",
            "auth": "open" if auth.open else "keys",
            "auth_key_file": auth.file_status.as_dict() if auth.file_status else None,
            "clients_file": auth.clients_status.as_dict() if auth.clients_status else None,
            "clients": auth.roster.health(),
            "rate_limit": limiter.health(),
            "quota": quota.health(),
            # "ok", or "stopped" (Z.AI stopped the account) with `account_stop` saying why.
            **quota.stops.health(),
        }
        if client_limits is not None:
            body["client_rate_limits"] = client_limits.health()
        if accounting is not None:
            tok = accounting.tokenizer
            body["tokenizer"] = {"encoding": tok.name, "source": tok.source,
                                 "warning": tok.warning}
        body["detail"] = "full" if full else "public"
        return JSONResponse(body if full else _public_health(body, settings.account))

    @ops.handler(app, ops.READY, "GET")
    async def ready() -> JSONResponse:
        """Readiness: 200 while serving, 503 while starting or draining."""
        status = 200 if lifecycle.ready else 503
        return JSONResponse({"ready": lifecycle.ready, "phase": lifecycle.phase.value},
                            status_code=status)

    @ops.handler(app, ops.METRICS, "GET")
    async def metrics_route(request: Request) -> Response:
        limiter.refresh_gauges()
        refresh_auth()  # the key file may change
        quota.refresh_gauges()
        text = generate_latest(registry)
        if not settings.metrics_client_names and not admin.presented(request.headers):
            text = _without_families(text, CLIENT_FAMILIES)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @ops.handler(app, ops.RESET_RATE_LIMIT, "POST", guard=admin.guard)
    async def reset_rate_limit(request: Request) -> Response:
        """Forget the learned ceilings; needs ADMIN_API_KEY (off without it)."""
        await limiter.reset()
        log.warning("rate limit reset by admin request")
        return JSONResponse({"reset": True, "rate_limit": limiter.health()})

    @ops.handler(app, ops.RETIRE, "POST", guard=admin.guard)
    async def retire(request: Request) -> Response:
        """Release this pod's clients (ADMIN_API_KEY): see `zai_proxy.server.retirement`."""
        return _set_retired(request, True)

    @ops.handler(app, ops.RETIRE, "DELETE", guard=admin.guard)
    async def unretire(request: Request) -> Response:
        """Keep clients again: undoes POST /admin/retire (ADMIN_API_KEY)."""
        return _set_retired(request, False)

    def _set_retired(request: Request, retired: bool) -> Response:
        if retirement.set(retired):
            log.warning("retired by admin request: clients are asked to leave" if retired
                        else "un-retired by admin request: clients are kept again",
                        extra={"fields": {"connections": len(connections.live)}})
        return JSONResponse({"retired": retirement.retired})

    @ops.handler(app, ops.LIMITER_STATE, "GET", guard=admin.guard)
    async def get_limiter_state(request: Request) -> Response:
        """The learned ceilings as an account-level document (ADMIN_API_KEY)."""
        return JSONResponse(limiter.export_state())

    @ops.handler(app, ops.LIMITER_STATE, "PUT", guard=admin.guard)
    async def put_limiter_state(request: Request) -> Response:
        """Adopt ceilings another proxy of this account exported (ADMIN_API_KEY)."""
        body = await request.body()
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return _error_response(InvalidRequest("limiter state is not valid JSON"))
        try:
            applied = await limiter.import_state(doc)
        except ProxyError as error:
            return _error_response(error)
        return JSONResponse({"applied": applied, "rate_limit": limiter.health()})

    if missing := ops.unserved(app):
        raise RuntimeError(f"operational routes without an endpoint: {missing}")
    _install_error_handlers(app)
    return app


def _error_response(error: ProxyError, headers: Mapping[str, str] | None = None) -> Response:
    if isinstance(error, Unauthorized):
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="zai-proxy"'}
    return Response(error.body(), status_code=error.status, media_type="application/json",
                    headers=headers)


def build_accounting(settings: Settings, metrics: Metrics, pricing: PricingTable,
                     catalog: ModelCatalog) -> Accounting:
    """Tokenizer (loaded once, here, never on the request path), prices, model catalog."""
    tokenizer = load_tokenizer(settings.tokenizer_encoding, settings.tiktoken_cache_dir or None)
    return Accounting(tokenizer=tokenizer, pricing=pricing, catalog=catalog, metrics=metrics,
                      default_model=settings.tokenizer_model)


def load_pricing(settings: Settings) -> PricingTable:
    """The pricing table (built-in prices, PRICING_FILE over them, PEAK_* on top)."""
    try:
        pricing = PricingTable.load(settings.pricing_file or None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"PRICING_FILE: {exc}") from None
    if settings.peak_hours == "off":
        pricing.peak = None
    elif settings.peak_hours:
        start, end = (dt_time.fromisoformat(part) for part in settings.peak_hours.split("-"))
        pricing.peak = PeakWindow(start, end, settings.peak_timezone, settings.peak_multiplier)
    return pricing


# Metric families whose labels name clients (METRICS_CLIENT_NAMES).
CLIENT_FAMILIES = (b"zai_proxy_client_tokens", b"zai_proxy_client_budget_",
                   b"zai_proxy_client_admitted", b"zai_proxy_client_queue_wait_seconds",
                   b"zai_proxy_client_rejections", b"zai_proxy_client_rate_share_ratio")


def _without_families(text: bytes, families: tuple[bytes, ...]) -> bytes:
    """The exposition `text` without the samples, HELP and TYPE lines of `families`."""
    kept = []
    for line in text.split(b"\n"):
        name = line[7:] if line.startswith((b"# HELP ", b"# TYPE ")) else line
        if not name.startswith(families):
            kept.append(line)
    return b"\n".join(kept)


def _public_health(body: dict[str, Any], account: str) -> dict[str, Any]:
    """/health without the names of clients and the account hash (see the module docstring):
    `clients`, `rate_limit.account`, `rate_limit.clients`, the per-client parts of
    `rate_limit.shares`, `quota.pacing.exempt` and `quota.client_budgets.clients` are left out,
    and the account hash anywhere else (the shared state's Redis namespace) is replaced by
    `<hidden>`."""
    public = {k: v for k, v in body.items() if k != "clients"}
    if isinstance(rate := body.get("rate_limit"), dict):
        public["rate_limit"] = {k: v for k, v in rate.items() if k not in ("account", "clients")}
        if isinstance(shares := rate.get("shares"), dict):
            public["rate_limit"]["shares"] = {
                k: v for k, v in shares.items() if k not in ("paced", "in_flight_caps")}
    if isinstance(quota := body.get("quota"), dict):
        quota = dict(quota)
        if isinstance(quota.get("pacing"), dict):
            quota["pacing"] = {k: v for k, v in quota["pacing"].items() if k != "exempt"}
        if isinstance(quota.get("client_budgets"), dict):
            quota["client_budgets"] = {k: v for k, v in quota["client_budgets"].items()
                                       if k != "clients"}
        public["quota"] = quota
    return _hide(public, account) if account else public


def _hide(value: Any, text: str) -> Any:
    if isinstance(value, str):
        return value.replace(text, "<hidden>")
    if isinstance(value, dict):
        return {k: _hide(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide(v, text) for v in value]
    return value


class AdminGuard:
    """Admin routes: 404 when ADMIN_API_KEY is unset, 401 without the key (constant time)."""

    def __init__(self, key: str) -> None:
        self._auth = ClientAuth((KeyEntry(key),)) if key else None

    def allows(self, headers: Any) -> bool:
        """Whether a request with `headers` may see the full operational detail: it presents
        ADMIN_API_KEY, or none is configured (there is no operator credential to ask for)."""
        return self._auth is None or self.check(headers) is None

    def presented(self, headers: Any) -> bool:
        """Whether ADMIN_API_KEY is configured and presented in `headers`."""
        return self._auth is not None and self.check(headers) is None

    def guard(self, request: Request) -> Response | None:
        """The answer to an admin request that may not pass, or None (`ops.handler`'s guard)."""
        return self.check(request.headers)

    def check(self, headers: Any) -> Response | None:
        """404 while ADMIN_API_KEY is unset, 401 without it in `headers`, else None."""
        if self._auth is None:
            return _error_response(NotFound("admin routes are off: set ADMIN_API_KEY"))
        try:
            self._auth.client_id([(k.encode(), v.encode()) for k, v in headers.items()])
        except Unauthorized as exc:
            return _error_response(exc)
        return None


def _install_error_handlers(app: FastAPI) -> None:
    """Every error the framework makes is OpenAI-shaped too."""

    respond = _error_response

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, exc: ClientDisconnect) -> Response:
        # The client left while its body was being read (an admin PUT): nobody to answer,
        # nothing to log as a server fault.
        return respond(InvalidRequest("the client disconnected before sending its body"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return respond(NotFound("no such route"))
        if exc.status_code == 405:  # Starlette names the allowed methods in its Allow header
            return respond(MethodNotAllowed("method not allowed on this route"), exc.headers)
        error = ProxyError(str(exc.detail))
        error.status = exc.status_code
        return respond(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return Response(error_body("invalid request parameters", "invalid_request_error",
                                   "proxy_invalid_request"),
                        status_code=400, media_type="application/json")

