"""A client's budget share held across two proxies of two variants on one real redis-server.

Each proxy runs in process against its own scripted upstream (`QuotaUpstream`), with one clients
file; the client's requests are spread over both, and both refuse it once its use through the
two together reaches its share, while another client goes on.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from tests.support.servers import RedisServer
from tests.support.upstreams import QUOTA_T0, QuotaUpstream, monitor_limits
from zai_proxy.zai.account import account_id

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
CI, AGENTS = "ci-key-secret-0001", "agents-key-secret-02"


async def test_two_variants_refuse_a_client_on_its_use_through_both(
        redis_server: RedisServer, tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(f'[[client]]\nname = "ci"\nkeys = ["{CI}"]\nfive_hour_share = 0.2\n\n'
                       f'[[client]]\nname = "agents"\nkeys = ["{AGENTS}"]\n')
    key = f"budget-key-{uuid.uuid4().hex}"  # its own account: its own keys in this Redis
    wall = VirtualTime(QUOTA_T0)
    proxies = []
    for variant in ("v1", "v2"):
        upstream = QuotaUpstream()
        upstream.monitor = monitor_limits(used=0, allowance=10_000, reset=QUOTA_T0 + 3600)
        upstream.tokens = (150, 50)  # 2 % of the budget a request
        proxies.append((InProcessProxy(upstream.transport(), {
            "ZAI_API_KEY": key, "RATE_LIMIT_STORAGE_URI": redis_server.url,
            "DEPLOYMENT_VARIANT": variant, "QUOTA_POLL_SECONDS": "3600",
            "PROXY_CLIENTS_FILE": str(clients)}, wall=wall), upstream))
    (a, up_a), (b, up_b) = proxies
    async with a as ca, b as cb:
        qa, qb = a.app.state.quota, b.app.state.quota
        for quota in (qa, qb, qa, qb):  # one polls, the other adopts its report
            await quota.poll_once()
            await quota.tick()
        ci = {"authorization": f"Bearer {CI}"}
        for client in (ca, cb) * 5:  # 10 requests, 20 %, half through each
            assert (await client.post("/v1/chat/completions", json=CHAT,
                                      headers=ci)).status_code == 200
        for quota in (qa, qb, qa):
            await quota.tick()
        for client in (ca, cb):
            refused = await client.post("/v1/chat/completions", json=CHAT, headers=ci)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "proxy_client_budget_exhausted"
        assert up_a.chats + up_b.chats == 10
        agents = {"authorization": f"Bearer {AGENTS}"}
        assert (await cb.post("/v1/chat/completions", json=CHAT,
                              headers=agents)).status_code == 200
        health = (await ca.get("/health")).json()["quota"]["client_budgets"]
    [use] = health["clients"]
    assert use["name"] == "ci" and use["used"] == 0.2 and use["refused"] == 1
    account = account_id(key, "https://api.z.ai/api/paas/v4")
    keys = {k.decode() for k in
            redis.Redis.from_url(redis_server.url).keys(f"*{account}*clients*")}
    assert len(keys) == 1 and keys.pop().startswith(
        f"zai-proxy:acct:{account}:quota:clients:five_hour:")
