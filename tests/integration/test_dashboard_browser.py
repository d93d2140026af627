"""End to end in headless Chromium: proxies v1 and v2 (simulated upstream), traffic, dashboard.

Checks that every panel draws a series for both variants, that the page updates live, and saves a
screenshot (copied to docs/dashboard.png when ZAI_PROXY_UPDATE_SCREENSHOT=1, so a test run never
changes tracked files by default).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import Process, require_binary, start_zai_proxy

PANELS = ["requests", "latency", "ttfb", "errors", "tokens", "cost", "concurrency", "ratelimit",
          "retries"]
VARIANTS = ["v1", "v2"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def send_traffic(proxy: Process, count: int) -> None:
    """Chat completions through one proxy, every third one streamed, one unknown model."""
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for i in range(count):
            body: dict[str, Any] = {"model": "glm-4.6", "max_tokens": 40,
                                    "messages": [{"role": "user", "content": f"hello {i}"}]}
            if i % 3 == 0:
                body["stream"] = True
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_bytes():
                        pass
            else:
                client.post("/v1/chat/completions", json=body)


class Traffic:
    """Keeps a trickle of requests going through both proxies until stopped."""

    def __init__(self, proxies: list[Process]) -> None:
        self.proxies = proxies
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for proxy in self.proxies:
                send_traffic(proxy, 3)
            self.stop.wait(0.3)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Process, list[Process]]]:
    proxies = [start_zai_proxy("serve", env={"DEPLOYMENT_VARIANT": v}) for v in VARIANTS]
    dashboard = None
    try:
        args = [a for p in proxies for a in ("--target", p.url)]
        dashboard = start_zai_proxy("dashboard", *args, "--interval", "1",
                                    "--db", str(tmp_path / "dash.sqlite3"), ready_path="/healthz")
        yield dashboard, proxies
    finally:
        for process in [dashboard, *proxies]:
            if process is not None:
                process.terminate(10)


PANEL_STATE = """(panels) => Object.fromEntries(panels.map((id) => {
  const card = document.querySelector(`[data-panel="${id}"]`);
  if (!card) return [id, null];
  const points = {};
  for (const path of card.querySelectorAll("path[data-variant]")) {
    const v = path.dataset.variant;
    points[v] = Math.max(points[v] || 0, Number(path.dataset.points));
  }
  const values = [...card.querySelectorAll(".value[data-variant]")].map((e) => e.dataset.variant);
  return [id, {points, values}];
}))"""

ALL_READY = """([panels, variants]) => panels.every((id) => {
  const card = document.querySelector(`[data-panel="${id}"]`);
  return card && variants.every((v) =>
    [...card.querySelectorAll(`path[data-variant="${v}"]`)].some((p) => +p.dataset.points >= 2)
    && card.querySelector(`.value[data-variant="${v}"]`));
})"""


def test_every_panel_shows_both_variants_and_updates_live(
    stack: tuple[Process, list[Process]], tmp_path: Path
) -> None:
    executable = require_binary("chromium", "chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    dashboard, proxies = stack
    with Traffic(proxies), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(dashboard.url + "/?range=5m")
            page.click('[data-range="5m"]')
            page.wait_for_function(ALL_READY, arg=[PANELS, VARIANTS], timeout=30_000)
            first = page.evaluate(PANEL_STATE, PANELS)
            for panel in PANELS:
                assert sorted(first[panel]["values"]) == VARIANTS, panel
                assert all(first[panel]["points"][v] >= 2 for v in VARIANTS), (panel, first)
            # Live: without reloading, new scrape rounds add points to the charts.
            before = first["requests"]["points"]
            page.wait_for_function(
                """([b]) => ["v1", "v2"].every((v) => Math.max(...[...document.querySelectorAll(
                   `[data-panel="requests"] path[data-variant="${v}"]`)].map(
                   (p) => +p.dataset.points)) > b[v])""", arg=[before], timeout=15_000)
            assert page.get_attribute("#conn", "data-status") == "live"
            latency = page.text_content('[data-panel="latency"] .value[data-variant="v1"]') or ""
            assert "p95" in latency and "ms" in latency
            # One variant alone hides the other's series.
            page.click('[data-variant-choice="v2"]')
            assert page.locator('[data-panel="requests"] path[data-variant="v1"]').count() == 0
            page.click('[data-variant-choice="all"]')
            # A little more history makes the saved screenshot readable.
            page.wait_for_function(
                """() => [...document.querySelectorAll('[data-panel="requests"] path')].every(
                   (p) => +p.dataset.points >= 12)""", timeout=30_000)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            page.emulate_media(color_scheme="dark")
            page.wait_for_timeout(300)
            page.screenshot(path=str(tmp_path / "dashboard-dark.png"), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("ZAI_PROXY_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS / "dashboard.png")
    print(f"screenshots: {shot} {tmp_path / 'dashboard-dark.png'}")
