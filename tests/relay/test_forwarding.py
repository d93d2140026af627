"""Admission, 429 classification and retries through the whole app, in-process.

The upstream is an `httpx.MockTransport` answering a scripted sequence. The app runs on virtual
time (`VirtualTime` as its clock and sleep) that a driver task moves forward in small steps
whenever the test awaits: retry backoffs, queue waits and deadlines pass without real waiting,
and the backoffs the request handlers slept are recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.clock import VirtualTime, settle
from tests.support.forwarding import (
    CHAT,
    EVENT,
    Answer,
    Chunks,
    Harness,
    Script,
    ok,
    refuse,
    status,
    stream,
    z429,
)

UPSTREAM_KEY = "upstream-secret-key-123"


# -- 429 classes -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["1308", "1310"])
async def test_quota_429_is_relayed_at_once_with_time_until_reset(code: str) -> None:
    reset_ms = int((VirtualTime().wall() + 3600) * 1000)
    script = Script(z429(code, next_reset_time=reset_ms))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == code  # the upstream's body, unchanged
    assert response.json()["error"]["next_reset_time"] == reset_ms
    cls = "quota_5h" if code == "1308" else "quota_period"
    assert response.headers["x-zai-error-class"] == cls
    assert response.headers["x-zai-error-code"] == code
    assert 3590 <= int(response.headers["retry-after"]) <= 3601
    assert len(script.seen) == 1 and harness.delays == []  # never retried
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": cls}) == 1
    assert harness.sample("zai_proxy_rate_limit_rejections_total", reason="quota_exhausted") == 1
    assert harness.in_flight() == 0


@pytest.mark.parametrize(("code", "cls", "reason"), [
    ("1303", "frequency", "429_frequency"),
    ("1302", "concurrency", "429_concurrency"),
    ("1312", "congestion", "429_congestion"),
    ("9999", "unknown", "429_unknown"),
])
async def test_retryable_429_retried_up_to_max_retries_then_relayed(
        code: str, cls: str, reason: str) -> None:
    script = Script(z429(code, retry_after="2"))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == code
    assert response.headers["x-zai-error-class"] == cls
    assert response.headers["x-zai-error-code"] == code
    assert response.headers["retry-after"] == "2"
    assert len(script.seen) == 4  # the first attempt and MAX_RETRIES=3 retries
    assert len(harness.delays) == 3
    assert all(2.0 <= d <= 2.5 for d in harness.delays), harness.delays  # honours Retry-After
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": cls}) == 4
    assert harness.sample("zai_proxy_retry_attempts_total", reason=reason) == 3
    assert harness.in_flight() == 0


async def test_429_then_success_is_served_after_one_retry() -> None:
    script = Script(z429("1303", retry_after="1"), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert "x-zai-error-class" not in response.headers
    assert len(script.seen) == 2 and len(harness.delays) == 1
    assert harness.sample("zai_proxy_retry_attempts_total", reason="429_frequency") == 1
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "frequency"}) == 1


async def test_zai_hint_in_the_body_is_honoured_when_no_header() -> None:
    script = Script(lambda r: httpx.Response(
        429, json={"code": 1303, "msg": "1303: too fast", "retry_after": 4}), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert len(harness.delays) == 1 and 4.0 <= harness.delays[0] <= 4.5


async def test_retry_after_longer_than_the_hint_cap_is_relayed_not_waited() -> None:
    script = Script(z429("1303", retry_after="120"))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429 and response.headers["retry-after"] == "120"
    assert len(script.seen) == 1 and harness.delays == []


async def test_max_retries_zero_relays_the_first_429() -> None:
    script = Script(z429("1303", retry_after="1"))
    harness = Harness(script, MAX_RETRIES="0")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429 and len(script.seen) == 1


async def test_anthropic_envelope_429_is_classified() -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "code": "1302",
                                       "message": "High concurrency"}}
    script = Script(lambda r: httpx.Response(429, json=body), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/messages", json={"model": "glm-4.7", "messages": [],
                                                           "max_tokens": 5})
    assert response.status_code == 200
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "concurrency"}) == 1
    assert harness.sample("zai_proxy_retry_attempts_total", reason="429_concurrency") == 1


# -- other retryable failures ----------------------------------------------------------------


@pytest.mark.parametrize(("first", "reason", "error_type"), [
    (refuse, "connection", "connection"),
    (status(502), "5xx", "5xx"),
    (status(503), "5xx", "5xx"),
    (status(504), "5xx", "5xx"),
    (lambda r: httpx.Response(200, content=b"", headers={"content-type": "application/json"}),
     "empty_response", "truncated_response"),
    (lambda r: httpx.Response(200, content=b'{"id": "chatcmpl-1", "choi',
                              headers={"content-type": "application/json"}),
     "empty_response", "truncated_response"),
    (stream([]), "empty_response", "empty_streaming"),
    (stream([], fail=True), "empty_response", "truncated_response"),
])
async def test_failures_before_any_byte_are_retried(first: Answer, reason: str,
                                                    error_type: str) -> None:
    script = Script(first, first, ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["id"] == "chatcmpl-1"
    assert len(script.seen) == 3 and len(harness.delays) == 2
    assert all(0 <= d <= 1.0 for d in harness.delays)  # jittered backoff, base 0.5 s
    assert harness.sample("zai_proxy_retry_attempts_total", reason=reason) == 2
    assert harness.sample("zai_proxy_upstream_errors_total", error_type=error_type) == 2
    assert harness.in_flight() == 0


async def test_500_is_not_a_gateway_error_and_is_not_retried() -> None:
    script = Script(lambda r: httpx.Response(500, json={"error": {"code": "500"}}))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 500 and len(script.seen) == 1


async def test_gateway_errors_past_max_retries_relay_the_last_answer() -> None:
    script = Script(status(503, b"<html>503 first</html>"), status(502, b"<html>502 last</html>"))
    harness = Harness(script, MAX_RETRIES="2")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502 and response.content == b"<html>502 last</html>"
    assert len(script.seen) == 3
    assert harness.sample("zai_proxy_retry_attempts_total", reason="5xx") == 2
    assert harness.in_flight() == 0


async def test_connection_errors_past_max_retries_are_502() -> None:
    script = Script(refuse)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "proxy_upstream_unreachable"
    assert len(script.seen) == 4
    assert harness.sample("zai_proxy_retry_attempts_total", reason="connection") == 3
    assert harness.in_flight() == 0


async def test_empty_stream_then_good_stream_relays_the_good_one() -> None:
    script = Script(stream([]), stream([EVENT, b"data: [DONE]\n\n"]))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.content == EVENT + b"data: [DONE]\n\n"
    assert len(script.seen) == 2


async def test_stream_that_sent_bytes_is_never_retried() -> None:
    script = Script(stream([EVENT, EVENT], fail=True), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.content.startswith(EVENT + EVENT)
    tail = response.content[len(EVENT) * 2:]
    assert json.loads(tail.removeprefix(b"data: "))["error"]["code"] == \
        "proxy_upstream_interrupted"
    assert len(script.seen) == 1 and harness.delays == []
    assert harness.sample("zai_proxy_upstream_errors_total", error_type="stream_interrupted") == 1
    assert harness.in_flight() == 0


async def test_each_retry_goes_through_admission_again() -> None:
    script = Script(status(502), status(502), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    # One admission-wait observation per attempt.
    assert harness.sample("zai_proxy_rate_limit_wait_seconds_count") == 3


async def test_a_retry_waits_for_a_slow_rate_gate_like_a_first_attempt() -> None:
    times: list[float] = []

    def timed(answer: Answer) -> Answer:
        def record(request: httpx.Request) -> httpx.Response:
            times.append(harness.vt())
            return answer(request)
        return record

    script = Script(timed(status(502)), timed(status(502)), timed(ok))
    harness = Harness(script, RATE_LIMIT_INITIAL="2", RATE_LIMIT_MAX="2")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    # Two backoffs were slept (the gate's own pacing is not one), and at 2 req/s the attempts
    # are at least one gate interval apart whatever the backoff drew.
    assert len(harness.delays) == 2
    assert all(later - earlier >= 0.5 - 1e-9 for earlier, later in itertools.pairwise(times))


# -- the proxy's own rejections --------------------------------------------------------------


class Gate:
    """An upstream that holds each request until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        await self.release.wait()
        return ok(request)


def assert_proxy_429(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert "x-zai-error-class" not in response.headers


async def test_queue_full_is_rejected_at_once() -> None:
    gate = Gate()
    script = Script(gate)
    harness = Harness(script, MAX_WORKERS="1", QUEUE_MAX="0")
    async with harness as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await gate.entered.wait()
        second = await client.post("/v1/chat/completions", json=CHAT)
        gate.release.set()
        assert (await first).status_code == 200
    assert_proxy_429(second, "proxy_queue_full")
    assert len(script.seen) == 1
    assert harness.sample("zai_proxy_rate_limit_rejections_total", reason="queue_full") == 1
    assert harness.in_flight() == 0


async def test_expected_wait_past_the_deadline_is_rejected_at_once() -> None:
    script = Script(ok)
    harness = Harness(script, RATE_LIMIT_INITIAL="1", RATE_LIMIT_MIN="1",
                      QUEUE_TIMEOUT_SECONDS="0.5")
    async with harness as client:
        first = await client.post("/v1/chat/completions", json=CHAT)
        started = harness.vt()
        second = await client.post("/v1/chat/completions", json=CHAT)
        elapsed = harness.vt() - started
    assert first.status_code == 200
    assert_proxy_429(second, "proxy_queue_timeout")
    assert elapsed < 0.4  # rejected at once, not after waiting out the deadline
    assert harness.sample("zai_proxy_rate_limit_rejections_total", reason="queue_timeout") == 1
    assert len(script.seen) == 1


async def test_waiter_past_its_deadline_is_rejected() -> None:
    gate = Gate()
    script = Script(gate)
    harness = Harness(script, MAX_WORKERS="1", QUEUE_TIMEOUT_SECONDS="0.2")
    async with harness as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await gate.entered.wait()
        second = await client.post("/v1/chat/completions", json=CHAT)
        assert harness.admission.snapshot()["queue_depth"] == 0
        gate.release.set()
        assert (await first).status_code == 200
    assert_proxy_429(second, "proxy_queue_timeout")
    assert len(script.seen) == 1
    assert harness.in_flight() == 0


async def test_client_that_leaves_while_queued_consumes_nothing() -> None:
    gate = Gate()
    script = Script(gate)
    harness = Harness(script, MAX_WORKERS="1")
    async with harness as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await gate.entered.wait()
        # The second client talks raw ASGI so it can disconnect while queued.
        leave = asyncio.Event()
        sent: list[dict[str, Any]] = []
        body = json.dumps(CHAT).encode()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                 "raw_path": b"/v1/chat/completions", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")],
                 "client": ("10.0.0.9", 1234), "http_version": "1.1", "scheme": "http"}
        second = asyncio.create_task(harness.app(scope, receive, send))
        await settle()
        assert harness.admission.snapshot()["queue_depth"] == 1
        leave.set()
        await second
        assert harness.admission.snapshot()["queue_depth"] == 0
        gate.release.set()
        assert (await first).status_code == 200
        third = await client.post("/v1/chat/completions", json=CHAT)
    assert third.status_code == 200
    assert sent == []  # nothing was answered to the client that left
    assert len(script.seen) == 2  # the first and the third; the leaver never went upstream
    assert harness.sample("zai_proxy_requests_total", method="POST",
                          route="/v1/chat/completions", status_code="499") == 1
    assert harness.in_flight() == 0


async def test_client_quota_is_a_proxy_429() -> None:
    script = Script(ok)
    harness = Harness(script, CLIENT_RATE_LIMITS="2/minute",
                      PROXY_API_KEYS="client-key-aaaaaa,client-key-bbbbbb")
    a = {"authorization": "Bearer client-key-aaaaaa"}
    b = {"authorization": "Bearer client-key-bbbbbb"}
    async with harness as client:
        answers = [await client.post("/v1/chat/completions", json=CHAT, headers=a)
                   for _ in range(3)]
        other = await client.post("/v1/chat/completions", json=CHAT, headers=b)
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert_proxy_429(answers[2], "proxy_client_quota")
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    assert other.status_code == 200  # each client has its own quota
    assert len(script.seen) == 3
    assert harness.sample("zai_proxy_rate_limit_rejections_total", reason="client_quota") == 1
    assert harness.in_flight() == 0


async def test_every_path_releases_its_slot() -> None:
    answers: list[Answer] = [
        ok, refuse, status(502),
        z429("1308", next_reset_time=int(VirtualTime().wall() * 1000) + 5000),
        z429("1303", retry_after="1"), stream([EVENT, b"data: [DONE]\n\n"]),
        stream([EVENT], fail=True), lambda r: httpx.Response(400, json={"error": {}}),
    ]
    for answer in answers:
        harness = Harness(Script(answer), MAX_WORKERS="2", MAX_RETRIES="1")
        async with harness as client:
            for body in (CHAT, {**CHAT, "stream": True}):
                await client.post("/v1/chat/completions", json=body)
            assert harness.in_flight() == 0
            assert harness.admission.snapshot()["queue_depth"] == 0


async def test_an_empty_2xx_on_a_pass_through_route_is_not_retried() -> None:
    script = Script(lambda request: httpx.Response(204))
    harness = Harness(script)
    async with harness as client:
        response = await client.delete("/v1/files/file-1")
    assert response.status_code == 204 and len(script.seen) == 1
    assert harness.sample("zai_proxy_retry_attempts_total", reason="empty_response") == 0


# -- bounded bodies (issue 12) -----------------------------------------------------------------


class Counted(httpx.AsyncByteStream):
    """A streamed body that counts how many of its chunks the proxy has pulled."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def first_body_watch(harness: Harness, body: Counted) -> list[int]:
    """Wrap the app: the number of chunks pulled upstream when the first body byte went out."""
    seen: list[int] = []
    app = harness.app.proxy

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def spy(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body") and not seen:
                seen.append(body.pulled)
            await send(message)

        await app(scope, receive, spy)

    harness.app.proxy = watched  # type: ignore[assignment]
    return seen


@pytest.mark.parametrize("declared", [True, False])
async def test_a_json_answer_over_max_response_bytes_is_a_clean_502(declared: bool) -> None:
    big = b'{"choices":[],"pad":"' + b"x" * 300_000 + b'"}'
    chunks = [big[i:i + 65536] for i in range(0, len(big), 65536)]
    headers = {"content-type": "application/json"}
    if declared:
        headers["content-length"] = str(len(big))
    body = Counted(chunks)
    script = Script(lambda request: httpx.Response(200, headers=headers, stream=body))
    harness = Harness(script, MAX_RESPONSE_BYTES="256KiB")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "proxy_upstream_response_too_large"
    assert body.pulled == (0 if declared else 5)  # never more than the cap (+ one chunk)
    assert len(script.seen) == 1 and harness.in_flight() == 0
    assert harness.sample("zai_proxy_upstream_errors_total", error_type="response_too_large") == 1


async def test_a_large_body_nobody_counts_is_relayed_as_it_arrives() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, not JSON
    body = Counted([data[i:i + 65536] for i in range(0, len(data), 65536)])
    script = Script(lambda request: httpx.Response(
        200, headers={"content-type": "application/octet-stream",
                      "content-length": str(len(data))}, stream=body))
    harness = Harness(script, MAX_RESPONSE_BYTES="256KiB")
    first = first_body_watch(harness, body)
    async with harness as client:
        response = await client.get("/v1/files/file-1/content")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert "cache-control" not in response.headers  # not dressed up as an event stream
    assert first == [5]  # the first bytes left after 5 of 16 chunks: streamed, not buffered
    assert harness.in_flight() == 0


async def test_a_long_error_body_is_relayed_whole_not_cut() -> None:
    page = b"<html>" + b"e" * 600_000 + b"</html>"
    script = Script(lambda request: httpx.Response(
        404, headers={"content-type": "text/html"},
        stream=Chunks([page[i:i + 65536] for i in range(0, len(page), 65536)])))
    harness = Harness(script)
    async with harness as client:
        response = await client.get("/v1/files/nope")
    assert (response.status_code, response.content) == (404, page)
    assert len(script.seen) == 1


async def test_large_json_answers_are_parsed_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import zai_proxy.relay.forwarding as forwarding

    parsed: list[int] = []
    original = forwarding.parse_off_loop

    async def recording(body: bytes) -> Any:
        parsed.append(len(body))
        return await original(body)

    monkeypatch.setattr(forwarding, "parse_off_loop", recording)
    small = json.dumps({"choices": [], "usage": {"prompt_tokens": 1}}).encode()
    large = json.dumps({"data": [{"embedding": [0.5] * 20_000}]}).encode()
    script = Script(lambda r: httpx.Response(200, content=large if b"big" in r.content
                                             else small))
    harness = Harness(script)
    async with harness as client:
        one = await client.post("/v1/embeddings", json={"input": "small"})
        two = await client.post("/v1/embeddings", json={"input": "big"})
    assert (one.content, two.content) == (small, large)
    assert parsed == [len(large)]


async def test_a_1312_is_congestion_and_its_retry_does_not_jump_the_queue() -> None:
    script = Script(z429("1312", retry_after="1"), z429("1303", retry_after="1"), ok)
    harness = Harness(script)
    priorities: list[bool] = []
    async with harness as client:
        acquire = harness.admission.acquire

        async def spy(client_id: str, **kw: Any) -> Any:
            priorities.append(bool(kw.get("priority")))
            return await acquire(client_id, **kw)

        harness.admission.acquire = spy  # type: ignore[method-assign]
        response = await client.post("/v1/chat/completions", json=CHAT)
        seen = harness.admission.rate.drain()
    assert response.status_code == 200
    # first try; the 1312's retry queues like new work; the 1303's retry goes ahead
    assert priorities == [False, False, True]
    # the 1312 passed the rate gate: counted as accepted (and congested), never as throttled
    assert (seen.ok, seen.congested, seen.limited) == (2, 1, 1)
