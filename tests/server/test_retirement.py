"""Retirement: the flag, its listeners, and the admin routes that set it (in-process; the
connection side is in tests/integration/test_retire.py)."""

from __future__ import annotations

import httpx

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from zai_proxy.server.retirement import Retirement

ADMIN = "admin-key-0123456789abcdef"


def upstream() -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json={}))


def test_listeners_hear_each_change_once() -> None:
    now = VirtualTime(10.0)
    retirement = Retirement(clock=now)
    heard: list[bool] = []
    retirement.subscribe(heard.append)
    assert retirement.set(True) is True
    now.t = 12.0
    assert retirement.set(True) is False  # a repeat (the switch re-asserts) changes nothing
    assert retirement.changed_at == 10.0
    assert retirement.set(False) is True
    assert heard == [True, False] and retirement.changed_at == 12.0


async def test_retire_routes_need_the_admin_key_and_show_on_health_and_metrics() -> None:
    proxy = InProcessProxy(upstream(), {"ADMIN_API_KEY": ADMIN})
    async with proxy as client:
        assert (await client.get("/health")).json()["retired"] is False
        assert proxy.sample("zai_proxy_retired") == 0
        denied = await client.post("/admin/retire")
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "proxy_invalid_api_key"
        wrong = await client.post("/admin/retire", headers={"x-api-key": "wrong-key-123456"})
        assert wrong.status_code == 401
        assert (await client.get("/health")).json()["retired"] is False

        done = await client.post("/admin/retire", headers={"authorization": f"Bearer {ADMIN}"})
        assert done.status_code == 200 and done.json() == {"retired": True}
        again = await client.post("/admin/retire", headers={"x-api-key": ADMIN})
        assert again.json() == {"retired": True}
        assert (await client.get("/health")).json()["retired"] is True
        assert proxy.sample("zai_proxy_retired") == 1

        undone = await client.delete("/admin/retire", headers={"x-api-key": ADMIN})
        assert undone.status_code == 200 and undone.json() == {"retired": False}
        assert (await client.get("/health")).json()["retired"] is False
        assert proxy.sample("zai_proxy_retired") == 0
        assert (await client.get("/admin/retire")).status_code == 405


async def test_retire_routes_are_off_without_an_admin_key() -> None:
    async with InProcessProxy(upstream(), {}) as client:
        for method in ("POST", "DELETE"):
            response = await client.request(method, "/admin/retire")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "proxy_not_found"
