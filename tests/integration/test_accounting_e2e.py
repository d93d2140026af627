"""Token accounting through the real proxy (a socket, uvicorn) with the simulator upstream.

Every surface is counted exactly (the simulator's usage numbers, read back from the proxy's
/metrics), relayed streams are compared byte for byte with the simulator's own answer to the
same request sent directly, and estimates are checked on streams that were cut short, had no
usage, or lost their client. The last test loads the bundled tiktoken encodings in a fresh
interpreter of the same environment (what `.ci/run` installs) with no network and an empty
TIKTOKEN_CACHE_DIR.

Byte comparisons: the simulator numbers its ids per request (`chatcmpl-sim0000002a`,
`msg_sim...`, `sig_sim...`) and stamps `created` with the current second, so both answers are
normalised on exactly those two fields (`NORMALISE`) before comparing whole byte strings;
every other byte, including the SSE framing, must be identical.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import UPSTREAM_KEY, proxy_env
from tests.support.servers import Process, running_zai_proxy, start_zai_proxy
from zai_proxy.accounting.tokenizer import load_tokenizer

CHUNKS = 6
WORDS = 2  # the simulator's default words per chunk
PROMPT = "explain token accounting briefly"  # 4 words
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be terse"}, {"role": "user", "content": PROMPT}]
PROMPT_TOKENS = (1 + 2) + (1 + 4)  # simulator rule: sum over messages of 1 + words
ANTHROPIC_PROMPT_TOKENS = 2 + (1 + 4)  # Anthropic: words(system) + sum of (1 + words)
NORMALISE = ((re.compile(rb"sim[0-9a-f]{8}"), b"simID"),
             (re.compile(rb'"created": \d+'), b'"created": 0'))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim() -> Iterator[Process]:
    with running_zai_proxy("simulate", "--chunks", str(CHUNKS)) as process:
        yield process


@pytest.fixture(scope="module")
def proxy(sim: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(sim, PEAK_HOURS="off"),
                           ready_path="/ready") as process:
        yield process


# --------------------------------------------------------------------------- helpers


_CL100K = load_tokenizer("cl100k_base")


def count(text: str) -> int:
    """Tokens of `text` in cl100k_base, as tiktoken counts them (the proxy's default)."""
    return _CL100K.count(text)


def normalise(data: bytes) -> bytes:
    for pattern, replacement in NORMALISE:
        data = pattern.sub(replacement, data)
    return data


def reply_text(words: int, source: str = PROMPT) -> str:
    vocab = source.split()
    return " ".join(vocab[i % len(vocab)] for i in range(words))


class Metrics:
    """Token counters read from the proxy's /metrics, as deltas from a snapshot."""

    def __init__(self, proxy: Process) -> None:
        self.proxy = proxy
        self.before = self.read()

    def read(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.proxy.url}/metrics").text
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                out[key] = sample.value
        return out

    def requests(self, snapshot: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return sum(v for (name, _), v in snapshot.items() if name == "zai_proxy_requests_total")

    def settle(self, requests: int = 1) -> None:
        """Wait until `requests` more requests were recorded (the ledger settles before)."""
        target = self.requests(self.before) + requests
        deadline = time.monotonic() + 10
        while self.requests(self.read()) < target:
            assert time.monotonic() < deadline, "the proxy did not record the request"
            time.sleep(0.01)

    def tokens(self) -> dict[tuple[str, str, str], float]:
        """{(direction, model, source): delta} for every token series that moved."""
        after = self.read()
        out: dict[tuple[str, str, str], float] = {}
        for (name, labels), value in after.items():
            if name != "zai_proxy_tokens_total":
                continue
            delta = value - self.before.get((name, labels), 0.0)
            if delta:
                d = dict(labels)
                assert d["pricing_tier"] == "standard"
                out[(d["direction"], d["model"], d["source"])] = delta
        return out


def post_raw(url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
             anthropic_api: bool = False) -> bytes:
    auth = {"x-api-key": "sim-key"} if anthropic_api else {"authorization": "Bearer sim-key"}
    response = httpx.post(url, content=json.dumps(body).encode(), timeout=30,
                          headers={"content-type": "application/json", **auth, **(headers or {})})
    assert response.status_code == 200, response.text
    return response.content


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines()
            if line.startswith("data: {")]


def chat_text(raw: bytes) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in sse_data(raw) if c.get("choices"))


def openai_client(proxy: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused", max_retries=0)


def anthropic_client(proxy: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="unused", max_retries=0)


# --------------------------------------------------------------------------- exact counts


def test_openai_chat_non_stream_exact(proxy: Process, sim: Process) -> None:
    metrics = Metrics(proxy)
    completion = openai_client(proxy).chat.completions.create(
        model="glm-4.7", messages=MESSAGES,
        extra_headers={"x-sim-cached-tokens": "3"})
    metrics.settle()
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == CHUNKS * WORDS
    assert metrics.tokens() == {
        ("input", "glm-4.7", "upstream"): PROMPT_TOKENS - 3,
        ("cache_read", "glm-4.7", "upstream"): 3,
        ("output", "glm-4.7", "upstream"): CHUNKS * WORDS,
    }
    direct = post_raw(f"{sim.url}/api/paas/v4/chat/completions",
                      {"model": "glm-4.7", "messages": MESSAGES}, {"x-sim-cached-tokens": "3"})
    via = httpx.post(f"{proxy.url}/v1/chat/completions",
                     json={"model": "glm-4.7", "messages": MESSAGES},
                     headers={"x-sim-cached-tokens": "3"}).content
    assert normalise(via) == normalise(direct)


def test_openai_stream_without_include_usage_is_the_upstream_stream_minus_usage_chunk(
        proxy: Process, sim: Process) -> None:
    body = {"model": "glm-4.7", "stream": True, "messages": MESSAGES}
    metrics = Metrics(proxy)
    via = post_raw(f"{proxy.url}/v1/chat/completions", body)
    metrics.settle()
    direct_with_usage = post_raw(f"{sim.url}/api/paas/v4/chat/completions",
                                 {**body, "stream_options": {"include_usage": True}})
    direct_without = post_raw(f"{sim.url}/api/paas/v4/chat/completions", body)
    # The usage-only chunk is exactly one event of the direct answer.
    events = direct_with_usage.split(b"\n\n")
    usage_events = [e for e in events if b'"choices": []' in e and b'"usage"' in e]
    assert len(usage_events) == 1
    usage = json.loads(usage_events[0][6:])["usage"]
    expected = b"\n\n".join(e for e in events if e is not usage_events[0])
    assert normalise(via) == normalise(expected)
    assert normalise(via) == normalise(direct_without)
    assert b'"usage"' not in via
    assert usage["prompt_tokens"] == PROMPT_TOKENS
    assert metrics.tokens() == {
        ("input", "glm-4.7", "upstream"): usage["prompt_tokens"],
        ("output", "glm-4.7", "upstream"): usage["completion_tokens"],
    }


def test_openai_stream_with_include_usage_passes_through_untouched(
        proxy: Process, sim: Process) -> None:
    body = {"model": "glm-4.6", "stream": True, "messages": MESSAGES,
            "stream_options": {"include_usage": True}}
    metrics = Metrics(proxy)
    via = post_raw(f"{proxy.url}/v1/chat/completions", body)
    metrics.settle()
    direct = post_raw(f"{sim.url}/api/paas/v4/chat/completions", body)
    assert normalise(via) == normalise(direct)
    usage = sse_data(via)[-1]["usage"]
    assert metrics.tokens() == {
        ("input", "glm-4.6", "upstream"): usage["prompt_tokens"],
        ("output", "glm-4.6", "upstream"): usage["completion_tokens"],
    }
    # And through the SDK, which asks for it the same way.
    metrics = Metrics(proxy)
    stream = openai_client(proxy).chat.completions.create(
        model="glm-4.6", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True})
    last = list(stream)[-1]
    metrics.settle()
    assert last.usage is not None and last.usage.completion_tokens == CHUNKS * WORDS
    assert metrics.tokens()[("output", "glm-4.6", "upstream")] == CHUNKS * WORDS


def test_openai_sdk_stream_without_usage_sees_no_usage_chunk(proxy: Process) -> None:
    metrics = Metrics(proxy)
    stream = openai_client(proxy).chat.completions.create(
        model="glm-4.7", messages=MESSAGES, stream=True)
    chunks = list(stream)
    metrics.settle()
    assert all(c.usage is None and c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == reply_text(CHUNKS * WORDS)
    assert metrics.tokens() == {("input", "glm-4.7", "upstream"): PROMPT_TOKENS,
                                ("output", "glm-4.7", "upstream"): CHUNKS * WORDS}


def test_completions_stream_and_non_stream_exact(proxy: Process, sim: Process) -> None:
    metrics = Metrics(proxy)
    completion = openai_client(proxy).completions.create(
        model="glm-4.5", prompt=["once upon a time", "hi"])
    metrics.settle()
    assert completion.usage is not None and completion.usage.prompt_tokens == 5 + 2
    assert metrics.tokens() == {("input", "glm-4.5", "upstream"): 7,
                                ("output", "glm-4.5", "upstream"): CHUNKS * WORDS}
    body = {"model": "glm-4.5", "prompt": "once upon a time", "stream": True}
    metrics = Metrics(proxy)
    via = post_raw(f"{proxy.url}/v1/completions", body)
    metrics.settle()
    direct = post_raw(f"{sim.url}/api/paas/v4/completions", body)
    assert normalise(via) == normalise(direct)
    assert metrics.tokens() == {("input", "glm-4.5", "upstream"): 5,
                                ("output", "glm-4.5", "upstream"): CHUNKS * WORDS}


def test_embeddings_exact(proxy: Process) -> None:
    metrics = Metrics(proxy)
    result = openai_client(proxy).embeddings.create(
        model="embedding-3", input=["alpha beta gamma", "delta", ""])
    metrics.settle()
    assert result.usage.prompt_tokens == 3 + 1 + 1  # max(1, words) per input
    assert metrics.tokens() == {("input", "embedding-3", "upstream"): 5}


def test_anthropic_non_stream_exact(proxy: Process, sim: Process) -> None:
    metrics = Metrics(proxy)
    message = anthropic_client(proxy).messages.create(
        model="glm-4.7", max_tokens=200, system="be terse",
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"x-sim-cached-tokens": "4"})
    metrics.settle()
    assert message.usage.input_tokens == ANTHROPIC_PROMPT_TOKENS - 4
    assert message.usage.cache_read_input_tokens == 4
    assert metrics.tokens() == {
        ("input", "glm-4.7", "upstream"): ANTHROPIC_PROMPT_TOKENS - 4,
        ("cache_read", "glm-4.7", "upstream"): 4,
        ("output", "glm-4.7", "upstream"): CHUNKS * WORDS,
    }


def test_anthropic_stream_exact_and_byte_identical(proxy: Process, sim: Process) -> None:
    metrics = Metrics(proxy)
    with anthropic_client(proxy).messages.stream(
            model="glm-4.7", max_tokens=200, system="be terse",
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-sim-cached-tokens": "2"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    metrics.settle()
    assert text == reply_text(CHUNKS * WORDS)
    assert final.usage.output_tokens == CHUNKS * WORDS
    assert final.usage.cache_read_input_tokens == 2
    assert metrics.tokens() == {
        ("input", "glm-4.7", "upstream"): ANTHROPIC_PROMPT_TOKENS - 2,
        ("cache_read", "glm-4.7", "upstream"): 2,
        ("output", "glm-4.7", "upstream"): CHUNKS * WORDS,
    }
    body = {"model": "glm-4.7", "max_tokens": 200, "stream": True, "system": "be terse",
            "messages": [{"role": "user", "content": PROMPT}]}
    via = post_raw(f"{proxy.url}/v1/messages", body, {"x-sim-cached-tokens": "2"},
                   anthropic_api=True)
    direct = post_raw(f"{sim.url}/api/anthropic/v1/messages", body,
                      {"x-sim-cached-tokens": "2"}, anthropic_api=True)
    assert normalise(via) == normalise(direct)


def test_unknown_model_is_labelled_other(proxy: Process) -> None:
    metrics = Metrics(proxy)
    openai_client(proxy).chat.completions.create(
        model="some-unlisted-model", messages=MESSAGES)
    metrics.settle()
    assert metrics.tokens() == {("input", "other", "upstream"): PROMPT_TOKENS,
                                ("output", "other", "upstream"): CHUNKS * WORDS}


# --------------------------------------------------------------------------- estimates


def expected_input_estimate() -> int:
    """OpenAI cookbook style: role and content of each message, 3 per message, 3 priming."""
    text = "\n".join(str(part) for m in MESSAGES for part in (m["role"], m.get("content")))
    return count(text) + 3 * len(MESSAGES) + 3


def test_stream_cut_short_is_estimated_from_what_was_streamed(proxy: Process) -> None:
    metrics = Metrics(proxy)
    via = post_raw(f"{proxy.url}/v1/chat/completions",
                   {"model": "glm-4.7", "stream": True, "messages": MESSAGES},
                   {"x-sim-reset-after-chunks": "3"})
    metrics.settle()
    assert b'"error"' in via.split(b"\n\n")[-2]  # the proxy's closing error event
    streamed = chat_text(via)
    assert streamed == reply_text(3 * WORDS)
    assert metrics.tokens() == {
        ("input", "glm-4.7", "estimate"): expected_input_estimate(),
        ("output", "glm-4.7", "estimate"): count(streamed),
    }


def test_anthropic_stream_cut_short_keeps_upstream_input(proxy: Process) -> None:
    body = {"model": "glm-4.7", "max_tokens": 200, "stream": True,
            "messages": [{"role": "user", "content": PROMPT}]}
    metrics = Metrics(proxy)
    via = post_raw(f"{proxy.url}/v1/messages", body, {"x-sim-reset-after-chunks": "2"},
                   anthropic_api=True)
    metrics.settle()
    streamed = "".join(e["delta"]["text"] for e in sse_data(via)
                       if e.get("type") == "content_block_delta")
    assert streamed == reply_text(2 * WORDS)
    assert metrics.tokens() == {
        ("input", "glm-4.7", "upstream"): 1 + 4,
        ("output", "glm-4.7", "estimate"): count(streamed),
    }


def test_upstream_without_usage_is_estimated(proxy: Process) -> None:
    metrics = Metrics(proxy)
    via = post_raw(f"{proxy.url}/v1/chat/completions",
                   {"model": "glm-4.7", "stream": True, "messages": MESSAGES},
                   {"x-sim-no-usage": "1"})
    metrics.settle()
    assert chat_text(via) == reply_text(CHUNKS * WORDS)
    assert metrics.tokens() == {
        ("input", "glm-4.7", "estimate"): expected_input_estimate(),
        ("output", "glm-4.7", "estimate"): count(reply_text(CHUNKS * WORDS)),
    }
    metrics = Metrics(proxy)
    message = anthropic_client(proxy).messages.create(
        model="glm-4.7", max_tokens=200, messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"x-sim-no-usage": "1"})
    metrics.settle()
    answer = "".join(b.text for b in message.content if b.type == "text")
    tokens = metrics.tokens()
    assert tokens[("output", "glm-4.7", "estimate")] == count(answer)
    assert tokens[("input", "glm-4.7", "estimate")] >= count(PROMPT)


def test_client_disconnect_mid_stream_is_estimated(proxy: Process) -> None:
    chunks, gap_ms = 60, 200
    metrics = Metrics(proxy)
    received = b""
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{proxy.url}/v1/chat/completions",
            json={"model": "glm-4.7", "stream": True, "messages": MESSAGES},
            headers={"x-sim-chunks": str(chunks), "x-sim-chunk-gap-ms": str(gap_ms)}) as resp:
        for data in resp.iter_raw():
            received += data
            if len(chat_text(received).split()) >= 3 * WORDS:
                break
    metrics.settle()
    got = len(chat_text(received).split()) // WORDS  # content chunks the client read
    tokens = metrics.tokens()
    assert set(tokens) == {("input", "glm-4.7", "estimate"), ("output", "glm-4.7", "estimate")}
    assert tokens[("input", "glm-4.7", "estimate")] == expected_input_estimate()
    # The proxy counts what the upstream had streamed when the client left: at least what the
    # client read, and (chunks are 200 ms apart) not the rest of the 60-chunk reply.
    output = tokens[("output", "glm-4.7", "estimate")]
    assert count(reply_text(got * WORDS)) <= output <= count(reply_text((got + 2) * WORDS))
    assert output < count(reply_text(chunks * WORDS))


# --------------------------------------------------------------------------- offline encodings


OFFLINE_CHECK = """
import json, sys
from zai_proxy.accounting.tokenizer import PACKAGE_ENCODINGS_DIR, load_tokenizer
out = {}
for name in ("cl100k_base", "o200k_base"):
    tok = load_tokenizer(name)
    out[name] = {"source": tok.source, "origin": tok.origin, "warning": tok.warning,
                 "hello": tok.count("hello world")}
out["package_dir"] = str(PACKAGE_ENCODINGS_DIR)
out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "httpx"))
print(json.dumps(out))
"""


def test_bundled_encodings_load_offline_in_a_fresh_interpreter(tmp_path: Path) -> None:
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("TIKTOKEN", "HTTP", "HTTPS", "ALL_PROXY", "NO_PROXY"))}
    blackhole = "http://127.0.0.1:9"  # discard port: any download attempt fails at once
    env.update({"TIKTOKEN_CACHE_DIR": str(cache), "HTTPS_PROXY": blackhole,
                "HTTP_PROXY": blackhole, "https_proxy": blackhole, "http_proxy": blackhole,
                "ALL_PROXY": blackhole, "DATA_GYM_CACHE_DIR": str(cache)})
    done = subprocess.run([sys.executable, "-c", OFFLINE_CHECK], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    package_dir = Path(result["package_dir"])
    assert package_dir.name == "_encodings" and package_dir.parent.name == "zai_proxy"
    for name in ("cl100k_base", "o200k_base"):
        assert result[name]["source"] == "estimate", result[name]
        assert result[name]["origin"] == str(package_dir)
        assert result[name]["warning"] is None
        assert result[name]["hello"] == 2
    assert list(cache.iterdir()) == []  # nothing downloaded or written into the empty cache
    assert result["modules"] == []  # no HTTP client was even imported


def test_proxy_health_reports_the_loaded_encoding(proxy: Process) -> None:
    health = httpx.get(f"{proxy.url}/health").json()
    assert health["tokenizer"] == {"encoding": "cl100k_base", "source": "estimate",
                                   "warning": None}


def test_proxy_without_encoding_serves_and_counts_heuristic(sim: Process) -> None:
    process = start_zai_proxy(
        "serve", env=proxy_env(sim, PEAK_HOURS="off", TOKENIZER_ENCODING="no_such_encoding"),
        ready_path="/ready")
    try:
        metrics = Metrics(process)
        via = post_raw(f"{process.url}/v1/chat/completions",
                       {"model": "glm-4.7", "messages": MESSAGES}, {"x-sim-no-usage": "1"})
        metrics.settle()
        tokens = metrics.tokens()
        health = httpx.get(f"{process.url}/health").json()
    finally:
        process.terminate()
    answer = json.loads(via)["choices"][0]["message"]["content"]
    assert health["status"] == "ok" and health["tokenizer"]["source"] == "heuristic"
    assert "no_such_encoding" in health["tokenizer"]["warning"]
    assert tokens[("output", "glm-4.7", "heuristic")] == -(-len(answer.encode()) // 4)
    assert set(tokens) == {("input", "glm-4.7", "heuristic"), ("output", "glm-4.7", "heuristic")}
    warnings = [line for line in process.output().splitlines()
                if '"level": "warning"' in line and "heuristic" in line]
    assert len(warnings) == 1
    assert UPSTREAM_KEY not in process.output()
