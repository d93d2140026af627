"""The operational table's admin column is enforced where endpoints are registered: a row that
needs the admin key cannot be served without the guard in front of its endpoint."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from zai_proxy.server import operational as ops

ADMIN_ROW = ops.OperationalRoute("/admin/thing", ("POST",), admin_key=True, over_capacity=True)
OPEN_ROW = ops.OperationalRoute("/thing", ("GET",), admin_key=False, over_capacity=True)


def key_guard(request: Request) -> Response | None:
    if request.headers.get("x-key") == "k":
        return None
    return JSONResponse({"error": "no"}, status_code=401)


def app_with(calls: list[str]) -> FastAPI:
    app = FastAPI()

    @ops.handler(app, ADMIN_ROW, "POST", guard=key_guard)
    async def admin_thing(request: Request) -> Response:
        calls.append("admin")
        return JSONResponse({"done": True})

    @ops.handler(app, OPEN_ROW, "GET", guard=key_guard)
    async def open_thing(request: Request) -> Response:
        calls.append("open")
        return JSONResponse({"open": True})

    return app


async def test_an_admin_row_answers_with_the_guard_and_never_runs_the_endpoint() -> None:
    calls: list[str] = []
    transport = httpx.ASGITransport(app_with(calls))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/admin/thing")
        assert (refused.status_code, refused.json()) == (401, {"error": "no"})
        assert calls == []
        allowed = await client.post("/admin/thing", headers={"x-key": "k"})
        assert (allowed.status_code, allowed.json()) == (200, {"done": True})
        assert calls == ["admin"]


async def test_a_row_without_the_admin_column_is_not_guarded() -> None:
    calls: list[str] = []
    transport = httpx.ASGITransport(app_with(calls))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/thing")).status_code == 200
        assert calls == ["open"]


def test_an_admin_row_cannot_be_registered_without_a_guard() -> None:
    with pytest.raises(ValueError, match="needs the admin key"):
        ops.handler(FastAPI(), ADMIN_ROW, "POST")

