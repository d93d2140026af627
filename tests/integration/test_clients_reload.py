"""PROXY_CLIENTS_FILE re-read by the running proxy: a client added is admitted and a client
removed is refused within seconds, without a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.support.servers import start_zai_proxy

BODY = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
AGENT, CI, NEW = "agent-key-secret-01", "ci-key-secret-0002", "new-key-secret-0003"


def client(name: str, key: str, extra: str = "") -> str:
    return f'[[client]]\nname = "{name}"\nkeys = ["{key}"]\n{extra}\n'


def status(url: str, key: str) -> int:
    return httpx.post(url + "/v1/chat/completions", json=BODY, timeout=10,
                      headers={"authorization": f"Bearer {key}"}).status_code


def test_a_rewritten_clients_file_admits_the_new_client_and_refuses_the_removed_one(
        tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(client("agents", AGENT, 'priority = "interactive"\nweight = 3')
                       + client("ci", CI, "five_hour_share = 0.2"))
    proxy = start_zai_proxy("serve", env={"PROXY_CLIENTS_FILE": str(clients),
                                          "SHUTDOWN_DRAIN_SECONDS": "0",
                                          "RATE_LIMIT_STATE_FILE": ""})
    try:
        assert status(proxy.url, AGENT) == 200 and status(proxy.url, CI) == 200
        assert status(proxy.url, NEW) == 401
        new = tmp_path / "clients.toml.new"  # replaced atomically, as a volume update does
        new.write_text(client("agents", AGENT) + client("new", NEW, "max_in_flight = 2"))
        os.replace(new, clients)
        deadline = time.monotonic() + 5
        while status(proxy.url, NEW) != 200:
            assert time.monotonic() < deadline, "the new client was not admitted"
            time.sleep(0.2)
        assert status(proxy.url, CI) == 401
        assert status(proxy.url, AGENT) == 200
        health = httpx.get(proxy.url + "/health").json()
        metrics = httpx.get(proxy.url + "/metrics").text
    finally:
        proxy.terminate()
    assert health["clients_file"]["clients"] == 2 and health["clients_file"]["last_error"] is None
    assert [(c["name"], c["weight"], c["max_in_flight"]) for c in health["clients"]["clients"]] \
        == [("agents", 1.0, None), ("new", 1.0, 2)]
    assert 'client="new"' in metrics and 'client="agents"' in metrics
    assert "zai_proxy_clients_file_clients" in metrics
    assert "PROXY_CLIENTS_FILE reloaded" in proxy.output()
    for key in (AGENT, CI, NEW):
        assert key not in metrics + proxy.output()
