"""SIGTERM under load: /ready turns 503 at once, nothing in flight is lost, exit code 0."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.conftest import proxy_env
from tests.servers import Process, start_zai_proxy

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


def test_sigterm_under_load_loses_nothing(simulator: Process) -> None:
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, SHUTDOWN_DRAIN_SECONDS="1.5", SHUTDOWN_GRACE_SECONDS="10",
        RATE_LIMIT_INITIAL="50"), ready_path="/ready")
    stop = threading.Event()
    failures: list[str] = []
    done = 0
    lock = threading.Lock()

    def steady() -> None:
        # Like a load balancer: keep sending until the endpoint is taken out (drain period).
        nonlocal done
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{proxy.url}/v1/chat/completions", json=CHAT)
                    if r.status_code != 200:
                        failures.append(f"status {r.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                with lock:
                    done += 1

    def long_stream() -> str:
        with httpx.Client(timeout=20) as client:
            r = client.post(f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True},
                            headers={"x-sim-chunks": "30", "x-sim-chunk-gap-ms": "100"})
            return r.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        streams = [pool.submit(long_stream) for _ in range(4)]
        workers = [pool.submit(steady) for _ in range(4)]
        time.sleep(0.5)
        proxy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = httpx.get(f"{proxy.url}/ready")
        assert ready.status_code == 503
        assert httpx.get(f"{proxy.url}/health").status_code == 200
        time.sleep(1.0)  # still inside the 1.5 s drain: traffic keeps being served
        stop.set()
        for w in workers:
            w.result()
        bodies = [s.result() for s in streams]
    code = proxy.proc.wait(20)
    assert failures == []
    assert done >= 8  # every worker kept being served through the drain
    for body in bodies:  # every long stream ran to its end through the shutdown
        assert body.rstrip().endswith("data: [DONE]"), body[-200:]
    assert code == 0, proxy.output()[-2000:]
