"""The upstream key never reaches a client through what the upstream sends back: error bodies
(read whole, or relayed as they arrive when long), response headers, and messages quoting the
upstream. In-process, with a scripted upstream that echoes the key it was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from tests.support.inprocess import InProcessProxy

KEY = "zai-upstream-key-scrub-test-0123"  # also in the env below
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}


def sent_key(request: httpx.Request) -> bytes:
    return request.headers["authorization"].removeprefix("Bearer ").encode()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def everything(response: httpx.Response) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in response.headers.multi_items())
    return head.encode() + response.content


def harness(answer: object) -> InProcessProxy:
    return InProcessProxy(httpx.MockTransport(answer), {  # type: ignore[arg-type]
        "ZAI_API_KEY": KEY, "TOKEN_COUNTING_ENABLED": "false"})


async def test_a_short_error_body_and_headers_are_scrubbed_and_the_length_recomputed() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        key = sent_key(request).decode()
        return httpx.Response(401, content=b'{"error": "bad key ' + key.encode() + b'"}',
                              headers={"www-authenticate": f'Bearer error="{key}"',
                                       "x-echo": key, "content-type": "application/json"})

    async with harness(answer) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert response.content == b'{"error": "bad key <redacted>"}'
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["x-echo"] == "<redacted>"
    assert KEY.encode() not in everything(response)


async def test_a_long_error_body_relayed_as_it_arrives_is_scrubbed_across_reads() -> None:
    filler = b"x" * (256 * 1024 - 10)

    def answer(request: httpx.Request) -> httpx.Response:
        key = sent_key(request)
        # The key straddles the budget's edge, then a read boundary, then sits inside a read.
        body = filler + key + b"y" * 1000 + key + b"z" * 5000 + key + b"end"
        return httpx.Response(500, content=pieces(body, 4093),
                              headers={"content-length": str(len(body))})

    async with harness(answer) as client:
        response = await client.get("/v1/files/f1")
    assert response.status_code == 500
    assert KEY.encode() not in everything(response)
    assert response.content.count(b"<redacted>") == 3 and response.content.endswith(b"end")
    assert response.content.startswith(filler)
