"""The server's HTTP protocol on virtual time, seen from the client: refusals (status line,
headers, OpenAI-shaped body), the bound counters, read and write timeouts, the connection cap,
release and keep."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime
from tests.support.protocol import Connection
from tests.support.upstreams import read_request
from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.connections import RELEASE_IDLE_SECONDS, ClientBounds, ClientConnections


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[Any] = []

    def finished(self, ex: Any) -> None:
        self.exchanges.append(ex)


class World:
    def __init__(self, **bounds: Any) -> None:
        self.vt = VirtualTime()
        self.prom = CollectorRegistry()
        self.recorder = Recorder()
        self.registry = ClientConnections(Metrics(self.prom, "v1"), self.recorder,  # type: ignore[arg-type]
                                          ClientBounds(**bounds))
        self.seen: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await self.serve(scope, receive, send)

        self.app = app

    async def serve(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            self.seen.append({"scope": scope, "disconnected": True})
            return
        body = await read_request(scope, receive, self.seen)
        if body is None:
            return
        payload = json.dumps({"len": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    def connect(self, keep_alive: float = 30.0) -> Connection:
        return Connection(self.app, self.registry, self.vt, keep_alive=keep_alive)

    def bound(self, name: str) -> float | None:
        return self.prom.get_sample_value("zai_proxy_client_bound_exceeded_total",
                                          {"bound": name, "deployment_variant": "v1"})

    def gauge(self, name: str) -> float | None:
        return self.prom.get_sample_value(name, {"deployment_variant": "v1"})


def parse(raw: bytes) -> tuple[bytes, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip()] = v.strip()
    return lines[0], headers, body


def get(path: str = "/v1/models", method: str = "GET", extra: bytes = b"") -> bytes:
    return (b"%s %s HTTP/1.1\r\nhost: proxy\r\n%s\r\n"
            % (method.encode(), path.encode(), extra))


def post(body: bytes, path: str = "/v1/chat/completions") -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: proxy\r\ncontent-length: %d\r\n\r\n%s"
            % (path.encode(), len(body), body))


def check_refusal(w: World, raw: bytes, status: int, code: str, type_: str,
                  method: str) -> dict[str, Any]:
    line, headers, body = parse(raw)
    assert line.startswith(b"HTTP/1.1 %d " % status)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-zai-proxy-variant"] == "v1"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["type"] == type_ and error["code"] == code and error["param"] is None
    assert len(w.recorder.exchanges) == 1
    ex = w.recorder.exchanges[0]
    assert ex.method == method and ex.status == status and ex.outcome == code
    assert ex.error == error["message"]
    assert ex.request_bytes == 0
    assert ex.request_id == headers["x-request-id"] and ex.request_id
    return error


async def test_a_plain_request_is_served_and_kept_alive() -> None:
    w = World()
    conn = w.connect()
    await conn.send(post(b"hello"))
    line, headers, body = parse(conn.take())
    assert line.startswith(b"HTTP/1.1 200") and b"{\"len\": 5}" in body
    assert "connection" not in headers
    assert w.seen[0]["body"] == b"hello"
    assert w.gauge("zai_proxy_client_connections") == 1
    await conn.send(get())
    assert conn.take().startswith(b"HTTP/1.1 200")
    assert len(w.seen) == 2 and not conn.closed


async def test_a_head_too_large_while_arriving_is_refused_431() -> None:
    w = World(max_header_bytes=200)
    conn = w.connect()
    await conn.send(b"GET /v1/models HTTP/1.1\r\nx-big: " + b"a" * 300)
    error = check_refusal(w, conn.take(), 431, "proxy_header_too_large",
                          "invalid_request_error", "GET")
    assert error["message"] == ("request headers exceed the 200-byte limit "
                                "(MAX_HEADER_BYTES)")
    assert w.bound("max_header_bytes") == 1
    assert conn.closed and w.seen == []
    assert w.gauge("zai_proxy_client_connections") == 0


async def test_a_complete_head_too_large_is_refused_431_with_its_size() -> None:
    w = World(max_header_bytes=100)
    conn = w.connect()
    value = b"b" * 90
    await conn.send(b"GET /v1/models HTTP/1.1\r\nx-big: " + value + b"\r\n\r\n")
    size = len(b"/v1/models") + len(b"x-big") + len(value) + 4
    error = check_refusal(w, conn.take(), 431, "proxy_header_too_large",
                          "invalid_request_error", "GET")
    assert error["message"] == (f"request headers of {size} bytes exceed the 100-byte limit "
                                "(MAX_HEADER_BYTES)")
    assert w.bound("max_header_bytes") == 1
    assert w.seen == []


async def test_a_head_at_the_limit_is_served() -> None:
    w = World(max_header_bytes=100)
    conn = w.connect()
    # url 10 + name 5 + 4 = 19: a value of 81 makes exactly 100 (the bound is inclusive)
    data = b"GET /v1/models HTTP/1.1\r\nx-big: " + b"c" * 81 + b"\r\n\r\n"
    await conn.send(data)
    assert conn.take().startswith(b"HTTP/1.1 200")
    assert w.bound("max_header_bytes") == 0


async def test_a_malformed_request_gets_an_openai_400() -> None:
    w = World()
    conn = w.connect()
    await conn.send(b"GET /v1/models HTTP/1.1\r\nbad header\r\n\r\n")
    error = check_refusal(w, conn.take(), 400, "proxy_bad_http_request",
                          "invalid_request_error", "GET")
    assert error["message"].startswith("malformed HTTP request: ")


async def test_a_malformed_head_request_gets_headers_only() -> None:
    w = World()
    conn = w.connect()
    await conn.send(b"HEAD /v1/models HTTP/1.1\r\nbad header\r\n\r\n")
    raw = conn.take()
    line, headers, body = parse(raw)
    assert line.startswith(b"HTTP/1.1 400") and body == b""
    assert int(headers["content-length"]) > 0
    assert w.recorder.exchanges[0].method == "HEAD"


async def test_garbage_before_the_method_is_recorded_as_other() -> None:
    w = World()
    conn = w.connect()
    await conn.send(b"\x01\x02 garbage\r\n\r\n")
    line, _, body = parse(conn.take())
    assert line.startswith(b"HTTP/1.1 400") and body
    assert w.recorder.exchanges[0].method == "other"


async def test_an_upgrade_with_a_body_is_refused() -> None:
    w = World()
    conn = w.connect()
    await conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\nconnection: upgrade\r\n"
                    b"upgrade: h2c\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    error = check_refusal(w, conn.take(), 400, "proxy_upgrade_unsupported",
                          "invalid_request_error", "POST")
    assert error["message"] == ("the proxy serves no protocol upgrade, and the body of an "
                                "upgrade request would be lost: send the request without "
                                "`Upgrade`")
    assert w.seen == []


async def test_an_upgrade_without_a_body_is_served_and_closed() -> None:
    w = World()
    conn = w.connect()
    await conn.send(b"GET /v1/models HTTP/1.1\r\nhost: p\r\nconnection: upgrade\r\n"
                    b"upgrade: websocket\r\ncontent-length: 0\r\n\r\n")
    raw = conn.take()
    assert raw.startswith(b"HTTP/1.1 200") and b"connection: close" in raw.lower()
    assert len(w.seen) == 1


async def test_over_the_cap_gets_503_except_probes_and_admin() -> None:
    w = World(max_connections=1)
    first = w.connect()
    assert w.bound("max_connections") == 0
    second = w.connect()
    assert w.bound("max_connections") == 1
    await first.send(get())
    assert first.take().startswith(b"HTTP/1.1 200")
    await second.send(get())
    raw = second.take()
    _, headers, _ = parse(raw)
    error = check_refusal(w, raw, 503, "proxy_too_many_connections", "server_error", "GET")
    assert error["message"] == "the proxy serves no more connections now; retry shortly"
    assert headers["retry-after"] == "1"
    for path in ("/health", "/ready", "/metrics", "/admin/retire"):
        extra = w.connect()
        await extra.send(get(path))
        raw = extra.take()
        assert raw.startswith(b"HTTP/1.1 200"), path
        assert b"connection: close" in raw.lower()
        assert w.seen[-1]["scope"]["path"] == path


async def test_read_timeout_on_the_head_answers_408_at_the_deadline() -> None:
    w = World(read_timeout=10.0)
    conn = w.connect()
    await conn.send(b"GET /v1/models HTTP/1.1\r\n")
    await w.vt.advance(9.9)
    assert not conn.closed and w.bound("read_timeout") == 0
    await conn.send(b"host: p\r\n")  # trickling does not restart the clock
    await w.vt.advance(0.2)
    error = check_refusal(w, conn.take(), 408, "proxy_request_timeout",
                          "invalid_request_error", "GET")
    assert error["message"] == ("the request did not arrive within 10 s "
                                "(CLIENT_READ_TIMEOUT_SECONDS)")
    assert w.bound("read_timeout") == 1 and conn.closed


async def test_read_timeout_on_the_body_answers_for_the_app() -> None:
    w = World(read_timeout=5.0)
    conn = w.connect()
    await conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\n"
                    b"content-length: 10\r\n\r\nabc")
    await w.vt.advance(4.9)
    assert not conn.closed
    await w.vt.advance(0.2)
    raw = conn.take()
    line, headers, body = parse(raw)
    assert line.startswith(b"HTTP/1.1 408")
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close" and headers["x-zai-proxy-variant"] == "v1"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error == {"message": "the request did not arrive within 5 s "
                                "(CLIENT_READ_TIMEOUT_SECONDS)",
                     "type": "invalid_request_error", "param": None,
                     "code": "proxy_request_timeout"}
    assert conn.closed
    assert w.seen and w.seen[-1].get("disconnected")
    assert w.seen[-1]["scope"]["zai_proxy.client_fault"] == "read_timeout"
    assert w.recorder.exchanges == [], "the app records a cut-off request, not the server"
    assert w.bound("read_timeout") == 1


async def test_a_complete_request_cancels_the_read_timer() -> None:
    w = World(read_timeout=5.0)
    conn = w.connect(keep_alive=60)
    await conn.send(post(b"x"))
    assert conn.take().startswith(b"HTTP/1.1 200")
    await w.vt.advance(20.0)
    assert not conn.closed and w.bound("read_timeout") == 0
    assert conn.take() == b""


async def test_the_idle_timeout_closes_a_silent_connection() -> None:
    w = World()
    conn = w.connect(keep_alive=7)
    await w.vt.advance(6.9)
    assert not conn.closed
    await w.vt.advance(0.2)
    assert conn.closed and conn.take() == b""
    assert w.gauge("zai_proxy_client_connections") == 0
    assert w.gauge("zai_proxy_client_connections_released_total") == 0


async def test_write_timeout_aborts_a_stalled_reader_and_resume_cancels_it() -> None:
    w = World(write_timeout=8.0)
    conn = w.connect(keep_alive=100)
    await conn.send(get())
    conn.take()
    conn.protocol.pause_writing()
    await w.vt.advance(7.0)
    conn.protocol.resume_writing()
    await w.vt.advance(5.0)
    assert not conn.transport.aborted and w.bound("write_timeout") == 0
    conn.protocol.pause_writing()
    await w.vt.advance(7.9)
    assert not conn.transport.aborted
    await w.vt.advance(0.2)
    assert conn.transport.aborted and w.bound("write_timeout") == 1
    assert w.gauge("zai_proxy_client_connections") == 0


async def test_release_closes_an_idle_connection_after_the_release_window() -> None:
    w = World()
    conn = w.connect(keep_alive=100)
    await conn.send(get())
    conn.take()
    w.registry.retire(True)
    await w.vt.advance(RELEASE_IDLE_SECONDS * 0.9)
    assert not conn.closed
    await w.vt.advance(RELEASE_IDLE_SECONDS * 0.2)
    assert conn.closed
    assert w.gauge("zai_proxy_client_connections_released_total") == 1


async def test_keep_undoes_release() -> None:
    w = World()
    conn = w.connect(keep_alive=10)
    await conn.send(get())
    conn.take()
    w.registry.retire(True)
    w.registry.retire(False)
    await w.vt.advance(9.0)
    assert not conn.closed
    await conn.send(get())
    raw = conn.take()
    assert raw.startswith(b"HTTP/1.1 200") and b"connection: close" not in raw.lower()
    await w.vt.advance(9.9)
    assert not conn.closed
    await w.vt.advance(0.2)
    assert conn.closed
    assert w.gauge("zai_proxy_client_connections_released_total") == 0


async def test_a_request_under_release_is_answered_with_connection_close() -> None:
    w = World()
    conn = w.connect(keep_alive=100)
    w.registry.retire(True)
    await conn.send(get())
    raw = conn.take()
    assert raw.startswith(b"HTTP/1.1 200") and b"connection: close" in raw.lower()
    await w.vt.advance(0.1)
    assert conn.closed


async def test_shutdown_releases_for_good() -> None:
    w = World()
    conn = w.connect(keep_alive=100)
    await conn.send(get())
    conn.take()
    conn.protocol.shutdown()
    conn.protocol.keep()
    await w.vt.advance(RELEASE_IDLE_SECONDS * 1.1)
    assert conn.closed


async def test_trailers_and_framing_past_the_cap_are_refused_431() -> None:
    w = World(max_header_bytes=300)
    conn = w.connect()
    await conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\n"
                    b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert not conn.closed
    await conn.send(b"0\r\n" + b"x-trailer: " + b"t" * 400)
    raw = conn.take()
    line, headers, body = parse(raw)
    assert line.startswith(b"HTTP/1.1 431")
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error == {"message": "request trailers and chunk framing exceed the 300-byte limit "
                                "(MAX_HEADER_BYTES)",
                     "type": "invalid_request_error", "param": None,
                     "code": "proxy_header_too_large"}
    assert w.bound("max_header_bytes") == 1 and conn.closed
    assert w.seen and w.seen[-1].get("disconnected")


async def test_trailers_are_not_headers() -> None:
    w = World()
    conn = w.connect()
    await conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: p\r\n"
                    b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n")
    assert conn.take().startswith(b"HTTP/1.1 200")
    names = [n for n, _ in w.seen[0]["scope"]["headers"]]
    assert b"x-t" not in names and w.seen[0]["body"] == b"hello"


async def test_write_timeout_mid_response_tells_the_app_the_client_is_at_fault() -> None:
    w = World(write_timeout=3.0)
    conn = w.connect()
    await conn.send(get("/stream"))
    assert conn.take().startswith(b"HTTP/1.1 200")
    conn.protocol.pause_writing()
    await w.vt.advance(3.1)
    assert conn.transport.aborted and w.bound("write_timeout") == 1
    assert w.seen[-1]["disconnected"]
    assert w.seen[-1]["scope"]["zai_proxy.client_fault"] == "write_timeout"


async def test_a_refusal_carries_the_server_default_headers() -> None:
    w = World()
    conn = w.connect()
    conn.protocol.server_state.default_headers = [(b"server", b"zai")]
    await conn.send(b"GET /v1/models HTTP/1.1\r\nbad header\r\n\r\n")
    _, headers, _ = parse(conn.take())
    assert headers["server"] == "zai"


async def test_a_trickled_head_counts_every_read_against_the_cap() -> None:
    w = World(max_header_bytes=200)
    conn = w.connect()
    await conn.send(b"GET /v1/models HTTP/1.1\r\n")
    for _ in range(30):
        if conn.closed:
            break
        await conn.send(b"x-a: " + b"a" * 5 + b"\r\n")
    assert conn.take().startswith(b"HTTP/1.1 431")
    assert w.bound("max_header_bytes") == 1


async def test_an_unfinished_head_of_exactly_the_cap_is_not_refused() -> None:
    w = World(max_header_bytes=200)
    conn = w.connect()
    start = b"GET /v1/models HTTP/1.1\r\nx-a: "
    await conn.send(start + b"a" * (200 - len(start)))
    assert not conn.closed and conn.take() == b""
    await conn.send(b"a")
    assert conn.take().startswith(b"HTTP/1.1 431")
