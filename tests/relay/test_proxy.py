"""The request path in-process: httpx.ASGITransport in front, httpx.MockTransport as upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.support.inprocess import UPSTREAM_KEY, InProcessProxy

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
        await asyncio.Event().wait()  # never answers: the first-byte timeout always wins
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
    # Past the head (a content delta): the client has bytes, so the cut is told in-band.
    chunks = [b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
              b'{"input_tokens":3,"output_tokens":1}}}\n\n'
              b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
              b'"delta":{"type":"text_delta","text":"hi"}}\n\n']
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


# --------------------------------------------------------------------------- issue 12: framing


async def test_head_relays_the_upstream_length_without_a_body() -> None:
    harness = Harness(lambda r: httpx.Response(200, headers={"content-length": "1234",
                                                             "content-type": "text/plain"}))
    async with harness as client:
        response = await client.head("/v1/files/file-1/content")
        models = await client.head("/v1/models")
        full = await client.get("/v1/models")
    assert harness.seen[0].method == "HEAD"
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "1234"
    assert models.status_code == 200 and models.content == b""
    assert models.headers["content-length"] == str(len(full.content))


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_carry_no_length_and_no_body(status: int) -> None:
    harness = Harness(lambda r: httpx.Response(status, headers={"etag": '"v1"'}))
    async with harness as client:
        response = await client.get("/v1/files", headers={"if-none-match": '"v1"'})
        deleted = await client.delete("/v1/files/file-1")
    for r in (response, deleted):
        assert r.status_code == status and r.content == b""
        assert "content-length" not in r.headers and "transfer-encoding" not in r.headers
    assert response.headers["etag"] == '"v1"'


async def test_401_names_the_scheme_and_405_the_allowed_methods() -> None:
    harness = Harness(ok_json, PROXY_API_KEYS="client-key-abcdef",
                      ADMIN_API_KEY="admin-key-0123456789")
    async with harness as client:
        missing = await client.post("/v1/chat/completions", json={})
        admin = await client.get("/admin/limiter-state")
        auth = {"authorization": "Bearer client-key-abcdef"}
        wrong = await client.get("/v1/chat/completions", headers=auth)
        files = await client.put("/v1/files/f1", headers=auth)
        health = await client.post("/health")
    for r in (missing, admin):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="zai-proxy"'
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert (files.status_code, files.headers["allow"]) == (405, "DELETE, GET, HEAD")
    assert health.status_code == 405 and "GET" in health.headers["allow"]
    for r in (wrong, files, health):
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


# --------------------------------------------------------------------------- issue 12: routes


async def test_unknown_routes_and_path_parameters_never_reach_the_upstream() -> None:
    harness = Harness(ok_json)
    async with harness as client:
        unknown = await client.post("/v1/assistants", json={})
        params = await client.post("/v1/chat/completions;x", json={"model": "glm-4.7"})
        trace = await client.request("TRACE", "/v1/chat/completions")
        uncountable = await client.post("/v1/audio/transcriptions", content=b"--x--")
    assert harness.seen == []
    assert unknown.status_code == params.status_code == uncountable.status_code == 404
    assert uncountable.json()["error"]["code"] == "proxy_route_not_accounted"
    assert trace.status_code == 405
    assert harness.sample("zai_proxy_requests_total", method="other",
                          route="/v1/chat/completions", status_code="405") == 1


async def test_passthrough_opens_unknown_paths_but_never_trace() -> None:
    harness = Harness(lambda r: httpx.Response(200, json={"ok": True}), PASSTHROUGH_UNKNOWN="1")
    async with harness as client:
        forwarded = await client.post("/v1/assistants", json={})
        trace = await client.request("TRACE", "/v1/assistants")
        params = await client.post("/v1/chat/completions;x", json={"model": "glm-4.7"})
    assert forwarded.status_code == 200 and len(harness.seen) == 1
    assert str(harness.seen[0].url).endswith("/api/paas/v4/assistants")
    assert trace.status_code == 405
    assert trace.headers["allow"] == "DELETE, GET, HEAD, PATCH, POST, PUT"
    assert params.status_code == 404
    assert harness.sample("zai_proxy_requests_total", method="POST", route="/v1/other",
                          status_code="200") == 1


# --------------------------------------------------------------------------- issue 12: no 500s


@pytest.mark.parametrize(("body", "code"), [
    (b"[" * 100_000, "proxy_invalid_json"),
    (b"{" * 100_000, "proxy_invalid_json"),
    (b'{"a":' * 50_000, "proxy_invalid_json"),
    (b'{"a":"\xc3"}', "proxy_invalid_json"),
    (b'{"a":"\\ud800"', "proxy_invalid_json"),
])
async def test_hostile_json_is_a_clean_400(body: bytes, code: str) -> None:
    harness = Harness(ok_json)
    async with harness as client:
        response = await client.post("/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert harness.seen == []


@pytest.mark.parametrize("body", [
    b'{"model":"glm-4.7","stream":true,"messages":[{"role":"user","content":"\\ud800"}]}',
    b'{"model":"glm-4.7","stream":true,"stream_options":{},"messages":'
    b'[{"role":"user","content":"\\ud800x"}]}',
    b'\xef\xbb\xbf{"model":"glm-4.7","stream":true,"messages":'
    b'[{"role":"user","content":"\\udfff"}]}',
])
async def test_lone_surrogates_in_a_stream_request_are_forwarded(body: bytes) -> None:
    stream = (b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}\n\n'
              b"data: [DONE]\n\n")
    harness = Harness(lambda r: httpx.Response(200, content=stream,
                                               headers={"content-type": "text/event-stream"}))
    async with harness as client:
        response = await client.post("/v1/chat/completions", content=body)
    assert response.status_code == 200
    sent = json.loads(harness.seen[0].content)
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == json.loads(body.decode("utf-8-sig"))["messages"]
    assert b'"usage"' not in response.content  # the chunk the proxy asked for is removed


async def test_a_url_httpx_refuses_is_answered_before_admission() -> None:
    harness = Harness(ok_json)
    async with harness as client:
        response = await client.get("/v1/files?" + "q=" + "a" * 65_500)
    assert response.status_code == 414
    assert response.json()["error"]["code"] == "proxy_uri_too_long"
    assert harness.seen == []
    # Never admitted: no admission wait observed, no slot taken.
    assert harness.sample("zai_proxy_rate_limit_wait_seconds_count") == 0
    assert harness.admission.snapshot()["in_flight"] == 0


@pytest.mark.parametrize("hint", [b'"retry_after":1e999', b'"retryAfter":"1e999"',
                                  b'"retry_after":"inf"', b'"reset_at":1e999'])
async def test_absurd_retry_hints_become_a_bounded_retry_after(hint: bytes) -> None:
    body = b'{"error":{"code":"1303","message":"slow down",' + hint + b"}}"
    harness = Harness(lambda r: httpx.Response(429, content=body))
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={"model": "glm-4.7"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 7 * 86400


async def test_an_event_stream_answer_to_a_non_stream_request_is_relayed() -> None:
    stream = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n'
    harness = Harness(lambda r: httpx.Response(200, content=stream,
                                               headers={"content-type": "text/event-stream"}))
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={"model": "glm-4.7"})
    assert (response.status_code, response.content) == (200, stream)


async def test_large_request_bodies_are_parsed_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import zai_proxy.relay.handler as proxy

    parsed: list[int] = []
    original = proxy.parse_off_loop

    async def recording(body: bytes) -> Any:
        parsed.append(len(body))
        return await original(body)

    monkeypatch.setattr(proxy, "parse_off_loop", recording)
    harness = Harness(ok_json)
    large = {"model": "glm-4.7", "messages": [{"role": "user", "content": "w " * 50_000}]}
    async with harness as client:
        small = await client.post("/v1/chat/completions", json={"model": "glm-4.7"})
        big = await client.post("/v1/chat/completions", json=large)
        broken = await client.post("/v1/chat/completions", content=b"[" * 100_000)
    assert (small.status_code, big.status_code, broken.status_code) == (200, 200, 400)
    assert parsed == [len(harness.seen[1].content), 100_000]


async def test_raw_non_ascii_query_bytes_reach_the_upstream_percent_encoded() -> None:
    harness = Harness(ok_json)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/v1/files", "raw_path": b"/v1/files",
             "query_string": b"q=\xc3\xa9&r=\xff&s=%20", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080)}
    sent: list[dict[str, Any]] = []

    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # then nothing, like a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with harness:
        await harness.app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert str(harness.seen[0].url).endswith("/files?q=%C3%A9&r=%FF&s=%20")
