"""Two accounts in one process: each `AccountRuntime` learns alone.

What one account's limiter or quota learns (a 1302 concurrency limit, a spent five-hour quota)
leaves the other's unchanged; they are named by different ids, keep their learned state in
different files, send with their own key to their own bases, and never print a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime
from zai_proxy.limiter.rate_controller import Outcome
from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.accounts import AccountRuntime
from zai_proxy.server.config import load_settings
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.account import Account
from zai_proxy.zai.classify import classify_429

KEY_A = "upstream-key-of-account-a-0001"
KEY_B = "upstream-key-of-account-b-0002"


def runtime(key: str, host: str, tmp_path: Path, vt: VirtualTime) -> AccountRuntime:
    # The settings name yet another account: whatever the runtime reads about its account, it
    # must read from `account`.
    settings = load_settings({"ZAI_API_KEY": "key-of-the-settings", "QUOTA_POLL_SECONDS": "0",
                              "RATE_LIMIT_STATE_FILE": str(tmp_path / "limiter-{account}.json")})
    account = Account(key, f"https://{host}/api/paas/v4", f"https://{host}/api/anthropic",
                      f"https://{host}")
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    return AccountRuntime(account, settings, Metrics(CollectorRegistry(), "v1"),
                          transport=transport, clock=vt, wall=vt.wall, sleep=vt.sleep)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[AccountRuntime, AccountRuntime, VirtualTime]:
    vt = VirtualTime()
    return (runtime(KEY_A, "a.example", tmp_path, vt), runtime(KEY_B, "b.example", tmp_path, vt),
            vt)


def learned(rt: AccountRuntime) -> dict[str, Any]:
    """What the account's limiter and quota have learned, as /health shows it."""
    return {"limiter": rt.limiter.health(), "quota": rt.quota.health()}


async def test_a_1302_on_one_account_leaves_the_others_limiter_unchanged(
        pair: tuple[AccountRuntime, AccountRuntime, VirtualTime]) -> None:
    one, other, _ = pair
    before = learned(other)
    permit = await one.limiter.admission.acquire("worker", priority=False, paced=False)
    permit.observe(Outcome.CONCURRENCY_LIMITED)  # what the forwarder feeds a 1302
    permit.release()
    assert one.limiter.health()["concurrency_ceiling"] is not None, "the account learned"
    assert learned(other) == before


async def test_a_quota_block_on_one_account_leaves_the_others_quota_unchanged(
        pair: tuple[AccountRuntime, AccountRuntime, VirtualTime]) -> None:
    one, other, vt = pair
    before = learned(other)
    one.quota.observe(classify_429(b'{"error":{"code":"1308","message":"spent"}}', {},
                                   vt.wall()))
    ex = Exchange(request_id="r", method="POST", started=0.0)
    ex.client = "worker"
    assert await one.quota_hook.check(ex) is not None, "the account refuses locally"
    assert await other.quota_hook.check(ex) is None
    assert other.quota_hook.recheck(ex) is None
    assert learned(other) == before


def test_each_account_has_its_own_id_state_file_key_and_bases(
        pair: tuple[AccountRuntime, AccountRuntime, VirtualTime]) -> None:
    one, other, _ = pair
    assert one.account.id != other.account.id
    assert one.limiter.account == one.account.id and other.limiter.account == other.account.id
    assert one.limiter.state_file is not None and other.limiter.state_file is not None
    assert one.limiter.state_file != other.limiter.state_file
    assert one.account.id in one.limiter.state_file.name
    assert one.upstream.scrub.text(f"echo {KEY_A}") == "echo <redacted>"
    assert other.upstream.scrub.text(f"echo {KEY_A}") == f"echo {KEY_A}"
    route = other.router.resolve("POST", "/v1/chat/completions")
    assert route.upstream_url == "https://b.example/api/paas/v4/chat/completions"


def test_no_key_is_shown(pair: tuple[AccountRuntime, AccountRuntime, VirtualTime]) -> None:
    for rt, key in zip(pair[:2], (KEY_A, KEY_B), strict=True):
        for shown in (repr(rt), str(rt), repr(rt.account), str(rt.account)):
            assert key not in shown, shown
