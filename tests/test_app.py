import httpx
from prometheus_client import CollectorRegistry

from zai_proxy.app import create_app
from zai_proxy.config import load_settings


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

    from tests.inprocess import InProcessProxy

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
