"""The proxy's /metrics as real Prometheus tools see it: promtool lint and a real scrape."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import proxy_env
from tests.support.servers import Process, free_port, require_binary, start_zai_proxy


@pytest.fixture(scope="module")
def busy_proxy(simulator: Process) -> Iterator[Process]:
    """A proxy that has served every kind of request, so every series family exists."""
    process = start_zai_proxy("serve", env=proxy_env(simulator, DEPLOYMENT_VARIANT="v2"),
                              ready_path="/ready")
    chat = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi there"}]}
    with httpx.Client(base_url=process.url, timeout=10) as client:
        client.post("/v1/chat/completions", json=chat)
        client.post("/v1/chat/completions", json={**chat, "stream": True})
        client.post("/v1/embeddings", json={"model": "embedding-3", "input": "x"})
        client.post("/v1/messages", json={**chat, "max_tokens": 8})
        client.post("/v1/chat/completions", content=b"{bad")
        client.get("/v1/nope/../x")
        client.post("/v1/chat/completions", json=chat, headers={"x-sim-status": "429",
                                                                 "x-sim-429-code": "1308"})
    yield process
    process.terminate()


@pytest.mark.needs("promtool")
def test_promtool_check_metrics_passes(busy_proxy: Process) -> None:
    promtool = require_binary("promtool")
    text = httpx.get(f"{busy_proxy.url}/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "zai_proxy_tokens_total{" in text and "zai_proxy_upstream_429_total{" in text


def test_every_series_carries_the_variant(busy_proxy: Process) -> None:
    for line in httpx.get(f"{busy_proxy.url}/metrics").text.splitlines():
        if line.startswith("zai_proxy_"):
            assert 'deployment_variant="v2"' in line, line


@pytest.mark.needs("prometheus")
def test_real_prometheus_scrapes_the_variant(busy_proxy: Process) -> None:
    prometheus = require_binary("prometheus")
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="zai-prom-"))
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: zai-proxy\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{busy_proxy.port}']\n")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = ('sum by (deployment_variant, route) '
                 '(zai_proxy_requests_total{route="/v1/chat/completions"})')
        deadline = time.monotonic() + 45
        result: list[dict[str, object]] = []
        while time.monotonic() < deadline and not result:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                                   params={"query": query}, timeout=2).json()
                result = answer.get("data", {}).get("result", [])
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert result, "prometheus never scraped the proxy"
        metric = result[0]["metric"]
        assert isinstance(metric, dict) and metric["deployment_variant"] == "v2"
        assert float(result[0]["value"][1]) >= 3  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(10)
