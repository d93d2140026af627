"""Client-side bounds on a real socket: header cap (431), read timeout (408), write timeout
(slow reader cut off, slot freed), connection cap (503), malformed requests (400) -- each
answered with an OpenAI-shaped body and recorded once."""

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

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
BODY = json.dumps(CHAT).encode()


@pytest.fixture(scope="module")
def bounded(simulator: Process) -> Iterator[Process]:
    with running_zai_proxy("serve", env=proxy_env(
        simulator, MAX_HEADER_BYTES="8KiB", CLIENT_READ_TIMEOUT_SECONDS="1",
        CLIENT_WRITE_TIMEOUT_SECONDS="1", RATE_LIMIT_INITIAL="50",
        # Counting the tokens of megabytes a cut-off stream relayed is accounting's cost,
        # not the server's: off here, so the slot timing below is the server's alone.
        TOKEN_COUNTING_ENABLED="false"), ready_path="/ready") as process:
        yield process


def samples(proxy: Process, name: str) -> dict[str, float]:
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M)}


def sample(proxy: Process, name: str, **labels: str) -> float:
    """The sum over the series of `name` that carry `labels`."""
    return sum(value for found, value in samples(proxy, name).items()
               if all(f'{k}="{v}"' in found for k, v in labels.items()))


def openai_error(body: bytes, code: str) -> None:
    error = json.loads(body)["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}, error


def test_headers_over_the_cap_get_431(bounded: Process) -> None:
    before = sample(bounded, "zai_proxy_client_bound_exceeded_total", bound="max_header_bytes")
    ok = RawConnection(bounded.port)
    ok.request("GET", "/health", headers={"x-pad": "a" * 7000})
    assert ok.read_response().status == 200
    for trickle in (False, True):
        conn = RawConnection(bounded.port)
        head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 9000 + b"\r\n\r\n"
        if trickle:  # never complete: refused once the cap is passed, nothing more buffered
            for i in range(0, 8800, 1100):
                conn.send(head[i:i + 1100])
                time.sleep(0.01)
        else:
            conn.send(head)
        answer = conn.read_response()
        assert answer.status == 431 and answer.headers["connection"] == "close"
        openai_error(answer.body, "proxy_header_too_large")
        assert conn.wait_closed(2.0) is not None
    after = sample(bounded, "zai_proxy_client_bound_exceeded_total", bound="max_header_bytes")
    assert after == before + 2
    assert sample(bounded, "zai_proxy_requests_total", status_code="431") >= 2


def test_trickled_headers_and_bodies_get_408_within_the_read_timeout(bounded: Process) -> None:
    before = sample(bounded, "zai_proxy_requests_total", status_code="408")
    head = RawConnection(bounded.port)
    started = time.monotonic()
    head.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
    for _ in range(3):  # still trickling: a timer per request, not per read
        time.sleep(0.25)
        head.send(b"x-a: b\r\n")
    answer = head.read_response()
    assert answer.status == 408 and 0.9 <= time.monotonic() - started < 2.5
    openai_error(answer.body, "proxy_request_timeout")
    assert head.wait_closed(3.0) is not None

    body = RawConnection(bounded.port)
    started = time.monotonic()
    body.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
              b"\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY[:10])
    answer = body.read_response()
    assert answer.status == 408 and 0.9 <= time.monotonic() - started < 2.5
    openai_error(answer.body, "proxy_request_timeout")
    assert body.wait_closed(3.0) is not None
    deadline = time.monotonic() + 3
    while sample(bounded, "zai_proxy_requests_total", status_code="408") < before + 2:
        assert time.monotonic() < deadline, "each 408 is recorded"
        time.sleep(0.05)
    assert sample(bounded, "zai_proxy_client_bound_exceeded_total", bound="read_timeout") >= 2

    fresh = RawConnection(bounded.port)  # a whole request in time is served as usual
    fresh.request("POST", "/v1/chat/completions", BODY)
    assert fresh.read_response().status == 200


def test_a_reader_that_stops_is_cut_off_and_frees_its_slot(bounded: Process) -> None:
    before = sample(bounded, "zai_proxy_client_bound_exceeded_total", bound="write_timeout")
    conn = RawConnection(bounded.port, rcvbuf=4096)
    conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}).encode(),
                 {"x-sim-chunks": "200", "x-sim-words-per-chunk": "10000",
                  "x-sim-chunk-gap-ms": "1"})
    status, _ = conn.read_head()
    assert status == 200
    conn.read_chunk()  # then stop reading
    time.sleep(0.3)
    assert httpx.get(f"{bounded.url}/health").json()["in_flight"] == 1
    deadline = time.monotonic() + 3
    while httpx.get(f"{bounded.url}/health").json()["in_flight"]:
        assert time.monotonic() < deadline, "the slow reader still holds its slot"
        time.sleep(0.1)
    health = httpx.get(f"{bounded.url}/health").json()
    assert health["rate_limit"]["in_flight_upstream"] == 0
    assert sample(bounded, "zai_proxy_client_bound_exceeded_total",
                  bound="write_timeout") == before + 1
    assert sample(bounded, "zai_proxy_requests_total", status_code="499") >= 1
    conn.close()


def test_malformed_requests_get_an_openai_shaped_400(bounded: Process) -> None:
    conn = RawConnection(bounded.port)
    conn.send(b"GET /health HTTP/1.1\r\nbad header line\r\n\r\n")
    answer = conn.read_response()
    assert answer.status == 400
    openai_error(answer.body, "proxy_bad_http_request")


def test_connections_over_the_cap_get_503_but_probes_are_served(simulator: Process) -> None:
    proxy = start_zai_proxy("serve", env=proxy_env(simulator, MAX_CONNECTIONS="3"),
                            ready_path="/ready")
    try:
        held = [RawConnection(proxy.port) for _ in range(3)]
        time.sleep(0.2)
        extra = RawConnection(proxy.port)
        extra.request("POST", "/v1/chat/completions", BODY)
        answer = extra.read_response()
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert answer.headers["connection"] == "close"
        openai_error(answer.body, "proxy_too_many_connections")
        probe = RawConnection(proxy.port)
        probe.request("GET", "/ready")
        ready = probe.read_response()
        assert ready.status == 200 and ready.headers["connection"] == "close"
        for conn in held:
            conn.request("POST", "/v1/chat/completions", BODY)
            assert conn.read_response().status == 200
            conn.close()
        time.sleep(0.3)
        after = RawConnection(proxy.port)  # room again
        after.request("POST", "/v1/chat/completions", BODY)
        assert after.read_response().status == 200
        assert sample(proxy, "zai_proxy_client_bound_exceeded_total", bound="max_connections") >= 2
        assert sample(proxy, "zai_proxy_max_connections") == 3
    finally:
        proxy.terminate()
