"""Errors inside streams (`x-sim-stream-error`) and abnormal finish reasons
(`x-sim-finish-reason`), on both surfaces. Virtual time only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.simulator import (
    BEARER,
    CHAT,
    MESSAGES,
    XKEY,
    anthropic_body,
    chat_body,
    sim,
    sse_data,
    sse_events,
)
from zai_proxy.simulator.overrides import RequestKnobs, apply_headers

COMPLETIONS = "/api/paas/v4/completions"


def stream_body(**extra: Any) -> dict[str, Any]:
    return chat_body(stream=True, stream_options={"include_usage": True}, **extra)


@pytest.mark.parametrize("after", [0, 2])
async def test_openai_stream_ends_with_an_error_event_after_k_chunks(after: int) -> None:
    header = "1305" if after == 0 else f"1305@{after}"
    async with sim() as c:
        answer = await c.post(CHAT, json=stream_body(),
                              headers={**BEARER, "x-sim-stream-error": header})
        stats = (await c.get("/_stats")).json()
    assert answer.status_code == 200
    events = sse_data(answer.text)
    role, *content, error = events
    assert role["choices"][0]["delta"]["role"] == "assistant"
    assert len(content) == after
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in content)
    assert error == {"error": {"code": "1305", "message": "The service may be temporarily "
                                                          "overloaded, please try again later"}}
    assert "[DONE]" not in events
    assert stats["events"]["stream_error"] == 1


async def test_anthropic_stream_ends_with_an_error_event_in_anthropics_envelope() -> None:
    async with sim() as c:
        answer = await c.post(MESSAGES, json={**anthropic_body(), "stream": True},
                              headers={**XKEY, "x-sim-stream-error": "1313@1"})
    names = [name for name, _ in sse_events(answer.text)]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "error"]
    error = sse_events(answer.text)[-1][1]
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"
    assert error["error"]["code"] == "1313"


async def test_stream_error_with_more_chunks_than_the_reply_has_replaces_only_the_tail() -> None:
    async with sim() as c:
        answer = await c.post(COMPLETIONS, json={"prompt": "a b", "stream": True},
                              headers={**BEARER, "x-sim-stream-error": "1312@99",
                                       "x-sim-chunks": "3"})
    *content, error = sse_data(answer.text)
    assert len(content) == 3 and all(c["choices"][0]["finish_reason"] is None for c in content)
    assert error["error"]["code"] == "1312"


async def test_a_quota_code_in_a_stream_carries_its_reset() -> None:
    async with sim() as c:
        answer = await c.post(CHAT, json=stream_body(),
                              headers={**BEARER, "x-sim-stream-error": "1310@1"})
    error = sse_data(answer.text)[-1]["error"]
    assert error["code"] == "1310" and "next_reset_time" in error
    assert "weekly" in error["message"]


async def test_stream_error_leaves_non_stream_requests_alone() -> None:
    async with sim() as c:
        answer = await c.post(CHAT, json=chat_body(),
                              headers={**BEARER, "x-sim-stream-error": "1305"})
    assert answer.status_code == 200 and answer.json()["choices"][0]["finish_reason"] == "stop"


def test_stream_error_header_parses_code_and_count_and_ignores_garbage() -> None:
    base = RequestKnobs()
    assert apply_headers(base, {"x-sim-stream-error": "1305"}).stream_error == (1305, 0)
    assert apply_headers(base, {"x-sim-stream-error": " 1302@4 "}).stream_error == (1302, 4)
    for garbage in ("x", "1305@", "1305@-1", "@3", "1305@two"):
        assert apply_headers(base, {"x-sim-stream-error": garbage}).stream_error is None
    assert apply_headers(base, {"x-sim-finish-reason": "network_error"}).finish_reason == (
        "network_error")
    assert apply_headers(base, {"x-sim-finish-reason": "a b"}).finish_reason is None
    assert apply_headers(base, {"x-sim-error-in-200": "1305"}).forced


async def test_finish_reason_is_forced_without_an_error_event() -> None:
    forced = {**BEARER, "x-sim-finish-reason": "network_error"}
    async with sim() as c:
        stream = await c.post(CHAT, json=stream_body(), headers=forced)
        whole = await c.post(CHAT, json=chat_body(), headers={**BEARER,
                                                               "x-sim-finish-reason": "abnormal"})
        text = await c.post(COMPLETIONS, json={"prompt": "a b"}, headers=forced)
        message = await c.post(MESSAGES, json={**anthropic_body(), "stream": True},
                               headers={**XKEY, "x-sim-finish-reason": "abnormal"})
        plain = await c.post(MESSAGES, json=anthropic_body(),
                             headers={**XKEY, "x-sim-finish-reason": "abnormal"})
    events = sse_data(stream.text)
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
    assert finishes[-1] == "network_error" and finishes[:-1] == [None] * (len(finishes) - 1)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    assert whole.json()["choices"][0]["finish_reason"] == "abnormal"
    assert text.json()["choices"][0]["finish_reason"] == "network_error"
    deltas = [data for name, data in sse_events(message.text) if name == "message_delta"]
    assert deltas[0]["delta"]["stop_reason"] == "abnormal"
    assert "error" not in [name for name, _ in sse_events(message.text)]
    assert plain.json()["stop_reason"] == "abnormal"
