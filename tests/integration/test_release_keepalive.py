"""Release (retire, drain) never resets a keep-alive client: clients with no retries at all
(httpx, retries=0), each sending its next request the moment the last one ended, fail no call
through retire/un-retire cycles and through a SIGTERM drain. A stream whose headers went out
before the release ends as keep-alive; the client's next request on that connection is
answered with `Connection: close`, and only then does the connection close."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.integration.conftest import proxy_env
from tests.support.rawhttp import RawConnection
from tests.support.servers import Process, running_zai_proxy, start_zai_proxy

ADMIN_KEY = "admin-key-for-release-tests-0123"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


@pytest.fixture(scope="module")
def proxy(simulator: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        simulator, ADMIN_API_KEY=ADMIN_KEY, RATE_LIMIT_INITIAL="200", RATE_LIMIT_MAX="400",
        MAX_WORKERS="64"), ready_path="/ready") as process:
        yield process


def admin(proxy: Process, method: str) -> None:
    response = httpx.request(method, f"{proxy.url}/admin/retire",
                             headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text


class Workers:
    """Back-to-back clients, one connection pool each, no retries: every failure counts."""

    def __init__(self, url: str, count: int, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.calls: list[tuple[float, float]] = []  # (sent, answered) of each successful call
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]

    def __enter__(self) -> Workers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, index: int) -> None:
        transport = httpx.HTTPTransport(retries=0)
        with httpx.Client(transport=transport, timeout=20, headers=self.headers) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    if (index + n) % 2:  # streams: retire lands mid-response
                        with client.stream("POST", f"{self.url}/v1/chat/completions",
                                           json=STREAM) as r:
                            text = r.read().decode()
                        ok = r.status_code == 200 and text.rstrip().endswith("[DONE]")
                    else:
                        r = client.post(f"{self.url}/v1/chat/completions", json=CHAT)
                        ok = r.status_code == 200 and bool(r.json()["choices"])
                    outcome = "ok" if ok else f"status {r.status_code}"
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with self.lock:
                    if outcome == "ok":
                        self.calls.append((sent, time.monotonic()))
                    else:
                        self.failures.append(outcome)

    def done(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for sent, _ in self.calls if sent >= since)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_stream_started_before_retire_ends_as_keep_alive(proxy: Process) -> None:
    stream = RawConnection(proxy.port)
    stream.request("POST", "/v1/chat/completions", json.dumps(STREAM).encode(),
                   {"x-sim-chunks": "10", "x-sim-chunk-gap-ms": "100"})
    status, headers = stream.read_head()
    assert status == 200 and "connection" not in headers
    admin(proxy, "POST")
    try:
        while stream.read_chunk():
            pass
        # Its headers promised keep-alive: no close may follow the response unannounced.
        assert stream.wait_closed(0.3) is None, "closed right after a keep-alive response"
        stream.request("GET", "/health")
        answer = stream.read_response()
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert stream.wait_closed(2.0) is not None
    finally:
        admin(proxy, "DELETE")


def test_no_call_fails_through_retire_cycles(proxy: Process) -> None:
    with Workers(proxy.url, 6) as workers:
        assert wait_until(lambda: workers.done() >= 6, 20), "workers did not get going"
        for _ in range(3):
            for method in ("POST", "DELETE"):
                target = workers.done() + 12
                admin(proxy, method)
                # Let every worker finish a few calls across the change.
                assert wait_until(lambda t=target: workers.done() >= t, 30)
    assert workers.failures == [], workers.failures[:5]
    assert workers.done() >= 80, workers.done()


def test_no_call_fails_through_a_sigterm_drain(simulator: Process) -> None:
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, SHUTDOWN_DRAIN_SECONDS="4", SHUTDOWN_GRACE_SECONDS="15",
        RATE_LIMIT_INITIAL="200", RATE_LIMIT_MAX="400", MAX_WORKERS="64"), ready_path="/ready")
    with Workers(proxy.url, 16) as workers:
        assert wait_until(lambda: workers.done() >= 16, 20), "workers did not get going"
        proxy.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_until(lambda: httpx.get(f"{proxy.url}/ready").status_code == 503, 2)
        # Calls go on through the drain period (the pod is leaving the Service meanwhile);
        # the workers stop well before the listener closes.
        wait_until(lambda: workers.done(signalled) >= 48, 2.0)
        workers.stop.set()
    drained = workers.done(signalled)
    code = proxy.proc.wait(30)
    assert workers.failures == [], workers.failures[:5]
    assert drained >= 16, f"only {drained} calls sent during the drain"
    assert code == 0, proxy.output()[-2000:]
