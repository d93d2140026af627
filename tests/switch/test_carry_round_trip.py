"""The switch's carry moves a learned state from the old variant's pods to the new one's intact.

`CeilingCarry` (zai_proxy/switch/carry.py) runs as it does in a switch, its admin calls answered
by real proxies in-process (each "pod" an app on the test's virtual time) instead of through
`kubectl exec`: what v1 learned is what v2 holds afterwards, and a document v2 refuses stops the
carry.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from zai_proxy.switch.carry import CeilingCarry
from zai_proxy.switch.pod_admin import AdminFailure, PodAdmin
from zai_proxy.switch.steps import StepFailed, Steps

ADMIN_KEY = "admin-key-0123456789"


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "choices": []})


def proxy(vt: VirtualTime, variant: str, **env: str) -> InProcessProxy:
    return InProcessProxy(httpx.MockTransport(ok), {
        "TOKEN_COUNTING_ENABLED": "false", "RATE_LIMIT_INITIAL": "10", "RATE_LIMIT_MAX": "100",
        "MAX_WORKERS": "10", "ADMIN_API_KEY": ADMIN_KEY, "DEPLOYMENT_VARIANT": variant, **env},
        clock=vt, sleep=vt.sleep, wall=vt.wall)


class ProxyPods(PodAdmin):
    """`PodAdmin` whose pods are in-process proxies: the carry runs in a worker thread (it is
    synchronous, as in the switch) and each call is sent to the pod's app on the test's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 clients: dict[str, httpx.AsyncClient]) -> None:
        self.loop, self.clients = loop, clients

    def call(self, pod: str, method: str, path: str, body: Any = None) -> Any:
        request = self.clients[pod].request(
            method, path, headers={"authorization": f"Bearer {ADMIN_KEY}"},
            content=None if body is None else json.dumps(body))
        answer = asyncio.run_coroutine_threadsafe(request, self.loop).result()
        if answer.status_code >= 300:
            raise AdminFailure(pod, "http", f"HTTP {answer.status_code}: {answer.text}",
                               status=answer.status_code)
        return answer.json()


def learned(app: InProcessProxy) -> tuple[Any, ...]:
    doc = app.limiter.export_state()
    rate = doc["rate"]
    return (doc["account"], rate["ceiling"], rate["floor"], rate["upper"], rate["current"],
            doc["concurrency"]["ceiling"])


async def carry(v1: InProcessProxy, v2: InProcessProxy) -> list[str]:
    said: list[str] = []
    async with v1 as old, v2 as new:
        pods = ProxyPods(asyncio.get_running_loop(), {"v1-a": old, "v2-a": new})
        step = CeilingCarry(pods, Steps(out=said.append))

        def run() -> None:
            plan = step.plan(["v1-a"], ["v2-a"], "v1", "v2", v1.limiter.wall())
            assert plan is not None, said
            step.put(plan, plan.doc)

        await asyncio.to_thread(run)
    return said


async def test_what_v1_learned_is_what_v2_holds_after_the_carry() -> None:
    vt = VirtualTime()
    v1, v2 = proxy(vt, "v1"), proxy(vt, "v2")
    v1.limiter.rate.restore(20.0, 19.2)
    v1.limiter.concurrency.restore(3)
    sent = learned(v1)
    assert learned(v2) != sent
    said = await carry(v1, v2)
    assert learned(v2) == sent == (v1.settings.account, 20.0, 19.2, 20.0, 19.2, 3)
    assert v2.limiter.restored_from == "admin"
    assert "    v2-a applied: rate ceiling 20.00 req/s, concurrency ceiling 3" in said


async def test_a_document_v2_refuses_stops_the_carry() -> None:
    """v1 exported long ago (its wall clock is behind): v2 finds it too old and says so."""
    vt = VirtualTime()
    v1 = proxy(vt, "v1", RATE_LIMIT_STATE_MAX_AGE="60")
    v2 = proxy(vt, "v2", RATE_LIMIT_STATE_MAX_AGE="60")
    v1.limiter.rate.restore(20.0, 19.2)
    v1.limiter.wall = lambda: vt.wall() - 600
    with pytest.raises(StepFailed, match="exported_at is 600 s old"):
        await carry(v1, v2)
    assert v2.limiter.health()["ceiling"] is None
