"""The stream watch, bytes in: where the head ends, which faults it finds, however the stream is
cut into reads, and that it finds each stream's fault once."""

from __future__ import annotations

import json

import pytest

from zai_proxy.relay.stream_errors import FINISH_CLASS, StreamWatch

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},' \
       b'"finish_reason":null}]}\n\n'
TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
DONE = b"data: [DONE]\n\n"
A_START = b'event: message_start\ndata: {"type":"message_start","message":{"stop_reason":null}}' \
          b'\n\n'
A_BLOCK = b'event: content_block_start\ndata: {"type":"content_block_start","index":0,' \
          b'"content_block":{"type":"text","text":""}}\n\nevent: ping\ndata: {"type":"ping"}\n\n'
A_TEXT = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,' \
         b'"delta":{"type":"text_delta","text":"hi"}}\n\n'


def error_event(code: str) -> bytes:
    return b"data: " + json.dumps({"error": {"code": code, "message": "m"}}).encode() + b"\n\n"


def finish(reason: str) -> bytes:
    choice = {"index": 0, "delta": {}, "finish_reason": reason}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


def stop(reason: str) -> bytes:
    delta = {"type": "message_delta", "delta": {"stop_reason": reason}}
    return b"event: message_delta\ndata: " + json.dumps(delta).encode() + b"\n\n"


def watched(*chunks: bytes) -> StreamWatch:
    watch = StreamWatch()
    for chunk in chunks:
        watch.feed(chunk)
    watch.close()
    return watch


def split_every_way(stream: bytes) -> list[list[bytes]]:
    """The stream in one read, in every two-read split and one byte per read."""
    ways = [[stream], [bytes([b]) for b in stream]]
    ways += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return ways


def test_the_head_is_over_at_the_first_content_not_before() -> None:
    watch = StreamWatch()
    watch.feed(ROLE + b": keep-alive\n\n")
    assert not watch.head_over
    watch.feed(TEXT)
    assert watch.head_over and watch.fault is None


def test_anthropic_head_is_message_start_an_empty_block_and_pings() -> None:
    watch = StreamWatch()
    watch.feed(A_START + A_BLOCK)
    assert not watch.head_over
    watch.feed(A_TEXT)
    assert watch.head_over


@pytest.mark.parametrize("first", [DONE, finish("stop"), b"data: not json\n\n",
                                   b'data: {"choices":[{"delta":{"tool_calls":[{}]}}]}\n\n'])
def test_anything_the_client_needs_ends_the_head(first: bytes) -> None:
    watch = StreamWatch()
    watch.feed(ROLE + first)
    assert watch.head_over and watch.fault is None


@pytest.mark.parametrize("stream", [ROLE + error_event("1302"), ROLE + TEXT + error_event("1302")])
def test_an_error_event_is_found_however_the_stream_is_cut(stream: bytes) -> None:
    before = not stream.startswith(ROLE + TEXT)
    for chunks in split_every_way(stream):
        fault = watched(*chunks).fault
        assert fault is not None, chunks
        assert (fault.kind, fault.cls, fault.code, fault.before_content) == (
            "error", "concurrency", "1302", before)


@pytest.mark.parametrize("stream", [ROLE + TEXT + finish("network_error") + DONE,
                                    ROLE + TEXT + finish("abnormal") + DONE,
                                    A_START + A_BLOCK + A_TEXT + stop("abnormal")])
def test_an_abnormal_finish_is_found_however_the_stream_is_cut(stream: bytes) -> None:
    for chunks in split_every_way(stream):
        fault = watched(*chunks).fault
        assert fault is not None and fault.cls == FINISH_CLASS and not fault.before_content


@pytest.mark.parametrize("reason", ["stop", "length", "tool_calls", "content_filter",
                                    "sensitive"])
def test_normal_finish_reasons_are_no_fault(reason: str) -> None:
    assert watched(ROLE, TEXT, finish(reason), DONE).fault is None


@pytest.mark.parametrize("reason", ["end_turn", "max_tokens", "stop_sequence", "tool_use",
                                    "pause_turn", "refusal"])
def test_normal_stop_reasons_are_no_fault(reason: str) -> None:
    assert watched(A_START, A_BLOCK, A_TEXT, stop(reason)).fault is None


def test_anthropic_error_event_carries_its_code() -> None:
    event = (b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error",'
             b'"code":"1312","message":"busy"}}\n\n')
    fault = watched(A_START, A_BLOCK, event).fault
    assert fault is not None and (fault.cls, fault.code, fault.before_content) == (
        "congestion", "1312", True)
    assert fault.detail == "busy"


def test_an_error_without_a_code_is_unknown() -> None:
    fault = watched(ROLE, TEXT, b'data: {"error":{"message":"boom"}}\n\n').fault
    assert fault is not None and (fault.cls, fault.code) == ("unknown", None)


def test_only_the_first_fault_is_kept() -> None:
    fault = watched(ROLE, TEXT, error_event("1303"), error_event("1302")).fault
    assert fault is not None and fault.code == "1303"


def test_text_that_mentions_errors_or_reasons_is_no_fault() -> None:
    said = {"choices": [{"delta": {"content": 'the "error" key and "finish_reason": "x"'},
                         "finish_reason": None}]}
    chunk = b"data: " + json.dumps(said).encode() + b"\n\n"
    assert watched(ROLE, TEXT, chunk, finish("stop"), DONE).fault is None


def test_an_unterminated_last_event_is_read_at_close() -> None:
    fault = watched(ROLE, TEXT, error_event("1303")[:-2]).fault
    assert fault is not None and fault.code == "1303"
