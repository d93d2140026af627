"""The account name: stable, key-free, and different for another key or another upstream."""

from __future__ import annotations

from zai_proxy.zai.account import Account, account_id


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


KEY = "sk-account-key-0123456789"


def account(base: str = "https://api.z.ai/api/paas/v4") -> Account:
    return Account(KEY, base, "https://api.z.ai/api/anthropic", "https://api.z.ai")


def test_an_account_is_named_by_its_id_and_never_shows_its_key() -> None:
    spent = account()
    assert spent.id == account_id(KEY, "https://api.z.ai/api/paas/v4")
    assert spent.key == KEY
    for shown in (repr(spent), str(spent), f"{spent}", f"{spent!r}"):
        assert KEY not in shown and KEY[:12] not in shown, shown
    assert spent.id in str(spent)


def test_the_key_kind_is_read_from_the_openai_base() -> None:
    assert account().key_kind == "standard"
    assert account("https://api.z.ai/api/coding/paas/v4/").key_kind == "coding"
    assert account("https://open.bigmodel.cn/api/paas/v4").key_kind == "standard"
    assert account("http://127.0.0.1:8001/v4").key_kind is None
