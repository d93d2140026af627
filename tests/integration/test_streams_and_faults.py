"""Streaming edge cases and upstream faults through real sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import proxy_env
from tests.support.servers import Process, free_port, running_zai_proxy, start_zai_proxy

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}], "stream": True}
MESSAGES = {"model": "glm-4.7", "max_tokens": 16, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def open_proxy(simulator: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        simulator, UPSTREAM_FIRST_BYTE_TIMEOUT="1", UPSTREAM_CHUNK_TIMEOUT="1"),
        ready_path="/ready") as process:
        yield process


def metric(proxy: Process, name: str, **labels: str) -> float:
    text = httpx.get(f"{proxy.url}/metrics").text
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def simulator_request(simulator: Process, request_id: str, timeout: float = 5.0
                      ) -> dict[str, Any]:
    """The simulator's record of the request with `request_id`, once it has ended there."""
    deadline = time.monotonic() + timeout
    while True:
        recent = httpx.get(f"{simulator.url}/_stats").json()["recent_requests"]
        found = [r for r in recent if r["x_request_id"] == request_id]
        if found and "ended_at" in found[-1]:
            return found[-1]
        assert time.monotonic() < deadline, f"{request_id} still open upstream: {found}"
        time.sleep(0.02)


def close_after_two_reads(url: str, headers: dict[str, str]) -> tuple[str, float]:
    """Open a long stream, read two pieces, drop the connection; (request id, when dropped).

    The request id is the one the simulator saw: the proxy's (from its answer) or our own.
    """
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", url, json=CHAT,
            headers={"x-sim-chunks": "200", "x-sim-chunk-gap-ms": "50", **headers}) as response:
        chunks = response.iter_raw()
        next(chunks)
        next(chunks)
        request_id = response.headers["x-request-id"] if "x-request-id" in response.headers \
            else headers["x-request-id"]
        closed_at = time.monotonic()  # the same clock the simulator stamps ended_at with
    return request_id, closed_at


def test_client_disconnect_closes_upstream_and_frees_the_slot(open_proxy: Process,
                                                              simulator: Process) -> None:
    before_499 = metric(open_proxy, "zai_proxy_requests_total", status_code="499")
    # Baseline in the same run: a client dropping the stream at the simulator itself. The
    # simulator stamps when it saw the request end, so neither measurement depends on how fast
    # this test can poll; the proxy may add at most 100 ms to what the baseline took.
    direct_id, direct_closed = close_after_two_reads(
        f"{simulator.url}/api/paas/v4/chat/completions",
        {"authorization": "Bearer k", "x-request-id": f"direct-{time.monotonic_ns()}"})
    baseline = simulator_request(simulator, direct_id)["ended_at"] - direct_closed

    request_id, closed_at = close_after_two_reads(f"{open_proxy.url}/v1/chat/completions", {})
    seen = simulator_request(simulator, request_id)  # a proxy keeping it open fails here
    upstream_closed = seen["ended_at"] - closed_at
    assert upstream_closed < baseline + 0.1, (upstream_closed, baseline)
    deadline = time.monotonic() + 2
    while metric(open_proxy, "zai_proxy_requests_total", status_code="499") == before_499:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert metric(open_proxy, "zai_proxy_requests_total", status_code="499") == before_499 + 1
    assert metric(open_proxy, "zai_proxy_concurrent_requests") == 0
    assert httpx.get(f"{simulator.url}/_stats").json()["in_flight"] == 0


def test_upstream_reset_mid_stream_ends_with_an_sse_error(open_proxy: Process) -> None:
    response = httpx.post(f"{open_proxy.url}/v1/chat/completions", json=CHAT, timeout=10,
                          headers={"x-sim-reset-after-chunks": "3"})
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e.strip()]
    last = json.loads(events[-1].removeprefix("data: "))
    # The upstream dropped the connection (a read error) three chunks in, long before the 1 s
    # chunk timeout: that is an interruption. "proxy_upstream_timeout" would tell operators and
    # clients the upstream went silent, which it did not; the two are different outcomes.
    assert last["error"]["code"] == "proxy_upstream_interrupted"
    assert len(events) >= 3


def test_upstream_silent_mid_stream_times_out_cleanly(open_proxy: Process) -> None:
    started = time.perf_counter()
    response = httpx.post(f"{open_proxy.url}/v1/chat/completions", json=CHAT, timeout=10,
                          headers={"x-sim-chunks": "4", "x-sim-chunk-gap-ms": "3000"})
    assert time.perf_counter() - started < 4
    last = response.text.strip().split("\n\n")[-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "proxy_upstream_timeout"


def test_upstream_first_byte_timeout_is_504(open_proxy: Process) -> None:
    client = openai.OpenAI(base_url=f"{open_proxy.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="glm-4.7", messages=CHAT["messages"],  # type: ignore[arg-type]
                                       extra_headers={"x-sim-delay-ms": "3000"})
    assert info.value.status_code == 504


def test_upstream_refused_is_502(simulator: Process) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    process = start_zai_proxy("serve", env={**proxy_env(simulator), "ZAI_TARGET_URL": dead},
                              ready_path="/ready")
    try:
        response = httpx.post(f"{process.url}/v1/chat/completions", json=CHAT)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "proxy_upstream_unreachable"
        assert httpx.get(f"{process.url}/health").status_code == 200  # liveness never asks upstream
    finally:
        process.terminate()


@pytest.mark.parametrize(("path", "body", "sim"), [
    ("/v1/chat/completions", {**CHAT, "stream": False}, {"x-sim-status": "502"}),  # edge HTML
    ("/v1/chat/completions", {**CHAT, "stream": False}, {"x-sim-status": "500"}),  # Z.AI JSON
    ("/v1/chat/completions", CHAT, {"x-sim-status": "503"}),  # a stream request, HTML answer
    ("/v1/messages", {**MESSAGES, "stream": False}, {"x-sim-status": "502"}),
    ("/v1/chat/completions", {**CHAT, "stream": False}, {"x-sim-empty": "1"}),  # 200, no body
    ("/v1/chat/completions", CHAT, {"x-sim-empty": "1"}),  # 200 event stream, no body
], ids=["502-html", "500-json", "503-stream", "502-anthropic", "empty-json", "empty-stream"])
def test_upstream_5xx_and_empty_bodies_pass_through(
        open_proxy: Process, simulator: Process, path: str, body: dict[str, Any],
        sim: dict[str, str]) -> None:
    # What the simulator answers to this request when asked directly is what the client must
    # get through the proxy: same status, same content type, the same bytes (empty stays empty).
    upstream_path = "/api/anthropic" + path if path == "/v1/messages" else \
        "/api/paas/v4" + path.removeprefix("/v1")
    auth = {"x-api-key": "k"} if path == "/v1/messages" else {"authorization": "Bearer k"}
    direct = httpx.post(f"{simulator.url}{upstream_path}", json=body, headers={**sim, **auth})
    response = httpx.post(f"{open_proxy.url}{path}", json=body, headers=sim)
    assert response.status_code == direct.status_code
    assert response.headers["content-type"] == direct.headers["content-type"]
    assert response.content == direct.content
    if "x-sim-empty" in sim:
        assert response.content == b""


def test_absolute_form_target_still_goes_to_the_configured_upstream(
        open_proxy: Process, simulator: Process) -> None:
    # RFC 9112 requires servers to accept absolute-form; its host must be ignored.
    with socket.create_connection(("127.0.0.1", open_proxy.port), timeout=5) as sock:
        body = b'{"model": "glm-4.7", "prompt": "absolute"}'
        sock.sendall(b"POST http://evil.example/v1/completions HTTP/1.1\r\n"
                     b"Host: evil.example\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                     b"Connection: close\r\n\r\n" + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    last = httpx.get(f"{simulator.url}/_stats").json()["last_request"]
    assert last["path"] == "/api/paas/v4/completions"


@pytest.mark.parametrize("target", [
    b"GET /v1/..%2f..%2fadmin HTTP/1.1", b"GET //evil.example/v1/models HTTP/1.1",
    b"GET /v1/%2e%2e/%2e%2e/x HTTP/1.1", b"GET /v1//evil.example/x HTTP/1.1",
    b"GET /v1/models/..%5c..%5cx HTTP/1.1", b"GET /v1/../../etc/passwd HTTP/1.1",
    b"GET /v1/models/%2F%2Fevil.example HTTP/1.1",
])
def test_path_escapes_on_the_wire(open_proxy: Process, simulator: Process, target: bytes) -> None:
    before = httpx.get(f"{simulator.url}/_stats").json()["requests_total"]
    with socket.create_connection(("127.0.0.1", open_proxy.port), timeout=5) as sock:
        sock.sendall(target + b"\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status in {400, 404}, reply[:200]
    assert httpx.get(f"{simulator.url}/_stats").json()["requests_total"] == before


def test_malformed_and_oversized_bodies_on_the_wire(simulator: Process) -> None:
    process = start_zai_proxy("serve", env={**proxy_env(simulator), "MAX_REQUEST_BYTES": "64KiB"},
                              ready_path="/ready")
    try:
        bad = httpx.post(f"{process.url}/v1/chat/completions", content=b'{"model": ')
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        big = httpx.post(f"{process.url}/v1/chat/completions", content=b"x" * (1 << 20))
        assert big.status_code == 413
        assert httpx.get(f"{process.url}/health").status_code == 200
    finally:
        process.terminate()
