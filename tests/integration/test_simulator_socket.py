"""The real `zai-proxy simulate` process over TCP: incremental streams, real resets, clean exit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.servers import Process, start_zai_proxy

CHAT = "/api/paas/v4/chat/completions"
BEARER = {"Authorization": "Bearer sk-test"}
BODY = {"model": "glm-4.7", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def simulator() -> Iterator[Process]:
    process = start_zai_proxy("simulate", "--chunks", "5", "--chunk-gap-ms", "100")
    try:
        yield process
    finally:
        assert process.terminate() == 0, process.output()


def test_stream_arrives_incrementally(simulator: Process) -> None:
    arrivals: list[tuple[float, str]] = []
    start = time.monotonic()
    with httpx.stream("POST", simulator.url + CHAT, json=BODY, headers=BEARER,
                      timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - start, line[6:]))
    assert arrivals[-1][1] == "[DONE]"
    usage = json.loads(arrivals[-2][1])["usage"]
    assert usage["prompt_tokens"] == 3 and usage["completion_tokens"] == 10
    first_content = arrivals[1][0]
    last = arrivals[-1][0]
    assert last - first_content >= 0.35, arrivals  # 4 gaps of 100 ms between 5 chunks
    assert first_content < 0.2, arrivals


def test_reset_truncates_the_chunked_body(simulator: Process) -> None:
    received: list[str] = []
    headers = {**BEARER, "x-sim-reset-after-chunks": "2"}
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
        "POST", simulator.url + CHAT, json=BODY, headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line[6:])
    assert len(received) == 3 and "[DONE]" not in received
    stats = httpx.get(simulator.url + "/_stats").json()
    assert stats["events"]["reset"] >= 1 and stats["in_flight"] == 0
    assert "Exception in ASGI application" not in simulator.output()
    # the server still serves after dropping a connection
    ok = httpx.post(simulator.url + CHAT, json={**BODY, "stream": False}, headers=BEARER)
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] == 13


def test_anthropic_bearer_gets_edge_404(simulator: Process) -> None:
    response = httpx.post(simulator.url + "/api/anthropic/v1/messages", headers=BEARER,
                          json={"model": "glm-4.7", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404 and response.headers["content-type"] == "text/html"


def test_client_leaving_mid_stream_frees_its_slot(simulator: Process) -> None:
    headers = {**BEARER, "x-sim-chunk-gap-ms": "5000"}
    with httpx.stream("POST", simulator.url + CHAT, json=BODY, headers=headers,
                      timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert httpx.get(simulator.url + "/_stats").json()["in_flight"] == 1
    deadline = time.monotonic() + 2
    while httpx.get(simulator.url + "/_stats").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = httpx.get(simulator.url + "/_stats").json()
    assert stats["in_flight"] == 0 and stats["events"]["disconnected"] >= 1
