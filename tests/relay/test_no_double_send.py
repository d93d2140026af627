"""A request the upstream may have read is re-sent only when its method is safe.

In-process: the scripted upstream fails the way the aiohttp transport reports each case.
"""

from __future__ import annotations

import aiohttp
import httpx
import pytest

from tests.support.forwarding import CHAT, Harness, Script, ok


def hung_up(request: httpx.Request) -> httpx.Response:
    """What httpx_aiohttp raises when the upstream read the request and closed: aiohttp's
    ServerDisconnectedError, mapped to httpx.ConnectTimeout (sic)."""
    try:
        raise aiohttp.ServerDisconnectedError()
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.ConnectTimeout("Server disconnected") from exc


def reset(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadError("connection reset by peer")


def never_connected(request: httpx.Request) -> httpx.Response:
    try:
        raise aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
            OSError(111, "refused"))
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc


@pytest.mark.parametrize("failure", [hung_up, reset])
async def test_a_post_the_upstream_may_have_read_is_sent_once(failure: object) -> None:
    script = Script(failure, ok)  # type: ignore[arg-type]
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "proxy_upstream_disconnected"
    assert len(script.seen) == 1 and harness.delays == []
    assert harness.in_flight() == 0


@pytest.mark.parametrize("failure", [hung_up, reset])
async def test_a_get_may_be_sent_again(failure: object) -> None:
    script = Script(failure, lambda request: httpx.Response(200, content=b"file"))  # type: ignore[arg-type]
    harness = Harness(script)
    async with harness as client:
        response = await client.get("/v1/files/f1/content")
    assert response.status_code == 200 and len(script.seen) == 2


async def test_a_post_that_never_reached_the_upstream_is_retried() -> None:
    script = Script(never_connected, ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and len(script.seen) == 2
