"""The dashboard's quota panel and top clients in headless Chromium, against proxies v1 and v2.

Each proxy runs its built-in simulator with a five-hour budget in tokens (SIM_QUOTA_5H_TOKENS)
and one in credits (SIM_QUOTA_5H_CREDITS), polls its monitor every second, and has two named
client keys; `batch` sends three times what `chat` sends. The page must chart both budgets for
both variants, name the one that binds, list both clients, `batch` first, with their share
of the budget, and chart both clients' shares of the admitted requests (about 3:1).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import CHROMIUM_ARGS, Process, dashboard_stack, require_binary

KEYS = {"batch": "worker-key-batch-01", "chat": "worker-key-chat-001"}
BODY = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Process, list[Process]]]:
    # A request costs under 20 tokens (< 0.02% of the tokens) and 1 credit (0.05% of the
    # credits): the credits bind.
    env = {"SIM_QUOTA_5H_TOKENS": "100000", "SIM_QUOTA_5H_CREDITS": "2000",
           "SIM_CREDITS_PER_1K_TOKENS": "0", "QUOTA_POLL_SECONDS": "1",
           "PROXY_API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items()),
           "SHUTDOWN_DRAIN_SECONDS": "0", "RATE_LIMIT_STATE_FILE": ""}
    with dashboard_stack(tmp_path, env) as running:
        yield running


def traffic(proxies: list[Process], stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            for proxy in proxies:
                for name, times in (("batch", 3), ("chat", 1)):
                    for _ in range(times):
                        client.post(f"{proxy.url}/v1/chat/completions", json=BODY,
                                    headers={"authorization": f"Bearer {KEYS[name]}"})
            stop.wait(0.3)


QUOTA_READY = """() => {
  const card = document.querySelector('[data-panel="quota"]');
  const lines = ["v1", "v2"].every((v) => ["quota_5h_tokens", "quota_5h_credits"].every((s) =>
    [...card.querySelectorAll(`path[data-variant="${v}"][data-series="${s}"]`)]
      .some((p) => +p.dataset.points >= 2)));
  const rows = [...document.querySelectorAll(
    '[data-panel="clients"] [data-window="five_hour"] tbody tr')].map((tr) => tr.dataset.client);
  const shares = ["client:batch", "client:chat"].every((c) =>
    [...document.querySelectorAll(`[data-panel="shares"] path[data-series="${c}"]`)]
      .some((p) => +p.dataset.points >= 2)
    && document.querySelector(`[data-panel="shares"] .value[data-client="${c}"]`));
  return lines && rows.includes("batch") && rows.includes("chat") && shares;
}"""


@pytest.mark.needs("chromium|chromium-browser")
def test_quota_panel_and_top_clients_for_both_variants(
        stack: tuple[Process, list[Process]]) -> None:
    executable = require_binary("chromium", "chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    dashboard, proxies = stack
    stop = threading.Event()
    sender = threading.Thread(target=traffic, args=(proxies, stop), daemon=True)
    sender.start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(dashboard.url + "/")
                page.click('[data-range="5m"]')
                page.wait_for_function(QUOTA_READY, timeout=40_000)
                heads = {v: page.text_content(
                    f'[data-panel="quota"] .value[data-variant="{v}"]') or ""
                    for v in ("v1", "v2")}
                rows = page.eval_on_selector_all(
                    '[data-panel="clients"] [data-window="five_hour"] tbody tr',
                    "trs => trs.map((tr) => [tr.dataset.client, "
                    "...[...tr.children].map((td) => td.textContent)])")
                window = page.text_content('[data-panel="clients"] [data-window="five_hour"] h3')
                shares = page.eval_on_selector_all(
                    '[data-panel="shares"] .value',
                    "rows => rows.map((r) => [r.dataset.client, r.textContent])")
            finally:
                browser.close()
    finally:
        stop.set()
        sender.join(30)
    for variant, head in heads.items():
        assert head.startswith(variant) and "5h " in head and "%" in head, heads
        assert "% credits" in head.split("\u00b7")[0], heads  # the credits bind
        assert "weekly \u2013" in head  # an en dash: the simulator has no weekly budget here
    assert [r[0] for r in rows] == ["batch", "chat"]  # batch burns three times as much
    batch, chat = rows
    assert int(batch[2].replace(",", "")) > 2 * int(chat[2].replace(",", ""))
    assert batch[3].endswith("%") and batch[4].endswith("%") and batch[4] != "\u2013"
    assert window is not None and "of the budget used (credits)" in window
    # The shares panel: both clients, every variant together, batch with three times chat's
    # admitted attempts (three quarters of them), each line "name share · rate".
    assert [name for name, _ in shares] == ["client:batch", "client:chat"], shares
    percent = {name: float(text.split()[1].rstrip("%")) for name, text in shares}
    assert 65 <= percent["client:batch"] <= 85 and 15 <= percent["client:chat"] <= 35, shares
    assert all("/s" in text for _, text in shares), shares
