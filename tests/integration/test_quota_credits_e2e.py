"""A credit plan's monitor end to end: the real proxy in front of the real simulator.

The simulator (SIM_* settings) counts a five-hour budget of 5 credits (one a request), reports a
monthly TIME_LIMIT of tool calls and an entry of a type no parser knows; the proxy polls its
monitor every second. /health and /metrics must show the credit window, the month's tool calls
and the raw unknown entry; once the poll shows the credits spent, requests are answered locally.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, proxy_env
from tests.support.servers import Process, start_zai_proxy, wait_for

BODY = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CREDITS = 5


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Process, Process]]:
    simulator = start_zai_proxy("simulate", "--expect-key", UPSTREAM_KEY, env={
        "SIM_QUOTA_5H_CREDITS": str(CREDITS), "SIM_CREDITS_PER_REQUEST": "1",
        "SIM_CREDITS_PER_1K_TOKENS": "0", "SIM_QUOTA_5H_WINDOW_S": "600",
        "SIM_MONITOR_TIME_LIMIT": "100", "SIM_MONITOR_UNKNOWN_ENTRY": "true"})
    proxy = start_zai_proxy("serve", env=proxy_env(
        simulator, PROXY_API_KEYS=f"e2e:{CLIENT_KEY}", QUOTA_POLL_SECONDS="1",
        QUOTA_POLL_TIMEOUT="500ms", SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready")
    yield simulator, proxy
    proxy.terminate()
    simulator.terminate()



def quota(proxy: Process) -> dict[str, Any]:
    return dict(httpx.get(proxy.url + "/health", timeout=5).json()["quota"])


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_credits_tool_calls_and_an_unknown_entry_then_local_refusal(
        stack: tuple[Process, Process]) -> None:
    simulator, proxy = stack
    health = wait_for(lambda: (q := quota(proxy))["windows"].get("monthly") and q, 10,
                      "a poll with the month's tool calls")
    five = health["windows"]["five_hour"]
    assert five["unit"] == "credits" and five["allowance"] == CREDITS
    assert five["blocks_requests"] is True and list(five["units"]) == ["credits"]
    month = health["windows"]["monthly"]
    assert (month["unit"], month["allowance"], month["blocks_requests"]) == ("calls", 100, False)
    [entry] = health["unparsed"]["entries"]
    assert entry["reason"] == "unknown_type"
    assert json.loads(entry["raw"])["type"] == "FUTURE_LIMIT"  # as the monitor sent it
    text = httpx.get(proxy.url + "/metrics", timeout=5).text
    assert metric(text, "zai_proxy_quota_used_ratio", window="five_hour", unit="credits") == 0
    assert metric(text, "zai_proxy_quota_remaining", window="monthly", unit="calls") == 100
    assert (metric(text, "zai_proxy_quota_unparsed_total", reason="unknown_type") or 0) > 0

    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=10) as client:
        for _ in range(CREDITS):  # every credit, and not one request over
            assert client.post("/v1/chat/completions", json=BODY).status_code == 200
        spent = wait_for(lambda: (q := quota(proxy))["blocked"] and q, 10,
                         "a poll showing the credits spent")
        assert spent["blocked"]["source"] == "poll" and spent["blocked"]["window"] == "five_hour"
        assert spent["windows"]["five_hour"]["units"]["credits"]["spent"] is True
        seen = httpx.get(simulator.url + "/_stats", timeout=5).json()["requests_total"]
        refused = client.post("/v1/chat/completions", json=BODY)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "proxy_quota_exhausted"
    assert refused.headers["x-zai-error-code"] == spent["blocked"]["code"]
    assert httpx.get(simulator.url + "/_stats", timeout=5).json()["requests_total"] == seen
