"""The simulator answers Z.AI's business codes as Z.AI does: account codes, the daily limit with
its Beijing-midnight reset, the account state and key kind settings, errors inside HTTP 200 and
the 1305 that repeats for one prompt. Virtual time only."""

from __future__ import annotations

import argparse

import pytest

from tests.support.clock import WALL_EPOCH, VirtualTime
from tests.support.simulator import (
    BEARER,
    CHAT,
    MESSAGES,
    XKEY,
    anthropic_body,
    chat_body,
    sim,
)
from zai_proxy.simulator import (
    SimulatorSettings,
    add_arguments,
    settings_from_args,
    settings_from_env,
)

CODING_CHAT = "/api/coding/paas/v4/chat/completions"
MODELS = "/api/paas/v4/models"
ACCOUNT_CODES = {
    1113: "Insufficient balance or no resource package",
    1309: "expired",
    1311: "subscription",
    1313: "fair use",
}
# WALL_EPOCH is 2026-12-07 00:00 UTC = 08:00 in Beijing: the next Beijing midnight is 16 h away.
NEXT_MIDNIGHT_MS = int((WALL_EPOCH + 16 * 3600) * 1000)


@pytest.mark.parametrize("code", sorted(ACCOUNT_CODES))
async def test_forced_account_codes_carry_their_own_message_and_no_retry_after(code: int) -> None:
    async with sim() as c:
        openai = await c.post(CHAT, json=chat_body(), headers={**BEARER,
                                                                "x-sim-429-code": str(code)})
        anthropic = await c.post(MESSAGES, json=anthropic_body(),
                                 headers={**XKEY, "x-sim-429-code": str(code)})
    assert openai.status_code == anthropic.status_code == 429
    error = openai.json()["error"]
    assert error["code"] == str(code)
    assert ACCOUNT_CODES[code].lower() in error["message"].lower()
    assert "retry-after" not in openai.headers and "retry-after" not in anthropic.headers
    assert anthropic.json() == {"type": "error", "error": {"type": "rate_limit_error", **error}}


async def test_daily_limit_names_the_next_midnight_in_beijing() -> None:
    vt = VirtualTime()
    async with sim(vt=vt) as c:
        first = await c.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-429-code": "1304"})
        await vt.advance(17 * 3600)  # 01:00 on 2026-12-08 in Beijing: the reset is a day later
        later = await c.post(MESSAGES, json=anthropic_body(),
                             headers={**XKEY, "x-sim-429-code": "1304"})
    assert first.status_code == 429
    error = first.json()["error"]
    assert error["code"] == "1304" and "daily call limit" in error["message"]
    assert error["message"].endswith("will reset at 2026-12-08 00:00:00")
    assert error["next_reset_time"] == NEXT_MIDNIGHT_MS
    late = later.json()["error"]
    assert late["type"] == "rate_limit_error" and late["code"] == "1304"
    assert late["message"].endswith("will reset at 2026-12-09 00:00:00")
    assert late["next_reset_time"] == NEXT_MIDNIGHT_MS + 86_400_000


async def test_error_status_changes_the_status_only_and_load_codes_keep_retry_after() -> None:
    async with sim() as c:
        expired = await c.post(CHAT, json=chat_body(), headers={
            **BEARER, "x-sim-429-code": "1309", "x-sim-error-status": "403"})
        busy = await c.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-429-code": "1305"})
        busy_503 = await c.post(CHAT, json=chat_body(), headers={
            **BEARER, "x-sim-429-code": "1305", "x-sim-error-status": "503"})
        spent_403 = await c.post(CHAT, json=chat_body(), headers={
            **BEARER, "x-sim-429-code": "1308", "x-sim-error-status": "403"})
        stats = (await c.get("/_stats")).json()
    assert expired.status_code == 403 and expired.json()["error"]["code"] == "1309"
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["message"].startswith("The service may be temporarily overloaded")
    assert busy_503.status_code == 503 and busy_503.json()["error"]["code"] == "1305"
    assert spent_403.status_code == 403 and spent_403.json()["error"]["code"] == "1308"
    assert "next_reset_time" in spent_403.json()["error"]
    assert stats["rate_limited"] == {"1305": 1}  # the other statuses are not counted as 429s


@pytest.mark.parametrize(("state", "code"), [("daily_limit", 1304), ("expired", 1309),
                                             ("no_subscription", 1311), ("fair_use", 1313),
                                             ("no_balance", 1113)])
async def test_account_state_refuses_every_model_request_until_lifted(state: str, code: int
                                                                      ) -> None:
    async with sim(SimulatorSettings(account_state=state)) as c:
        chat = await c.post(CHAT, json=chat_body(), headers=BEARER)
        again = await c.post(CHAT, json=chat_body(), headers=BEARER)
        messages = await c.post(MESSAGES, json=anthropic_body(), headers=XKEY)
        models = await c.get(MODELS, headers=BEARER)
        lifted = await c.post("/_config", json={"account_state": "ok"})
        served = await c.post(CHAT, json=chat_body(), headers=BEARER)
    assert chat.status_code == again.status_code == messages.status_code == 429
    assert chat.json()["error"]["code"] == again.json()["error"]["code"] == str(code)
    assert messages.json()["error"]["code"] == str(code)
    assert messages.json()["error"]["type"] == "rate_limit_error"
    assert models.status_code == 200  # not a model request
    assert lifted.json()["account_state"] == "ok"
    assert served.status_code == 200


async def test_account_state_is_a_live_setting_and_validated(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    async with sim() as c:
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200
        await c.post("/_config", json={"account_state": "fair_use"})
        refused = await c.post(CHAT, json=chat_body(), headers=BEARER)
        bad = await c.post("/_config", json={"account_state": "sleepy"})
    assert refused.json()["error"]["code"] == "1313"
    assert bad.status_code == 400
    monkeypatch.setenv("SIM_ACCOUNT_STATE", "expired")
    monkeypatch.setenv("SIM_KEY_KIND", "coding")
    settings = settings_from_env()
    assert (settings.account_state, settings.key_kind) == ("expired", "coding")
    with pytest.raises(ValueError, match="account_state"):
        SimulatorSettings(account_state="paused")
    with pytest.raises(ValueError, match="key_kind"):
        SimulatorSettings(key_kind="team")


@pytest.mark.parametrize(("kind", "refused_path", "served_path"),
                         [("standard", CODING_CHAT, CHAT), ("coding", CHAT, CODING_CHAT)])
async def test_a_key_on_the_other_kinds_base_answers_1113(kind: str, refused_path: str,
                                                          served_path: str) -> None:
    async with sim(SimulatorSettings(key_kind=kind)) as c:
        refused = await c.post(refused_path, json=chat_body(), headers=BEARER)
        models = await c.get(refused_path.replace("chat/completions", "models"), headers=BEARER)
        served = await c.post(served_path, json=chat_body(), headers=BEARER)
        anthropic = await c.post(MESSAGES, json=anthropic_body(), headers=XKEY)
    assert refused.status_code == models.status_code == 429
    assert refused.json()["error"]["code"] == models.json()["error"]["code"] == "1113"
    assert "Insufficient balance" in refused.json()["error"]["message"]
    assert served.status_code == anthropic.status_code == 200


async def test_any_key_kind_by_default_serves_both_bases() -> None:
    async with sim() as c:
        for path in (CHAT, CODING_CHAT):
            assert (await c.post(path, json=chat_body(), headers=BEARER)).status_code == 200


async def test_error_inside_http_200_in_both_envelopes() -> None:
    async with sim(SimulatorSettings(quota_5h_tokens=1)) as c:
        openai = await c.post(CHAT, json=chat_body(), headers={**BEARER,
                                                                "x-sim-error-in-200": "1305"})
        anthropic = await c.post(MESSAGES, json=anthropic_body(),
                                 headers={**XKEY, "x-sim-error-in-200": "1304"})
        spent = await c.post(CHAT, json=chat_body(), headers={**BEARER,
                                                               "x-sim-error-in-200": "1308"})
        quota = (await c.get("/_stats")).json()["quota"]["five_hour"]
    assert openai.status_code == anthropic.status_code == 200
    assert openai.json() == {"error": {
        "code": "1305", "message": "The service may be temporarily overloaded, please try again "
        "later"}}
    assert "retry-after" not in openai.headers
    error = anthropic.json()
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
    assert error["error"]["code"] == "1304" and error["error"]["next_reset_time"] == (
        NEXT_MIDNIGHT_MS)
    assert spent.status_code == 200 and spent.json()["error"]["code"] == "1308"
    assert spent.json()["error"]["message"].startswith("Usage limit reached for 5 hour")
    assert spent.json()["error"]["next_reset_time"] == int((WALL_EPOCH + 5 * 3600) * 1000)
    assert quota["used"] == 0  # no reply was generated


async def test_one_overloaded_prompt_always_gets_1305_while_others_are_served() -> None:
    settings = SimulatorSettings(overloaded_prompt="poison pill", rate_ceiling=1000)
    async with sim(settings) as c:
        answers = [await c.post(CHAT, json=chat_body("take the poison pill now"), headers=BEARER)
                   for _ in range(3)]
        anthropic = await c.post(MESSAGES, json=anthropic_body("poison pill"), headers=XKEY)
        other = await c.post(CHAT, json=chat_body("something else"), headers=BEARER)
        stats = (await c.get("/_stats")).json()
        await c.post("/_config", json={"overloaded_prompt": ""})
        cured = await c.post(CHAT, json=chat_body("poison pill"), headers=BEARER)
    for answer in answers:
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "1305"
    assert anthropic.status_code == 429 and anthropic.json()["error"]["code"] == "1305"
    assert other.status_code == 200 and cured.status_code == 200
    assert stats["rate_limited"] == {"1305": 4}


def test_new_settings_have_flags_with_sim_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_MONITOR_UNKNOWN_ENTRY", "yes")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args([
        "--account-state", "no_balance", "--key-kind", "standard", "--overloaded-prompt", "x y",
        "--quota-5h-credits", "2000", "--quota-weekly-credits", "10000",
        "--credits-per-request", "3", "--credits-per-1k-tokens", "2.5",
        "--monitor-time-limit", "100"]))
    assert (settings.account_state, settings.key_kind, settings.overloaded_prompt) == (
        "no_balance", "standard", "x y")
    assert (settings.quota_5h_credits, settings.quota_weekly_credits) == (2000, 10_000)
    assert (settings.credits_per_request, settings.credits_per_1k_tokens) == (3, 2.5)
    assert settings.monitor_time_limit == 100 and settings.monitor_unknown_entry is True
    defaults = settings_from_args(parser.parse_args([]))
    assert defaults.account_state == "ok" and defaults.key_kind == ""
    monkeypatch.setenv("SIM_MONITOR_UNKNOWN_ENTRY", "maybe")
    with pytest.raises(ValueError, match="boolean"):
        settings_from_env()
