import httpx
from prometheus_client import CollectorRegistry

from zai_proxy.server.app import create_app
from zai_proxy.server.config import load_settings


async def test_health_ready_and_metrics() -> None:
    settings = load_settings({"DEPLOYMENT_VARIANT": "v2", "ZAI_API_KEY": "k" * 12,
                              "ZAI_PROXY_COMMIT": "abc123"})
    app = create_app(settings, transport=httpx.MockTransport(lambda r: httpx.Response(200)),
                     registry=CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://p") as c:
        assert (await c.get("/ready")).status_code == 503  # lifespan not started: starting
        async with app.router.lifespan_context(app):
            response = await c.get("/health", headers={"x-request-id": "probe-1"})
            assert response.headers["x-request-id"] == "probe-1"
            assert response.headers["x-zai-proxy-variant"] == "v2"
            assert (await c.get("/metrics")).headers["x-request-id"]
            health = response.json()
            assert (await c.get("/ready")).status_code == 200
            text = (await c.get("/metrics")).text
            app.state.lifecycle.drain()
            assert (await c.get("/ready")).status_code == 503
            assert (await c.get("/health")).status_code == 200
    assert health["status"] == "ok" and health["deployment_variant"] == "v2"
    assert {"version", "uptime_seconds", "in_flight"} <= set(health)
    build = 'zai_proxy_build_info{build_time="unknown",commit="abc123",deployment_variant="v2"'
    assert build in text
    for line in text.splitlines():
        if line.startswith("zai_proxy_"):
            assert 'deployment_variant="v2"' in line, line


async def test_health_and_metrics_show_the_auth_mode() -> None:
    import httpx

    from tests.support.inprocess import InProcessProxy

    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    for env, mode in (({}, "open"), ({"PROXY_API_KEYS": "worker-key-123456"}, "keys")):
        proxy = InProcessProxy(upstream, env)
        async with proxy as client:
            health = (await client.get("/health")).json()
            assert health["auth"] == mode and health["upstream"] == "z.ai"
            await client.get("/metrics")
            assert proxy.sample("zai_proxy_auth_mode", mode=mode) == 1
            other = "keys" if mode == "open" else "open"
            assert proxy.sample("zai_proxy_auth_mode", mode=other) == 0
            assert proxy.sample("zai_proxy_upstream_simulated") == 0


async def test_a_client_leaving_mid_body_on_an_admin_route_is_not_a_server_error() -> None:
    """Found by the fuzzer: PUT /admin/limiter-state whose client is gone before its body
    arrived raised ClientDisconnect out of the app (a traceback in the log)."""
    settings = load_settings({"ZAI_API_KEY": "k" * 12, "ADMIN_API_KEY": "admin-key-0123456789",
                              "RATE_LIMIT_STATE_FILE": ""})
    app = create_app(settings, transport=httpx.MockTransport(lambda r: httpx.Response(200)),
                     registry=CollectorRegistry())
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
             "scheme": "http", "path": "/admin/limiter-state",
             "raw_path": b"/admin/limiter-state", "query_string": b"", "root_path": "",
             "headers": [(b"authorization", b"Bearer admin-key-0123456789"),
                         (b"content-length", b"100")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080)}
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        await app(scope, receive, send)  # raised ClientDisconnect before the fix
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
