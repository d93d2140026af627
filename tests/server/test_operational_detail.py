"""/health and /metrics without a key show no client names and no account hash.

With ADMIN_API_KEY configured, /health shows the account hash and client names only to a
request that presents it; /metrics shows the per-client series to everyone by default (the
dashboard's top clients read it) and, with METRICS_CLIENT_NAMES=false, only to a scrape that
presents the admin key.
"""

from __future__ import annotations

import httpx

from tests.support.inprocess import InProcessProxy

ADMIN = "admin-key-0123456789abcdef"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"id": "c", "choices": [{"message": {"content": "ok"}}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=ANSWER)


def proxy(**env: str) -> InProcessProxy:
    return InProcessProxy(httpx.MockTransport(upstream), {
        "PROXY_API_KEYS": "secret-team:worker-key-0001", "ADMIN_API_KEY": ADMIN,
        "QUOTA_PACING_EXEMPT": "secret-team", **env})


ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}
WORKER = {"authorization": "Bearer worker-key-0001"}


async def test_health_without_the_admin_key_shows_no_client_names_or_account() -> None:
    app = proxy()
    account = app.settings.account
    async with app as client:
        public = await client.get("/health")
        wrong = await client.get("/health", headers={"authorization": "Bearer nope-nope-nope"})
        full = await client.get("/health", headers=ADMIN_HEADERS)
    for answer in (public, wrong):
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "ok" and body["auth"] == "keys" and body["ready"] is True
        assert "deployment_variant" in body and "version" in body and "retired" in body
        assert account not in answer.text and "secret-team" not in answer.text
        assert body["detail"] == "public"
    body = full.json()
    assert body["detail"] == "full"
    assert body["rate_limit"]["account"] == account
    assert body["quota"]["pacing"]["exempt"] == ["secret-team"]


async def test_metrics_client_series_shown_by_default() -> None:
    app = proxy()
    async with app as client:
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=WORKER)).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'client="secret-team"' in text


async def test_metrics_client_names_off_hides_them_from_a_scrape_without_the_admin_key() -> None:
    app = proxy(METRICS_CLIENT_NAMES="false")
    async with app as client:
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=WORKER)).status_code == 200
        public = (await client.get("/metrics")).text
        full = (await client.get("/metrics", headers=ADMIN_HEADERS)).text
    assert "secret-team" not in public and "zai_proxy_client_tokens" not in public
    assert "zai_proxy_client_admitted" not in public
    assert "zai_proxy_client_queue_wait_seconds" not in public
    assert "zai_proxy_requests_total" in public
    assert 'client="secret-team"' in full
    assert 'zai_proxy_client_admitted_total{client="secret-team"' in full


def test_the_queues_clients_are_left_out_of_public_health() -> None:
    from zai_proxy.server.app import _public_health

    body = {"rate_limit": {"queue_depth": 1, "clients": [{"client": "secret-team"}]}}
    assert _public_health(body, "") == {"rate_limit": {"queue_depth": 1}}


def test_the_account_hash_is_hidden_wherever_it_appears() -> None:
    from zai_proxy.server.app import _public_health

    body = {"status": "ok", "rate_limit": {"account": "abcd1234abcd1234", "shared_state": {
        "namespace": "zai-proxy:acct:abcd1234abcd1234:limiter"}}}
    public = _public_health(body, "abcd1234abcd1234")
    assert "abcd1234abcd1234" not in str(public) and public["status"] == "ok"
    assert public["rate_limit"]["shared_state"]["namespace"] == "zai-proxy:acct:<hidden>:limiter"
