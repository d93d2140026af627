"""`PUT /admin/limiter-state` adopts everything another proxy of the account exported: the rate
ceiling and floor and the concurrency ceiling, which then bounds admission and shows in /health.

Two apps in-process on virtual time (no state file, no sockets).
"""

from __future__ import annotations

import httpx

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "choices": []})


class App(InProcessProxy):
    def __init__(self, **env: str) -> None:
        self.vt = VirtualTime()
        super().__init__(httpx.MockTransport(ok), {
            "TOKEN_COUNTING_ENABLED": "false", "RATE_LIMIT_INITIAL": "10",
            "RATE_LIMIT_MAX": "100", "MAX_WORKERS": "10", "ADMIN_API_KEY": ADMIN_KEY, **env},
            clock=self.vt, sleep=self.vt.sleep, wall=self.vt.wall)


async def test_an_exported_concurrency_ceiling_is_adopted_with_the_rate_limits() -> None:
    source = App(DEPLOYMENT_VARIANT="v1")
    async with source as client:
        source.limiter.rate.restore(20.0, 19.2)
        source.limiter.concurrency.restore(3)  # Z.AI allows three in flight
        doc = (await client.get("/admin/limiter-state", headers=ADMIN)).json()
    assert doc["concurrency"] == {"ceiling": 3}

    target = App(DEPLOYMENT_VARIANT="v2")
    async with target as client:
        before = (await client.get("/health")).json()["rate_limit"]
        put = await client.put("/admin/limiter-state", headers=ADMIN, json=doc)
        health = (await client.get("/health")).json()["rate_limit"]
    assert before["concurrency_ceiling"] is None and before["concurrency_limit"] == 10
    assert put.status_code == 200, put.text
    assert put.json()["applied"] == {"rate_ceiling": 20.0, "rate_floor": 19.2,
                                     "concurrency_ceiling": 3}
    assert put.json()["rate_limit"]["concurrency_ceiling"] == 3
    assert health["concurrency_ceiling"] == health["concurrency_limit"] == 3
    assert health["ceiling"] == 20.0 and health["floor"] == 19.2
    assert health["restored_from"] == "admin"
    assert target.admission.concurrency.limit == 3  # what admission enforces from now on


async def test_a_document_with_only_a_concurrency_ceiling_leaves_the_rate_alone() -> None:
    app = App()
    async with app as client:
        put = await client.put("/admin/limiter-state", headers=ADMIN, json={
            "account": app.settings.account, "concurrency": {"ceiling": 4}})
        health = (await client.get("/health")).json()["rate_limit"]
    assert put.status_code == 200, put.text
    assert put.json()["applied"] == {"rate_ceiling": None, "rate_floor": None,
                                     "concurrency_ceiling": 4}
    assert health["concurrency_ceiling"] == health["concurrency_limit"] == 4
    assert health["ceiling"] is None and health["current_rate"] == 10
