"""In headless Chromium: what the dashboard shows from scraped data is text, never markup.

A scrape target controls the variant label (`deployment_variant`), the client names, and, through
a failing URL, the error string the page shows. Here one target serves a real proxy's /metrics
with its variant label and a client name replaced by markup that would run script if parsed as
HTML (`<img src=x onerror=...>`, `</script><script>...`), and another target's URL carries
markup into its error. Each payload sets a window flag; the test moves the mouse over a chart so
the tooltip renders too, then checks that no flag is set and that the labels show literally.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.servers import (
    CHROMIUM_ARGS,
    Process,
    require_binary,
    send_traffic,
    start_zai_proxy,
)

IMG = "<img src=x onerror=window.__xss_variant=1>"
SCRIPT = "</script><script>window.__xss_script=1</script>"
EVIL_VARIANT = f"v1{IMG}{SCRIPT}"
EVIL_CLIENT = "<img src=x onerror=window.__xss_client=1>"
EVIL_PATH = "/metrics/<img/src=x/onerror=window.__xss_error=1>"
FLAGS = ["__xss_variant", "__xss_script", "__xss_client", "__xss_error"]


def evil_metrics(proxy: Process, served: int) -> str:
    """The proxy's /metrics with its variant label replaced, plus growing client tokens and
    admitted attempts."""
    text = httpx.get(proxy.url + "/metrics", timeout=10).text
    text = text.replace('deployment_variant="v1"', f'deployment_variant="{EVIL_VARIANT}"')
    return text + (
        "# TYPE zai_proxy_client_tokens_total counter\n"
        f'zai_proxy_client_tokens_total{{deployment_variant="{EVIL_VARIANT}",'
        f'client="{EVIL_CLIENT}"}} {100.0 * served}\n'
        "# TYPE zai_proxy_client_admitted_total counter\n"
        f'zai_proxy_client_admitted_total{{deployment_variant="{EVIL_VARIANT}",'
        f'client="{EVIL_CLIENT}"}} {1.0 * served}\n'
    )


class EvilTarget:
    """A scrape target on a free loopback port serving `evil_metrics` at /metrics."""

    def __init__(self, proxy: Process) -> None:
        outer = self
        self.served = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                outer.served += 1
                body = evil_metrics(proxy, outer.served).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> EvilTarget:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Process, EvilTarget]]:
    proxy = start_zai_proxy("serve", env={"DEPLOYMENT_VARIANT": "v1"})
    dashboard = None
    try:
        with EvilTarget(proxy) as target:
            dashboard = start_zai_proxy(
                "dashboard", "--target", target.url + "/metrics",
                "--target", target.url + EVIL_PATH, "--interval", "1",
                "--db", str(tmp_path / "dash.sqlite3"), ready_path="/healthz")
            send_traffic(proxy, 4)
            yield dashboard, target
    finally:
        for process in (dashboard, proxy):
            if process is not None:
                process.terminate(10)


@pytest.mark.needs("chromium|chromium-browser")
def test_scraped_markup_shows_as_text_and_runs_nothing(
    stack: tuple[Process, EvilTarget]
) -> None:
    executable = require_binary("chromium", "chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    dashboard, _ = stack
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(dashboard.url + "/?range=5m")
            # The variant's value row and at least two chart points (so the tooltip has lines).
            page.wait_for_function(
                """(v) => [...document.querySelectorAll('[data-panel="requests"] path')]
                   .some((p) => p.dataset.variant === v && +p.dataset.points >= 2)""",
                arg=EVIL_VARIANT, timeout=30_000)
            page.wait_for_function(
                """() => [...document.querySelectorAll(".target")].some(
                   (t) => t.textContent.includes("down:"))""", timeout=15_000)
            # The client shares panel names the hostile client (as text, checked below).
            page.wait_for_function(
                """(c) => [...document.querySelectorAll('[data-panel="shares"] .value b')]
                   .some((b) => b.textContent === c)""", arg=EVIL_CLIENT, timeout=30_000)
            box = page.locator('[data-panel="requests"] svg').bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
            page.wait_for_function("() => !document.getElementById('tooltip').hidden",
                                   timeout=5_000)
            page.wait_for_timeout(500)  # an onerror of an injected <img src=x> fires by then
            flags = page.evaluate("(names) => names.filter((n) => window[n] !== undefined)",
                                  FLAGS)
            assert flags == [], flags
            assert page.locator("img").count() == 0
            assert page.locator("script").count() == 2  # chart.js and app.js, nothing injected
            # The labels are there, as text.
            value = page.locator('[data-panel="requests"] .value b').first.text_content()
            assert value == EVIL_VARIANT, value
            tooltip = page.text_content("#tooltip") or ""
            assert EVIL_VARIANT in tooltip, tooltip
            buttons = page.locator("#variant-switch button").all_text_contents()
            assert EVIL_VARIANT in buttons, buttons
            targets = " ".join(page.locator(".target").all_text_contents())
            assert EVIL_VARIANT in targets and "onerror=window.__xss_error=1" in targets, targets
        finally:
            browser.close()
