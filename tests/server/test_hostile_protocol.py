"""ClientProtocol against hostile input, without a socket: the parser is fed bytes, a fake
transport collects what the server writes, the ASGI app runs on a private event loop that the
test drives (no real time: nothing here waits on a timer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.server import ServerState

from tests.support import protocol as support
from tests.support.upstreams import read_request
from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.connections import ClientBounds, ClientConnections
from zai_proxy.server.http_protocol import bound_protocol_class

BODY = b'{"model": "glm-4.7"}'


class FakeTransport(support.FakeTransport):
    """The shared fake transport on this test's private loop (the loss is reported on it), and
    what the server answered, parsed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return 0

    def answers(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Every response written so far: (status, headers, body); bodies by content-length
        or chunked."""
        data, out = bytes(self.written), []
        while data:
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            if "content-length" in headers:
                n = int(headers["content-length"])
                body, data = data[:n], data[n:]
            else:
                body, data = data.split(b"0\r\n\r\n", 1)
            out.append((int(lines[0].split()[1]), headers, body))
        return out


class Harness:
    """One client connection to a ClientProtocol whose app records what it was given."""

    def __init__(self, max_header_bytes: int = 8192) -> None:
        self.loop = asyncio.new_event_loop()
        self.seen: list[dict[str, Any]] = []
        self.release_stream = asyncio.Event()
        self.registry = ClientConnections(Metrics(CollectorRegistry(), "v1"),
                                          bounds=ClientBounds(max_header_bytes=max_header_bytes))
        config = uvicorn.Config(self.app, ws="none", proxy_headers=False, log_config=None,
                                interface="asgi3", lifespan="off")
        protocol_class = bound_protocol_class(self.registry)
        self.protocol = protocol_class(config=config, server_state=ServerState(),
                                       app_state={}, _loop=self.loop)
        self.transport = FakeTransport(self.loop)
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if await read_request(scope, receive, self.seen) is None:
            return
        stream = scope["path"] == "/stream"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        if stream:
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await self.release_stream.wait()
        await send({"type": "http.response.body", "body": b"done"})

    def feed(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.protocol.data_received(data)
        self.settle()

    def settle(self) -> None:
        async def rounds() -> None:
            for _ in range(20):
                await asyncio.sleep(0)
        self.loop.run_until_complete(rounds())

    def close(self) -> None:
        self.transport.close()
        self.settle()
        self.loop.close()


@pytest.fixture
def conn() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def chunked(path: str = "/v1/chat/completions", extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n"
            b"transfer-encoding: chunked\r\n" + extra + b"\r\n")


def test_trailers_are_dropped_not_added_to_the_headers(conn: Harness) -> None:
    conn.feed(chunked() + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n"
              b"x-trailer-evil: yes\r\nauthorization: Bearer smuggled\r\n\r\n")
    (seen,) = conn.seen
    names = [name for name, _ in seen["scope"]["headers"]]
    assert names == [b"host", b"transfer-encoding"] and seen["body"] == BODY
    assert [status for status, _, _ in conn.transport.answers()] == [200]


@pytest.mark.parametrize("trailers", [
    b"x-pad: " + b"a" * 20_000,  # one line that never ends
    b"".join(b"x-t%d: %s\r\n" % (i, b"b" * 100) for i in range(200)),  # many short ones
    b";ext=" + b"e" * 20_000,  # a chunk extension on the last chunk
])
@pytest.mark.parametrize("first_read", [True, False])
def test_trailers_past_the_header_cap_get_431(conn: Harness, trailers: bytes,
                                              first_read: bool) -> None:
    start = chunked() + b"%x\r\n" % len(BODY) + BODY + b"\r\n0"
    if not trailers.startswith(b";"):
        start += b"\r\n"
    if first_read:  # all in the read that carried the head too
        conn.feed(start + trailers)
    else:
        conn.feed(start)
        for i in range(0, len(trailers), 1000):
            conn.feed(trailers[i:i + 1000])
    (answer,) = conn.transport.answers()
    status, headers, body = answer
    assert status == 431 and headers["connection"] == "close", answer
    assert json.loads(body)["error"]["code"] == "proxy_header_too_large"
    assert conn.transport.is_closing()
    (seen,) = conn.seen
    assert seen["disconnected"], "the app saw the client gone and records the request once"
    assert seen["scope"]["zai_proxy.client_fault"] == "header_too_large"


def test_many_small_chunks_are_no_trailer(conn: Harness) -> None:
    body = BODY * 600  # 12 KB in 1-byte chunks: 60 KB of framing, always next to body bytes
    framed = b"".join(b"1\r\n%c\r\n" % byte for byte in body) + b"0\r\n\r\n"
    head = chunked()
    for i in range(0, len(head + framed), 1500):
        conn.feed((head + framed)[i:i + 1500])
    assert conn.seen[0]["body"] == body
    assert [status for status, _, _ in conn.transport.answers()] == [200]


def test_an_upgrade_request_is_served_as_http_and_closes(conn: Harness) -> None:
    conn.feed(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\n"
              b"upgrade: websocket\r\nsec-websocket-version: 13\r\n\r\n")
    (seen,) = conn.seen
    assert seen["scope"]["type"] == "http"
    ((status, headers, _),) = conn.transport.answers()
    assert status == 200 and headers["connection"] == "close"
    conn.settle()
    assert conn.transport.is_closing() and not conn.registry.live, "its slot is released"


def test_an_upgrade_request_with_a_body_is_refused(conn: Harness) -> None:
    conn.feed(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\n"
              b"upgrade: h2c\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY)
    assert conn.seen == []
    ((status, headers, body),) = conn.transport.answers()
    assert status == 400 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "proxy_upgrade_unsupported"


def test_a_response_started_before_release_ends_as_keep_alive(conn: Harness) -> None:
    conn.feed(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    assert conn.transport.written.startswith(b"HTTP/1.1 200")  # headers out, body pending
    conn.registry.retire(True)
    conn.release_stream.set()
    conn.settle()
    ((status, headers, body),) = conn.transport.answers()
    assert status == 200 and "connection" not in headers and b"done" in body
    assert not conn.transport.is_closing(), "no close the client was not told of"
    # The client's next request, sent at once, is answered, with Connection: close.
    conn.feed(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    second = conn.transport.answers()[1]
    assert second[0] == 200 and second[1]["connection"] == "close"
    assert conn.transport.is_closing()


def test_shutdown_cuts_no_started_response(conn: Harness) -> None:
    conn.feed(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.protocol.shutdown()
    conn.release_stream.set()
    conn.settle()
    assert not conn.transport.is_closing()
    conn.feed(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
    assert conn.transport.answers()[1][1]["connection"] == "close"
    assert conn.transport.is_closing()
