"""The operational routes (probes, the scrape, the admin API) in one table, and what derives
from it.

Each row says what the proxy promises for one path: the methods it answers, whether it needs
ADMIN_API_KEY (404 while none is configured, 401 without it), whether a connection over
MAX_CONNECTIONS is still served it (probes, scrapes and the admin API are: the switch retires an
overloaded pod through it), and whether its answers carry `x-request-id` and
`x-zai-proxy-variant` like the proxied ones.

Derived here, used elsewhere:
- `PATHS`: what the FastAPI app answers itself; every other path goes to the proxy handler
  (`server.app.ProxyApp`).
- `STAMPED`: the paths whose answers the proxy handler stamps with the request id and variant.
- `SERVED_OVER_CAPACITY`: path prefixes served over MAX_CONNECTIONS (`server.http_protocol`).
  The admin API counts as the one prefix `/admin/`, so an unknown admin path over capacity gets
  the app's 404 rather than the 503 of a refused connection.
- `handler(app, route, method, guard=)`: the decorator that registers an endpoint for a row;
  for a row that needs the admin key it puts `guard` (the admin-key check) in front, so an
  endpoint cannot forget it. `unserved(app)`: the rows' methods that have no endpoint
  (`create_app` refuses to build then).
The handlers themselves and the admin-key check live in `server.app`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

ADMIN_PREFIX = "/admin/"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
# Answers a request that may not pass (404 while no admin key is set, 401 without it), or None.
Guard = Callable[[Request], Response | None]


@dataclass(frozen=True)
class OperationalRoute:
    """One operational path and the promises made for it (see the module docstring)."""

    path: str
    methods: tuple[str, ...]
    admin_key: bool
    over_capacity: bool
    stamped: bool = True


HEALTH = OperationalRoute("/health", ("GET",), admin_key=False, over_capacity=True)
READY = OperationalRoute("/ready", ("GET",), admin_key=False, over_capacity=True)
METRICS = OperationalRoute("/metrics", ("GET",), admin_key=False, over_capacity=True)
RESET_RATE_LIMIT = OperationalRoute("/admin/reset-rate-limit", ("POST",), admin_key=True,
                                    over_capacity=True)
RETIRE = OperationalRoute("/admin/retire", ("POST", "DELETE"), admin_key=True,
                          over_capacity=True)
LIMITER_STATE = OperationalRoute("/admin/limiter-state", ("GET", "PUT"), admin_key=True,
                                 over_capacity=True)

ROUTES: tuple[OperationalRoute, ...] = (HEALTH, READY, METRICS, RESET_RATE_LIMIT, RETIRE,
                                        LIMITER_STATE)


def paths(routes: Iterable[OperationalRoute]) -> frozenset[str]:
    """Every path of `routes`."""
    return frozenset(route.path for route in routes)


def stamped_paths(routes: Iterable[OperationalRoute]) -> frozenset[str]:
    """The paths of `routes` whose answers carry the request id and the variant."""
    return frozenset(route.path for route in routes if route.stamped)


def over_capacity_prefixes(routes: Iterable[OperationalRoute]) -> tuple[str, ...]:
    """Prefixes (for `str.startswith`) of the paths of `routes` served over MAX_CONNECTIONS;
    an admin path stands for the whole admin API (all of its rows must agree)."""
    routes = tuple(routes)
    admin = {route.over_capacity for route in routes if route.path.startswith(ADMIN_PREFIX)}
    if len(admin) > 1:
        raise ValueError(f"the admin API is served over capacity whole or not at all: {routes}")
    prefixes = (ADMIN_PREFIX if route.path.startswith(ADMIN_PREFIX) else route.path
                for route in routes if route.over_capacity)
    return tuple(dict.fromkeys(prefixes))


PATHS = paths(ROUTES)
STAMPED = stamped_paths(ROUTES)
SERVED_OVER_CAPACITY = over_capacity_prefixes(ROUTES)


def handler(app: FastAPI, route: OperationalRoute, method: str, *,
            guard: Guard | None = None) -> Callable[[F], F]:
    """Decorator registering the endpoint of `method` on `route` (a method the row lists);
    a row that needs the admin key is answered by `guard` first, which it requires."""
    if method not in route.methods:
        raise ValueError(f"{method} {route.path} is not in the operational table")
    if route.admin_key and guard is None:
        raise ValueError(f"{route.path} needs the admin key: give its endpoint a guard")

    def register(endpoint: F) -> F:
        target: Callable[..., Awaitable[Any]] = endpoint
        if route.admin_key and guard is not None:
            check = guard

            @functools.wraps(endpoint)
            async def guarded(request: Request) -> Any:
                if (denied := check(request)) is not None:
                    return denied
                return await endpoint(request)

            target = guarded
        app.api_route(route.path, methods=[method])(target)
        return endpoint

    return register


def unserved(app: FastAPI, routes: Iterable[OperationalRoute] = ROUTES) -> list[str]:
    """`METHOD path` of every row's method that `app` has no endpoint for."""
    served = {(r.path, method) for r in app.routes if isinstance(r, APIRoute)
              for method in r.methods or ()}
    return [f"{method} {route.path}" for route in routes for method in route.methods
            if (route.path, method) not in served]
