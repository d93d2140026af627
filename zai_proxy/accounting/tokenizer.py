"""Offline tiktoken loading and token counting that never blocks the event loop.

:func:`load_tokenizer` runs once at startup and never touches the network: it looks for the
encoding file (named by tiktoken's cache key, the sha1 of its download URL) first in the
operator's ``TIKTOKEN_CACHE_DIR`` (or ``cache_dir``), then in the package's ``_encodings/``,
verifies it with tiktoken's own sha256 check, and only then lets tiktoken read it from that
directory. A missing or corrupt file therefore can never make tiktoken download (or delete)
anything. When no file verifies, the returned tokenizer is the byte heuristic below, labelled
``source="heuristic"`` with a ``warning`` saying why.

Heuristic: ``ceil(utf8_bytes / 4)``. Measured against cl100k_base / o200k_base it gives
English prose ~+20%, JSON ~-5%, code ~-35%, Chinese 0.77 tokens per character (cl100k: 0.97,
o200k: 0.58). Bytes rather than characters keep CJK text from being undercounted fourfold.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import tiktoken
import tiktoken.load

__all__ = ["DEFAULT_OFFLOAD_CHARS", "PACKAGE_ENCODINGS_DIR", "Tokenizer", "load_tokenizer"]

PACKAGE_ENCODINGS_DIR = Path(__file__).resolve().parent.parent / "_encodings"
DEFAULT_OFFLOAD_CHARS = 20_000
SEGMENT_CHARS = 8_192
_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
# Used only when tiktoken_ext.openai_public cannot be introspected: (blob URL, sha256).
_KNOWN: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        _BASE + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        _BASE + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
_ENV_LOCK = threading.Lock()  # os.environ is process-global: one loader at a time


def _heuristic_count(text: str) -> int:
    return (len(text.encode("utf-8", errors="surrogatepass")) + 3) // 4


def _segments(text: str, size: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``size`` chars where tiktoken's pre-tokenizer of
    cl100k/o200k always has a boundary too (so counts add up exactly): after a newline that
    precedes a letter or digit, or before a lone space between non-spaces. Only text with neither
    for ``size / 2`` chars is cut blindly, which can shift the count by a token there.
    """
    pieces: list[str] = []
    start, n = 0, len(text)
    while n - start > size:
        lo, hi = start + size // 2, start + size
        cut = text.rfind("\n", lo, hi)
        while cut != -1 and not text[cut + 1].isalnum():  # o200k glues "\n/" together
            cut = text.rfind("\n", lo, cut)
        if cut != -1:
            cut += 1
        else:
            cut = text.rfind(" ", lo, hi)
            while cut != -1 and (text[cut - 1].isspace() or text[cut + 1].isspace()):
                cut = text.rfind(" ", lo, cut)
            cut = hi if cut <= start else cut
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


class Tokenizer:
    """Counts tokens with a loaded tiktoken encoding, or with the byte heuristic.

    ``count`` is pure CPU and loads nothing. ``count_async`` counts inline below
    ``offload_chars`` characters and otherwise in a small dedicated thread pool; tiktoken's
    Rust core releases the GIL while encoding, but building the token list holds it, so the
    offloaded count goes by pieces of ``SEGMENT_CHARS``: the loop never waits on one long list.
    """

    def __init__(
        self,
        name: str,
        encoding: tiktoken.Encoding | None,
        *,
        warning: str | None = None,
        origin: str | None = None,
        offload_chars: int = DEFAULT_OFFLOAD_CHARS,
    ) -> None:
        self.name = name
        self.source: Literal["estimate", "heuristic"] = (
            "heuristic" if encoding is None else "estimate"
        )
        self.warning = warning
        self.origin = origin  # directory the encoding was read from, for logs and /health
        self.offload_chars = offload_chars
        self._encoding = encoding
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def count(self, text: str) -> int:
        """Number of tokens in ``text``; special-token text counts as ordinary text."""
        if not text:
            return 0
        if self._encoding is None:
            return _heuristic_count(text)
        return len(self._encoding.encode_ordinary(text))

    async def count_async(self, text: str) -> int:
        """Like :meth:`count`, but large texts are counted off the event loop."""
        if self._encoding is None or len(text) < self.offload_chars:
            return self.count(text)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self._count_segmented, text)

    def _count_segmented(self, text: str) -> int:
        return sum(self.count(piece) for piece in _segments(text, SEGMENT_CHARS))

    def _pool(self) -> ThreadPoolExecutor:
        # A private pool so huge prompts never queue behind (or starve) the default executor.
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="tokenizer")
            return self._executor

    def close(self) -> None:
        """Shut the offload pool down (idempotent)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None


def _blob_spec(encoding: str) -> tuple[str, str] | None:
    """(download URL, expected sha256) for ``encoding``, read from tiktoken's own definitions."""
    try:
        # Imported by name: tiktoken_ext ships no type information.
        openai_public = importlib.import_module("tiktoken_ext.openai_public")
        source = inspect.getsource(getattr(openai_public, encoding))
        url = re.search(r'"(https://[^"]+\.tiktoken)"', source)
        digest = re.search(r'expected_hash="([0-9a-f]{64})"', source)
        if url and digest:
            return url.group(1), digest.group(1)
    except (ImportError, AttributeError, OSError, TypeError):
        pass
    return _KNOWN.get(encoding)


def _candidate_dirs(cache_dir: str | None) -> list[Path]:
    operator = cache_dir if cache_dir is not None else os.environ.get("TIKTOKEN_CACHE_DIR")
    dirs = [Path(operator)] if operator else []
    return [*dirs, PACKAGE_ENCODINGS_DIR]


def load_tokenizer(
    encoding: str = "cl100k_base",
    cache_dir: str | None = None,
    *,
    offload_chars: int = DEFAULT_OFFLOAD_CHARS,
) -> Tokenizer:
    """Load ``encoding`` offline (see the module docstring); never raises, never downloads."""
    spec = _blob_spec(encoding)
    if spec is None:
        why = f"unknown tiktoken encoding {encoding!r}; counting with the bytes/4 heuristic"
        return Tokenizer(encoding, None, warning=why, offload_chars=offload_chars)
    url, sha256 = spec
    key = hashlib.sha1(url.encode()).hexdigest()
    problems: list[str] = []
    for directory in _candidate_dirs(cache_dir):
        path = directory / key
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not tiktoken.load.check_hash(data, sha256):
            problems.append(f"{path} fails its sha256 check (ignored, left in place)")
            continue
        try:
            loaded = _get_encoding(encoding, directory)
        except Exception as exc:  # any tiktoken failure must degrade, not stop the proxy
            problems.append(f"{path}: tiktoken could not load it: {exc}")
            continue
        warning = "; ".join(problems) or None
        return Tokenizer(
            encoding, loaded, warning=warning, origin=str(directory), offload_chars=offload_chars
        )
    problems.append(
        f"no valid {encoding} file named {key} in "
        + ", ".join(str(d) for d in _candidate_dirs(cache_dir))
    )
    why = "; ".join(problems) + "; counting with the bytes/4 heuristic"
    return Tokenizer(encoding, None, warning=why, offload_chars=offload_chars)


def _get_encoding(encoding: str, directory: Path) -> tiktoken.Encoding:
    """tiktoken.get_encoding with its cache pointed at the directory holding the verified file."""
    with _ENV_LOCK:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        try:
            loaded = tiktoken.get_encoding(encoding)
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
    # The Rust core holds its own copy of the ranks; tiktoken keeps the Python dict (~16 MB for
    # cl100k_base) only to pickle the Encoding, which the proxy never does.
    if isinstance(getattr(loaded, "_mergeable_ranks", None), dict):
        loaded._mergeable_ranks = {}
    return loaded
