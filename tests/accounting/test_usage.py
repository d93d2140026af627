"""Usage extraction, include_usage injection and the stream trackers on recorded streams."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.streams import CASES, EOL, STREAMS, usage_chunk, variants
from zai_proxy.accounting.sse import SSEBlock, SSEParser
from zai_proxy.accounting.stream_usage import AnthropicStreamTracker, OpenAIStreamTracker
from zai_proxy.accounting.usage import (
    Usage,
    add_include_usage,
    anthropic_usage,
    openai_usage,
    request_wants_usage,
    usage_from_body,
)


def run(surface: str, pieces: list[bytes], strip: bool) -> tuple[bytes, object]:
    parser = SSEParser()
    tracker = OpenAIStreamTracker(strip_usage_chunk=strip) if surface == "openai" else (
        AnthropicStreamTracker()
    )
    relayed: list[bytes] = []
    blocks: list[SSEBlock] = []
    for piece in pieces:
        blocks += parser.feed(piece)
    blocks += parser.close()
    dropped_cr = False
    for block in blocks:
        if dropped_cr and block.raw == b"\n":
            # A read ended between the CR and LF closing a dropped chunk: the parser gave the
            # LF as a block of its own, and it goes with the chunk (as Ledger._keep does).
            dropped_cr = False
            continue
        keep = tracker.feed(block)
        if keep:
            relayed.append(block.raw)
        dropped_cr = not keep and block.raw.endswith(b"\r")
    return b"".join(relayed), tracker


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("ending", ["lf", "crlf", "cr"])
@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=30), strip=st.booleans())
def test_trackers_on_any_split(name: str, ending: str, cuts: list[int], strip: bool) -> None:
    surface, usage, text, has_chunk = CASES[name]
    stream = variants((STREAMS / name).read_bytes())[ending]
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    relayed, tracker = run(surface, [stream[a:b] for a, b in itertools.pairwise(edges)],
                           strip)
    assert isinstance(tracker, OpenAIStreamTracker | AnthropicStreamTracker)
    assert tracker.usage() == usage
    assert tracker.output_text() == text
    assert tracker.done
    if strip and has_chunk and surface == "openai":
        chunk = usage_chunk(stream, EOL[ending])
        assert stream.count(chunk) == 1
        assert relayed == stream.replace(chunk, b"")
    else:
        assert relayed == stream


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items()
                                         if case[0] == "openai" and case[3]))
def test_usage_chunk_stripped_when_a_read_ends_between_its_cr_and_lf(name: str) -> None:
    # Found by hypothesis (replaying an example saved during a mutation run): with CRLF and a
    # read ending on the usage chunk's last CR, the lone LF that follows was relayed.
    stream = variants((STREAMS / name).read_bytes())["crlf"]
    chunk = usage_chunk(stream, EOL["crlf"])
    cut = stream.index(chunk) + len(chunk) - 1
    relayed, _ = run("openai", [stream[:cut], stream[cut:]], strip=True)
    assert relayed == stream.replace(chunk, b"")


def test_cut_short_stream_keeps_text_and_no_usage() -> None:
    stream = (STREAMS / "openai_chat_include_usage.sse").read_bytes()
    relayed, tracker = run("openai", [stream[:900]], strip=True)
    assert isinstance(tracker, OpenAIStreamTracker)
    assert relayed == stream[:900] and tracker.usage() is None and not tracker.done
    assert tracker.output_text() and tracker.model == "glm-4.7"


def test_openai_usage_variants() -> None:
    assert openai_usage({"usage": None}) is None
    assert openai_usage({"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(input=8)
    chat = {"usage": {"prompt_tokens": 10, "completion_tokens": 5,
                      "prompt_tokens_details": {"cached_tokens": 40},
                      "completion_tokens_details": None}}
    assert openai_usage(chat) == Usage(input=0, output=5, cache_read=10)  # cached clamped
    bad = {"usage": {"prompt_tokens": True, "completion_tokens": -3}}
    assert openai_usage(bad) is None
    assert openai_usage({"usage": {"prompt_tokens": 3.0, "completion_tokens": "7"}}) == Usage(3)


def test_anthropic_usage_and_tracker_merge() -> None:
    body = {"usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 7}}
    assert anthropic_usage(body) == Usage(12, 30, 100, 7)
    assert anthropic_usage({"usage": {}}) is None
    tracker = AnthropicStreamTracker()
    first = {"input_tokens": 50, "output_tokens": 1}
    start = {"type": "message_start", "message": {"usage": first}}
    delta = {"type": "message_delta", "usage": {"input_tokens": 0, "output_tokens": 9}}
    for obj in (start, delta):
        assert tracker.feed(SSEBlock(raw=b"", data=json.dumps(obj)))
    assert tracker.usage() == Usage(input=50, output=9)


def test_usage_from_body() -> None:
    good = b'{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}'
    assert usage_from_body("openai", good) == Usage(4, 2)
    assert usage_from_body("openai", good[:20]) is None
    assert usage_from_body("anthropic", b"\xff\xfe") is None
    body = b'{"usage":{"input_tokens":1,"output_tokens":2}}'
    assert usage_from_body("anthropic", body) == Usage(1, 2)
    emb = b'{"object":"list","data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}'
    assert usage_from_body("openai", emb) == Usage(input=9)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model":"glm-4.7","stream":true}',
         b'{"stream_options":{"include_usage":true},"model":"glm-4.7","stream":true}'),
        (b'  {\n  "model": "x"\n}',
         b'  {"stream_options":{"include_usage":true},\n  "model": "x"\n}'),
        (b"{}", b'{"stream_options":{"include_usage":true}}'),
        (b"{ \n}", b'{"stream_options":{"include_usage":true} \n}'),
    ],
)
def test_add_include_usage_minimal_edit(raw: bytes, expected: bytes) -> None:
    payload = json.loads(raw)
    out = add_include_usage(raw, payload)
    assert out == expected
    assert json.loads(out) == {**payload, "stream_options": {"include_usage": True}}


def test_add_include_usage_existing_options() -> None:
    payload = {"model": "m", "stream_options": {"include_usage": False, "x": 1}, "q": "é"}
    out = add_include_usage(json.dumps(payload).encode(), payload)
    assert json.loads(out) == {**payload, "stream_options": {"include_usage": True, "x": 1}}
    assert "é".encode() in out
    null = {"stream_options": None}
    assert json.loads(add_include_usage(b'{"stream_options":null}', null)) == {
        "stream_options": {"include_usage": True}
    }
    asked = {"stream_options": {"include_usage": True}}
    raw = b'{ "stream_options" : {"include_usage": true} }'
    assert request_wants_usage(asked) and add_include_usage(raw, asked) is raw
    assert not request_wants_usage({"stream_options": {"include_usage": "yes"}})


def test_hostile_json_is_tolerated() -> None:
    deep = b"[" * 100_000
    assert usage_from_body("openai", deep) is None
    tracker = OpenAIStreamTracker(strip_usage_chunk=True)
    assert tracker.feed(SSEBlock(raw=b"", data=deep.decode())) and tracker.usage() is None
    assert tracker.feed(SSEBlock(raw=b"", data='["not a chunk"]'))


@pytest.mark.parametrize("name", sorted(p.name for p in STREAMS.glob("*.sse")))
@pytest.mark.parametrize("strip", [False, True])
def test_feed_raw_decides_exactly_like_feed(name: str, strip: bool) -> None:
    """The relay path feeds raw bytes and parses lazily; it must agree with full parsing."""
    stream = (STREAMS / name).read_bytes()
    make = (AnthropicStreamTracker if name.startswith("anthropic")
            else lambda: OpenAIStreamTracker(strip_usage_chunk=strip))
    parsed, raw = make(), make()
    blocks = SSEParser().feed(stream)
    assert [parsed.feed(b) for b in blocks] == [raw.feed_raw(b.raw) for b in blocks]
    assert parsed.usage() == raw.usage()
    assert parsed.output_text() == raw.output_text()
    assert parsed.done == raw.done and parsed.model == raw.model


# --------------------------------------------------------------------------- edges
# Found by mutation testing (scripts/mutation.py): each fails against a mutant of usage.py.


def test_zero_counts_are_counts_not_missing() -> None:
    assert openai_usage({"usage": {"prompt_tokens": 0, "completion_tokens": 0}}) == Usage()
    assert openai_usage({"usage": {"prompt_tokens": 0.0, "completion_tokens": 2.0}}) == Usage(
        0, 2)
    assert anthropic_usage({"usage": {"input_tokens": 0, "output_tokens": 0.0}}) == Usage()


def test_missing_directions_count_zero() -> None:
    assert openai_usage({"usage": {"completion_tokens": 3}}) == Usage(input=0, output=3)
    assert openai_usage({"usage": {"prompt_tokens": 4}}) == Usage(input=4, output=0)
    assert anthropic_usage({"usage": {"output_tokens": 5}}) == Usage(0, 5, 0, 0)
    assert anthropic_usage({"usage": {"input_tokens": 6}}) == Usage(6, 0, 0, 0)
    assert anthropic_usage({"usage": {"cache_read_input_tokens": 7}}) == Usage(0, 0, 7, 0)


@pytest.mark.parametrize("body", [[1, 2], "usage", 3, None, {"usage": [1]}])
def test_usage_of_non_objects_is_none(body: object) -> None:
    assert openai_usage(body) is None
    assert anthropic_usage(body) is None


def test_add_include_usage_keeps_bytes_after_an_empty_object() -> None:
    assert add_include_usage(b"{}\n", {}) == b'{"stream_options":{"include_usage":true}}\n'


def test_add_include_usage_reserialises_compactly() -> None:
    payload = {"model": "m", "stream_options": {"include_usage": False}, "q": "é"}
    out = add_include_usage(json.dumps(payload).encode(), payload)
    assert out == '{"model":"m","stream_options":{"include_usage":true},"q":"é"}'.encode()


def test_a_float_zero_alone_is_a_count() -> None:
    """`0.0` is a token count of zero, so a body reporting only that has usage."""
    assert anthropic_usage({"usage": {"input_tokens": 0.0}}) == Usage()
    assert openai_usage({"usage": {"prompt_tokens": 0.0}}) == Usage()


def test_add_include_usage_escapes_a_lone_surrogate_compactly() -> None:
    """A lone surrogate cannot be UTF-8: the fallback is ASCII-escaped and still compact."""
    payload = {"q": "\ud800 é", "stream_options": {}}
    out = add_include_usage(b'{"q":"\\ud800 \\u00e9","stream_options":{}}', payload)
    assert out == b'{"q":"\\ud800 \\u00e9","stream_options":{"include_usage":true}}'
