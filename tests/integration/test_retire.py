"""Retire on a real socket: idle keep-alive connections are closed after about a second, busy
ones answer with `Connection: close`, streams in flight run to their end, and the official
OpenAI SDK (default retries) fails no request across retire and un-retire under load."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.integration.conftest import proxy_env
from tests.support.rawhttp import RawConnection
from tests.support.servers import Process, running_zai_proxy
from zai_proxy.server.connections import RELEASE_IDLE_SECONDS

ADMIN_KEY = "admin-key-for-retire-tests-0123"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(CHAT).encode()


@pytest.fixture(scope="module")
def proxy(simulator: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        simulator, ADMIN_API_KEY=ADMIN_KEY, RATE_LIMIT_INITIAL="200", RATE_LIMIT_MAX="400",
        MAX_WORKERS="64"), ready_path="/ready") as process:
        yield process


@pytest.fixture(autouse=True)
def unretired(proxy: Process) -> Iterator[None]:
    yield
    admin(proxy, "DELETE")


def admin(proxy: Process, method: str) -> httpx.Response:
    response = httpx.request(method, f"{proxy.url}/admin/retire",
                             headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response


def metric(proxy: Process, name: str) -> float:
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert match, f"{name} not exported"
    return float(match.group(1))


def served(proxy: Process, path: str = "/health") -> RawConnection:
    """A keep-alive connection that has just been answered once."""
    conn = RawConnection(proxy.port)
    conn.request("GET", path)
    response = conn.read_response()
    assert response.status == 200 and "connection" not in response.headers
    return conn


def test_idle_connections_are_closed_about_a_second_after_retire(proxy: Process) -> None:
    old = served(proxy)
    time.sleep(1.2)  # idle for longer than the release threshold already
    fresh = served(proxy)  # idle for ~0 s at retire
    released_before = metric(proxy, "zai_proxy_client_connections_released_total")
    retired_at = time.monotonic()
    response = admin(proxy, "POST")
    assert response.json() == {"retired": True}
    assert response.headers["connection"] == "close"
    closed_old = old.wait_closed(3.0)
    assert closed_old is not None and time.monotonic() - retired_at < 1.0, closed_old
    closed_fresh = fresh.wait_closed(3.0)
    assert closed_fresh is not None
    # Closed only once idle for about a second, never at once.
    assert 0.8 <= time.monotonic() - retired_at <= 2.5
    health = httpx.get(f"{proxy.url}/health").json()
    assert health["retired"] is True
    assert metric(proxy, "zai_proxy_retired") == 1
    assert metric(proxy, "zai_proxy_client_connections_released_total") >= released_before + 2

    # A new connection while retired: answered with Connection: close, then closed.
    conn = RawConnection(proxy.port)
    conn.request("POST", "/v1/chat/completions", BODY)
    answer = conn.read_response()
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert conn.wait_closed(3.0) is not None

    assert admin(proxy, "DELETE").json() == {"retired": False}
    assert httpx.get(f"{proxy.url}/health").json()["retired"] is False
    assert metric(proxy, "zai_proxy_retired") == 0
    kept = served(proxy, "/metrics")
    assert kept.wait_closed(1.8) is None, "un-retired: idle keep-alive connections stay open"
    kept.request("POST", "/v1/chat/completions", BODY)
    again = kept.read_response()
    assert again.status == 200 and "connection" not in again.headers


def test_streams_finish_and_busy_connections_answer_connection_close(proxy: Process) -> None:
    stream = RawConnection(proxy.port)
    stream.request("POST", "/v1/chat/completions",
                   json.dumps({**CHAT, "stream": True}).encode(),
                   {"x-sim-chunks": "20", "x-sim-chunk-gap-ms": "100"})
    status, headers = stream.read_head()
    assert status == 200 and "connection" not in headers
    first = stream.read_chunk()
    slow = RawConnection(proxy.port)  # headers not sent yet when the pod retires
    slow.request("POST", "/v1/chat/completions", BODY, {"x-sim-delay-ms": "1500"})
    busy = served(proxy)  # idle 0 s at retire: its next request beats the release threshold
    time.sleep(0.3)
    admin(proxy, "POST")
    busy.request("GET", "/health")
    next_answer = busy.read_response()
    assert next_answer.status == 200 and next_answer.headers["connection"] == "close"
    assert busy.wait_closed(3.0) is not None

    answer = slow.read_response()
    assert answer.status == 200 and answer.headers["connection"] == "close", answer.headers
    assert answer.json()["choices"]
    assert slow.wait_closed(3.0) is not None

    parts = [first]
    while chunk := stream.read_chunk():  # the stream in flight is not cut
        parts.append(chunk)
    body = b"".join(parts).decode()
    assert body.count("data: ") >= 20 and body.rstrip().endswith("data: [DONE]"), body[-300:]
    # A response that had started before the release ends as keep-alive (a client reusing the
    # connection at once must not be reset); the idle connection is then released like any
    # other, once idle for RELEASE_IDLE_SECONDS.
    assert stream.wait_closed(RELEASE_IDLE_SECONDS + 4.0) is not None, "released once idle"


def test_openai_sdk_sees_no_failure_across_retire_under_load(proxy: Process) -> None:
    """Workers (each its own SDK client and connection pool, as separate worker processes
    have) with default retries; pauses around the one-second release threshold make the
    release race with requests starting on the connection it closes."""
    stop = threading.Event()
    failures: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused-on-an-open-proxy")
        while not stop.is_set():
            try:
                if rng.random() < 0.4:
                    chunks = list(client.chat.completions.create(
                        model="glm-4.7", messages=CHAT["messages"], stream=True))  # type: ignore[call-overload]
                    assert chunks
                else:
                    reply = client.chat.completions.create(
                        model="glm-4.7", messages=CHAT["messages"])  # type: ignore[arg-type]
                    assert reply.choices
            except Exception as exc:
                failures.append(repr(exc))
            with lock:
                done[0] += 1
            time.sleep(rng.choice([0.0, 0.05, 0.3, 0.95, 1.0, 1.02, 1.05, 1.3]))
        client.close()

    released_before = metric(proxy, "zai_proxy_client_connections_released_total")
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(worker, seed) for seed in range(12)]
        try:
            for method, hold in (("POST", 2.5), ("DELETE", 1.5), ("POST", 2.5), ("DELETE", 1.0)):
                time.sleep(hold)
                admin(proxy, method)
            time.sleep(1.0)
        finally:
            stop.set()
        for future in futures:
            future.result()
    released = metric(proxy, "zai_proxy_client_connections_released_total") - released_before
    assert failures == [], failures[:5]
    assert done[0] >= 60, done[0]
    assert released >= 3, f"only {released} idle connections were released: no race exercised"
