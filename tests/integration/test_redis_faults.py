"""A real proxy process against a Redis that hangs (a redis-server SIGSTOPped) or lies (a TCP
server answering `+OK` to every command): it starts, serves, says it is degraded, never
stalls a request past a Redis timeout and never logs a traceback."""

from __future__ import annotations

import os
import signal
import socketserver
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import proxy_env
from tests.support.servers import Process, RedisServer, start_redis, start_zai_proxy

CHAT = {"model": "glm-4.7", "stream": False,
        "messages": [{"role": "user", "content": "hi"}]}


class _SaysOk(socketserver.StreamRequestHandler):
    """Reads RESP commands (arrays of bulk strings, or inline) and answers `+OK` to each."""

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            if line.startswith(b"*"):
                for _ in range(int(line[1:])):
                    size = int(self.rfile.readline()[1:])
                    self.rfile.read(size + 2)
            self.wfile.write(b"+OK\r\n")
            self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def says_ok() -> Iterator[str]:
    """redis://... of a server on a free port that answers every command with `+OK`."""
    server = _Server(("127.0.0.1", 0), _SaysOk)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own (it gets SIGSTOPped)."""
    server = start_redis()
    try:
        yield server
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_a_redis_answering_ok_to_everything(simulator: Process, says_ok: str) -> None:
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, RATE_LIMIT_STORAGE_URI=says_ok, CLIENT_RATE_LIMITS="100/minute",
        QUOTA_POLL_SECONDS="0"), ready_path="/ready")
    try:
        for _ in range(3):
            response = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, timeout=10)
            assert response.status_code == 200, response.text
        time.sleep(1.5)  # a limiter and a quota tick or two against the lying Redis
        health = httpx.get(f"{proxy.url}/health").json()
        assert health["rate_limit"]["shared_state"]["degraded"] is True
        assert health["rate_limit"]["shared_state"]["live_replicas"] is None
        assert health["quota"]["shared"]["degraded"] is True
        assert httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                          timeout=10).status_code == 200
    finally:
        proxy.terminate()
    output = proxy.output()
    assert "Traceback" not in output and "tick failed" not in output, output[-3000:]
    assert output.count("shared limiter state degraded") == 1


@pytest.mark.needs("redis-server")
def test_a_stalled_redis_costs_a_request_at_most_about_a_second(
        simulator: Process, own_redis: RedisServer) -> None:
    """Redis SIGSTOPped with CLIENT_RATE_LIMITS set: each request used to wait the client's
    whole timeout; now the first pays the Redis timeouts (0.5 s each) and the rest nothing."""
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, RATE_LIMIT_STORAGE_URI=own_redis.url, CLIENT_RATE_LIMITS="100/minute",
        QUOTA_POLL_SECONDS="0"), ready_path="/ready")
    try:
        with httpx.Client(base_url=proxy.url, timeout=20) as client:
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
            os.kill(own_redis.proc.pid, signal.SIGSTOP)
            took = []
            for _ in range(4):
                start = time.monotonic()
                assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
                took.append(time.monotonic() - start)
            # One client-quota and one gate timeout (0.5 s each) at most, on a loaded machine.
            assert max(took) < 2.0, took
            assert sum(took[1:]) < 1.5, took  # then Redis is skipped until the retry
            health = client.get("/health").json()
            assert health["rate_limit"]["shared_state"]["degraded"] is True
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        proxy.terminate()
    assert "client quota storage degraded" in proxy.output()
