"""End to end in headless Chromium: proxies v1 and v2 (simulated upstream), traffic, dashboard.

Checks that every panel draws a series for both variants, that the page updates live, that the
variant switch hides exactly the other variant and brings it back, that the request and 5xx
figures match the traffic sent to each variant, and saves a
screenshot (copied to docs/dashboard.png when ZAI_PROXY_UPDATE_SCREENSHOT=1, so a test run never
changes tracked files by default).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import (
    CHROMIUM_ARGS,
    Process,
    dashboard_stack,
    require_binary,
    send_traffic,
)

PANELS = ["requests", "latency", "ttfb", "errors", "tokens", "cost", "concurrency", "ratelimit",
          "retries"]
VARIANTS = ["v1", "v2"]
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Traffic:
    """Keeps a trickle of requests going through the proxies until stopped; `sent` counts
    what each proxy (by index) answered. Each proxy gets its own batch size, so a dashboard
    that mixed the variants up would show the wrong numbers."""

    def __init__(self, proxies: list[Process], batches: list[int]) -> None:
        self.proxies = proxies
        self.batches = batches
        self.sent = [{"requests": 0, "5xx": 0} for _ in proxies]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for index, proxy in enumerate(self.proxies):
                for key, n in send_traffic(proxy, self.batches[index]).items():
                    self.sent[index][key] += n
            self.stop.wait(0.3)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Process, list[Process]]]:
    with dashboard_stack(tmp_path, variants=VARIANTS) as running:
        yield running


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


@pytest.mark.needs("chromium|chromium-browser")
def test_every_panel_shows_both_variants_and_updates_live(
    stack: tuple[Process, list[Process]], tmp_path: Path
) -> None:
    executable = require_binary("chromium", "chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    dashboard, proxies = stack
    with Traffic(proxies, batches=[3, 5]) as traffic, sync_api.sync_playwright() as pw:
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
            # One variant alone hides the other's series and values, and only those; "both"
            # brings them back.
            for alone, other in (("v2", "v1"), ("v1", "v2"), ("all", None)):
                page.click(f'[data-variant-choice="{alone}"]')
                for variant in VARIANTS:
                    hidden = variant == other
                    for panel in PANELS:
                        card = f'[data-panel="{panel}"]'
                        paths = page.locator(f'{card} path[data-variant="{variant}"]').count()
                        values = page.locator(f'{card} .value[data-variant="{variant}"]').count()
                        assert (paths == 0) == hidden and (values == 0) == hidden, (
                            alone, panel, variant, paths, values)
            # A little more history makes the saved screenshot readable.
            page.wait_for_function(
                """() => [...document.querySelectorAll('[data-panel="requests"] path')].every(
                   (p) => +p.dataset.points >= 12)""", timeout=30_000)
            # Panel values against what was sent: stop the traffic, then the next scrape must
            # show, per variant, exactly the requests sent to it and their share of 5xx.
            traffic.finish()
            for index, variant in enumerate(VARIANTS):
                sent = traffic.sent[index]
                assert sent["5xx"] > 0 and sent["requests"] > sent["5xx"], sent
                want = f"· {sent['requests']} req"
                page.wait_for_function(
                    """([v, want]) => (document.querySelector(
                         `[data-panel="requests"] .value[data-variant="${v}"]`)
                         ?.textContent || "").includes(want)""",
                    arg=[variant, want], timeout=15_000)
                errors = page.text_content(
                    f'[data-panel="errors"] .value[data-variant="{variant}"]') or ""
                share = re.search(r"5xx ([0-9.]+)%", errors)
                assert share, errors
                expected = 100 * sent["5xx"] / sent["requests"]
                assert abs(float(share.group(1)) - expected) <= 0.051, (errors, sent)
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
