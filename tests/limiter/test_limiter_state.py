"""Persisted ceilings: atomic write, age limit, clamping, Go-format compatibility."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from zai_proxy.limiter.learned import LearnedState as LimiterState
from zai_proxy.limiter.state_file import load_state, save_state, state_path

BOUNDS = {"rate_min": 1.0, "rate_max": 40.0, "max_workers": 10}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ceiling.json"
    save_state(path, LimiterState(20.0, 19.6, 8, ts=1000.0))
    loaded = load_state(path, now=1100.0, max_age=3600, **BOUNDS)  # type: ignore[arg-type]
    assert loaded == LimiterState(20.0, 19.6, 8, 1000.0)
    assert [p.name for p in path.parent.iterdir()] == ["ceiling.json"]  # no temp file left
    doc = json.loads(path.read_text())
    assert doc["ceiling"] == 20.0 and doc["hold"] == 19.6  # readable by the Go proxy


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "ceiling.json"
    save_state(path, LimiterState(10.0, 9.8, None, ts=1.0))
    inode = os.stat(path).st_ino
    save_state(path, LimiterState(12.0, 11.8, None, ts=2.0))
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    assert json.loads(path.read_text())["ceiling"] == 12.0


@pytest.mark.parametrize(
    "doc",
    [
        {"ceiling": 25.5, "hold": 25.0, "ts": "2026-01-01T00:00:00.123456789Z"},
        {"ceiling": 25.5, "hold": 25.0, "ts": "2026-01-01T08:00:00+08:00"},
        {"ceiling": 25.5, "hold": 25.0, "ts": 1767225600},
        {"ceiling": 25.5, "hold": 25.0, "ts": 1767225600000},
    ],
)
def test_reads_the_go_proxy_format(tmp_path: Path, doc: dict[str, object]) -> None:
    path = tmp_path / "ceiling.json"
    path.write_text(json.dumps(doc))
    loaded = load_state(path, now=1767225600 + 60, max_age=3600, **BOUNDS)  # type: ignore[arg-type]
    assert loaded is not None and loaded.rate_ceiling == 25.5 and loaded.rate_hold == 25.0
    assert loaded.ts == pytest.approx(1767225600, abs=1)
    assert loaded.concurrency_ceiling is None


def test_clamped_on_restore(tmp_path: Path) -> None:
    path = tmp_path / "ceiling.json"
    save_state(path, LimiterState(500.0, 0.1, 99, ts=5.0))
    loaded = load_state(path, now=10.0, max_age=3600, **BOUNDS)  # type: ignore[arg-type]
    assert loaded == LimiterState(40.0, 1.0, 10, 5.0)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "none saved"),
        ("{not json", "unreadable"),
        ("[1, 2]", "not a JSON object"),
        ('{"ceiling": 5}', "no valid ts"),
        ('{"ceiling": 5, "ts": 0}', "no valid ts"),
        ('{"hold": 5, "ts": 100}', "no ceiling"),
        ('{"ceiling": "x", "ts": 100}', "no ceiling"),
        ('{"ceiling": 5, "ts": 1}', "old"),
    ],
)
def test_ignored_with_a_logged_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | None, reason: str
) -> None:
    path = tmp_path / "ceiling.json"
    if content is not None:
        path.write_text(content)
    with caplog.at_level(logging.INFO, logger="zai_proxy.limiter_state"):
        assert load_state(path, now=200.0, max_age=100, **BOUNDS) is None  # type: ignore[arg-type]
    assert reason in caplog.text


def test_save_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(OSError):
        save_state(target, LimiterState(1.0, 1.0, None, ts=1.0))
    assert list(tmp_path.iterdir()) == [target]


def test_an_accounts_state_is_its_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ceiling.json"
    save_state(path, LimiterState(20.0, 19.6, 8, ts=1000.0, account="a" * 16, rate_upper=20.0))
    doc = json.loads(path.read_text())
    assert doc["account"] == "a" * 16 and doc["upper"] == 20.0 and doc["version"] == 2
    mine = load_state(path, now=1100.0, max_age=3600, account="a" * 16, **BOUNDS)  # type: ignore[arg-type]
    assert mine is not None and mine.rate_upper == 20.0 and mine.upper_known
    with caplog.at_level(logging.INFO, logger="zai_proxy.limiter_state"):
        other = load_state(path, now=1100.0, max_age=3600, account="b" * 16, **BOUNDS)  # type: ignore[arg-type]
    assert other is None and "another Z.AI account" in caplog.text


def test_a_file_naming_no_account_is_read_only_as_legacy(tmp_path: Path) -> None:
    path = tmp_path / "ceiling.json"
    path.write_text(json.dumps({"ceiling": 25.5, "hold": 25.0, "ts": 1000}))
    kw = {"now": 1100.0, "max_age": 3600, "account": "a" * 16, **BOUNDS}
    legacy = load_state(path, legacy=True, **kw)  # type: ignore[arg-type]
    assert legacy is not None and legacy.rate_ceiling == 25.5 and not legacy.upper_known
    assert load_state(path, legacy=False, **kw) is None  # type: ignore[arg-type]


def test_state_path_is_per_user_and_per_account(tmp_path: Path) -> None:
    account = "0123456789abcdef"
    assert state_path("", account) is None
    assert state_path("auto", account, {"XDG_STATE_HOME": str(tmp_path)}) == \
        tmp_path / "zai-proxy" / f"limiter-{account}.json"
    # a relative XDG_STATE_HOME is invalid by the spec: the home fallback applies
    assert state_path("auto", account, {"XDG_STATE_HOME": "rel", "HOME": str(tmp_path)}) == \
        tmp_path / ".local" / "state" / "zai-proxy" / f"limiter-{account}.json"
    assert state_path("/var/lib/zai-proxy/{account}.json", account) == \
        Path(f"/var/lib/zai-proxy/{account}.json")
