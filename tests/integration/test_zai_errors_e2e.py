"""Z.AI errors wherever they come, end to end: the real proxy in front of the real simulator.

The simulator puts a business error inside a 200 body (`x-sim-error-in-200`), inside a stream
before or after its content (`x-sim-stream-error: C[@K]`), ends a stream with an abnormal
finish reason (`x-sim-finish-reason`) and answers 1305 to one prompt whatever the rate
(`SIM_OVERLOADED_PROMPT`). The official OpenAI SDK (no retries of its own) is the client where
the answer is one it can read; raw bytes are compared where "unchanged" is the claim. Each test
gets its own proxy (a relayed quota error blocks the quota; the prompt memory is per process).

Byte comparisons normalise the simulator's per-request ids and `created` stamps, as in
test_accounting_e2e.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import UPSTREAM_KEY, proxy_env
from tests.support.servers import Process, running_zai_proxy

OVERLOADED = "please-overload-me"
MESSAGES = [{"role": "user", "content": "hello there"}]
NORMALISE = ((re.compile(rb"sim[0-9a-f]{8}"), b"simID"),
             (re.compile(rb'"created": \d+'), b'"created": 0'))


@pytest.fixture(scope="module")
def simulator() -> Iterator[Process]:
    with running_zai_proxy("simulate", "--chunk-gap-ms", "10", "--chunks", "4",
                           env={"SIM_OVERLOADED_PROMPT": OVERLOADED}) as process:
        yield process


@pytest.fixture
def proxy(simulator: Process) -> Iterator[Process]:
    httpx.post(simulator.url + "/_stats/reset", timeout=5).raise_for_status()
    env = proxy_env(simulator, MAX_RETRIES="1",
                    RATE_LIMIT_INITIAL="100", RATE_LIMIT_MAX="100", SHUTDOWN_DRAIN_SECONDS="0")
    with running_zai_proxy("serve", env=env, ready_path="/ready") as process:
        yield process


def client(proxy: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)


def metric(proxy: Process, name: str, **labels: str) -> float:
    text = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def sim_events(simulator: Process) -> dict[str, int]:
    stats = httpx.get(simulator.url + "/_stats", timeout=5).json()
    return dict(stats["events"])


def access_lines(proxy: Process) -> list[dict[str, Any]]:
    """The proxy's access-log lines so far (they are written when a request is recorded)."""
    lines = []
    for line in proxy.output().splitlines():
        if line.startswith("{") and '"msg": "request"' in line:
            lines.append(json.loads(line))
    return lines


def last_access(proxy: Process) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in access_lines(proxy) if line["route"] != "/metrics"]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError("no access-log line")


def raw_stream(url: str, headers: dict[str, str]) -> bytes:
    body = {"model": "glm-4.7", "messages": MESSAGES, "stream": True,
            "stream_options": {"include_usage": True}}
    response = httpx.post(url, json=body, timeout=30, headers={
        "authorization": f"Bearer {UPSTREAM_KEY}", **headers})
    assert response.status_code == 200, response.text
    return response.content


def normalise(data: bytes) -> bytes:
    for pattern, replacement in NORMALISE:
        data = pattern.sub(replacement, data)
    return data


# -- errors inside 200 bodies ------------------------------------------------------------------


def test_a_retryable_error_in_a_200_is_retried_then_relayed_with_its_class(
        proxy: Process, simulator: Process) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="glm-4.7", messages=MESSAGES, extra_headers={"x-sim-error-in-200": "1302"})
    assert raw.http_response.status_code == 200
    assert raw.http_response.json()["error"]["code"] == "1302"  # the upstream's body
    assert raw.headers["x-zai-error-class"] == "concurrency"
    assert sim_events(simulator)["error_in_200"] == 2  # the first attempt and MAX_RETRIES=1
    assert metric(proxy, "zai_proxy_upstream_business_errors_total",
                  **{"class": "concurrency", "carrier": "200"}) == 2
    assert metric(proxy, "zai_proxy_retry_attempts_total", reason="429_concurrency") == 1


def test_a_quota_error_in_a_200_is_relayed_at_once_and_blocks_the_quota(
        proxy: Process, simulator: Process) -> None:
    openai_client = client(proxy)
    raw = openai_client.chat.completions.with_raw_response.create(
        model="glm-4.7", messages=MESSAGES, extra_headers={"x-sim-error-in-200": "1308"})
    assert raw.http_response.status_code == 200
    assert raw.headers["x-zai-error-class"] == "quota_5h"
    assert sim_events(simulator)["error_in_200"] == 1
    assert last_access(proxy)["outcome"] == "upstream_error_quota_5h"
    with pytest.raises(openai.RateLimitError) as refused:  # answered by the proxy itself
        openai_client.chat.completions.create(model="glm-4.7", messages=MESSAGES)
    assert refused.value.response.json()["error"]["code"] == "proxy_quota_exhausted"


# -- errors inside streams ---------------------------------------------------------------------


def test_a_stream_error_before_content_is_retried_and_then_relayed(
        proxy: Process, simulator: Process) -> None:
    stream = client(proxy).chat.completions.create(
        model="glm-4.7", messages=MESSAGES, stream=True,
        extra_headers={"x-sim-stream-error": "1302"})
    with pytest.raises(openai.APIError) as failed:  # the SDK raises on the error event
        for _ in stream:
            pass
    assert "High concurrency" in str(failed.value)
    assert sim_events(simulator)["stream_error"] == 2  # retried once before anything was sent
    assert metric(proxy, "zai_proxy_upstream_business_errors_total",
                  **{"class": "concurrency", "carrier": "stream"}) == 2
    assert metric(proxy, "zai_proxy_upstream_stream_errors_total", **{"class": "concurrency"}) == 2


def test_a_stream_error_after_content_is_relayed_unchanged_and_recorded(
        proxy: Process, simulator: Process) -> None:
    headers = {"x-sim-stream-error": "1303@2"}
    direct = raw_stream(simulator.url + "/api/paas/v4/chat/completions", headers)
    proxied = raw_stream(proxy.url + "/v1/chat/completions", headers)
    assert b'"error"' in direct and b'"content"' in direct
    assert normalise(proxied) == normalise(direct)
    assert sim_events(simulator)["stream_error"] == 2  # one each: the proxy did not retry
    assert metric(proxy, "zai_proxy_upstream_stream_errors_total", **{"class": "frequency"}) == 1
    line = last_access(proxy)
    assert (line["outcome"], line["status"]) == ("upstream_stream_error", 502)
    assert metric(proxy, "zai_proxy_requests_total", route="/v1/chat/completions",
                  status_code="502") == 1
    assert '"msg": "upstream stream error"' in proxy.output()


@pytest.mark.parametrize(("reason", "fault"), [("network_error", True), ("stop", False)])
def test_an_abnormal_finish_reason_is_relayed_and_recorded(
        proxy: Process, reason: str, fault: bool) -> None:
    stream = client(proxy).chat.completions.create(
        model="glm-4.7", messages=MESSAGES, stream=True,
        extra_headers={"x-sim-finish-reason": reason})
    finishes = [chunk.choices[0].finish_reason for chunk in stream
                if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == [reason]
    assert metric(proxy, "zai_proxy_upstream_stream_errors_total",
                  **{"class": "finish_reason"}) == (1 if fault else 0)
    assert last_access(proxy)["outcome"] == ("upstream_stream_error" if fault else "ok")


# -- 1305 per prompt ---------------------------------------------------------------------------


@pytest.fixture
def patient_proxy(simulator: Process) -> Iterator[Process]:
    """Room for more retries than the per-prompt cap allows."""
    httpx.post(simulator.url + "/_stats/reset", timeout=5).raise_for_status()
    env = proxy_env(simulator, MAX_RETRIES="5", RATE_LIMIT_INITIAL="100", RATE_LIMIT_MAX="100",
                    SHUTDOWN_DRAIN_SECONDS="0")
    with running_zai_proxy("serve", env=env, ready_path="/ready") as process:
        yield process


def test_a_prompt_that_always_draws_1305_is_tried_three_times_and_lowers_the_rate_once(
        patient_proxy: Process, simulator: Process) -> None:
    proxy = patient_proxy
    overloaded = [{"role": "user", "content": f"hello {OVERLOADED}"}]
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as refused:
            client(proxy).chat.completions.create(model="glm-4.7", messages=overloaded)
        assert refused.value.response.headers["x-zai-error-class"] == "overloaded_prompt"
        assert refused.value.response.json()["error"]["code"] == "1305"
    assert sim_events(simulator)["overloaded_prompt"] == 6  # three attempts per request
    assert metric(proxy, "zai_proxy_upstream_429_total", **{"class": "frequency"}) == 1
    assert metric(proxy, "zai_proxy_upstream_429_total", **{"class": "overloaded_prompt"}) == 5
    # Other prompts are served meanwhile.
    completion = client(proxy).chat.completions.create(model="glm-4.7", messages=MESSAGES)
    assert completion.choices[0].message.content
