"""The official OpenAI and Anthropic SDKs against the real proxy, upstream = the simulator."""

from __future__ import annotations

import hashlib
import itertools
import json
import time

import anthropic
import httpx
import openai

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.support.servers import Process

MESSAGES = [{"role": "user", "content": "Tell me about proxies"}]


def openai_client(proxy: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def test_openai_sync_chat(proxy: Process) -> None:
    completion = openai_client(proxy).chat.completions.create(model="glm-4.7", messages=MESSAGES)
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0


async def test_openai_async_chat_and_embeddings(proxy: Process) -> None:
    client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    completion = await client.chat.completions.create(model="glm-4.7", messages=MESSAGES)
    assert completion.choices[0].finish_reason == "stop"
    embeddings = await client.embeddings.create(model="embedding-3", input=["a", "b"])
    assert len(embeddings.data) == 2 and embeddings.usage.prompt_tokens > 0
    models = await client.models.list()
    assert "glm-4.7" in {m.id for m in models.data}
    await client.close()


def test_openai_stream_is_incremental(proxy: Process) -> None:
    client = openai_client(proxy)
    started = time.perf_counter()
    arrivals: list[float] = []
    text = []
    stream = client.chat.completions.create(
        model="glm-4.7", messages=MESSAGES, stream=True,
        extra_headers={"x-sim-chunks": "10", "x-sim-chunk-gap-ms": "100"})
    for chunk in stream:
        arrivals.append(time.perf_counter() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    assert text
    # The upstream spends ~1 s sending 10 chunks 100 ms apart: the first must arrive long
    # before the last was sent, and chunks must keep arriving spread out, not in one burst.
    assert arrivals[0] < arrivals[-1] - 0.6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for g in gaps if g > 0.05) >= 7


def test_openai_completions_endpoint(proxy: Process) -> None:
    completion = openai_client(proxy).completions.create(model="glm-4.7", prompt="Once upon")
    assert completion.choices[0].text


def test_anthropic_messages_and_stream(proxy: Process) -> None:
    client = anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0)
    message = client.messages.create(model="glm-4.7", max_tokens=64, messages=MESSAGES)
    assert message.content[0].type == "text" and message.usage.output_tokens > 0
    with client.messages.stream(model="glm-4.7", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0
    count = client.messages.count_tokens(model="glm-4.7", messages=MESSAGES)
    assert count.input_tokens > 0


def test_keys_stay_where_they_belong(proxy: Process, simulator: Process) -> None:
    # The simulator records each credential as the SHA-256 of its value (never the value), so
    # the check is on hashes: upstream saw exactly the upstream key, in the header its surface
    # wants, and the client key (or its hash) nowhere.
    upstream_hash, client_hash = sha256(UPSTREAM_KEY), sha256(CLIENT_KEY)
    openai_client(proxy).chat.completions.create(model="glm-4.7", messages=MESSAGES)
    seen_openai = httpx.get(f"{simulator.url}/_stats").json()["last_request"]
    assert seen_openai["path"] == "/api/paas/v4/chat/completions"
    assert seen_openai["authorization_scheme"] == "Bearer"
    assert seen_openai["authorization_sha256"] == upstream_hash
    assert not seen_openai["x_api_key_present"]

    anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0).messages.create(
        model="glm-4.7", max_tokens=16, messages=MESSAGES)
    seen_anthropic = httpx.get(f"{simulator.url}/_stats").json()["last_request"]
    assert seen_anthropic["path"] == "/api/anthropic/v1/messages"
    assert seen_anthropic["x_api_key_sha256"] == upstream_hash
    assert not seen_anthropic["authorization_present"]

    upstream_view = json.dumps([seen_openai, seen_anthropic])
    assert client_hash not in upstream_view and CLIENT_KEY not in upstream_view
    metrics = httpx.get(f"{proxy.url}/metrics").text
    health = httpx.get(f"{proxy.url}/health").text
    for leaked in (UPSTREAM_KEY, CLIENT_KEY):
        assert leaked not in metrics and leaked not in health
        assert leaked not in proxy.output()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_wrong_client_key_is_rejected_by_the_sdk(proxy: Process) -> None:
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="not-a-valid-key", max_retries=0)
    try:
        client.chat.completions.create(model="glm-4.7", messages=MESSAGES)
    except openai.AuthenticationError as exc:
        assert exc.status_code == 401
        assert exc.body and exc.body["code"] == "proxy_invalid_api_key"  # type: ignore[index]
    else:
        raise AssertionError("expected 401")
