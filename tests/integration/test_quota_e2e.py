"""Quota awareness end to end: the real proxy in front of the real simulator, windows of seconds.

The OpenAI SDK (no retries) is the client. The simulator's five-hour budget is a few requests'
tokens over a 4 s window; the proxy polls its monitor every second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, proxy_env
from tests.support.servers import Process, free_port, start_zai_proxy, wait_for

MESSAGES = [{"role": "user", "content": "hello"}]  # 2 prompt + 10 completion tokens


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Process, Process]]:
    simulator = start_zai_proxy("simulate", "--expect-key", UPSTREAM_KEY)
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, PROXY_API_KEYS=f"e2e:{CLIENT_KEY}", QUOTA_POLL_SECONDS="1",
        QUOTA_POLL_TIMEOUT="500ms", SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready")
    yield simulator, proxy
    proxy.terminate()
    simulator.terminate()


def sim_stats(simulator: Process) -> dict[str, Any]:
    return httpx.get(simulator.url + "/_stats", timeout=5).json()


def configure(simulator: Process, **values: Any) -> None:
    httpx.post(simulator.url + "/_config", json=values, timeout=5).raise_for_status()



def test_after_the_first_1308_no_upstream_attempt_until_the_reset(
        stack: tuple[Process, Process]) -> None:
    simulator, proxy = stack
    httpx.post(simulator.url + "/_stats/reset", timeout=5)
    configure(simulator, quota_5h_tokens=60, quota_5h_window_s=4.0)  # 5 requests
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    first: openai.RateLimitError | None = None
    for _ in range(20):
        try:
            client.chat.completions.create(model="glm-4.7", messages=MESSAGES)
        except openai.RateLimitError as exc:
            first = exc
            break
    assert first is not None, "the budget never ran out"
    window = sim_stats(simulator)["quota"]["five_hour"]
    reset_at, seen = window["reset_at"], sim_stats(simulator)["requests_total"]
    local = 0
    while time.time() < reset_at - 0.3:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="glm-4.7", messages=MESSAGES)
        response = info.value.response
        now = time.time()
        assert response.headers["x-zai-error-class"] == "quota"
        assert response.json()["error"]["code"] == "proxy_quota_exhausted"
        retry_after = int(response.headers["retry-after"])
        assert reset_at - now - 0.1 <= retry_after <= reset_at - now + 1.1  # within 1 s
        local += 1
        time.sleep(0.1)
    assert local >= 5
    assert sim_stats(simulator)["requests_total"] == seen  # nothing reached the upstream
    time.sleep(max(0.0, reset_at - time.time()))

    def served() -> bool:
        try:
            client.chat.completions.create(model="glm-4.7", messages=MESSAGES)
        except openai.RateLimitError:
            return False
        return True

    wait_for(served, 1.5, "service resumes within a poll of the reset")
    history = sim_stats(simulator)["quota"]["five_hour"]["history"][-1]
    assert history["refused"] <= 1 + (1 if "1308" in str(first.body) else 0)
    assert UPSTREAM_KEY not in httpx.get(proxy.url + "/health").text
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'zai_proxy_client_tokens_total{client="e2e",deployment_variant="production",' \
           'direction="output"}' in metrics
    configure(simulator, quota_5h_tokens=0)


@pytest.mark.parametrize(("fault", "reason"), [
    ({"monitor_fault": "unauthorized"}, "unauthorized"),
    ({"monitor_fault": "garbage"}, "invalid_response"),
    ({"monitor_fault": "error"}, "http_error"),
    ({"monitor_fault": "slow", "monitor_delay_ms": 3000}, "timeout"),
])
def test_a_failing_monitor_leaves_requests_flowing_and_health_says_why(
        stack: tuple[Process, Process], fault: dict[str, Any], reason: str) -> None:
    simulator, proxy = stack
    configure(simulator, quota_5h_tokens=100_000, monitor_fault="", monitor_delay_ms=0)
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0)

    def polling() -> dict[str, Any]:
        return dict(httpx.get(proxy.url + "/health", timeout=5).json()["quota"]["polling"])

    wait_for(lambda: polling()["state"] == "ok", 5, "polls succeed")
    configure(simulator, **fault)
    try:
        failing = wait_for(lambda: (p := polling())["reason"] == reason and p, 6,
                           f"/health names {reason}")
        assert failing["state"] == "failing" and failing["detail"]
        for _ in range(3):
            assert client.chat.completions.create(model="glm-4.7", messages=MESSAGES).choices
    finally:
        configure(simulator, monitor_fault="", monitor_delay_ms=0)
    wait_for(lambda: polling()["state"] == "ok", 6, "polls recover")


def test_an_unreachable_monitor(stack: tuple[Process, Process]) -> None:
    simulator, _ = stack
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, ZAI_MONITOR_URL=f"http://127.0.0.1:{free_port()}", QUOTA_POLL_SECONDS="1",
        SHUTDOWN_DRAIN_SECONDS="0"),
        ready_path="/ready")
    try:
        health = wait_for(lambda: (q := httpx.get(proxy.url + "/health").json()["quota"])[
            "polling"]["reason"] == "unreachable" and q, 5, "unreachable")
        assert health["polling"]["state"] == "failing"
        answer = httpx.post(proxy.url + "/v1/chat/completions", timeout=10,
                            json={"model": "glm-4.7", "messages": MESSAGES})
        assert answer.status_code == 200
    finally:
        proxy.terminate()
    assert proxy.output().count("quota poll failing") == 1
