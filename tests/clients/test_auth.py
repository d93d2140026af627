from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.clients import reloading
from zai_proxy.clients.auth import (
    MIN_KEY_LENGTH,
    ClientAuth,
    KeyEntry,
    fingerprint,
    parse_entries,
    parse_entry,
    parse_key_file,
    presented_key,
)
from zai_proxy.core.errors import Unauthorized


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + key.encode())]


def test_open_proxy_accepts_everyone() -> None:
    assert ClientAuth(()).client_id([]) is None
    assert ClientAuth(()).open


def test_keys_by_bearer_or_x_api_key() -> None:
    auth = ClientAuth(("worker-key-1", "worker-key-2"))
    a = auth.client_id([(b"authorization", b"Bearer worker-key-1")])
    b = auth.client_id([(b"x-api-key", b"worker-key-2")])
    assert a and b and a != b and "worker" not in a
    assert a == fingerprint("worker-key-1") and a.startswith("key-") and len(a) == 16
    for headers in ([], [(b"authorization", b"Bearer nope")], [(b"authorization", b"Basic x")]):
        with pytest.raises(Unauthorized):
            auth.client_id(headers)


def test_named_keys_identify_clients_by_name_and_a_name_may_hold_several_keys() -> None:
    auth = ClientAuth(("batch:worker-key-1", "batch:worker-key-1b", "chat:worker-key-2",
                       "worker-key-3"))
    assert auth.client_id(bearer("worker-key-1")) == "batch"
    assert auth.client_id(bearer("worker-key-1b")) == "batch"  # rotation: same client
    assert auth.client_id(bearer("worker-key-2")) == "chat"
    assert auth.client_id(bearer("worker-key-3")) == fingerprint("worker-key-3")
    assert auth.names() == sorted({"batch", "chat", fingerprint("worker-key-3")})
    with pytest.raises(Unauthorized):
        auth.client_id(bearer("batch:worker-key-1"))  # the name is not part of the key


def test_entries_parse_name_and_key_and_reject_bad_ones_without_showing_the_key() -> None:
    assert parse_entry(" alice:k3y-with:colon ") == KeyEntry("k3y-with:colon", "alice")
    assert parse_entry("no-name-key-1") == KeyEntry("no-name-key-1", None)
    for bad in ("alice:short", "tiny"):
        with pytest.raises(ValueError) as info:
            parse_entry(bad)
        assert "short" not in str(info.value) and "tiny" not in str(info.value)
    assert "k3y" not in repr(parse_entry("alice:k3y-with:colon"))


def test_not_a_name_prefix_makes_the_whole_entry_the_key() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        parse_entry("not a name:key-value-1")


def test_key_file_merges_with_the_list_and_is_reread_when_it_changes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# workers\nbatch:worker-key-0001\n\nworker-key-0002\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth(("inline:inline-key-001",), key_file=str(keys), clock=clock)
    assert auth.client_id(bearer("inline-key-001")) == "inline"
    assert auth.client_id(bearer("worker-key-0001")) == "batch"
    # Rotate batch's key and add a worker: written atomically, as a Secret volume does.
    replacement = tmp_path / "keys.new"
    replacement.write_text("batch:worker-key-0003\nnew:worker-key-0004\n")
    os.replace(replacement, keys)
    assert auth.client_id(bearer("worker-key-0001")) == "batch"  # not looked at yet (< 1 s)
    clock.jump(1.0)
    # Seen changed; applied once it is still the same a second later (it has settled).
    assert auth.client_id(bearer("worker-key-0001")) == "batch"
    clock.jump(1.0)
    with caplog.at_level(logging.WARNING, logger="zai_proxy.auth"):
        assert auth.client_id(bearer("worker-key-0003")) == "batch"
    assert "reloaded" in caplog.text and "worker-key" not in caplog.text
    assert auth.client_id(bearer("worker-key-0004")) == "new"
    assert auth.client_id(bearer("inline-key-001")) == "inline"  # the list stays
    for gone in ("worker-key-0001", "worker-key-0002"):
        with pytest.raises(Unauthorized):
            auth.client_id(bearer(gone))


def test_each_distinct_key_file_problem_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = tmp_path / "keys"
    keys.write_text("worker-key-0001\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth((), key_file=str(keys), clock=clock)

    def settle() -> None:
        for _ in range(2):
            clock.jump(1.0)
            with pytest.raises(Unauthorized):
                auth.client_id([])

    with caplog.at_level(logging.ERROR, logger="zai_proxy.auth"):
        for text in ("worker-key-0001\nshort\n", "worker-key-0001\nshort\n\n"):
            keys.write_text(text)
            settle()
            assert auth.client_id(bearer("worker-key-0001")) == fingerprint("worker-key-0001")
        keys.write_text("# emptied\n")
        settle()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # the short key (once: the same problem again), the empty file, and no key left in force
    assert len(errors) == 3 and "worker-key" not in " ".join(errors)
    assert auth.file_error is not None
    keys.write_text("worker-key-0009\n")
    settle()
    assert auth.client_id(bearer("worker-key-0009")) and auth.file_error is None


def test_the_key_file_is_looked_at_once_a_second_at_most(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    keys.write_text("worker-key-0001\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth((), key_file=str(keys), clock=clock)
    calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if path == str(keys):
            calls.append(str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reloading.os, "stat", counting_stat)
    for _ in range(1000):
        auth.client_id(bearer("worker-key-0001"))
        clock.jump(0.01)  # 1000 requests over 10 s
    assert 9 <= len(calls) <= 11


def test_presented_key() -> None:
    assert presented_key([(b"authorization", b"bearer  k1 ")]) == "k1"
    assert presented_key([(b"x-api-key", b"k2")]) == "k2"
    assert presented_key([(b"authorization", b"Bearer ")]) is None


# --------------------------------------------------------------------------- edges
# Found by mutation testing: each pins a message or a boundary a mutant of auth.py changes.


def test_a_key_of_exactly_the_minimum_length_is_accepted() -> None:
    """MIN_KEY_LENGTH characters are enough; one fewer is not."""
    assert parse_entry("k" * MIN_KEY_LENGTH) == KeyEntry("k" * MIN_KEY_LENGTH, None)
    with pytest.raises(ValueError):
        parse_entry("k" * (MIN_KEY_LENGTH - 1))


def test_entry_error_messages_name_the_key_only_when_it_has_a_name() -> None:
    """The exact texts: a bare key gets no `(the key named ...)` suffix, a named one does."""
    cases = {
        "tiny": "every key needs 8+ characters",
        "alice:tiny": "every key needs 8+ characters (the key named 'alice')",
        "key with spaces": "a key must not contain whitespace",
        "alice:key with spaces": "a key must not contain whitespace (the key named 'alice')",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError) as info:
            parse_entry(text)
        assert str(info.value) == message


def test_a_key_under_two_names_is_rejected_with_its_message() -> None:
    """The same key under two names is an error; under one name twice it is not."""
    with pytest.raises(ValueError) as info:
        parse_entries(["a:worker-key-1", "b:worker-key-1"])
    assert str(info.value) == "a key is listed twice under different names"
    assert len(parse_entries(["a:worker-key-1", "a:worker-key-1"])) == 2


def test_key_file_skips_indented_comments_and_says_when_it_holds_no_key() -> None:
    """A `#` after leading blanks is still a comment; a file of only comments is an error."""
    assert parse_key_file("  # a comment\n\tworker-key-0001\n") == (
        KeyEntry("worker-key-0001"),)
    with pytest.raises(ValueError) as info:
        parse_key_file("  # only a comment\n\n")
    assert str(info.value) == "holds no key (one per line expected)"


def test_unauthorized_messages() -> None:
    """The 401 texts a client sees: a missing key and a wrong one."""
    auth = ClientAuth(("worker-key-1",))
    with pytest.raises(Unauthorized) as info:
        auth.client_id([])
    assert info.value.message == (
        "missing API key: send Authorization: Bearer <key> or x-api-key")
    with pytest.raises(Unauthorized) as info:
        auth.client_id(bearer("worker-key-2"))
    assert info.value.message == "invalid API key"


def test_a_good_key_file_reports_no_error(tmp_path: Path) -> None:
    """`file_error` is None (not merely falsy) until a changed file fails to load."""
    keys = tmp_path / "keys"
    keys.write_text("worker-key-0001\n")
    assert ClientAuth((), key_file=str(keys), clock=VirtualTime(100.0)).file_error is None
    assert ClientAuth(("worker-key-0001",)).file_error is None


def test_a_change_within_the_first_second_is_not_seen_yet(tmp_path: Path) -> None:
    """The first look at the file after startup is CHECK_INTERVAL later, not at once."""
    keys = tmp_path / "keys"
    keys.write_text("worker-key-0001\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth((), key_file=str(keys), clock=clock)
    replacement = tmp_path / "keys.new"
    replacement.write_text("worker-key-0002-longer\n")
    os.replace(replacement, keys)
    assert auth.client_id(bearer("worker-key-0001")) == fingerprint("worker-key-0001")
    with pytest.raises(Unauthorized):
        auth.client_id(bearer("worker-key-0002-longer"))
    clock.jump(1.0)  # the first look sees the change; it applies once the file has settled
    with pytest.raises(Unauthorized):
        auth.client_id(bearer("worker-key-0002-longer"))
    clock.jump(1.0)
    assert auth.client_id(bearer("worker-key-0002-longer"))


def test_an_unchanged_key_file_is_not_reloaded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The startup read counts: the next look finds the same file and logs nothing."""
    keys = tmp_path / "keys"
    keys.write_text("worker-key-0001\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth((), key_file=str(keys), clock=clock)
    clock.jump(1.0)
    with caplog.at_level(logging.DEBUG, logger="zai_proxy.auth"):
        assert auth.client_id(bearer("worker-key-0001"))
    assert caplog.records == []


def test_reload_log_line_and_its_fields(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reload warning carries path, key count and the clients added and removed."""
    keys = tmp_path / "keys"
    keys.write_text("old:worker-key-0001\nkeep:worker-key-0002\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth(("inline:inline-key-001",), key_file=str(keys), clock=clock)
    replacement = tmp_path / "keys.new"
    replacement.write_text("keep:worker-key-0002\nnew:worker-key-0003\nnew:worker-key-0004\n")
    os.replace(replacement, keys)
    clock.jump(1.0)
    with pytest.raises(Unauthorized):  # seen, not settled yet
        auth.client_id(bearer("worker-key-0004"))
    clock.jump(1.0)
    with caplog.at_level(logging.WARNING, logger="zai_proxy.auth"):
        assert auth.client_id(bearer("worker-key-0004")) == "new"
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "PROXY_API_KEYS_FILE reloaded"
    assert getattr(record, "fields", None) == {
        "path": str(keys), "keys": 4, "clients_added": ["new"], "clients_removed": ["old"]}


def test_unusable_key_file_error_texts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An emptied or deleted file revokes its keys; the error names the file and the problem
    (a missing file by its strerror), and a proxy with no key left says every request fails."""
    keys = tmp_path / "keys"
    keys.write_text("worker-key-0001\n")
    clock = VirtualTime(100.0)
    auth = ClientAuth((), key_file=str(keys), clock=clock)
    with caplog.at_level(logging.ERROR, logger="zai_proxy.auth"):
        keys.write_text("# emptied, and longer than before\n")
        clock.jump(1.0)  # seen changed: the keys in force stay
        assert auth.client_id(bearer("worker-key-0001"))
        clock.jump(1.0)  # unchanged a second later: applied
        with pytest.raises(Unauthorized):
            auth.client_id(bearer("worker-key-0001"))
        assert auth.file_error == "holds no key: no key from it is in force"
        keys.unlink()
        for _ in range(2):
            clock.jump(1.0)
            with pytest.raises(Unauthorized):
                auth.client_id(bearer("worker-key-0001"))
        assert auth.file_error == ("cannot be read (No such file or directory): no key from it "
                                   "is in force")
    tail = "the valid lines are in force"
    refused = (f"no client key is in force: every request is refused (401) until "
               f"PROXY_API_KEYS_FILE {keys} holds a valid key")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"PROXY_API_KEYS_FILE {keys}: holds no key: no key from it is in force; {tail}",
        refused,
        f"PROXY_API_KEYS_FILE {keys}: cannot be read (No such file or directory): no key from "
        f"it is in force; {tail}",
        refused,
    ]
