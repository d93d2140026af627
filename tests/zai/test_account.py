"""The account name: stable, key-free, and different for another key or another upstream."""

from __future__ import annotations

from zai_proxy.zai.account import account_id


def test_account_id_is_stable_and_never_shows_the_key() -> None:
    key = "sk-account-key-0123456789"
    base = "https://api.z.ai/api/paas/v4"
    ident = account_id(key, base)
    assert ident == account_id(key, "HTTPS://API.Z.AI/api/paas/v4/")
    assert len(ident) == 16 and int(ident, 16) >= 0
    assert key not in ident and key[:8] not in ident


def test_another_key_or_base_is_another_account() -> None:
    key, base = "sk-account-key-0123456789", "https://api.z.ai/api/paas/v4"
    assert account_id(key, base) != account_id(key + "x", base)
    assert account_id(key, base) != account_id(key, "https://api.z.ai/api/coding/paas/v4")
