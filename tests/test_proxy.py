"""The request path in-process: httpx.ASGITransport in front, httpx.MockTransport as upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.inprocess import UPSTREAM_KEY, InProcessProxy

Handler = Callable[[httpx.Request], Any]


class Harness(InProcessProxy):
    """The app with a scripted upstream that records every request it was sent."""

    def __init__(self, handler: Handler, **env: str) -> None:
        self.seen: list[httpx.Request] = []

        async def record(request: httpx.Request) -> Any:
            self.seen.append(request)
            result = handler(request)
            return await result if asyncio.iscoroutine(result) else result

        super().__init__(httpx.MockTransport(record), {
            "UPSTREAM_FIRST_BYTE_TIMEOUT": "1", "UPSTREAM_CHUNK_TIMEOUT": "1", **env})


def ok_json(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "usage": {"prompt_tokens": 3}})


async def test_body_passes_through_byte_for_byte_both_ways() -> None:
    sent = b'{"model": "glm-4.7",\n "messages": [{"role":"user","content":"h\\u00e9"}]}'
    reply = b'{"weird":   "spacing", "k": 1}'
    harness = Harness(lambda r: httpx.Response(200, content=reply,
                                               headers={"content-type": "application/json"}))
    async with harness as client:
        response = await client.post("/v1/chat/completions", content=sent)
    assert response.content == reply
    assert harness.seen[0].content == sent


async def test_upstream_gets_its_key_and_never_the_clients() -> None:
    harness = Harness(ok_json, PROXY_API_KEYS="client-key-abcdef")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={"model": "glm-4.7"},
                                     headers={"authorization": "Bearer client-key-abcdef",
                                              "x-request-id": "req-42"})
        metrics = (await client.get("/metrics")).text
    upstream = harness.seen[0]
    assert upstream.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "client-key" not in str(upstream.headers.raw)
    assert upstream.headers["x-request-id"] == "req-42"
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["x-zai-proxy-variant"] == "production"
    assert UPSTREAM_KEY not in response.text + str(response.headers) + metrics


async def test_missing_or_wrong_client_key_is_401() -> None:
    harness = Harness(ok_json, PROXY_API_KEYS="client-key-abcdef")
    async with harness as client:
        missing = await client.post("/v1/chat/completions", json={})
        wrong = await client.post("/v1/chat/completions", json={},
                                  headers={"x-api-key": "client-key-zzzzzz"})
    assert missing.status_code == wrong.status_code == 401
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert harness.seen == []


@pytest.mark.parametrize(("body", "status"), [(b"{nope", 400), (b"[1,2]", 400), (b"", 400)])
async def test_bad_json_is_400(body: bytes, status: int) -> None:
    harness = Harness(ok_json)
    async with harness as client:
        response = await client.post("/v1/chat/completions", content=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == "proxy_invalid_json"
    assert harness.seen == []


async def test_oversized_body_is_413_without_reading_it_all() -> None:
    harness = Harness(ok_json, MAX_REQUEST_BYTES="1KiB")
    reads = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal reads
        for _ in range(1000):
            reads += 1
            yield b"x" * 512

    async with harness as client:
        declared = await client.post("/v1/chat/completions", content=b"x" * 2048)
        streamed = await client.post("/v1/chat/completions", content=body())
    assert declared.status_code == streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "proxy_request_too_large"
    assert reads < 10


async def test_unknown_route_404_and_wrong_method_405_are_openai_shaped() -> None:
    harness = Harness(ok_json)
    async with harness as client:
        missing = await client.get("/nothing-here")
        wrong = await client.get("/v1/chat/completions")
        health_post = await client.post("/health")
    assert missing.status_code == 404 and wrong.status_code == 405
    assert health_post.status_code == 405
    for r in (missing, wrong, health_post):
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert harness.sample("zai_proxy_requests_total", method="GET", route="/v1/chat/completions",
                          status_code="405") == 1


async def test_upstream_error_bodies_pass_through_unchanged() -> None:
    body = b'{"error":{"code":"1214","message":"model not found"}}'
    harness = Harness(lambda r: httpx.Response(400, content=body))
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={"model": "nope"})
    assert (response.status_code, response.content) == (400, body)


async def test_unreachable_upstream_is_502() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    harness = Harness(refuse)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "proxy_upstream_unreachable"
    assert harness.sample("zai_proxy_upstream_errors_total", error_type="connection") == 1


async def test_first_byte_timeout_is_504() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    harness = Harness(slow, UPSTREAM_FIRST_BYTE_TIMEOUT="0.1")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "proxy_upstream_timeout"
    assert harness.sample("zai_proxy_upstream_errors_total", error_type="timeout") == 1


class BrokenStream(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection reset by peer")


async def test_upstream_dying_mid_stream_ends_with_an_sse_error_event() -> None:
    chunks = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'] * 2
    harness = Harness(lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=BrokenStream(chunks)))
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={"stream": True})
    assert response.status_code == 200
    assert response.headers["x-accel-buffering"] == "no"
    assert response.content.startswith(b"".join(chunks))
    tail = response.content[len(b"".join(chunks)):]
    assert tail.startswith(b"data: ") and tail.endswith(b"\n\n")
    assert json.loads(tail[6:])["error"]["code"] == "proxy_upstream_interrupted"
    assert harness.sample("zai_proxy_upstream_errors_total", error_type="stream_interrupted") == 1
    assert harness.sample("zai_proxy_requests_total", method="POST", route="/v1/chat/completions",
                          status_code="502") == 1


async def test_every_request_is_recorded_once() -> None:
    harness = Harness(ok_json)
    async with harness as client:
        for _ in range(3):
            await client.post("/v1/chat/completions", json={})
        await client.post("/v1/chat/completions", content=b"{")
    assert harness.sample("zai_proxy_requests_total", method="POST", route="/v1/chat/completions",
                          status_code="200") == 3
    assert harness.sample("zai_proxy_requests_total", method="POST", route="/v1/chat/completions",
                          status_code="400") == 1
    assert harness.sample("zai_proxy_concurrent_requests") == 0


async def test_redirects_are_not_followed() -> None:
    harness = Harness(lambda r: httpx.Response(302, headers={"location": "http://elsewhere/"}))
    async with harness as client:
        response = await client.get("/v1/files")
    assert response.status_code == 302 and len(harness.seen) == 1


async def test_anthropic_stream_dying_ends_with_an_anthropic_error_event() -> None:
    chunks = [b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
              b'{"input_tokens":3,"output_tokens":1}}}\n\n']
    harness = Harness(lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=BrokenStream(chunks)))
    async with harness as client:
        response = await client.post("/v1/messages", json={"model": "glm-4.7", "stream": True,
                                                           "max_tokens": 8, "messages": []})
    tail = response.content[len(chunks[0]):]
    assert tail.startswith(b"event: error\ndata: ")
    event = json.loads(tail.split(b"data: ", 1)[1])
    assert event["type"] == "error"
    assert set(event["error"]) == {"message", "type", "param", "code"}
