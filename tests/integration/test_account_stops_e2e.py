"""Z.AI stopping the account, end to end: the real proxy in front of the real simulator.

Each stop code comes once per-request (`x-sim-429-code`) and once as the simulator's account
state (`account_state`, set live through `/_config`); the proxy relays one upstream answer as
its own error, refuses locally, and its probe (every 0.5 s here) lifts the stop once the
simulator's account is fine again. The daily limit and the key/base hint each need a proxy
that has seen nothing yet, so they get their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, proxy_env
from tests.support.servers import Process, running_zai_proxy, wait_for
from zai_proxy.zai.classify import next_beijing_midnight
from zai_proxy.zai.codes import lookup

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
STATES = {"1309": "expired", "1311": "no_subscription", "1313": "fair_use", "1113": "no_balance"}


@pytest.fixture(scope="module")
def simulator() -> Iterator[Process]:
    with running_zai_proxy("simulate", "--expect-key", UPSTREAM_KEY) as process:
        yield process


@contextmanager
def serving(simulator: Process, **env: str) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
            simulator, PROXY_API_KEYS=f"e2e:{CLIENT_KEY}", QUOTA_POLL_SECONDS="0",
            ACCOUNT_STOP_PROBE_SECONDS="500ms", SHUTDOWN_DRAIN_SECONDS="0", **env),
            ready_path="/ready") as process:
        yield process


@pytest.fixture(scope="module")
def proxy(simulator: Process) -> Iterator[Process]:
    with serving(simulator) as process:
        yield process


def configure(simulator: Process, **values: Any) -> None:
    httpx.post(simulator.url + "/_config", json=values, timeout=5).raise_for_status()


def sim_requests(simulator: Process) -> int:
    return int(httpx.get(simulator.url + "/_stats", timeout=5).json()["requests_total"])


def chat(proxy: Process, **headers: str) -> httpx.Response:
    return httpx.post(proxy.url + "/v1/chat/completions", json=CHAT, headers={**AUTH, **headers},
                      timeout=10)



def assert_stopped_then_lifted(simulator: Process, proxy: Process, code: str,
                               first: httpx.Response, lift: Callable[[], None]) -> None:
    row = lookup(code)
    assert first.status_code == row.status, first.text
    assert first.json()["error"]["code"] == "upstream_account_stopped"
    assert row.cause in first.json()["error"]["message"]
    assert first.headers["x-zai-error-code"] == code
    assert UPSTREAM_KEY not in first.text
    seen = sim_requests(simulator)
    local = chat(proxy)
    assert local.status_code == row.status and local.json()["error"]["code"] == (
        "proxy_account_stopped")
    assert local.headers["x-zai-error-code"] == code and int(local.headers["retry-after"]) >= 1
    assert sim_requests(simulator) == seen, "refused without the upstream"
    health = httpx.get(proxy.url + "/health", timeout=5).json()
    assert health["account"] == "stopped" and health["account_stop"]["code"] == code
    lift()
    wait_for(lambda: chat(proxy).status_code == 200, 10, "a probe lifts the stop")
    assert httpx.get(proxy.url + "/health", timeout=5).json()["account"] == "ok"
    metrics = httpx.get(proxy.url + "/metrics", timeout=5).text
    assert re.search(rf'^zai_proxy_account_stopped{{code="{code}",[^}}]*}} 0\.0$', metrics, re.M)


@pytest.mark.parametrize("code", sorted(STATES))
def test_a_stop_code_in_one_answer_stops_until_a_probe_is_answered(
        simulator: Process, proxy: Process, code: str) -> None:
    seen = sim_requests(simulator)
    first = chat(proxy, **{"x-sim-429-code": code})
    assert sim_requests(simulator) == seen + 1, "one upstream attempt"
    assert_stopped_then_lifted(simulator, proxy, code, first, lambda: None)


@pytest.mark.parametrize("code", sorted(STATES))
def test_a_stopped_simulator_account_stops_the_proxy_until_it_is_set_back_to_ok(
        simulator: Process, proxy: Process, code: str) -> None:
    configure(simulator, account_state=STATES[code])
    try:
        seen = sim_requests(simulator)
        first = chat(proxy)
        assert sim_requests(simulator) == seen + 1, "one upstream attempt"
        time.sleep(1.0)  # probes meet the stop again meanwhile
        assert chat(proxy).status_code == lookup(code).status
        assert_stopped_then_lifted(simulator, proxy, code, first,
                                   lambda: configure(simulator, account_state="ok"))
    finally:
        configure(simulator, account_state="ok")


def test_the_daily_limit_is_refused_until_midnight_beijing_time(simulator: Process) -> None:
    with serving(simulator) as proxy:
        first = chat(proxy, **{"x-sim-429-code": "1304"})
        assert first.status_code == 429 and first.headers["x-zai-error-code"] == "1304"
        seen = sim_requests(simulator)
        local = chat(proxy)
        assert local.json()["error"]["code"] == "proxy_quota_exhausted"
        assert local.headers["x-zai-error-code"] == "1304"
        wait = next_beijing_midnight(time.time()) - time.time()
        assert wait - 2 <= int(local.headers["retry-after"]) <= wait + 2
        assert sim_requests(simulator) == seen
        blocked = httpx.get(proxy.url + "/health", timeout=5).json()["quota"]["blocked"]
        assert blocked["window"] == "daily"


@pytest.mark.parametrize(("kind", "base", "hint"), [
    ("coding", "/api/paas/v4", "a Coding Plan key on the pay-as-you-go base?"),
    ("standard", "/api/coding/paas/v4", "a pay-as-you-go key on the Coding Plan base?")])
def test_a_key_on_the_other_plans_base_is_named_once(simulator: Process, kind: str, base: str,
                                                      hint: str) -> None:
    configure(simulator, key_kind=kind)
    try:
        with serving(simulator, ZAI_TARGET_URL=simulator.url + base) as proxy:
            first = chat(proxy)
            assert first.status_code == 429 and first.headers["x-zai-error-code"] == "1113"
            assert hint in first.json()["error"]["message"]
            time.sleep(1.0)
            chat(proxy)  # a probe meets the 1113 again
            health = httpx.get(proxy.url + "/health", timeout=5).json()
            assert health["account_stop"]["hint"].startswith(hint)
            said = [line for line in proxy.output().splitlines()
                    if hint in line and '"logger": "zai_proxy.quota"' in line]
            assert len(said) == 1, "logged once (access-log lines quote the client's error)"
    finally:
        configure(simulator, key_kind="")
