"""What the dashboard server sends from scraped data (zai_proxy/dashboard/app.py, auth.py).

Scraped labels and strings travel only as JSON data, never inside server-built HTML: the page
(`/`) is the static file, whatever the targets report; every API answer is `application/json`
with `X-Content-Type-Options: nosniff`, so no browser takes it for HTML; and the one page the
server builds, the login page, escapes what it puts in. The browser half (the page renders
all of it as text) is tests/integration/test_dashboard_escaping.py.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.dashboard import Rig
from zai_proxy.dashboard.auth import login_page

EVIL = '<img src=x onerror=alert(1)></script><script>alert("v")</script>'


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Rig, httpx.AsyncClient]]:
    r = Rig()
    async with r.app.router.lifespan_context(r.app):
        transport = httpx.ASGITransport(app=r.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            yield r, client


async def test_scraped_labels_travel_as_json_data_only(
    rig: tuple[Rig, httpx.AsyncClient]
) -> None:
    r, client = rig
    await r.round()
    r.proxy.request(EVIL)
    await r.round()
    status = await client.get("/api/status")
    assert status.json()["targets"][0]["variants"] == [EVIL]
    metrics = await client.get("/api/metrics?range=5m")
    assert metrics.json()["variants"] == [EVIL]
    for answer in (status, metrics, await client.get("/api/quota"),
                   await client.get("/api/config"), await client.get("/healthz")):
        assert answer.headers["content-type"].startswith("application/json"), answer.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.url
    page = await client.get("/")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<img" not in page.text and "alert" not in page.text


def test_the_login_page_escapes_what_it_shows() -> None:
    body = bytes(login_page(EVIL, 401).body).decode()
    assert html.escape(EVIL) in body
    assert "<img" not in body and "<script>" not in body
