"""The request path against a raw upstream that misbehaves on the wire, the proxy a real process.

- An upstream that echoes the request's key (in its status line, an error body, a
  `www-authenticate` and another header) must not hand the key to the client or the log.
- An upstream that reads a POST and closes without answering may have spent tokens on it: the
  proxy must not send it again (a GET may be retried).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import UPSTREAM_KEY, proxy_env
from tests.support.servers import Process, running_zai_proxy
from tests.support.upstreams import (
    RecordingUpstream,
    SeenRequest,
    http_response,
    recording_upstream,
)

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


def echoed_key(request: SeenRequest) -> str:
    return (request.header("authorization") or "").removeprefix("Bearer ")


def answer(request: SeenRequest) -> tuple[bytes, bool]:
    path = request.target.split("?")[0]
    key = echoed_key(request)
    if path.endswith("/files/hangup") or b"hang up" in request.body:
        return b"", True  # read the whole request, then close without a byte
    if path.endswith("/files/bad-status"):  # a status line aiohttp cannot parse
        return f"HTTP/1.1 2x0 {key}\r\nContent-Length: 0\r\n\r\n".encode(), True
    if path.endswith("/files/echo"):
        body = json.dumps({"error": {"message": f"invalid key {key}", "code": "1000"}}).encode()
        return http_response(401, body, [
            ("Content-Type", "application/json"),
            ("WWW-Authenticate", f'Bearer realm="zai", error="invalid_token", key="{key}"'),
            ("X-Debug-Auth", f"Bearer {key}")]), False
    return http_response(404, b"{}", [("Content-Type", "application/json")]), False


upstream = recording_upstream(answer)


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        f"http://127.0.0.1:{upstream.port}", MAX_RETRIES="2", SHUTDOWN_DRAIN_SECONDS="0"),
        ready_path="/ready") as process:
        yield process


def everything(response: httpx.Response) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in response.headers.multi_items())
    return f"{response.status_code} {response.reason_phrase}\n{head}".encode() + response.content


def test_the_upstream_key_echoed_back_reaches_no_client_byte_and_no_log(
        proxy: Process, upstream: RecordingUpstream) -> None:
    with httpx.Client(base_url=proxy.url, timeout=20) as client:
        bad_status = client.get("/v1/files/bad-status")
        echo = client.get("/v1/files/echo")
    assert echoed_key(upstream.seen[-1]) == UPSTREAM_KEY  # the upstream did quote the key
    assert bad_status.status_code == 502
    assert bad_status.json()["error"]["code"] == "proxy_upstream_bad_response"
    assert echo.status_code == 401
    assert json.loads(echo.content)["error"]["message"] == "invalid key <redacted>"
    assert "<redacted>" in echo.headers["www-authenticate"]
    assert echo.headers["x-debug-auth"] == "Bearer <redacted>"
    assert int(echo.headers["content-length"]) == len(echo.content)
    for response in (bad_status, echo):
        assert UPSTREAM_KEY.encode() not in everything(response)
    assert UPSTREAM_KEY not in proxy.output()


def test_a_post_the_upstream_read_and_hung_up_on_is_sent_once(
        proxy: Process, upstream: RecordingUpstream) -> None:
    start = len(upstream.seen)
    with httpx.Client(base_url=proxy.url, timeout=20) as client:
        response = client.post("/v1/chat/completions",
                               json={**CHAT, "messages": [{"role": "user", "content": "hang up"}]})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "proxy_upstream_disconnected"
    posts = [r for r in upstream.seen[start:] if r.method == "POST"]
    assert len(posts) == 1


def test_a_get_the_upstream_hung_up_on_may_be_retried(
        proxy: Process, upstream: RecordingUpstream) -> None:
    start = len(upstream.seen)
    with httpx.Client(base_url=proxy.url, timeout=20) as client:
        response = client.get("/v1/files/hangup")
    assert response.status_code == 502
    assert len(upstream.seen[start:]) > 1
