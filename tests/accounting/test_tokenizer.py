"""Offline tokenizer loading: package copy, operator dir, corrupt files, heuristic, offloading."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

from zai_proxy.accounting import tokenizer as tokmod
from zai_proxy.accounting.tokenizer import PACKAGE_ENCODINGS_DIR, load_tokenizer

KEYS = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Fresh tiktoken registry, no network, and an empty operator cache dir."""

    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    yield


def test_package_files_are_the_expected_ones() -> None:
    for name, key in KEYS.items():
        url, sha256 = tokmod._blob_spec(name) or ("", "")
        assert hashlib.sha1(url.encode()).hexdigest() == key
        assert tiktoken.load.check_hash((PACKAGE_ENCODINGS_DIR / key).read_bytes(), sha256)


@pytest.mark.parametrize("name", sorted(KEYS))
def test_loads_from_package_with_no_network(name: str, tmp_path: Path) -> None:
    tok = load_tokenizer(name)
    assert (tok.name, tok.source, tok.warning) == (name, "estimate", None)
    assert tok.origin == str(PACKAGE_ENCODINGS_DIR)
    assert tok.count("hello world") == 2
    assert tok.count("<|endoftext|> is user text") > 1  # special-token text never raises
    assert tok.count("") == 0
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "empty-cache")  # restored


def test_operator_dir_is_preferred(tmp_path: Path) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    shutil.copy(PACKAGE_ENCODINGS_DIR / KEYS["cl100k_base"], operator)
    assert load_tokenizer("cl100k_base", cache_dir=str(operator)).origin == str(operator)


def test_env_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(PACKAGE_ENCODINGS_DIR / KEYS["o200k_base"], tmp_path / "empty-cache")
    tok = load_tokenizer("o200k_base")
    assert tok.origin == str(tmp_path / "empty-cache") and tok.source == "estimate"


def test_corrupt_operator_file_falls_back_to_package(tmp_path: Path) -> None:
    corrupt = tmp_path / "empty-cache" / KEYS["cl100k_base"]
    corrupt.write_bytes(b"not a bpe file\n")
    tok = load_tokenizer("cl100k_base")
    assert tok.source == "estimate" and tok.origin == str(PACKAGE_ENCODINGS_DIR)
    assert tok.warning is not None and "sha256" in tok.warning
    assert corrupt.read_bytes() == b"not a bpe file\n"  # tiktoken never saw it, so never deleted


def test_heuristic_when_no_file_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokmod, "PACKAGE_ENCODINGS_DIR", tmp_path / "no-package-copy")
    (tmp_path / "empty-cache" / KEYS["cl100k_base"]).write_bytes(b"corrupt")
    tok = load_tokenizer("cl100k_base")
    assert tok.source == "heuristic"
    assert tok.warning is not None and "heuristic" in tok.warning and "sha256" in tok.warning
    assert tok.count("abcd" * 10) == 10
    assert tok.count("é") == 1 and tok.count("京都") == 2  # 6 bytes -> ceil(6/4)


def test_unknown_encoding_is_heuristic() -> None:
    tok = load_tokenizer("no_such_encoding")
    assert tok.source == "heuristic" and "unknown" in (tok.warning or "")


def test_tiktoken_failure_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> tiktoken.Encoding:
        raise RuntimeError("boom")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    tok = load_tokenizer("cl100k_base")
    assert tok.source == "heuristic" and "boom" in (tok.warning or "")


async def test_count_async_offloads_only_big_texts() -> None:
    tok = load_tokenizer("cl100k_base", offload_chars=1000)
    seen: list[int] = []
    original = tok.count

    def spy(text: str) -> int:
        seen.append(threading.get_ident())
        return original(text)

    tok.count = spy  # type: ignore[method-assign]
    small, big = "word " * 10, "word " * 1000
    assert await tok.count_async(small) == original(small)
    assert await tok.count_async(big) == original(big)
    assert seen[0] == threading.get_ident() and seen[1] != threading.get_ident()
    tok.close()


async def test_big_count_does_not_stall_the_loop() -> None:
    tok = load_tokenizer("cl100k_base")
    text = "The quick brown fox, 京都, def f(x): return x\n" * 20_000
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    count = await tok.count_async(text)
    task.cancel()
    assert count > 200_000 and ticks > 1  # the loop kept running while counting
    tok.close()


_ATOMS = ["word", " ", "  ", "\n", "\r\n", "\n\n", "123", "4", ".", "'s", "京都", "é", "\t",
          "def f(x):", "{\"a\":1}", "🍁", "/"]


def _safe_cut(left: str, right: str) -> bool:
    after_newline = left.endswith("\n") and right[0].isalnum()
    lone_space = right[:1] == " " and not left[-1].isspace() and right[1:2].strip() != ""
    return after_newline or lone_space


@pytest.mark.parametrize("name", sorted(KEYS))
@settings(max_examples=400, deadline=None)
@given(parts=st.lists(st.sampled_from(_ATOMS), max_size=120), size=st.integers(4, 64))
def test_segmented_count_is_exact(name: str, parts: list[str], size: int) -> None:
    """Offloaded counts go by segments; cut at whitespace boundaries they add up exactly."""
    tok = load_tokenizer(name)
    text = "".join(parts)
    pieces = tokmod._segments(text, size)
    assert "".join(pieces) == text and all(len(p) <= size for p in pieces)
    if all(_safe_cut(a, b) for a, b in itertools.pairwise(pieces)):
        assert sum(tok.count(p) for p in pieces) == tok.count(text)
