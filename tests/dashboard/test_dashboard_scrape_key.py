"""SCRAPE_KEY: the dashboard presents the proxies' admin key when it scrapes, so a proxy that
shows its per-client series only to the admin key (METRICS_CLIENT_NAMES=false) still fills the
client panels; without it those series stay hidden. The key is a secret: it is never shown."""

from __future__ import annotations

import httpx
import pytest

from tests.support.inprocess import InProcessProxy
from zai_proxy.dashboard.collector import Collector
from zai_proxy.dashboard.settings import SettingsError, load_settings

ADMIN = "admin-key-0123456789abcdef"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"id": "c", "choices": [{"message": {"content": "ok"}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def proxy() -> InProcessProxy:
    return InProcessProxy(httpx.MockTransport(lambda r: httpx.Response(200, json=ANSWER)), {
        "PROXY_API_KEYS": "team-a:worker-key-0001", "ADMIN_API_KEY": ADMIN,
        "METRICS_CLIENT_NAMES": "false"})


@pytest.mark.parametrize("key", [ADMIN, None])
async def test_the_client_panels_see_what_the_key_opens(key: str | None) -> None:
    app = proxy()
    async with app as client:
        worker = {"authorization": "Bearer worker-key-0001"}
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                   headers=worker)).status_code == 200
        collector = Collector(["http://proxy/metrics"], interval=5, key=key,
                              transport=httpx.ASGITransport(app.app))
        await collector.scrape_once()
        await collector.scrape_once()
        readings = list(collector._readings.values())
        await collector.aclose()
    names = {name for (name, labels) in readings[0].counters}
    assert ("zai_proxy_client_admitted_total" in names) == (key is not None)


def test_the_scrape_key_is_read_checked_and_kept_out_of_sight() -> None:
    base = {"SCRAPE_TARGETS": "http://p:8080"}
    settings = load_settings([], {**base, "SCRAPE_KEY": ADMIN})
    assert settings.scrape_key == ADMIN and ADMIN not in repr(settings)
    assert load_settings([], base).scrape_key is None
    with pytest.raises(SettingsError, match="SCRAPE_KEY"):
        load_settings([], {**base, "SCRAPE_KEY": "short"})
