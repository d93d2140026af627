"""Hostile clients and a misbehaving upstream against the server on a real socket: upgrade
requests (no slot may leak), chunked trailers (bounded, never forwarded), upstream header
values HTTP forbids (dropped, never an empty reply), X-Forwarded-For from untrusted peers, and
the idle timeout setting."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import proxy_env
from tests.support.rawhttp import RawConnection
from tests.support.servers import Process, running_zai_proxy, start_zai_proxy
from tests.support.upstreams import (
    RecordingUpstream,
    SeenRequest,
    http_response,
    recording_upstream,
)

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(CHAT).encode()
JSON = ("Content-Type", "application/json")
ANSWER = json.dumps({"id": "c1", "choices": [{"message": {"content": "ok"}}],
                     "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


def sample(proxy: Process, name: str, **labels: str) -> float:
    """The sum over the series of `name` that carry `labels`."""
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    return sum(float(value) for found, value in
               re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M)
               if all(f'{k}="{v}"' in found for k, v in labels.items()))


def wait_for(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def answer(request: SeenRequest) -> tuple[bytes, bool]:
    if request.header("x-test") == "control-bytes":
        raw = http_response(200, ANSWER, [JSON, ("X-Good", "kept")])
        head, _, body = raw.partition(b"\r\n\r\n")
        evil = b"\r\nX-Ctl: a\x01b\r\nX-Del: \x7f"
        return head + evil + b"\r\n\r\n" + body, False
    return http_response(200, ANSWER, [JSON]), False


upstream = recording_upstream(answer)


@pytest.fixture(scope="module")
def proxy(upstream: RecordingUpstream) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        f"http://127.0.0.1:{upstream.port}", MAX_RETRIES="0", MAX_HEADER_BYTES="8KiB",
        SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready") as process:
        yield process


@pytest.fixture
def capped(upstream: RecordingUpstream) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        f"http://127.0.0.1:{upstream.port}", MAX_CONNECTIONS="20",
        SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready") as process:
        yield process


def test_upgrade_requests_leave_no_connection_slot_behind(capped: Process) -> None:
    proxy = capped
    for i in range(30):
        conn = RawConnection(proxy.port)
        key = "" if i % 2 else "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        conn.send(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
                  b"sec-websocket-version: 13\r\n" + key.encode() + b"\r\n")
        reply = conn.read_response()
        assert reply.status != 101 and reply.headers.get("connection") == "close", reply
        assert conn.wait_closed(5.0) is not None, "the server closes after its answer"
        conn.close()
    # Only the scrape's own connection is left, and the cap still admits new clients.
    wait_for(lambda: sample(proxy, "zai_proxy_client_connections") <= 1,
             "connections of upgrade requests are still counted")
    fresh = RawConnection(proxy.port)
    fresh.request("POST", "/v1/chat/completions", BODY)
    assert fresh.read_response().status == 200
    fresh.close()
    # An h2c upgrade without a body is served as plain HTTP/1.1; with a body it is refused
    # (the parser hands the body over as upgraded bytes: served, it would arrive empty).
    h2c = RawConnection(proxy.port)
    h2c.request("GET", "/v1/models", None, {
        "connection": "Upgrade, HTTP2-Settings", "upgrade": "h2c",
        "http2-settings": "AAMAAABkAAQAoAAAAAIAAAAA"})
    reply = h2c.read_response()
    assert reply.status == 200 and reply.json()["data"]
    assert reply.headers["connection"] == "close"
    h2c.close()
    h2c = RawConnection(proxy.port)
    h2c.request("POST", "/v1/chat/completions", BODY, {
        "connection": "Upgrade, HTTP2-Settings", "upgrade": "h2c",
        "http2-settings": "AAMAAABkAAQAoAAAAAIAAAAA"})
    reply = h2c.read_response()
    assert reply.status == 400 and reply.headers["connection"] == "close"
    assert json.loads(reply.body)["error"]["code"] == "proxy_upgrade_unsupported"
    h2c.close()


def chunked_head(extra: str = "") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n" + extra.encode() + b"\r\n")


def test_trailers_are_never_forwarded(proxy: Process, upstream: RecordingUpstream) -> None:
    conn = RawConnection(proxy.port)
    conn.send(chunked_head() + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n"
              b"x-trailer-evil: yes\r\nauthorization: Bearer smuggled\r\n\r\n")
    reply = conn.read_response()
    assert reply.status == 200, reply
    seen = upstream.seen[-1]
    assert seen.header("x-trailer-evil") is None, seen.headers
    assert seen.header("authorization") != "Bearer smuggled"
    conn.request("POST", "/v1/chat/completions", BODY)  # the connection goes on as usual
    assert conn.read_response().status == 200
    conn.close()


def test_trailers_past_the_header_cap_get_431(proxy: Process) -> None:
    before = sample(proxy, "zai_proxy_requests_total", status_code="431")
    bound_before = sample(proxy, "zai_proxy_client_bound_exceeded_total", bound="max_header_bytes")
    for trailer in (b"x-pad: " + b"a" * 64 * 1024,  # one huge line, never ended
                    b"".join(b"x-t%d: %s\r\n" % (i, b"b" * 100) for i in range(2000))):
        conn = RawConnection(proxy.port)
        conn.send(chunked_head() + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n")
        started = time.monotonic()
        try:
            for i in range(0, len(trailer), 4096):  # as a client that keeps sending would
                conn.send(trailer[i:i + 4096])
        except OSError:
            pass  # refused and closed while still sending: the answer is already there
        reply = conn.read_response()
        assert reply.status == 431 and reply.headers["connection"] == "close", reply
        assert json.loads(reply.body)["error"]["code"] == "proxy_header_too_large"
        assert time.monotonic() - started < 5
        conn.close()
    wait_for(lambda: sample(proxy, "zai_proxy_requests_total", status_code="431") == before + 2,
             "each refused request is recorded once")
    assert sample(proxy, "zai_proxy_client_bound_exceeded_total",
                  bound="max_header_bytes") == bound_before + 2
    # Framing of an ordinary chunked body (many small chunks) is no trailer.
    chunks = b"".join(b"1\r\n%c\r\n" % byte for byte in BODY)
    conn = RawConnection(proxy.port)
    conn.send(chunked_head() + chunks + b"0\r\n\r\n")
    assert conn.read_response().status == 200
    conn.close()


def test_control_bytes_in_upstream_headers_are_dropped(proxy: Process) -> None:
    before = sample(proxy, "zai_proxy_upstream_headers_dropped_total")
    with httpx.Client(timeout=10) as client:
        reply = client.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                            headers={"x-test": "control-bytes"})
    assert reply.status_code == 200 and reply.json()["choices"]
    assert reply.headers["x-good"] == "kept"
    assert "x-ctl" not in reply.headers and "x-del" not in reply.headers
    assert sample(proxy, "zai_proxy_upstream_headers_dropped_total") == before + 2


def limited_clients(proxy: Process) -> list[int]:
    """Statuses of three requests, each claiming another client in X-Forwarded-For."""
    with httpx.Client(timeout=10) as client:
        return [client.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                            headers={"x-forwarded-for": f"203.0.113.{i}"}).status_code
                for i in range(3)]


def test_forwarded_for_is_trusted_only_from_configured_peers(
        upstream: RecordingUpstream) -> None:
    base = f"http://127.0.0.1:{upstream.port}"
    untrusted = start_zai_proxy("serve", env=proxy_env(
        base, CLIENT_RATE_LIMITS="2/minute", SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready")
    try:
        assert limited_clients(untrusted) == [200, 200, 429], "one client: the TCP peer"
    finally:
        untrusted.terminate()
    trusted = start_zai_proxy("serve", env=proxy_env(
        base, CLIENT_RATE_LIMITS="2/minute", FORWARDED_ALLOW_IPS="127.0.0.1",
        SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready")
    try:
        assert limited_clients(trusted) == [200, 200, 200], "three clients behind a trusted LB"
    finally:
        trusted.terminate()


def test_the_idle_timeout_is_a_setting(upstream: RecordingUpstream) -> None:
    proxy = start_zai_proxy("serve", env=proxy_env(
        f"http://127.0.0.1:{upstream.port}", CLIENT_IDLE_TIMEOUT_SECONDS="1",
        SHUTDOWN_DRAIN_SECONDS="0"), ready_path="/ready")
    try:
        silent = RawConnection(proxy.port)  # never sends a byte
        served = RawConnection(proxy.port)
        served.request("POST", "/v1/chat/completions", BODY)
        assert served.read_response().status == 200
        for conn in (silent, served):
            closed = conn.wait_closed(10.0)
            assert closed is not None and closed < 6.0, closed
            conn.close()
    finally:
        proxy.terminate()
