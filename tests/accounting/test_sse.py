"""SSEParser: exact bytes, field parsing per the WHATWG rules, any split of any stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zai_proxy.accounting.sse import SSEBlock, SSEParser, parse_block

STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"


def feed_all(pieces: list[bytes]) -> tuple[list[SSEBlock], SSEParser]:
    parser = SSEParser()
    blocks: list[SSEBlock] = []
    for piece in pieces:
        blocks += parser.feed(piece)
    return blocks, parser


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def messages(blocks: list[SSEBlock]) -> list[tuple[str | None, str | None, str | None]]:
    """Field-carrying complete blocks, as the reference parser would dispatch them."""
    return [
        (b.event, b.data, b.id)
        for b in blocks
        if b.complete and (b.event, b.data, b.id, b.retry) != (None, None, None, None)
    ]


def reference(stream: bytes) -> list[tuple[str | None, str | None, str | None]]:
    """A line-at-a-time parser written straight from the spec, for comparison."""
    text = stream.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[str | None, str | None, str | None]] = []
    event = ident = None
    data: list[str] | None = None
    seen = False
    for line in lines[:-1]:  # the last element is an unterminated line: never dispatched
        if line == "":
            if seen:
                out.append((event, None if data is None else "\n".join(data), ident))
            event = ident = None
            data = None
            seen = False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data = [*(data or []), value]
            seen = True
        elif name == "event":
            event, seen = value, True
        elif name == "id" and "\0" not in value:
            ident, seen = value, True
        elif name == "retry" and value.isascii() and value.isdigit():
            seen = True
    return out


def test_lf_stream_blocks_and_raw() -> None:
    stream = b"event: a\ndata: 1\n\n: ping\n\ndata: 2\ndata: 3\n\n"
    blocks, parser = feed_all([stream])
    raws = [b"event: a\ndata: 1\n\n", b": ping\n\n", b"data: 2\ndata: 3\n\n"]
    assert [b.raw for b in blocks] == raws
    assert [(b.event, b.data) for b in blocks] == [("a", "1"), (None, None), (None, "2\n3")]
    assert parser.pending == b""


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    stream = eol.join([b"id: 7", b"data:x", b"data", b"retry: 250", b"", b"data: y", b"", b""])
    blocks, _ = feed_all([stream])
    assert [(b.id, b.data, b.retry) for b in blocks] == [("7", "x\n", 250), (None, "y", None)]
    assert b"".join(b.raw for b in blocks) == stream


def test_split_between_cr_and_lf_emits_without_waiting() -> None:
    parser = SSEParser()
    first = parser.feed(b"data: a\r\n\r")
    assert [b.data for b in first] == ["a"]  # not held back for the LF
    second = parser.feed(b"\ndata: b\r\n\r\n")
    assert [(b.raw, b.data) for b in second] == [(b"\n", None), (b"data: b\r\n\r\n", "b")]


def test_pending_and_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n\ndata: {\"trunc") [0].data == "1"
    assert parser.pending == b'data: {"trunc'
    tail = parser.close()
    assert [(b.raw, b.data, b.complete) for b in tail] == [(b'data: {"trunc', '{"trunc', False)]
    assert parser.pending == b"" and parser.close() == []


def test_bom_only_at_stream_start() -> None:
    blocks, _ = feed_all([b"\xef\xbb", b"\xbfdata: x\n\n\xef\xbb\xbfdata: y\n\n"])
    assert blocks[0].raw.startswith(b"\xef\xbb\xbf") and blocks[0].data == "x"
    assert blocks[1].data is None  # a BOM later is part of the field name, per the spec


def test_field_edge_cases() -> None:
    block = parse_block(b"data:  two spaces\nevent\nid: a\0b\nunknown: z\n:comment\n\n")
    assert block.data == " two spaces" and block.event == "" and block.id is None


def test_many_blocks_in_one_chunk_are_linear() -> None:
    stream = b"data: x\n\n" * 20_000 + b"data: tail"
    blocks, parser = feed_all([stream])
    assert len(blocks) == 20_000 and parser.pending == b"data: tail"


@pytest.mark.parametrize("name", sorted(p.name for p in STREAMS.glob("*.sse")))
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_recorded_streams_any_split(name: str, cuts: list[int]) -> None:
    stream = (STREAMS / name).read_bytes()
    whole, _ = feed_all([stream])
    blocks, parser = feed_all(split_at(stream, cuts))
    assert b"".join(b.raw for b in blocks) + parser.pending == stream
    assert messages(blocks) == messages(whole) == reference(stream)
    assert parser.pending == b""


_ATOMS = [b"data: x", b"data:", b"data", b"event: e", b"id: 1", b": c", b":", b"\xef\xbb\xbf",
          b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"retry: 5", b"\xe4\xb8"]


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.sampled_from(_ATOMS), max_size=40),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_random_streams_match_reference(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    blocks, parser = feed_all(split_at(stream, cuts))
    assert b"".join(b.raw for b in blocks) + parser.pending == stream
    assert messages(blocks) == reference(stream)
    tail = parser.close()
    assert b"".join(b.raw for b in blocks + tail) == stream


# --------------------------------------------------------------------------- single reads
# One read that looks like the usual "exactly one LF block" but is not; found by mutation
# testing (scripts/mutation.py): each fails against a mutant of the parser's fast path.


@pytest.mark.parametrize(("read", "blocks"), [
    (b"data: x\n\n\n", [b"data: x\n\n", b"\n"]),  # a trailing empty line is a block
    (b"\ndata: x\n\n", [b"\n", b"data: x\n\n"]),  # so is a leading one
    (b"\rdata: x\n\n", [b"\r", b"data: x\n\n"]),
    (b"data: a\r\rdata: b\n\n", [b"data: a\r\r", b"data: b\n\n"]),  # CR CR ends a block
    (b"data: a\n\rdata: b\n\n", [b"data: a\n\r", b"data: b\n\n"]),
    (b"data: x\n\n", [b"data: x\n\n"]),
])
def test_one_read_is_split_like_the_reference(read: bytes, blocks: list[bytes]) -> None:
    assert SSEParser().feed_raw(read) == blocks


def test_a_closed_parser_starts_a_new_stream() -> None:
    parser = SSEParser()
    assert [b.data for b in parser.feed(b"\xef\xbb\xbfdata: a\n\ndata: b")] == ["a"]
    assert [b.data for b in parser.close()] == ["b"]
    # After close the next block is a stream start again: its BOM is stripped.
    assert [b.data for b in parser.feed(b"\xef\xbb\xbfdata: c\n\n")] == ["c"]
