"""Z.AI stopping the account, through the whole app on virtual time (`Harness`): the one
upstream attempt, the proxy's own error in place of Z.AI's, the local refusals, the probe every
ACCOUNT_STOP_PROBE_SECONDS and the lift, /health and the gauge; the daily call limit; the
key/base mismatch hint."""

from __future__ import annotations

import asyncio
import logging
import math

import httpx
import pytest

from tests.support.forwarding import CHAT, Harness, Script, ok
from tests.support.inprocess import UPSTREAM_KEY
from zai_proxy.zai.classify import next_beijing_midnight
from zai_proxy.zai.codes import lookup


class Account:
    """The upstream: answers OK, or the stop `code` (in a 429, as Z.AI does) while it is set."""

    def __init__(self, code: str | None = None, message: str = "") -> None:
        self.code, self.message = code, message
        self.hold: asyncio.Event | None = None  # while set, answers wait for it

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.hold is not None:
            await self.hold.wait()
        if self.code is None:
            return ok(request)
        return httpx.Response(429, json={"error": {"code": self.code, "message": self.message}})


def chat(client: httpx.AsyncClient) -> asyncio.Future[httpx.Response]:
    return asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))


@pytest.mark.parametrize("code", ["1309", "1311", "1313", "1113"])
async def test_a_stop_code_is_answered_once_then_refused_locally_until_a_probe_finds_it_lifted(
        code: str) -> None:
    row = lookup(code)
    account = Account(code, f"Z.AI says {code} for key {UPSTREAM_KEY}")
    script = Script(account)
    harness = Harness(script, ACCOUNT_STOP_PROBE_SECONDS="60")
    async with harness as client:
        first = await chat(client)
        assert len(script.seen) == 1, "never retried"
        assert first.status_code == row.status
        error = first.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "upstream_account_stopped"
        assert error["type"] == ("permission_error" if row.status == 403 else "rate_limit_error")
        assert row.cause in error["message"] and f"Z.AI says {code}" in error["message"]
        assert UPSTREAM_KEY not in first.text
        assert first.headers["x-zai-error-code"] == code
        assert first.headers["x-zai-error-class"] == row.cls.value
        assert harness.sample("zai_proxy_rate_limit_rejections_total",
                              reason="account_stopped") == 1

        local = await chat(client)
        assert len(script.seen) == 1, "refused without the upstream"
        assert local.status_code == row.status
        assert local.json()["error"]["code"] == "proxy_account_stopped"
        assert row.cause in local.json()["error"]["message"]
        assert local.headers["x-zai-error-code"] == code
        assert 55 <= int(local.headers["retry-after"]) <= 60
        health = (await client.get("/health")).json()
        assert health["account"] == "stopped"
        stop = health["account_stop"]
        assert (stop["code"], stop["cause"], stop["status"]) == (code, row.cause, row.status)
        assert stop["since"] <= harness.vt.wall() < stop["next_probe_at"]
        assert UPSTREAM_KEY not in str(health)
        assert harness.sample("zai_proxy_account_stopped", code=code) == 1

        account.code = None  # an operator acted
        await harness.vt.sleep(30)
        assert (await chat(client)).status_code == row.status and len(script.seen) == 1
        await harness.vt.sleep(31)
        probe = await chat(client)
        assert probe.status_code == 200 and len(script.seen) == 2
        after = await chat(client)
        assert after.status_code == 200 and len(script.seen) == 3, "lifted at once"
        health = (await client.get("/health")).json()
        assert health["account"] == "ok" and health["account_stop"] is None
        assert harness.sample("zai_proxy_account_stopped", code=code) == 0


async def test_a_probe_that_meets_the_stop_again_keeps_it_and_no_second_probe_goes_meanwhile(
        ) -> None:
    account = Account("1313", "fair use")
    script = Script(account)
    harness = Harness(script, ACCOUNT_STOP_PROBE_SECONDS="10")
    async with harness as client:
        await chat(client)
        await harness.vt.sleep(10)
        account.hold = asyncio.Event()
        probe = chat(client)
        await harness.vt.sleep(1)
        assert len(script.seen) == 2, "the probe went"
        sent = [chat(client) for _ in range(3)]
        await harness.vt.sleep(15)  # past the next interval: the probe is still in flight
        sent.append(chat(client))
        await harness.vt.sleep(1)
        assert all(task.done() for task in sent), "answered without the upstream"
        others = [task.result() for task in sent]
        assert [r.status_code for r in others] == [429] * 4
        assert all(r.json()["error"]["code"] == "proxy_account_stopped" for r in others)
        assert len(script.seen) == 2, "one probe in flight, none beside it"
        account.hold.set()
        account.hold = None
        answered = await probe
        assert answered.json()["error"]["code"] == "upstream_account_stopped"
        started = harness.vt.wall()
        account.code = None
        refused = await chat(client)
        assert refused.status_code == 429 and len(script.seen) == 2, "the timer restarted"
        assert math.isclose(int(refused.headers["retry-after"]), 10, abs_tol=1)
        await harness.vt.sleep(10)
        assert (await chat(client)).status_code == 200 and len(script.seen) == 3
        assert harness.vt.wall() - started >= 10


async def test_a_daily_limit_is_refused_until_midnight_beijing_time() -> None:
    script = Script(lambda request: httpx.Response(429, json={"error": {
        "code": "1304", "message": "daily call limit reached"}}))
    harness = Harness(script)
    async with harness as client:
        first = await chat(client)
        assert first.status_code == 429 and len(script.seen) == 1, "never retried"
        midnight = next_beijing_midnight(harness.vt.wall())
        local = await chat(client)
        assert len(script.seen) == 1
        assert local.json()["error"]["code"] == "proxy_quota_exhausted"
        assert local.headers["x-zai-error-code"] == "1304"
        wait = int(local.headers["retry-after"])
        assert midnight - harness.vt.wall() <= wait <= midnight - harness.vt.wall() + 1
        blocked = (await client.get("/health")).json()["quota"]["blocked"]
        assert (blocked["window"], blocked["code"], blocked["until"]) == (
            "daily", "1304", midnight)
        assert (await client.get("/health")).json()["account"] == "ok", "a limit, not a stop"


@pytest.mark.parametrize(("base", "hint"), [
    ("https://api.z.ai/api/paas/v4", "a Coding Plan key on the pay-as-you-go base?"),
    ("https://api.z.ai/api/coding/paas/v4", "a pay-as-you-go key on the Coding Plan base?")])
async def test_no_balance_on_the_first_requests_names_the_likely_key_base_mismatch_once(
        base: str, hint: str, caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness(Script(Account("1113", "insufficient balance")), ZAI_TARGET_URL=base,
                      ACCOUNT_STOP_PROBE_SECONDS="5")
    with caplog.at_level(logging.ERROR, logger="zai_proxy.quota"):
        async with harness as client:
            first = await chat(client)
            assert hint in first.json()["error"]["message"]
            await harness.vt.sleep(6)
            await chat(client)  # the probe meets the 1113 again
            health = (await client.get("/health")).json()
    assert health["account_stop"]["hint"].startswith(hint)
    assert sum(hint in r.getMessage() for r in caplog.records) == 1, "logged once"


async def test_no_balance_after_a_success_is_no_mismatch() -> None:
    account = Account()
    harness = Harness(Script(account))
    async with harness as client:
        assert (await chat(client)).status_code == 200
        account.code = "1113"
        stopped = await chat(client)
        assert "Hint" not in stopped.json()["error"]["message"]
        health = (await client.get("/health")).json()
    assert health["account"] == "stopped" and health["account_stop"]["hint"] is None
