"""Token accounting in-process: the app in front of the simulator (httpx.ASGITransport) or a
scripted upstream (httpx.MockTransport); exact token and cost counters, model labels, the log
line, the switches (TOKEN_COUNTING_ENABLED, TOKENIZER_ENCODING, PRICING_FILE, PEAK_HOURS) and
the peak tier with a fixed wall clock.

Expected numbers are computed here from the simulator's documented rules (prompt tokens =
sum of (1 + words(content)), output = chunks * words_per_chunk) and the shipped price list, not from
the code under test. Tiktoken expectations use tiktoken itself, reading the package's bundled
encoding file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.support.inprocess import InProcessProxy
from tests.support.streams import (
    CASES,
    EOL,
    STREAMS,
    stream_ledger,
    usage_chunk,
    variants,
)
from zai_proxy.accounting.catalog import ModelCatalog
from zai_proxy.accounting.ledger import RESULTS_REMEMBERED, Accounting, Ledger
from zai_proxy.accounting.pricing import ModelPrice, PricingTable
from zai_proxy.accounting.tokenizer import load_tokenizer
from zai_proxy.core.errors import ConfigError
from zai_proxy.observe.metrics import Metrics
from zai_proxy.simulator import SimulatorSettings, anthropic_format, create_simulator_app
from zai_proxy.simulator.generation import plan
from zai_proxy.wire.routing import Router

MILLION = 1_000_000
# The shipped list prices (zai_proxy/data/pricing.json), USD per million tokens.
PRICES: dict[str, dict[str, float]] = {
    "glm-4.7": {"input": 0.60, "output": 2.20, "cache_read": 0.11, "cache_write": 0.0},
    "glm-4.5-air": {"input": 0.20, "output": 1.10, "cache_read": 0.03, "cache_write": 0.0},
    "embedding-3": {"input": 0.07, "output": 0.0, "cache_read": 0.0, "cache_write": 0.0},
}
TOKENS = "zai_proxy_tokens_total"
COST = "zai_proxy_estimated_cost_usd_total"
ACCESS = "zai_proxy.access"
PROMPT = "hello there friend"  # 3 words -> simulator prompt tokens 1 + 3 = 4 per message
STREAM_BODY = (b'{"model": "glm-4.7", "stream": true, '
               b'"messages": [{"role": "user", "content": "x"}]}')


_CL100K = load_tokenizer("cl100k_base")


def count(text: str) -> int:
    """Tokens of `text` in cl100k_base, as tiktoken counts them (the proxy's default)."""
    return _CL100K.count(text)


def heuristic(text: str) -> int:
    return -(-len(text.encode()) // 4)


def chat(content: str = PROMPT, model: str = "glm-4.7", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def reply_words(source: str, n: int) -> str:
    """The simulator's reply text: `n` words cycling through the last user message."""
    vocab = source.split()
    return " ".join(vocab[i % len(vocab)] for i in range(n))


class RecordingTransport(httpx.AsyncBaseTransport):
    """Delegates to `inner` and keeps every request (body read) it forwarded."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.seen.append(request)
        return await self.inner.handle_async_request(request)


class Proxy(InProcessProxy):
    """The app in front of the simulator (or `transport`), recording what went upstream."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None,
                 sim: SimulatorSettings | None = None, **env: str) -> None:
        inner = transport or httpx.ASGITransport(create_simulator_app(sim or SimulatorSettings()))
        self.upstream = RecordingTransport(inner)
        super().__init__(self.upstream, {"ZAI_API_KEY": "upstream-key", "PEAK_HOURS": "off",
                                         "TOKEN_COUNTING_ENABLED": "true", **env})

    def value(self, name: str, direction: str, model: str = "glm-4.7", source: str = "upstream",
              tier: str = "standard") -> float | None:
        return self.registry.get_sample_value(name, {
            "direction": direction, "model": model, "source": source, "pricing_tier": tier,
            "deployment_variant": "production"})

    def tokens(self, direction: str, **labels: str) -> float | None:
        return self.value(TOKENS, direction, **labels)

    def cost(self, direction: str, **labels: str) -> float | None:
        return self.value(COST, direction, **labels)

    def series(self, name: str = TOKENS) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of `name` as {sorted labels: value}."""
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    out[tuple(sorted(sample.labels.items()))] = sample.value
        return out


def expected_cost(model: str, counts: dict[str, int], multiplier: float = 1.0
                  ) -> dict[str, float]:
    return {d: n * PRICES[model][d] / MILLION * multiplier for d, n in counts.items()}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if r.name == ACCESS and isinstance(r.msg, dict)]


# --------------------------------------------------------------------------- upstream usage


async def test_chat_non_stream_counts_upstream_usage_and_cost_exactly() -> None:
    proxy = Proxy()
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(model="glm-4.5-air"),
                                     headers={"x-sim-cached-tokens": "1"})
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == 4 and usage["completion_tokens"] == 10
    # prompt_tokens includes the cached ones: input = 4 - 1, cache_read = 1.
    counts = {"input": 3, "output": 10, "cache_read": 1}
    for direction, n in counts.items():
        assert proxy.tokens(direction, model="glm-4.5-air") == n
    for direction, usd in expected_cost("glm-4.5-air", counts).items():
        assert proxy.cost(direction, model="glm-4.5-air") == pytest.approx(usd, rel=1e-12)
    # A zero cache_write is not recorded as a series; nothing is estimated.
    assert proxy.tokens("cache_write", model="glm-4.5-air") is None
    assert all(dict(k)["source"] == "upstream" for k in proxy.series())


async def test_chat_stream_without_include_usage_is_stripped_but_counted() -> None:
    proxy = Proxy(sim=SimulatorSettings(chunks=6, words_per_chunk=3))
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 200
    # The proxy asked the upstream for usage ...
    upstream = json.loads(proxy.upstream.seen[0].content)
    assert upstream["stream_options"] == {"include_usage": True}
    # ... and the client got no usage chunk, still every content chunk and [DONE].
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == reply_words(PROMPT, 18)
    assert proxy.tokens("input") == 4 and proxy.tokens("output") == 18


async def test_chat_stream_with_include_usage_passes_usage_chunk_through() -> None:
    proxy = Proxy()
    body = json.dumps(chat(stream=True, stream_options={"include_usage": True})).encode()
    async with proxy as client:
        response = await client.post("/v1/chat/completions", content=body)
    assert proxy.upstream.seen[0].content == body  # untouched
    events = [json.loads(e.removeprefix("data: ")) for e in response.text.split("\n\n")
              if e and e != "data: [DONE]"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["prompt_tokens"] == 4
    assert proxy.tokens("input") == 4 and proxy.tokens("output") == 10


async def test_anthropic_stream_counts_cache_read_and_cost() -> None:
    proxy = Proxy()
    body = {"model": "glm-4.7", "max_tokens": 100, "stream": True, "system": "be brief",
            "messages": [{"role": "user", "content": PROMPT}]}
    async with proxy as client:
        response = await client.post("/v1/messages", json=body,
                                     headers={"x-sim-cached-tokens": "3"})
    assert response.status_code == 200 and "message_stop" in response.text
    # prompt = words(system) 2 + (1 + 3) = 6; Anthropic's input_tokens excludes the cached 3.
    counts = {"input": 3, "output": 10, "cache_read": 3}
    for direction, n in counts.items():
        assert proxy.tokens(direction) == n
    for direction, usd in expected_cost("glm-4.7", counts).items():
        assert proxy.cost(direction) == pytest.approx(usd, rel=1e-12)


async def test_embeddings_count_input_only() -> None:
    proxy = Proxy()
    async with proxy as client:
        response = await client.post("/v1/embeddings", json={
            "model": "embedding-3", "input": ["one two three", "four"]})
    assert response.json()["usage"]["prompt_tokens"] == 4
    assert proxy.tokens("input", model="embedding-3") == 4
    assert proxy.tokens("output", model="embedding-3") == 0
    assert proxy.cost("input", model="embedding-3") == pytest.approx(4 * 0.07 / MILLION)


async def test_errors_and_uncounted_routes_count_nothing() -> None:
    proxy = Proxy()
    async with proxy as client:
        failed = await client.post("/v1/chat/completions", json=chat(),
                                   headers={"x-sim-status": "500"})
        limited = await client.post("/v1/chat/completions", json=chat(),
                                    headers={"x-sim-status": "429"})
        models = await client.get("/v1/models")
    assert failed.status_code == 500 and limited.status_code == 429
    assert models.status_code == 200
    assert proxy.series() == {}


# --------------------------------------------------------------------------- model labels


@pytest.mark.parametrize(("model", "label"), [
    ("GLM-4.7", "glm-4.7"),           # case-insensitive match keeps the configured spelling
    ("mystery-model-9000", "other"),  # unknown: bounded label
    ("my-glm", "my-glm"),             # configured via MODELS
])
async def test_model_label_is_bounded(model: str, label: str) -> None:
    proxy = Proxy(MODELS="my-glm")
    async with proxy as client:
        await client.post("/v1/chat/completions", json=chat(model=model))
    labels = {dict(k)["model"] for k in proxy.series()}
    assert labels == {label}
    # Unknown and extra models are priced like the fallback model (glm-4.7).
    assert proxy.cost("output", model=label) == pytest.approx(10 * 2.20 / MILLION)


async def test_request_without_model_uses_the_default_model_label() -> None:
    proxy = Proxy(TOKENIZER_MODEL="glm-4.5-air")
    async with proxy as client:
        await client.post("/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": PROMPT}]})
    assert proxy.tokens("input", model="glm-4.5-air") == 4
    assert proxy.cost("input", model="glm-4.5-air") == pytest.approx(4 * 0.20 / MILLION)


# --------------------------------------------------------------------------- log line


async def test_access_log_line_carries_tokens_sources_and_cost(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    proxy = Proxy()
    async with proxy as client:
        await client.post("/v1/chat/completions", json=chat(model="glm-4.5-air"),
                          headers={"x-request-id": "acct-1", "x-sim-cached-tokens": "2"})
        await client.post("/v1/chat/completions", json=chat(), headers={
            "x-request-id": "acct-2", "x-sim-no-usage": "1"})
        await client.post("/v1/chat/completions", json=chat(),
                          headers={"x-request-id": "acct-3", "x-sim-status": "500"})
    lines = {line["request_id"]: line for line in access_lines(caplog)}
    first = lines["acct-1"]
    assert first["tokens"] == {
        "input": 2, "output": 10, "cache_read": 2, "cache_write": 0,
        "source": dict.fromkeys(("input", "output", "cache_read", "cache_write"), "upstream"),
        "model_label": "glm-4.5-air", "pricing_tier": "standard"}
    cost = sum(expected_cost("glm-4.5-air", {"input": 2, "output": 10, "cache_read": 2}).values())
    assert first["cost_usd"] == pytest.approx(cost, abs=1e-9)
    second = lines["acct-2"]["tokens"]
    assert second["source"]["input"] == second["source"]["output"] == "estimate"
    assert second["output"] == count(reply_words(PROMPT, 10))
    assert lines["acct-2"]["cost_usd"] > 0
    assert "tokens" not in lines["acct-3"] and "cost_usd" not in lines["acct-3"]


# --------------------------------------------------------------------------- switches


async def test_token_counting_disabled_counts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    proxy = Proxy(TOKEN_COUNTING_ENABLED="false")
    async with proxy as client:
        stream = await client.post("/v1/chat/completions", content=STREAM_BODY)
        plain = await client.post("/v1/chat/completions", json=chat())
        health = (await client.get("/health")).json()
    assert stream.status_code == plain.status_code == 200
    # Nothing rewritten: the upstream got the client's body and no usage chunk was asked for.
    assert proxy.upstream.seen[0].content == STREAM_BODY
    assert '"usage"' not in stream.text
    assert proxy.series() == {} and proxy.series(COST) == {}
    assert "tokenizer" not in health
    assert all("tokens" not in line for line in access_lines(caplog))


async def test_missing_encoding_counts_with_labelled_heuristic(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="zai_proxy")
    proxy = Proxy(TOKENIZER_ENCODING="no_such_encoding")
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(),
                                     headers={"x-sim-no-usage": "1"})
        upstream = await client.post("/v1/chat/completions", json=chat())
        health = (await client.get("/health")).json()
    assert response.status_code == upstream.status_code == 200
    assert health["status"] == "ok"
    assert health["tokenizer"]["source"] == "heuristic"
    assert "no_such_encoding" in health["tokenizer"]["warning"]
    warnings = [r for r in caplog.records if "heuristic" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    # ceil(utf8 bytes / 4) of "user\n<content>" plus 3 per message and 3 for the reply.
    assert proxy.tokens("input", source="heuristic") == heuristic("user\n" + PROMPT) + 6
    assert proxy.tokens("output", source="heuristic") == heuristic(reply_words(PROMPT, 10))
    # Upstream usage stays upstream even when only the heuristic is available.
    assert proxy.tokens("input") == 4 and proxy.tokens("output") == 10


async def test_pricing_file_override(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {
        "glm-4.7": {"output": 10.0},
        "house-model": {"input": 1.5, "output": 3.0, "cache_read": 0.5}}}))
    proxy = Proxy(PRICING_FILE=str(path))
    async with proxy as client:
        await client.post("/v1/chat/completions", json=chat())
        await client.post("/v1/chat/completions", json=chat(model="house-model"),
                          headers={"x-sim-cached-tokens": "1"})
    # Merged per direction: glm-4.7 keeps its default input price, output is the file's.
    assert proxy.cost("input") == pytest.approx(4 * 0.60 / MILLION)
    assert proxy.cost("output") == pytest.approx(10 * 10.0 / MILLION)
    # A model only the file names is known (its own label) and priced from the file.
    assert proxy.tokens("input", model="house-model") == 3
    assert proxy.cost("input", model="house-model") == pytest.approx(3 * 1.5 / MILLION)
    assert proxy.cost("cache_read", model="house-model") == pytest.approx(1 * 0.5 / MILLION)
    assert proxy.cost("output", model="house-model") == pytest.approx(10 * 3.0 / MILLION)


async def test_v1_models_lists_the_configured_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"house-model": {"input": 1.5, "output": 3.0}}}))
    proxy = Proxy(PRICING_FILE=str(path), MODELS="my-glm")
    async with proxy as client:
        models = (await client.get("/v1/models")).json()
    ids = [m["id"] for m in models["data"]]
    assert "my-glm" in ids and "house-model" in ids and "glm-4.7" in ids


def test_invalid_pricing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"glm-4.7": {"output": -1}}}))
    with pytest.raises(ConfigError, match="PRICING_FILE"):
        Proxy(PRICING_FILE=str(path))


async def test_peak_hours_all_day_prices_every_request_at_the_multiplier() -> None:
    # start == end is the whole day: deterministic whatever the wall clock says.
    proxy = Proxy(PEAK_HOURS="00:00-00:00", PEAK_TIMEZONE="Asia/Shanghai", PEAK_MULTIPLIER="3")
    async with proxy as client:
        await client.post("/v1/chat/completions", json=chat())
    assert proxy.tokens("input", tier="peak") == 4
    assert proxy.cost("output", tier="peak") == pytest.approx(10 * 2.20 * 3 / MILLION)
    assert proxy.tokens("input", tier="standard") is None


# --------------------------------------------------------------------------- estimates


async def test_no_usage_non_stream_is_estimated_with_tiktoken() -> None:
    proxy = Proxy()
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(),
                                     headers={"x-sim-no-usage": "1"})
    text = response.json()["choices"][0]["message"]["content"]
    assert proxy.tokens("input", source="estimate") == count("user\n" + PROMPT) + 6
    assert proxy.tokens("output", source="estimate") == count(text)
    duration = proxy.registry.get_sample_value(
        "zai_proxy_token_count_duration_seconds_count", {"deployment_variant": "production"})
    assert duration == 1


async def test_truncated_stream_estimates_output_from_what_was_streamed() -> None:
    proxy = Proxy(sim=SimulatorSettings(chunks=8))
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True),
                                     headers={"x-sim-truncate": "1"})
    chunks = [json.loads(e.removeprefix("data: ")) for e in response.text.split("\n\n") if e]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == reply_words(PROMPT, 16)
    assert proxy.tokens("output", source="estimate") == count(text)
    assert proxy.tokens("input", source="estimate") == count("user\n" + PROMPT) + 6


async def test_anthropic_reset_keeps_upstream_input_and_estimates_output() -> None:
    # The simulator's own event bytes, cut after 3 deltas by a connection reset.
    gen = plan(prompt_tokens=4, source=PROMPT.split(), chunks=8, words_per_chunk=2,
               cached_tokens=0)
    events = anthropic_format.stream(gen, "glm-4.7", "r1", with_usage=True)
    sent = events.head + b"".join(events.pieces[:3])

    async def body() -> AsyncIterator[bytes]:
        yield events.head
        for piece in events.pieces[:3]:
            yield piece
        raise httpx.RemoteProtocolError("peer closed connection")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=body())

    proxy = Proxy(transport=httpx.MockTransport(handler))
    request = {"model": "glm-4.7", "max_tokens": 100, "stream": True,
               "messages": [{"role": "user", "content": PROMPT}]}
    async with proxy as client:
        response = await client.post("/v1/messages", json=request)
    assert response.content.startswith(sent)
    assert b"event: error" in response.content[len(sent):]
    streamed = "".join(gen.pieces[:3])
    assert streamed == reply_words(PROMPT, 6)
    # message_start already reported the input; its output (1) is not the output.
    assert proxy.tokens("input") == 4
    assert proxy.tokens("output", source="estimate") == count(streamed)
    assert proxy.tokens("output") is None
    # Only the output was counted with the tokenizer, and that counting was timed.
    assert proxy.registry.get_sample_value(
        "zai_proxy_token_count_duration_seconds_count", {"deployment_variant": "production"}) == 1


# --------------------------------------------------------------------------- relay bytes


def split_stream(data: bytes, size: int) -> Callable[[httpx.Request], httpx.Response]:
    """An upstream that sends `data` as an SSE stream in reads of `size` bytes."""

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i:i + size]
            await asyncio.sleep(0)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=pieces())

    return handler


USAGE_CHUNK = (b'data: {"id":"c1","object":"chat.completion.chunk","model":"glm-4.7",'
               b'"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,'
               b'"prompt_tokens_details":{"cached_tokens":2}}}\r\n\r\n')
STREAM_HEAD = (b': keep-alive\r\n\r\n'
               b'data: {"id":"c1","object":"chat.completion.chunk","model":"glm-4.7",\r\n'
               b'data: "choices":[{"index":0,"delta":{"content":"h\xc3\xa9llo"}}]}\r\n\r\n'
               b'data: {"id":"c1","object":"chat.completion.chunk","model":"glm-4.7",'
               b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n')
STREAM_DONE = b"data: [DONE]\r\n\r\n"


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


@pytest.mark.parametrize(("size", "crlf"), [
    *((size, crlf) for size in (1, 2, 3, 7, 64, 10_000) for crlf in (False, True)),
])
async def test_stripping_removes_exactly_the_usage_chunk_whatever_the_read_sizes(
        size: int, crlf: bool) -> None:
    head, usage, done = (STREAM_HEAD, USAGE_CHUNK, STREAM_DONE) if crlf else (
        lf(STREAM_HEAD), lf(USAGE_CHUNK), lf(STREAM_DONE))
    proxy = Proxy(transport=httpx.MockTransport(split_stream(head + usage + done, size)))
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.content == head + done
    assert proxy.tokens("input") == 5 and proxy.tokens("cache_read") == 2
    assert proxy.tokens("output") == 3


async def test_stripping_crlf_split_at_cr() -> None:
    upstream = STREAM_HEAD + USAGE_CHUNK + STREAM_DONE
    cut = len(STREAM_HEAD + USAGE_CHUNK) - 1  # read ends on the CR of the usage chunk's CRLF

    async def pieces() -> AsyncIterator[bytes]:
        yield upstream[:cut]
        yield upstream[cut:]

    proxy = Proxy(transport=httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=pieces())))
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.content == STREAM_HEAD + STREAM_DONE


# --------------------------------------------------------------------------- peak tier


def test_ledger_prices_by_the_tier_at_its_wall_clock() -> None:
    pricing = PricingTable.default()  # peak 14:00-18:00 Asia/Shanghai, x2
    now = {"t": datetime(2026, 1, 5, 7, 0, tzinfo=UTC)}  # 15:00 in Beijing: peak
    registry = CollectorRegistry()
    metrics = Metrics(registry, "canary")
    accounting = Accounting(tokenizer=load_tokenizer("cl100k_base"), pricing=pricing,
                            catalog=ModelCatalog.from_pricing(pricing), metrics=metrics,
                            default_model="glm-4.7", wall_clock=lambda: now["t"])
    route = Router("https://up/api/paas/v4", "https://up/api/anthropic").resolve(
        "POST", "/v1/chat/completions")
    answer = {"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}

    def settle() -> Any:
        payload = chat()
        ledger = accounting.open(route, payload, json.dumps(payload).encode())
        assert ledger is not None
        ledger.body(answer)
        return asyncio.run(ledger.settle())

    peak = settle()
    now["t"] = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # 18:00 in Beijing: the window is over
    standard = settle()
    assert peak.tier == "peak" and standard.tier == "standard"
    assert standard.cost_usd == pytest.approx((1000 * 0.60 + 500 * 2.20) / MILLION)
    assert peak.cost_usd == pytest.approx(2 * standard.cost_usd)

    def sample(name: str, direction: str, tier: str) -> float | None:
        return registry.get_sample_value(name, {
            "direction": direction, "model": "glm-4.7", "source": "upstream",
            "pricing_tier": tier, "deployment_variant": "canary"})

    assert sample(TOKENS, "output", "peak") == sample(TOKENS, "output", "standard") == 500
    assert sample(COST, "output", "peak") == pytest.approx(500 * 2.20 * 2 / MILLION)
    assert sample(COST, "output", "standard") == pytest.approx(500 * 2.20 / MILLION)


# --------------------------------------------------------------------------- Ledger on any split



@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("ending", ["lf", "crlf", "cr"])
@hsettings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=30), strip=st.booleans())
async def test_ledger_relays_exactly_on_any_split(name: str, ending: str, cuts: list[int],
                                                  strip: bool) -> None:
    """Relayed bytes are the stream (minus the usage chunk the proxy asked for), and the usage
    is the upstream's, wherever the reads end and whatever the line endings."""
    surface, usage, _, has_chunk = CASES[name]
    stream = variants((STREAMS / name).read_bytes())[ending]
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    ledger = stream_ledger(surface, strip)
    relayed = b"".join(ledger.relay(stream[a:b]) for a, b in itertools.pairwise(edges))
    relayed += ledger.flush()
    expected = stream
    if strip and has_chunk and surface == "openai":
        expected = stream.replace(usage_chunk(stream, EOL[ending]), b"", 1)
    assert relayed == expected
    report = await ledger.settle()
    if usage is not None:
        assert report.counts["output"] == usage.output and report.sources["output"] == "upstream"


# --------------------------------------------------------------------------- route table


def _async_upstream(results: dict[str, dict[str, Any]]) -> httpx.MockTransport:
    """Z.AI's async chat: submission answers a task id, the result endpoint the completion."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/async/chat/completions"):
            return httpx.Response(200, json={"id": "task-1", "model": "glm-4.7",
                                             "task_status": "PROCESSING"})
        task = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json=results[task])

    return httpx.MockTransport(answer)


async def test_async_chat_is_counted_once_from_its_result() -> None:
    done = {"id": "task-1", "model": "glm-4.5-air", "task_status": "SUCCESS",
            "choices": [{"message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30}}
    pending = {"id": "task-2", "model": "glm-4.7", "task_status": "PROCESSING"}
    # A result that reports no prompt tokens: nothing to estimate them from (the GET has none).
    bare = {"id": "task-3", "model": "glm-4.7", "task_status": "SUCCESS",
            "usage": {"prompt_tokens": 0, "completion_tokens": 5}}
    proxy = Proxy(_async_upstream({"task-1": done, "task-2": pending, "task-3": bare}))
    async with proxy as client:
        submitted = await client.post("/v1/async/chat/completions", json=chat())
        assert submitted.status_code == 200 and proxy.series() == {}  # a task id: nothing yet
        polls = [await client.get("/v1/async-result/task-2"),
                 await client.get("/v1/async-result/task-1"),
                 await client.get("/v1/async-result/task-1"),  # polled again once finished
                 await client.get("/v1/async-result/task-3")]
    assert [p.status_code for p in polls] == [200] * 4
    assert polls[2].json() == done  # relayed unchanged
    assert proxy.tokens("input", model="glm-4.5-air") == 120
    assert proxy.tokens("output", model="glm-4.5-air") == 30
    assert proxy.cost("output", model="glm-4.5-air") == pytest.approx(30 * 1.10 / MILLION)
    assert proxy.tokens("output") == 5 and not proxy.tokens("input")
    assert sum(proxy.series().values()) == 155  # counted once, never estimated
    assert {dict(labels)["source"] for labels in proxy.series()} == {"upstream"}


async def test_path_parameters_cannot_route_around_accounting() -> None:
    proxy = Proxy(PASSTHROUGH_UNKNOWN="1")
    async with proxy as client:
        sneaky = await client.post("/v1/chat/completions;x", json=chat())
        counted = await client.post("/v1/chat/completions", json=chat())
    assert sneaky.status_code == 404 and counted.status_code == 200
    assert len(proxy.upstream.seen) == 1
    assert proxy.tokens("input") == 4


async def test_a_stream_request_answered_with_whole_json_counts_its_usage() -> None:
    answer = {"choices": [{"message": {"content": "hi"}}],
              "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
    proxy = Proxy(httpx.MockTransport(lambda r: httpx.Response(200, json=answer)))
    async with proxy as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.json() == answer
    assert (proxy.tokens("input"), proxy.tokens("output")) == (11, 7)


# --------------------------------------------------------------------------- output estimates
# A non-stream answer without usage: the output is estimated from everything the model
# generated, not only `content`. Each case leaves out the other kinds, so dropping the code for
# one kind changes its count.


def _settle_answer(surface: str, answer: dict[str, Any]) -> Any:
    pricing = PricingTable.default()
    acc = Accounting(tokenizer=_CL100K, pricing=pricing,
                     catalog=ModelCatalog.from_pricing(pricing),
                     metrics=Metrics(CollectorRegistry(), "t"), default_model="glm-4.7")
    path = "/v1/messages" if surface == "anthropic" else "/v1/chat/completions"
    route = Router("http://u/api/paas/v4", "http://u/api/anthropic").resolve("POST", path)
    payload = chat()
    ledger = acc.open(route, payload, json.dumps(payload).encode())
    assert ledger is not None
    ledger.body(answer)
    report = asyncio.run(ledger.settle())
    assert report.sources["output"] == "estimate"
    return report


REASONING = "First compare the two numbers, then pick the larger one carefully."
ANSWER = "The larger number is forty two."
ARGUMENTS = '{"city": "Paris", "unit": "celsius", "days": 3, "alerts": true, "region": null}'


@pytest.mark.parametrize(("message", "generated"), [
    ({"content": ANSWER}, [ANSWER]),
    ({"reasoning_content": REASONING, "content": ANSWER}, [REASONING, ANSWER]),
    ({"reasoning_content": REASONING, "content": None}, [REASONING]),
    ({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
     ["get_weather", ARGUMENTS]),
    ({"content": ANSWER, "tool_calls": [
        {"function": {"name": "lookup", "arguments": "{}"}},
        {"function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
     [ANSWER, "lookup", "{}", "get_weather", ARGUMENTS]),
], ids=["content", "reasoning+content", "reasoning-only", "tool-call", "content+two-calls"])
def test_openai_answer_without_usage_estimates_every_generated_part(
        message: dict[str, Any], generated: list[str]) -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", **message}}]}
    report = _settle_answer("openai", answer)
    assert report.counts["output"] == count("\n".join(generated))


def test_completions_answer_without_usage_estimates_the_text() -> None:
    report = _settle_answer("openai", {"choices": [{"index": 0, "text": ANSWER}]})
    assert report.counts["output"] == count(ANSWER)


@pytest.mark.parametrize(("blocks", "generated"), [
    ([{"type": "text", "text": ANSWER}], [ANSWER]),
    ([{"type": "thinking", "thinking": REASONING, "signature": "sig"},
      {"type": "text", "text": ANSWER}], [REASONING, ANSWER]),
    ([{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
       "input": json.loads(ARGUMENTS)}],
     ["get_weather", ARGUMENTS]),
    ([{"type": "thinking", "thinking": REASONING},
      {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
     [REASONING, "get_weather", "{}"]),
], ids=["text", "thinking+text", "tool-use", "thinking+tool-use"])
def test_anthropic_answer_without_usage_estimates_every_generated_block(
        blocks: list[dict[str, Any]], generated: list[str]) -> None:
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "content": blocks}
    report = _settle_answer("anthropic", answer)
    # The tool input counts as the JSON the model generated (what the API sent on the wire).
    assert report.counts["output"] == count("\n".join(generated))


# --------------------------------------------------------------------------- settle edges
# Found by mutation testing (scripts/mutation.py): each fails against a mutant of accounting.py.


def _duration(ledger_registry: CollectorRegistry, suffix: str = "count") -> float | None:
    return ledger_registry.get_sample_value(
        f"zai_proxy_token_count_duration_seconds_{suffix}", {"deployment_variant": "t"})


def _open(surface: str, payload: dict[str, Any]) -> tuple[Any, CollectorRegistry]:
    pricing = PricingTable.default()
    registry = CollectorRegistry()
    acc = Accounting(tokenizer=_CL100K, pricing=pricing,
                     catalog=ModelCatalog.from_pricing(pricing),
                     metrics=Metrics(registry, "t"), default_model="glm-4.7")
    path = "/v1/messages" if surface == "anthropic" else "/v1/chat/completions"
    route = Router("http://u/api/paas/v4", "http://u/api/anthropic").resolve("POST", path)
    ledger = acc.open(route, payload, json.dumps(payload).encode())
    assert ledger is not None
    return ledger, registry


ANTHROPIC_REQUEST = {"model": "glm-4.7", "max_tokens": 64, "system": "Be terse and exact.",
                     "messages": [{"role": "user", "content": [
                         {"type": "text", "text": "Name three prime numbers."}]}]}


def test_anthropic_answer_with_usage_counts_it_and_estimates_nothing() -> None:
    ledger, registry = _open("anthropic", ANTHROPIC_REQUEST)
    ledger.body({"type": "message", "content": [{"type": "text", "text": "2, 3, 5"}],
                 "usage": {"input_tokens": 12, "output_tokens": 7,
                           "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}})
    report = asyncio.run(ledger.settle())
    assert report.counts == {"input": 12, "output": 7, "cache_read": 3, "cache_write": 2}
    assert set(report.sources.values()) == {"upstream"}
    assert _duration(registry) == 0  # nothing was counted with the tokenizer


def test_anthropic_input_estimate_uses_the_anthropic_prompt() -> None:
    from zai_proxy.accounting.estimate import (
        anthropic_prompt_overhead,
        anthropic_prompt_text,
        openai_prompt_overhead,
        openai_prompt_text,
    )

    ledger, registry = _open("anthropic", ANTHROPIC_REQUEST)
    ledger.body({"type": "message", "content": [{"type": "text", "text": "2, 3, 5"}]})
    report = asyncio.run(ledger.settle())
    expected = (count(anthropic_prompt_text(ANTHROPIC_REQUEST))
                + anthropic_prompt_overhead(ANTHROPIC_REQUEST))
    assert report.counts["input"] == expected and report.sources["input"] == "estimate"
    # The OpenAI reading of the same payload gives another count: the surface matters.
    assert expected != (count(openai_prompt_text(ANTHROPIC_REQUEST))
                        + openai_prompt_overhead(ANTHROPIC_REQUEST))
    assert report.counts["output"] == count("2, 3, 5")
    assert _duration(registry) == 1
    assert 0 <= (_duration(registry, "sum") or 0) < 5


def test_reported_usage_without_input_estimates_only_the_input() -> None:
    ledger, _ = _open("openai", chat())
    ledger.body({"choices": [{"message": {"content": "fine"}}],
                 "usage": {"prompt_tokens": 0, "completion_tokens": 5}})
    report = asyncio.run(ledger.settle())
    assert report.sources == {"input": "estimate", "output": "upstream",
                              "cache_read": "upstream", "cache_write": "upstream"}
    assert report.counts["input"] == count("user\n" + PROMPT) + 6
    assert report.counts["output"] == 5


def test_empty_answer_without_usage_estimates_zero_output() -> None:
    ledger, _ = _open("openai", chat())
    ledger.body({"choices": [None, {"message": {"content": ""}}]})
    report = asyncio.run(ledger.settle())
    assert report.counts["output"] == 0 and report.sources["output"] == "estimate"


def test_non_object_choices_are_skipped_not_the_end() -> None:
    ledger, _ = _open("openai", chat())
    ledger.body({"choices": ["junk", {"index": 1, "text": ANSWER}]})
    assert asyncio.run(ledger.settle()).counts["output"] == count(ANSWER)


def test_stream_cut_after_its_usage_keeps_the_reported_output() -> None:
    # The usage chunk arrived but [DONE] did not: the stream is incomplete, and the upstream's
    # output count (larger than what the streamed text estimates) is kept as the floor.
    payload = chat(stream=True, stream_options={"include_usage": True})
    ledger, _ = _open("openai", payload)
    ledger.relay(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
                 b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":40}}\n\n')
    ledger.flush()
    report = asyncio.run(ledger.settle())
    assert report.counts["input"] == 9 and report.sources["input"] == "upstream"
    assert report.counts["output"] == 40 and report.sources["output"] == "estimate"


# --------------------------------------------------------------------------- more mutation gaps
# Each test below fails against at least one surviving mutant of accounting.py
# (scripts/mutation.py).

ROUTER = Router("http://u/api/paas/v4", "http://u/api/anthropic")
# A table whose prices have four decimals and a cache_write price (the shipped one has neither).
ODD_PRICES = ModelPrice(input=0.1234, output=2.5, cache_read=0.5, cache_write=1.25)


def _acc(pricing: PricingTable | None = None, registry: CollectorRegistry | None = None,
         clock: Callable[[], datetime] | None = None) -> Accounting:
    table = pricing or PricingTable.default()
    return Accounting(tokenizer=_CL100K, pricing=table,
                      catalog=ModelCatalog.from_pricing(table),
                      metrics=Metrics(registry or CollectorRegistry(), "t"),
                      default_model="glm-4.7",
                      **({"wall_clock": clock} if clock is not None else {}))


def _result_ledger(acc: Accounting, task: str = "task-1", query: str = "") -> Ledger:
    ledger = acc.open(ROUTER.resolve("GET", f"/v1/async-result/{task}", query), None, b"")
    assert ledger is not None
    return ledger


def test_answer_text_skips_non_object_tool_calls() -> None:
    # A tool call that is not an object is skipped (not a crash); the next one still counts.
    report = _settle_answer("openai", {"choices": [{"message": {"tool_calls": [
        "junk", {"function": {"name": "get_weather", "arguments": ARGUMENTS}}]}}]})
    assert report.counts["output"] == count("get_weather\n" + ARGUMENTS)


def test_answer_text_missing_tool_call_fields_count_as_empty() -> None:
    # A function without arguments (or a null name) adds an empty part, not placeholder text.
    report = _settle_answer("openai", {"choices": [{"message": {"tool_calls": [
        {"function": {"name": "lookup"}}, {"function": {"name": None, "arguments": "{}"}}]}}]})
    assert report.counts["output"] == count("lookup\n\n\n{}")


def test_answer_text_tool_use_without_name_counts_its_input_only() -> None:
    report = _settle_answer("anthropic", {"content": [
        {"type": "tool_use", "id": "toolu_1", "input": {"q": 1}}]})
    assert report.counts["output"] == count('\n{"q": 1}')


def test_answer_text_tool_use_string_input_is_counted_as_is() -> None:
    # An input already a string is the generated text itself, not re-encoded as a JSON string.
    raw = '{"city": "Paris", "note": "say \\"hi\\""}'
    report = _settle_answer("anthropic", {"content": [
        {"type": "tool_use", "name": "f", "input": raw}]})
    assert report.counts["output"] == count("f\n" + raw)
    assert count("f\n" + raw) != count("f\n" + json.dumps(raw))


def test_answer_text_tool_use_input_keeps_non_ascii_characters() -> None:
    # json.dumps(ensure_ascii=False): "é" is counted as generated, not as "\u00e9".
    tool_input = {"city": "Zürich", "greeting": "héllo wörld, ça va? 東京"}
    report = _settle_answer("anthropic", {"content": [
        {"type": "tool_use", "name": "f", "input": tool_input}]})
    text = "f\n" + json.dumps(tool_input, ensure_ascii=False)
    assert report.counts["output"] == count(text)
    assert count(text) != count("f\n" + json.dumps(tool_input))


def test_claim_result_remembers_exactly_the_last_results_remembered_tasks() -> None:
    acc = _acc()
    assert all(acc.claim_result(f"t{i}") for i in range(RESULTS_REMEMBERED))
    # Exactly RESULTS_REMEMBERED tasks are remembered: none was forgotten yet.
    assert not acc.claim_result("t0")
    assert acc.claim_result("one-more")  # the (RESULTS_REMEMBERED + 1)th: the oldest goes
    assert acc.claim_result("t0")  # forgotten, so counted again (and "t1" goes)
    assert not acc.claim_result("one-more")  # the newest ones are kept
    assert not acc.claim_result(f"t{RESULTS_REMEMBERED - 1}")
    assert acc.claim_result("t1")


def test_result_ledger_is_openai_and_ignores_the_query_string() -> None:
    acc = _acc()
    first = _result_ledger(acc, query="poll=1")
    assert first.surface == "openai" and first.result_of == "http://u/api/paas/v4/async-result/task-1"
    done = {"model": "glm-4.7", "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    first.body(done)
    assert asyncio.run(first.settle()).counts["input"] == 10
    # The same task polled with another query string is the same task: not charged again.
    again = _result_ledger(acc, query="poll=2")
    again.body(done)
    assert asyncio.run(again.settle()).counts == dict.fromkeys(
        ("input", "output", "cache_read", "cache_write"), 0)


def test_uncharged_result_reports_zero_none_sources_and_its_model_label() -> None:
    acc = _acc(clock=lambda: datetime(2026, 1, 5, 7, 0, tzinfo=UTC))  # peak in Beijing
    ledger = _result_ledger(acc)
    ledger.body({"id": "task-1", "model": "glm-4.5-air", "task_status": "PROCESSING"})
    report = asyncio.run(ledger.settle())
    directions = ("input", "output", "cache_read", "cache_write")
    assert report.counts == dict.fromkeys(directions, 0)
    assert report.sources == dict.fromkeys(directions, "none")
    assert report.cost_usd == 0.0 and isinstance(report.cost_usd, float)
    assert report.model == "glm-4.5-air" and report.tier == "peak"


def test_result_with_zero_input_still_records_the_input_series() -> None:
    # input and output series are recorded even at 0 (cache ones only when non-zero).
    registry = CollectorRegistry()
    ledger = _result_ledger(_acc(registry=registry))
    ledger.body({"model": "glm-4.7", "usage": {"prompt_tokens": 0, "completion_tokens": 5}})
    report = asyncio.run(ledger.settle())
    assert report.counts["input"] == 0 and report.sources["input"] == "upstream"

    def sample(direction: str) -> float | None:
        return registry.get_sample_value(TOKENS, {
            "direction": direction, "model": "glm-4.7", "source": "upstream",
            "pricing_tier": report.tier, "deployment_variant": "t"})

    assert sample("input") == 0 and sample("output") == 5
    assert sample("cache_read") is None and sample("cache_write") is None


def _clocked(times: list[datetime], monkeypatch: pytest.MonkeyPatch
             ) -> tuple[Accounting, list[datetime]]:
    """An Accounting reading `times` in turn, and the instants it computed a tier for."""
    computed: list[datetime] = []
    original = PricingTable.tier_at

    def spy(self: PricingTable, dt: datetime) -> Any:
        computed.append(dt)
        return original(self, dt)

    monkeypatch.setattr(PricingTable, "tier_at", spy)
    clock = iter(times)
    return _acc(clock=lambda: next(clock)), computed


def test_tier_is_computed_once_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    start = datetime(2026, 1, 5, 8, 30, 0, tzinfo=UTC)  # exactly a minute's start
    times = [start, start, start.replace(second=59, microsecond=999_999)]
    acc, computed = _clocked(times, monkeypatch)
    assert [acc.tier() for _ in times] == ["peak"] * 3
    assert computed == [start]  # kept for the rest of that minute


def test_tier_is_recomputed_when_the_next_minute_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    # The peak window ends at 18:00 Beijing (10:00 UTC): a tier cached at 09:59:30.5 is not
    # reused at 10:00:00 exactly.
    before = datetime(2026, 1, 5, 9, 59, 30, 500_000, tzinfo=UTC)
    end = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
    acc, computed = _clocked([before, end, end], monkeypatch)
    assert [acc.tier(), acc.tier(), acc.tier()] == ["peak", "standard", "standard"]
    assert computed == [before, end]


def test_tier_cached_at_a_minute_start_is_not_reused_a_minute_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = datetime(2026, 1, 5, 9, 59, 0, tzinfo=UTC)
    end = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
    acc, computed = _clocked([first, end], monkeypatch)
    assert (acc.tier(), acc.tier()) == ("peak", "standard")
    assert computed == [first, end]


def test_ledger_does_not_strip_unless_asked() -> None:
    # Built directly, a ledger relays the stream untouched: stream_usage defaults to False.
    payload = chat(stream=True)
    body = json.dumps(payload).encode()
    ledger = Ledger(_acc(), "openai", payload, body)
    assert ledger.upstream_body == body
    chunk = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    assert ledger.relay(chunk) == chunk


@pytest.mark.parametrize("model", ["", 5, ["glm-4.5-air"]])
def test_ledger_model_falls_back_to_the_default_unless_a_non_empty_string(model: Any) -> None:
    ledger, _ = _open("openai", chat(model=model))
    assert ledger.model == "glm-4.7"


def test_non_stream_without_an_answer_estimates_zero_output() -> None:
    # No body() (the answer was not JSON): nothing generated is known, so output is 0.
    ledger, _ = _open("openai", chat())
    assert ledger.flush() == b""
    report = asyncio.run(ledger.settle())
    assert report.counts["output"] == 0 and report.sources["output"] == "estimate"
    assert report.counts["cache_read"] == 0 and report.counts["cache_write"] == 0


def test_flush_returns_the_unterminated_last_event_once() -> None:
    ledger = stream_ledger("openai", strip=True)
    head = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    assert ledger.relay(head + b"data: [DO") == head
    assert ledger.relay(b"NE]") == b""
    assert ledger.flush() == b"data: [DONE]"
    assert ledger.flush() == b""


def test_crlf_stream_starting_with_a_blank_line_relays_it() -> None:
    ledger = stream_ledger("openai", strip=True)
    assert ledger.relay(b"\n: hi\r\n\r\n") == b"\n: hi\r\n\r\n"


def test_after_the_dropped_chunk_only_one_lf_is_dropped() -> None:
    ledger = stream_ledger("openai", strip=True)
    usage = USAGE_CHUNK[:-1]  # the read ends on the last CR of the usage chunk
    assert ledger.relay(STREAM_HEAD + usage) == STREAM_HEAD
    assert ledger.relay(b"\n\n" + STREAM_DONE) == b"\n" + STREAM_DONE


def test_after_the_dropped_chunk_a_content_read_loses_its_leading_lf() -> None:
    ledger = stream_ledger("openai", strip=True)
    content = (b'data: {"choices":[{"index":0,"delta":{"content":"more"}}]}\r\n\r\n')
    assert ledger.relay(STREAM_HEAD + USAGE_CHUNK[:-1]) == STREAM_HEAD
    assert ledger.relay(b"\n" + content) == content
    assert ledger.relay(STREAM_DONE) == STREAM_DONE


def test_crlf_stream_cut_short_estimates_every_relayed_content_read() -> None:
    # After the first CR, whole skippable reads are deferred unparsed; cut short, their
    # content is still estimated.
    ledger = stream_ledger("openai", strip=True)
    reads = [b'data: {"model":"glm-4.7","choices":[{"index":0,"delta":{"content":"%s"}}]}\r\n\r\n'
             % word for word in (b"alpha", b"beta", b"gamma")]
    assert b"".join(ledger.relay(r) for r in reads) == b"".join(reads)
    report = asyncio.run(ledger.settle())
    assert report.counts["output"] == count("alphabetagamma")
    assert report.sources["output"] == "estimate"


def test_only_output_estimated_observes_the_count_duration() -> None:
    payload = chat(stream=True, stream_options={"include_usage": True})
    ledger, registry = _open("openai", payload)
    ledger.relay(b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}\n\n')
    report = asyncio.run(ledger.settle())
    assert report.sources["input"] == "upstream" and report.sources["output"] == "estimate"
    assert _duration(registry) == 1


def test_cost_is_rounded_to_nine_decimals_and_prices_cache_write() -> None:
    pricing = PricingTable({"glm-4.7": ODD_PRICES}, fallback_model="glm-4.7")
    ledger = Ledger(_acc(pricing), "anthropic", {"model": "glm-4.7"}, b"{}")
    ledger.body({"usage": {"input_tokens": 1, "output_tokens": 0,
                           "cache_creation_input_tokens": 0}})
    assert asyncio.run(ledger.settle()).cost_usd == 0.000000123  # 0.1234e-6, to 9 decimals
    ledger = Ledger(_acc(pricing), "anthropic", {"model": "glm-4.7"}, b"{}")
    ledger.body({"usage": {"input_tokens": 1000, "output_tokens": 100,
                           "cache_read_input_tokens": 10, "cache_creation_input_tokens": 400}})
    report = asyncio.run(ledger.settle())
    assert report.counts["cache_write"] == 400
    assert report.cost_usd == round((1000 * 0.1234 + 100 * 2.5 + 10 * 0.5 + 400 * 1.25)
                                    / MILLION, 9)
