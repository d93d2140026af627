"""The simulated Z.AI upstream in process: limit classes with a fake clock, and the ASGI app."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.simulator import BEARER, CHAT, MESSAGES, XKEY, chat_body, sse_data, sse_events
from zai_proxy.simulator import (
    ConcurrencyCeiling,
    RateCeiling,
    SimulatorSettings,
    add_arguments,
    create_simulator_app,
    parse_schedule,
    settings_from_args,
)
from zai_proxy.simulator.generation import (
    chat_prompt_tokens,
    completion_prompt_tokens,
    embedding_inputs,
    embedding_tokens,
    plan,
)
from zai_proxy.simulator.overrides import RequestKnobs, apply_headers


def client_for(settings: SimulatorSettings | None = None, clock: VirtualTime | None = None
               ) -> httpx.AsyncClient:
    app = create_simulator_app(settings or SimulatorSettings(), clock or VirtualTime(1000.0))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as c:
        yield c


# ---- pure: schedule, ceilings --------------------------------------------------------------


def test_parse_schedule_sorts_and_validates() -> None:
    assert parse_schedule("60:10, 0:20,120:40") == ((0.0, 20.0), (60.0, 10.0), (120.0, 40.0))
    assert parse_schedule("") == ()
    for bad in ("0-20", "0:-1", "0:1,0:2", "x:1"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


def test_rate_ceiling_sliding_window() -> None:
    clock = VirtualTime(1000.0)
    ceiling = RateCeiling(3, clock=clock)
    assert [ceiling.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert ceiling.retry_after() == pytest.approx(1.0)
    clock.jump(0.5)
    assert not ceiling.try_acquire()
    assert ceiling.retry_after() == pytest.approx(0.5)
    clock.jump(0.5)
    assert ceiling.try_acquire()
    assert ceiling.retry_after() == 0.0 or not ceiling.try_acquire()


def test_rate_ceiling_spread_requests_never_exceed_rate_in_any_second() -> None:
    clock = VirtualTime(1000.0)
    ceiling = RateCeiling(10, clock=clock)
    accepted: list[float] = []
    for _ in range(1000):  # 100 req/s offered for 10 s
        if ceiling.try_acquire():
            accepted.append(clock())
        clock.jump(0.01)
    assert 95 <= len(accepted) <= 101
    for i, t in enumerate(accepted):
        assert sum(1 for u in accepted[i:] if u < t + 1.0) <= 10


def test_rate_ceiling_fractional_and_unlimited() -> None:
    clock = VirtualTime(1000.0)
    slow = RateCeiling(0.5, clock=clock)
    assert slow.try_acquire() and not slow.try_acquire()
    clock.jump(1.9)
    assert not slow.try_acquire()
    clock.jump(0.2)
    assert slow.try_acquire()
    free = RateCeiling(0, clock=clock)
    assert all(free.try_acquire() for _ in range(10_000))
    assert free.retry_after() == 0.0


def test_strict_rate_ceiling_refuses_anything_sooner_than_one_interval() -> None:
    clock = VirtualTime(1000.0)
    strict = RateCeiling(10, clock=clock, burst=1)  # a bucket holding one token
    assert strict.try_acquire() and not strict.try_acquire()
    assert strict.retry_after() == pytest.approx(0.1)
    clock.jump(0.099)
    assert not strict.try_acquire()  # 99 ms after the last admission: too soon
    clock.jump(0.001)
    assert strict.try_acquire()
    clock.jump(5.0)  # idle: it still holds one token only, no burst
    assert [strict.try_acquire() for _ in range(3)] == [True, False, False]
    # Evenly spaced at exactly the rate: every request passes; a refused one costs nothing.
    accepted = 0
    for _ in range(100):
        clock.jump(0.1)
        accepted += strict.try_acquire()
    assert accepted == 100
    loose = RateCeiling(10, clock=clock, burst=3)
    assert [loose.try_acquire() for _ in range(4)] == [True, True, True, False]
    with pytest.raises(ValueError):
        RateCeiling(10, clock=clock, burst=0.5)


def test_rate_ceiling_follows_schedule_and_reset_restarts_it() -> None:
    clock = VirtualTime(1000.0)
    ceiling = RateCeiling(0, parse_schedule("10:2,20:5"), clock=clock)
    assert ceiling.current() == 0 and all(ceiling.try_acquire() for _ in range(50))
    clock.jump(10)
    assert ceiling.current() == 2
    assert [ceiling.try_acquire() for _ in range(3)] == [True, True, False]
    clock.jump(10)
    assert ceiling.current() == 5
    assert sum(ceiling.try_acquire() for _ in range(10)) == 5
    ceiling.reset()
    assert ceiling.current() == 0
    assert ceiling.rate_at(15) == 2


def test_concurrency_ceiling_counts_and_peak() -> None:
    ceiling = ConcurrencyCeiling(2)
    assert ceiling.try_enter() and ceiling.try_enter() and not ceiling.try_enter()
    ceiling.leave()
    assert ceiling.try_enter()
    assert (ceiling.in_flight, ceiling.peak) == (2, 2)
    ceiling.leave(), ceiling.leave(), ceiling.leave()
    assert ceiling.in_flight == 0
    ceiling.reset_peak()
    assert ceiling.peak == 0
    unlimited = ConcurrencyCeiling(0)
    assert all(unlimited.try_enter() for _ in range(100))


# ---- pure: token rules, knobs, settings -----------------------------------------------------


def test_prompt_token_rules() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "content": "three"},
    ]
    assert chat_prompt_tokens(messages) == (1 + 2) + (1 + 2) + 1 + (1 + 1)
    anthropic = [{"role": "user", "content": [
        {"type": "tool_result", "content": [{"type": "text", "text": "a b c"}]}]}]
    assert chat_prompt_tokens(anthropic, [{"type": "text", "text": "sys tem"}]) == 2 + 1 + 3
    assert completion_prompt_tokens("a b c") == 4
    assert completion_prompt_tokens(["a", "b c"]) == 5
    assert [embedding_tokens(i) for i in embedding_inputs("x y")] == [2]
    assert [embedding_tokens(i) for i in embedding_inputs(["", "a b", [1, 2, 3]])] == [1, 2, 3]
    assert [embedding_tokens(i) for i in embedding_inputs([5, 6])] == [2]


def test_plan_caps_by_max_tokens_and_adds_reasoning() -> None:
    gen = plan(prompt_tokens=3, source=["a", "b", "c"], chunks=4, words_per_chunk=3,
               cached_tokens=99, max_tokens=7, thinking=True)
    assert gen.finish == "length" and gen.cached_tokens == 3
    assert gen.pieces == ("a b c", " a b c", " a")
    assert gen.completion_tokens == 7 + 3 and gen.reasoning_tokens == 3
    assert len(gen.text.split()) == 7
    tool = plan(prompt_tokens=1, source=[], chunks=3, words_per_chunk=2, cached_tokens=0,
                tool="lookup")
    assert tool.tool is not None and tool.finish == "tool_calls"
    assert json.loads(tool.tool.arguments) == {"query": "zai simulated reply"}
    assert len(tool.tool.argument_pieces) == 3 and tool.completion_tokens == 6


def test_header_overrides_parse_and_ignore_garbage() -> None:
    base = RequestKnobs()
    assert apply_headers(base, {}) is base
    knobs = apply_headers(base, {
        "x-sim-chunks": "7", "x-sim-chunk-gap-ms": "250", "x-sim-delay-ms": "oops",
        "x-sim-no-usage": "1", "x-sim-empty": "0", "x-sim-reset-after-chunks": "0",
        "x-sim-429-code": "1302", "x-sim-words-per-chunk": "0",
    })
    assert knobs.chunks == 7 and knobs.gap_s == 0.25 and knobs.latency_s == 0.0
    assert knobs.no_usage and not knobs.empty and knobs.reset_after == 0
    assert knobs.code_429 == 1302 and knobs.forced and knobs.words_per_chunk == 2


def test_settings_validation_and_argparse(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        SimulatorSettings(chunks=0)
    with pytest.raises(ValueError):
        SimulatorSettings(fail_rate=1.5)
    monkeypatch.setenv("SIM_CHUNKS", "9")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--rate-ceiling", "4", "--ceiling-schedule", "0:20,60:10",
                            "--models", "a, b", "--expect-key", "k"])
    settings = settings_from_args(ns)
    assert settings.chunks == 9 and settings.rate_ceiling == 4
    assert settings.ceiling_schedule == ((0, 20), (60, 10))
    assert settings.models == ("a", "b") and settings.expect_key == "k"


def test_cli_parser_has_host_port_and_knobs() -> None:
    from zai_proxy.simulator.cli import build_parser

    ns = build_parser().parse_args(["--host", "0.0.0.0", "--port", "1", "--chunks", "3"])
    assert (ns.host, ns.port, settings_from_args(ns).chunks) == ("0.0.0.0", 1, 3)


# ---- the app: OpenAI routes -----------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_chat_non_stream_usage_is_exact(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(), headers=BEARER)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "glm-4.7"
    text = body["choices"][0]["message"]["content"]
    assert text == "hello there world hello there world hello there world hello"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14,
                             "prompt_tokens_details": {"cached_tokens": 0}}


async def test_chat_stream_with_and_without_include_usage(client: httpx.AsyncClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    response = await client.post(CHAT, json=body, headers=BEARER)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_data(response.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [e["choices"][0]["delta"]["content"] for e in events[1:6]]
    assert len(contents) == 5 and len("".join(contents).split()) == 10
    assert events[6]["choices"][0]["finish_reason"] == "stop"
    assert events[7]["choices"] == [] and events[7]["usage"]["completion_tokens"] == 10
    assert events[7]["usage"]["prompt_tokens"] == 4 and events[8] == "[DONE]"
    assert len(events) == 9

    plain = sse_data((await client.post(CHAT, json=chat_body(stream=True), headers=BEARER)).text)
    assert plain[-1] == "[DONE]" and not any("usage" in e for e in plain[:-1])


async def test_chat_knob_headers_and_cached_tokens() -> None:
    async with client_for(SimulatorSettings(cache_ratio=0.5, chunks=2)) as c:
        body = (await c.post(CHAT, json=chat_body("a b c d e f g"), headers=BEARER)).json()
        assert body["usage"]["prompt_tokens"] == 8
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
        assert body["usage"]["completion_tokens"] == 4
        headers = {**BEARER, "x-sim-cached-tokens": "3", "x-sim-chunks": "3",
                   "x-sim-words-per-chunk": "4"}
        body = (await c.post(CHAT, json=chat_body(stream=True, stream_options={
            "include_usage": True}), headers=headers)).text
        usage = sse_data(body)[-2]["usage"]
        assert usage["completion_tokens"] == 12
        assert usage["prompt_tokens_details"]["cached_tokens"] == 3


async def test_chat_thinking_and_max_tokens(client: httpx.AsyncClient) -> None:
    body = chat_body(thinking={"type": "enabled"}, max_tokens=3)
    reply = (await client.post(CHAT, json=body, headers=BEARER)).json()
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"] == "considering hello"
    assert message["content"] == "hello there world"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 5
    assert reply["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}
    events = sse_data((await client.post(CHAT, json={**body, "stream": True},
                                         headers=BEARER)).text)
    assert events[1]["choices"][0]["delta"] == {"reasoning_content": "considering hello"}


async def test_chat_tool_call(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = chat_body("Please call a tool for Paris", tools=tools)
    reply = (await client.post(CHAT, json=body, headers=BEARER)).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"query": "Please call a"}

    events = sse_data((await client.post(CHAT, json={**body, "stream": True},
                                         headers=BEARER)).text)
    first = events[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    args = "".join(e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for e in events[1:-2])
    assert json.loads(args) == {"query": "Please call a"}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    plain = (await client.post(CHAT, json=chat_body("call a tool"), headers=BEARER)).json()
    assert plain["choices"][0]["finish_reason"] == "stop"


async def test_completions_embeddings_models(client: httpx.AsyncClient) -> None:
    reply = (await client.post("/api/paas/v4/completions", headers=BEARER,
                               json={"model": "glm-4", "prompt": "x y"})).json()
    assert reply["object"] == "text_completion"
    assert reply["usage"]["prompt_tokens"] == 3 and reply["usage"]["completion_tokens"] == 10
    stream = sse_data((await client.post("/api/paas/v4/completions", headers=BEARER, json={
        "prompt": "x y", "stream": True, "stream_options": {"include_usage": True}})).text)
    assert "".join(e["choices"][0]["text"] for e in stream[:5]) == reply["choices"][0]["text"]
    assert stream[-2]["usage"]["total_tokens"] == 13 and stream[-1] == "[DONE]"

    emb = (await client.post("/api/paas/v4/embeddings", headers=BEARER,
                             json={"model": "embedding-3", "input": ["a b", "c"]})).json()
    assert emb["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vectors = [d["embedding"] for d in emb["data"]]
    assert len(vectors[0]) == 16 and vectors[0] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-4)
    again = (await client.post("/api/paas/v4/embeddings", headers=BEARER,
                               json={"input": "a b", "dimensions": 4})).json()
    assert len(again["data"][0]["embedding"]) == 4

    models = (await client.get("/api/paas/v4/models", headers=BEARER)).json()
    assert [m["id"] for m in models["data"]][:2] == ["glm-4.7", "glm-4.6"]
    coding = await client.get("/api/coding/paas/v4/models", headers=BEARER)
    assert coding.status_code == 200


async def test_openai_auth(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"x-api-key": "k"}):
        response = await client.post(CHAT, json=chat_body(), headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "1001"
    async with client_for(SimulatorSettings(expect_key="right")) as c:
        wrong = await c.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "1000"
        ok = await c.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer right"})
        assert ok.status_code == 200


async def test_bad_requests_and_unknown_routes(client: httpx.AsyncClient) -> None:
    bad = await client.post(CHAT, content=b"{not json", headers=BEARER)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "1214"
    missing = await client.post(CHAT, json={"model": "glm-4.7"}, headers=BEARER)
    assert missing.status_code == 400
    assert (await client.get(CHAT, headers=BEARER)).status_code == 405
    assert (await client.get("/api/paas/v4/nope", headers=BEARER)).status_code == 404


# ---- the app: Anthropic routes --------------------------------------------------------------


def anthropic_body(**extra: Any) -> dict[str, Any]:
    return {"model": "glm-4.7", "max_tokens": 1024, "system": "be nice",
            "messages": [{"role": "user", "content": "hello there world"}], **extra}


async def test_anthropic_message_and_count_tokens() -> None:
    async with client_for(SimulatorSettings(cache_ratio=0.5)) as c:
        reply = (await c.post(MESSAGES, json=anthropic_body(), headers=XKEY)).json()
        assert reply["type"] == "message" and reply["stop_reason"] == "end_turn"
        assert reply["content"][0]["type"] == "text"
        assert len(reply["content"][0]["text"].split()) == 10
        assert reply["usage"] == {"input_tokens": 3, "output_tokens": 10,
                                  "cache_read_input_tokens": 3,
                                  "cache_creation_input_tokens": 0}
        count = await c.post(MESSAGES + "/count_tokens", json=anthropic_body(), headers=XKEY)
        assert count.json() == {"input_tokens": 6}


async def test_anthropic_stream_event_sequence(client: httpx.AsyncClient) -> None:
    body = anthropic_body(stream=True, thinking={"type": "enabled", "budget_tokens": 100})
    response = await client.post(MESSAGES, json=body, headers=XKEY)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_stop", "content_block_start",
                     *["content_block_delta"] * 5, "content_block_stop", "message_delta",
                     "message_stop"]
    assert all(data["type"] == name for name, data in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 6
    assert events[-2][1]["usage"] == {"output_tokens": 12}
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    text = "".join(d["delta"]["text"] for n, d in events if d.get("index") == 1
                   and n == "content_block_delta")
    assert len(text.split()) == 10


async def test_anthropic_tool_use_stream(client: httpx.AsyncClient) -> None:
    body = anthropic_body(stream=True, tools=[{"name": "lookup", "input_schema": {}}],
                          messages=[{"role": "user", "content": "call a tool please"}])
    events = sse_events((await client.post(MESSAGES, json=body, headers=XKEY)).text)
    assert events[1][1]["content_block"]["type"] == "tool_use"
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == {"query": "call a tool"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_auth(client: httpx.AsyncClient) -> None:
    bearer = await client.post(MESSAGES, json=anthropic_body(), headers=BEARER)
    assert bearer.status_code == 404 and bearer.headers["content-type"].startswith("text/html")
    assert "404 Not Found" in bearer.text
    none = await client.post(MESSAGES, json=anthropic_body())
    assert none.status_code == 401 and none.json()["error"]["type"] == "authentication_error"
    both = await client.post(MESSAGES, json=anthropic_body(), headers={**BEARER, **XKEY})
    assert both.status_code == 200


# ---- the app: limits, faults, stats ---------------------------------------------------------


async def test_rate_ceiling_answers_1303_with_retry_after() -> None:
    clock = VirtualTime(1000.0)
    async with client_for(SimulatorSettings(rate_ceiling=2), clock) as c:
        statuses = [(await c.post(CHAT, json=chat_body(), headers=BEARER)) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert statuses[2].json() == {"error": {"code": "1303",
                                                "message": "Rate limit reached for requests"}}
        assert statuses[2].headers["retry-after"] == "1"
        clock.jump(1.01)
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200
        stats = (await c.get("/_stats")).json()
        assert stats["rate_limited"] == {"1303": 1} and stats["ceilings"]["rate"] == 2


async def test_ceiling_schedule_changes_over_time() -> None:
    clock = VirtualTime(1000.0)
    settings = SimulatorSettings(ceiling_schedule=parse_schedule("0:1,60:3"))
    async with client_for(settings, clock) as c:
        codes = [(await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code
                 for _ in range(3)]
        assert codes == [200, 429, 429]
        clock.jump(61)
        codes = [(await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]


async def test_concurrency_ceiling_answers_1302_while_a_stream_is_open() -> None:
    async with client_for(SimulatorSettings(concurrency_ceiling=1), VirtualTime(1000.0)) as c:
        slow = asyncio.create_task(c.post(CHAT, json=chat_body(stream=True), headers={
            **BEARER, "x-sim-ttft-ms": "300"}))
        # Wait until the simulator holds the stream (no timed sleep: it is open once /_stats
        # counts it; the stream then stays open for its 300 ms time to first token).
        for _ in range(1000):
            if (await c.get("/_stats")).json()["in_flight"] == 1:
                break
            await asyncio.sleep(0)
        else:
            pytest.fail("the stream never opened")
        second = await c.post(CHAT, json=chat_body(), headers=BEARER)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "1302"
        assert second.json()["error"]["message"].startswith("High concurrency usage")
        stats = (await c.get("/_stats")).json()
        assert stats["in_flight"] == 1
        assert (await slow).status_code == 200
        stats = (await c.get("/_stats")).json()
        assert stats["in_flight"] == 0 and stats["peak_in_flight"] == 1
        assert (await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 200


async def test_fail_rate_injects_5xx() -> None:
    async with client_for(SimulatorSettings(fail_rate=1.0)) as c:
        statuses = {(await c.post(CHAT, json=chat_body(), headers=BEARER)).status_code
                    for _ in range(20)}
        assert statuses == {500, 502}
        assert (await c.get("/_stats")).json()["events"]["injected_fault"] == 20


async def test_forced_status_and_429_codes(client: httpx.AsyncClient) -> None:
    gateway = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-status": "502"})
    assert gateway.status_code == 502 and "<html>" in gateway.text
    server = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-status": "500"})
    assert server.status_code == 500 and server.json()["error"]["code"] == "500"
    congestion = await client.post(CHAT, json=chat_body(), headers={
        **BEARER, "x-sim-429-code": "1312", "x-sim-retry-after": "7"})
    assert congestion.status_code == 429 and congestion.json()["error"]["code"] == "1312"
    assert congestion.headers["retry-after"] == "7"
    weekly = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-429-code": "1310"})
    assert weekly.json()["error"]["code"] == "1310" and "next_reset_time" in weekly.json()["error"]
    plain = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-status": "429"})
    assert plain.json()["error"]["code"] == "1303"
    stats = (await client.get("/_stats")).json()
    assert stats["rate_limited"] == {"1303": 1, "1310": 1, "1312": 1}


async def test_empty_truncated_no_usage(client: httpx.AsyncClient) -> None:
    empty = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-empty": "1"})
    assert empty.status_code == 200 and empty.content == b""
    empty_stream = await client.post(CHAT, json=chat_body(stream=True),
                                     headers={**BEARER, "x-sim-empty": "1"})
    assert empty_stream.status_code == 200 and empty_stream.content == b""
    cut = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-truncate": "1"})
    with pytest.raises(ValueError):
        json.loads(cut.content)
    cut_stream = await client.post(CHAT, json=chat_body(stream=True), headers={
        **BEARER, "x-sim-truncate": "1"})
    events = sse_data(cut_stream.text)
    assert len(events) == 6 and "[DONE]" not in events
    no_usage = await client.post(CHAT, json=chat_body(stream=True, stream_options={
        "include_usage": True}), headers={**BEARER, "x-sim-no-usage": "1"})
    assert not any("usage" in e for e in sse_data(no_usage.text)[:-1])
    plain = await client.post(CHAT, json=chat_body(), headers={**BEARER, "x-sim-no-usage": "1"})
    assert "usage" not in plain.json()


async def test_reset_after_chunks_raises_a_protocol_error_in_process(
    client: httpx.AsyncClient,
) -> None:
    for path, body, headers in (
        (CHAT, chat_body(stream=True), {**BEARER, "x-sim-reset-after-chunks": "2"}),
        (CHAT, chat_body(), {**BEARER, "x-sim-reset-after-chunks": "0"}),
        (MESSAGES, anthropic_body(stream=True), {**XKEY, "x-sim-reset-after-chunks": "1"}),
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(path, json=body, headers=headers)
    stats = (await client.get("/_stats")).json()
    assert stats["events"]["reset"] == 3 and stats["in_flight"] == 0


async def test_reset_after_chunks_truncates_the_body() -> None:
    app = create_simulator_app(SimulatorSettings(), VirtualTime(1000.0))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as c:
        response = await c.post(CHAT, json=chat_body(stream=True), headers={
            **BEARER, "x-sim-reset-after-chunks": "2"})
        events = sse_data(response.text)
        assert len(events) == 3 and "[DONE]" not in events
        anthropic = await c.post(MESSAGES, json=anthropic_body(stream=True), headers={
            **XKEY, "x-sim-reset-after-chunks": "1"})
        assert "message_stop" not in anthropic.text
        assert anthropic.text.count("event: content_block_delta") == 1
        whole = await c.post(CHAT, json=chat_body(), headers={
            **BEARER, "x-sim-reset-after-chunks": "0"})
        assert 0 < len(whole.content) < int(whole.headers["content-length"])


async def test_stats_record_last_request_without_secrets(client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json=chat_body(stream=True, stream_options={"include_usage": True}),
                      headers={**BEARER, "x-request-id": "req-42"})
    last = (await client.get("/_stats")).json()["last_request"]
    assert last["authorization_present"] and last["authorization_scheme"] == "Bearer"
    assert last["authorization_sha256"] == hashlib.sha256(b"sk-upstream").hexdigest()
    assert not last["x_api_key_present"] and last["x_request_id"] == "req-42"
    assert last["include_usage"] is True and last["stream"] is True
    assert "sk-upstream" not in json.dumps(last)

    await client.post(MESSAGES, json=anthropic_body(), headers=XKEY)
    stats = (await client.get("/_stats")).json()
    assert stats["last_request"]["x_api_key_sha256"] == hashlib.sha256(b"sk-upstream").hexdigest()
    assert stats["requests"] == {CHAT: {"200": 1}, MESSAGES: {"200": 1}}
    assert stats["requests_total"] == 2 and len(stats["recent_requests"]) == 2
    assert (await client.post("/_stats/reset")).json() == {"status": "reset"}
    stats = (await client.get("/_stats")).json()
    assert stats["requests_total"] == 0 and stats["last_request"] is None


async def test_live_config(client: httpx.AsyncClient) -> None:
    changed = await client.post("/_config", json={"rate_ceiling": 1, "chunks": 2})
    assert changed.status_code == 200 and changed.json()["chunks"] == 2
    first = (await client.post(CHAT, json=chat_body(), headers=BEARER)).json()
    assert first["usage"]["completion_tokens"] == 4
    assert (await client.post(CHAT, json=chat_body(), headers=BEARER)).status_code == 429
    rejected = await client.post("/_config", json={"expect_key": "x"})
    assert rejected.status_code == 400
    assert (await client.post("/_config", json={"chunks": 0})).status_code == 400
    schedule = await client.post("/_config", json={"ceiling_schedule": "0:5"})
    assert schedule.json()["ceiling_schedule"] == [[0.0, 5.0]]


async def test_anthropic_route_errors_use_the_anthropic_envelope() -> None:
    async with client_for(SimulatorSettings(rate_ceiling=1), VirtualTime(1000.0)) as c:
        assert (await c.post(MESSAGES, json=anthropic_body(), headers=XKEY)).status_code == 200
        limited = await c.post(MESSAGES, json=anthropic_body(), headers=XKEY)
        assert limited.status_code == 429 and "retry-after" in limited.headers
        assert limited.json() == {"type": "error", "error": {
            "type": "rate_limit_error", "code": "1303",
            "message": "Rate limit reached for requests"}}
        gateway = await c.post(MESSAGES, json=anthropic_body(), headers={
            **XKEY, "x-sim-status": "502"})
        assert gateway.status_code == 502 and "<html>" in gateway.text
