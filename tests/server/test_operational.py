"""The operational table: every row is answered by the app as it says (methods, admin key,
stamping, service over MAX_CONNECTIONS), and every list derived from it follows a new row."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from tests.support.protocol import Connection
from zai_proxy.server import operational as ops

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
UPSTREAM = httpx.MockTransport(lambda request: httpx.Response(200, json={}))


def _rows() -> list[tuple[ops.OperationalRoute, str]]:
    return [(route, method) for route in ops.ROUTES for method in route.methods]


def _body(method: str) -> bytes | None:
    return b"{}" if method in ("PUT", "POST") else None


async def test_every_row_is_answered_as_the_table_says() -> None:
    proxy = InProcessProxy(UPSTREAM, {"ADMIN_API_KEY": ADMIN_KEY, "DEPLOYMENT_VARIANT": "v2"})
    async with proxy as client:
        assert ops.unserved(proxy.app) == []
        for route, method in _rows():
            what = f"{method} {route.path}"
            keyed = await client.request(method, route.path, content=_body(method),
                                         headers={**ADMIN, "x-request-id": "r1"})
            assert keyed.status_code not in (401, 404, 405), (what, keyed.text)
            if route.stamped:
                assert keyed.headers["x-request-id"] == "r1", what
                assert keyed.headers["x-zai-proxy-variant"] == "v2", what
            bare = await client.request(method, route.path, content=_body(method))
            assert (bare.status_code == 401) is route.admin_key, (what, bare.status_code)
        for route in ops.ROUTES:  # the methods no row lists: the app's 405, not the proxy's
            for method in set(ALL_METHODS) - set(route.methods):
                other = await client.request(method, route.path, headers=ADMIN)
                assert other.status_code == 405, (method, route.path, other.text)


async def test_admin_rows_are_off_without_an_admin_key() -> None:
    async with InProcessProxy(UPSTREAM, {}) as client:
        for route, method in _rows():
            answer = await client.request(method, route.path, headers=ADMIN,
                                          content=_body(method))
            assert (answer.status_code == 404) is route.admin_key, (method, route.path)
            if route.admin_key:
                assert "ADMIN_API_KEY" in answer.json()["error"]["message"]


def _request(method: str, path: str) -> bytes:
    return (b"%s %s HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer %s\r\n"
            b"content-length: 2\r\n\r\n{}" % (method.encode(), path.encode(), ADMIN_KEY.encode()))


async def test_over_max_connections_the_table_decides_who_is_served() -> None:
    proxy = InProcessProxy(UPSTREAM, {"ADMIN_API_KEY": ADMIN_KEY, "MAX_CONNECTIONS": "1"})
    vt = VirtualTime()
    connections = proxy.app.state.connections
    first = Connection(proxy.app, connections, vt)
    assert connections.over_capacity()

    async def over_capacity(method: str, path: str) -> bytes:
        extra = Connection(proxy.app, connections, vt)
        await extra.send(_request(method, path))
        return extra.take()

    for route, method in _rows():
        raw = await over_capacity(method, route.path)
        refused = b"proxy_too_many_connections" in raw
        assert refused is not route.over_capacity, (method, route.path, raw[:200])
        assert raw.startswith(b"HTTP/1.1 "), raw
    # The admin API is served whole: an unknown admin path gets the app's 404.
    assert (await over_capacity("GET", "/admin/nope")).startswith(b"HTTP/1.1 404")
    assert b"proxy_too_many_connections" in await over_capacity("GET", "/v1/models")
    del first


NEW = ops.OperationalRoute("/livez", ("GET",), admin_key=False, over_capacity=True)


@pytest.mark.parametrize("row", [NEW, replace(NEW, path="/admin/drain", admin_key=True)])
def test_a_row_added_to_the_table_appears_in_every_derived_list(
        row: ops.OperationalRoute) -> None:
    table = (*ops.ROUTES, row)
    assert row.path in ops.paths(table)
    assert row.path in ops.stamped_paths(table)
    assert row.path.startswith(ops.over_capacity_prefixes(table))
    assert row.path not in ops.stamped_paths((*ops.ROUTES, replace(row, stamped=False)))
    kept_out = ops.over_capacity_prefixes((*ops.ROUTES, replace(NEW, over_capacity=False)))
    assert not NEW.path.startswith(kept_out)


def test_the_derived_lists_are_those_of_the_table() -> None:
    assert ops.PATHS == ops.paths(ops.ROUTES) == {route.path for route in ops.ROUTES}
    assert ops.STAMPED == ops.stamped_paths(ops.ROUTES)
    assert ops.SERVED_OVER_CAPACITY == ops.over_capacity_prefixes(ops.ROUTES)
    assert ops.SERVED_OVER_CAPACITY == ("/health", "/ready", "/metrics", "/admin/")


def test_the_admin_api_is_served_over_capacity_whole_or_not_at_all() -> None:
    with pytest.raises(ValueError, match="whole"):
        ops.over_capacity_prefixes((*ops.ROUTES, replace(ops.RETIRE, path="/admin/x",
                                                         over_capacity=False)))


def test_an_endpoint_is_only_registered_for_a_row_and_every_row_needs_one() -> None:
    proxy = InProcessProxy(UPSTREAM, {})
    with pytest.raises(ValueError, match="not in the operational table"):
        ops.handler(proxy.app, ops.HEALTH, "POST")
    assert ops.unserved(proxy.app, (*ops.ROUTES, NEW)) == ["GET /livez"]
