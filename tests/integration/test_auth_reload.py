"""PROXY_API_KEYS_FILE re-read by the running proxy: keys added and rotated without a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.support.servers import start_zai_proxy

BODY = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


def status(url: str, key: str) -> int:
    return httpx.post(url + "/v1/chat/completions", json=BODY, timeout=10,
                      headers={"authorization": f"Bearer {key}"}).status_code


def test_a_rotated_key_file_takes_effect_within_seconds(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("batch:worker-key-old-001\n")
    proxy = start_zai_proxy("serve", env={"PROXY_API_KEYS_FILE": str(keys),
                                          "SHUTDOWN_DRAIN_SECONDS": "0",
                                          "RATE_LIMIT_STATE_FILE": ""})
    try:
        assert status(proxy.url, "worker-key-old-001") == 200
        assert status(proxy.url, "worker-key-new-002") == 401
        new = tmp_path / "keys.new"  # replaced atomically, as a Secret volume update does
        new.write_text("batch:worker-key-new-002\nchat:worker-key-chat-03\n")
        os.replace(new, keys)
        deadline = time.monotonic() + 5
        while status(proxy.url, "worker-key-new-002") != 200:
            assert time.monotonic() < deadline, "the new key was not picked up"
            time.sleep(0.2)
        assert status(proxy.url, "worker-key-old-001") == 401
        assert status(proxy.url, "worker-key-chat-03") == 200
        metrics = httpx.get(proxy.url + "/metrics").text
        assert 'client="batch"' in metrics and 'client="chat"' in metrics
        assert "worker-key" not in metrics
    finally:
        proxy.terminate()
    assert "PROXY_API_KEYS_FILE reloaded" in proxy.output()
    assert "worker-key" not in proxy.output()
