"""Slow clients cannot starve the others: 50 stream clients that stop reading and 50 that
trickle their requests, against a proxy with short client timeouts, while normal clients keep
calling. Normal latency is compared with a baseline measured in the same run, without the slow
clients; every slot a slow reader held is freed within the write timeout."""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import proxy_env
from tests.support.rawhttp import RawConnection
from tests.support.servers import Process, running_zai_proxy

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(CHAT).encode()
# Reply words cycle through the prompt's words: one long word makes big chunks cheaply.
STREAM = json.dumps({"model": "glm-4.7", "stream": True,
                     "messages": [{"role": "user", "content": "x" * 1000}]}).encode()
READ_TIMEOUT = 2.0
WRITE_TIMEOUT = 2.0
SLOW = 50


@pytest.fixture(scope="module")
def proxy(simulator: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        simulator, CLIENT_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
        CLIENT_WRITE_TIMEOUT_SECONDS=str(WRITE_TIMEOUT), CLIENT_SEND_BUFFER_BYTES="64KiB",
        MAX_WORKERS="200",
        RATE_LIMIT_INITIAL="400", RATE_LIMIT_MAX="500", LOG_LEVEL="WARNING",
        # Counting the tokens of the megabytes each cut-off stream relayed is accounting's
        # cost, not the server's: off, so what is measured here is the server's bounds.
        TOKEN_COUNTING_ENABLED="false"), ready_path="/ready") as process:
        yield process


def bound(proxy: Process, name: str) -> float:
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    match = re.search(rf'^zai_proxy_client_bound_exceeded_total{{bound="{name}"[^}}]*}} (\S+)$',
                      text, re.M)
    return float(match.group(1)) if match else 0.0


def normal_latencies(proxy: Process, seconds: float, workers: int = 4) -> list[float]:
    """Latencies of plain completions from `workers` keep-alive clients for `seconds`."""
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def run() -> None:
        with httpx.Client(base_url=proxy.url, timeout=10) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", content=BODY,
                                       headers={"content-type": "application/json",
                                                "x-sim-chunks": "1"})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(run) for _ in range(workers)]:
            future.result()
    assert failures == [], failures[:3]
    return latencies


def stalled_reader(proxy: Process, stalled: threading.Event, release: threading.Event) -> None:
    """Start a big stream, read its head and one chunk, then never read again."""
    conn = RawConnection(proxy.port, rcvbuf=4096, timeout=30)
    conn.request("POST", "/v1/chat/completions", STREAM, {
        "x-sim-chunks": "60", "x-sim-words-per-chunk": "20", "x-sim-chunk-gap-ms": "50"})
    status, _ = conn.read_head()
    assert status == 200
    conn.read_chunk()
    stalled.set()
    release.wait(30)
    conn.close()


def trickler(proxy: Process, body: bool) -> float:
    """Send a request a few bytes at a time; return how long until the proxy answered 408."""
    conn = RawConnection(proxy.port, timeout=30)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\ncontent-length: %d\r\n\r\n" % len(BODY))
    started = time.monotonic()
    data = head + BODY if body else head
    sent = len(head) if body else 0
    if body:
        conn.send(head)
    try:
        while sent < len(data):
            conn.send(data[sent:sent + 2])
            sent += 2
            time.sleep(0.2)
    except OSError:
        pass  # cut off while trickling: the answer is already in the socket
    answer = conn.read_response()
    assert answer.status == 408, answer
    assert json.loads(answer.body)["error"]["code"] == "proxy_request_timeout"
    conn.close()
    return time.monotonic() - started


def test_slow_readers_and_tricklers_do_not_slow_down_the_others(proxy: Process) -> None:
    normal_latencies(proxy, 1.0)  # warm up
    baseline = normal_latencies(proxy, 3.0)
    before_write, before_read = bound(proxy, "write_timeout"), bound(proxy, "read_timeout")

    release = threading.Event()
    events = [threading.Event() for _ in range(SLOW)]
    with ThreadPoolExecutor(max_workers=2 * SLOW + 1) as pool:
        readers = [pool.submit(stalled_reader, proxy, events[i], release) for i in range(SLOW)]
        tricklers = [pool.submit(trickler, proxy, i % 2 == 0) for i in range(SLOW)]
        attack_started = time.monotonic()
        try:
            under_attack = normal_latencies(proxy, 4.0)
            for event in events:
                assert event.wait(20), "a slow reader never got its stream started"
            cut_times = [t.result(timeout=30) for t in tricklers]
            # Every slot the stalled readers held is free within the write timeout, while
            # their sockets are still open and unread.
            deadline = attack_started + WRITE_TIMEOUT + 6.0
            while True:
                health = httpx.get(f"{proxy.url}/health", timeout=10).json()
                if health["in_flight"] == 0 and health["rate_limit"]["in_flight_upstream"] == 0:
                    break
                assert time.monotonic() < deadline, f"slots still held: {health}"
                time.sleep(0.1)
            freed_after = time.monotonic() - attack_started
        finally:
            release.set()
        for reader in readers:
            reader.result(timeout=30)

    assert bound(proxy, "write_timeout") - before_write == SLOW
    assert bound(proxy, "read_timeout") - before_read == SLOW
    assert max(cut_times) < READ_TIMEOUT + 3.0, cut_times
    base_p50, attack_p50 = statistics.median(baseline), statistics.median(under_attack)
    base_p95 = statistics.quantiles(baseline, n=20)[18]
    attack_p95 = statistics.quantiles(under_attack, n=20)[18]
    print(f"\nnormal clients: baseline p50 {base_p50 * 1000:.1f} ms p95 {base_p95 * 1000:.1f} ms "
          f"({len(baseline)} calls); with {SLOW} stalled readers and {SLOW} tricklers: p50 "
          f"{attack_p50 * 1000:.1f} ms p95 {attack_p95 * 1000:.1f} ms ({len(under_attack)} "
          f"calls); tricklers cut after {min(cut_times):.2f}-{max(cut_times):.2f} s; all slots "
          f"free {freed_after:.2f} s after the attack started")
    # Normal latency: within a small factor of the same-run baseline (the slow readers' first
    # megabytes are relayed in the same second, on the same two cores).
    assert attack_p50 <= 2.0 * base_p50 + 0.010, (base_p50, attack_p50)
    assert len(under_attack) >= 0.5 * len(baseline) * 4.0 / 3.0
