"""The real upstream session (aiohttp) against a raw upstream that misbehaves on the wire, with
the proxy as a real process: no cookie jar, oversized headers, a body cut short."""

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

JSON = ("Content-Type", "application/json")
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = json.dumps({"id": "c1", "choices": [{"message": {"content": "ok"}}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


def answer(request: SeenRequest) -> tuple[bytes, bool]:
    path = request.target.split("?")[0]
    if path.endswith("/files/big-header"):
        return http_response(200, b"{}", [JSON, ("X-Huge", "h" * 20_000)]), True
    if path.endswith("/files/cut/content"):  # promises 1 MB, sends 400 KB, hangs up
        return http_response(200, b"b" * 400_000, [("Content-Type", "application/zip")],
                             length=1_000_000), True
    # A load balancer's affinity cookie on every answer.
    return http_response(200, ANSWER, [JSON, ("Set-Cookie", "affinity=lb-7; Path=/")]), False


upstream = recording_upstream(answer)


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[Process]:
    # A host name, not an IP: aiohttp's cookie jar ignores cookies from IP hosts.
    base = f"http://localhost:{upstream.port}"
    with running_zai_proxy("serve", env=proxy_env(
        base, MAX_RETRIES="0", SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready") as process:
        yield process
    log = process.output()
    assert "Traceback" not in log and UPSTREAM_KEY not in log


def test_upstream_cookies_are_never_replayed(proxy: Process, upstream: RecordingUpstream) -> None:
    start = len(upstream.seen)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        answers = [client.post("/v1/chat/completions", json=CHAT) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("set-cookie" not in a.headers for a in answers)
    sent = upstream.seen[start:]
    assert len(sent) == 3
    assert [r.header("cookie") for r in sent] == [None, None, None]


def test_an_upstream_header_over_the_limit_is_a_clean_502(proxy: Process) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        response = client.get("/v1/files/big-header")
        after = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "proxy_upstream_bad_response"
    assert after.status_code == 200


def test_a_large_body_cut_short_reaches_the_client_cut(proxy: Process) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/v1/files/cut/content")
        health = client.get("/health").json()
        metrics = client.get("/metrics").text
    assert health["in_flight"] == 0 and health["rate_limit"]["in_flight_upstream"] == 0
    assert ('zai_proxy_requests_total{deployment_variant="production",method="GET",'
            'route="/v1/files/{file_id}/content",status_code="502"} 1.0') in metrics
