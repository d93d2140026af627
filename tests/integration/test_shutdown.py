"""SIGTERM under load: /ready turns 503 at once, nothing in flight is lost, exit code 0."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.conftest import proxy_env
from tests.support.servers import Process, start_zai_proxy

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
DRAIN_REQUESTS = 3  # per worker, sent after /ready turned 503; each on a new connection


def drain_answers(worker: list[tuple[float, str]], since: float) -> int:
    return sum(1 for sent, _ in list(worker) if sent > since)


def test_sigterm_under_load_loses_nothing(simulator: Process) -> None:
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, SHUTDOWN_DRAIN_SECONDS="1.5", SHUTDOWN_GRACE_SECONDS="10",
        RATE_LIMIT_INITIAL="50"), ready_path="/ready")
    stop = threading.Event()
    # Per steady worker: (monotonic time the request was sent, what came back).
    results: list[list[tuple[float, str]]] = [[] for _ in range(4)]

    def steady(index: int) -> None:
        # Like a load balancer: keep sending until the endpoint is taken out (drain period).
        # Drain answers carry Connection: close, so each request there needs a new connection.
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
                    outcome = "ok" if r.status_code == 200 else f"status {r.status_code}"
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                results[index].append((sent, outcome))

    def long_stream() -> str:
        with httpx.Client(timeout=20) as client:
            r = client.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True},
                            headers={"x-sim-chunks": "30", "x-sim-chunk-gap-ms": "100"})
            return r.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        streams = [pool.submit(long_stream) for _ in range(4)]
        workers = [pool.submit(steady, i) for i in range(4)]
        try:
            time.sleep(0.5)
            proxy.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            while (ready := httpx.get(f"{proxy.url}/ready")).status_code != 503:
                assert time.monotonic() - signalled < 1.0, f"/ready still {ready.status_code}"
            not_ready_seen = time.monotonic()  # any request sent after this is a drain request
            assert httpx.get(f"{proxy.url}/health").status_code == 200
            # Still inside the 1.5 s drain: traffic keeps being served. Stop the workers once each
            # has had DRAIN_REQUESTS answers to requests sent after /ready said 503, or well before
            # the listener closes (1.5 s after the signal), whichever comes first.
            while not all(drain_answers(w, not_ready_seen) >= DRAIN_REQUESTS for w in results):
                if time.monotonic() - signalled > 1.2:
                    break
                time.sleep(0.02)
        finally:
            stop.set()  # also when an assertion above fails: the workers must end
        for w in workers:
            w.result()
        bodies = [s.result() for s in streams]
    code = proxy.proc.wait(20)
    failures = [(sent, outcome) for worker in results for sent, outcome in worker
                if outcome != "ok"]
    assert failures == []
    for index, worker in enumerate(results):
        # Each worker sent requests after the endpoint went not-ready, and they were served.
        in_drain = [outcome for sent, outcome in worker if sent > not_ready_seen]
        assert len(in_drain) >= DRAIN_REQUESTS, (index, len(in_drain), len(worker))
        assert set(in_drain) == {"ok"}, (index, in_drain)
    for body in bodies:  # every long stream ran to its end through the shutdown
        assert body.rstrip().endswith("data: [DONE]"), body[-200:]
    assert code == 0, proxy.output()[-2000:]
