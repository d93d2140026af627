"""One huge SSE event arriving in many reads costs work linear in its size.

Not timed: the work is the bytes the relay path searches (`bytes.find` / `rfind`, seen through
`sys.setprofile`, which reports every call of a C method with its receiver). A relay that joins
and rescans everything held so far on every read searches about n^2 / (2 * read size) bytes; a
linear one searches each byte a bounded number of times.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from tests.support.streams import stream_ledger
from zai_proxy.accounting.sse import SSEParser

READ = 4096
SEARCHES = frozenset({"find", "rfind", "index", "rindex", "count"})


def searched(feed: Callable[[bytes], object], chunks: Iterable[bytes]) -> int:
    """Bytes of the receivers of every bytes search method called while feeding `chunks`."""
    total = 0

    def profile(_frame: Any, event: str, arg: Any) -> None:
        nonlocal total
        if event == "c_call" and getattr(arg, "__name__", "") in SEARCHES:
            receiver = getattr(arg, "__self__", None)
            if isinstance(receiver, bytes):
                total += len(receiver)

    sys.setprofile(profile)
    try:
        for chunk in chunks:
            feed(chunk)
    finally:
        sys.setprofile(None)
    return total


def reads(data: bytes, size: int = READ) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def huge_event(size: int) -> bytes:
    return b'data: {"choices":[{"delta":{"content":"' + b"x" * size + b'"}}]}\n\n'


@pytest.mark.parametrize("strip", [False, True])
def test_the_ledger_relays_one_huge_event_in_linear_work(strip: bool) -> None:
    event = huge_event(2 << 20)
    ledger = stream_ledger("openai", strip)
    relayed: list[bytes] = []
    work = searched(lambda chunk: relayed.append(ledger.relay(chunk)), reads(event))
    relayed.append(ledger.flush())
    assert b"".join(relayed) == event
    size = len(event)
    assert work <= 4 * size, f"searched {work} bytes for a {size}-byte event"


def test_the_parser_holds_a_huge_event_split_between_cr_and_lf_in_linear_work() -> None:
    # Every read ends with the CR of a CRLF line ending, the next starts with its LF.
    line = b"data: " + b"y" * (READ - 8) + b"\r\n"
    stream = line * 512 + b"\r\n"
    chunks = [c for piece in stream.split(b"\r\n") for c in (piece + b"\r", b"\n")][:-2]
    assert b"".join(chunks) == stream
    parser = SSEParser()
    blocks: list[bytes] = []
    work = searched(lambda chunk: blocks.extend(parser.feed_raw(chunk)), chunks)
    assert b"".join(blocks) == stream
    size = len(stream)
    assert work <= 4 * size, f"searched {work} bytes for a {size}-byte stream"
