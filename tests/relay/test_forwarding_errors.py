"""Z.AI errors wherever they come: in a 4xx, inside a 200 body, inside a stream; 1305 per prompt.

The whole app in process on virtual time (`tests/support/forwarding.Harness`) with a scripted
upstream: what the client gets, how many attempts the upstream saw, what was counted, what the
controllers were told and what the access log says.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.support.clock import VirtualTime
from tests.support.forwarding import CHAT, EVENT, Answer, Harness, Script, ok, stream, z429
from zai_proxy.limiter.rate_controller import Outcome
from zai_proxy.observe.logs import ACCESS
from zai_proxy.observe.metrics import Metrics
from zai_proxy.relay.forwarding import HEAD_LIMIT, Forwarder
from zai_proxy.relay.retry import RetryPolicy
from zai_proxy.relay.stream_errors import StreamWatch

STREAM = {**CHAT, "stream": True}
ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},' \
       b'"finish_reason":null}]}\n\n'
DONE = b"data: [DONE]\n\n"


def error_event(code: str) -> bytes:
    return b'data: {"error":{"code":"%s","message":"code %s"}}\n\n' % (code.encode(),
                                                                       code.encode())


def finish(reason: str) -> bytes:
    return (b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"%s"}]}\n\n'
            % reason.encode())


def in_200(payload: dict[str, Any]) -> Answer:
    return lambda request: httpx.Response(200, json=payload)


def error_200(code: str, **extra: Any) -> Answer:
    return in_200({"error": {"code": code, "message": f"code {code}", **extra}})


def access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if r.name == ACCESS and isinstance(r.msg, dict)]


def learned(harness: Harness) -> list[Outcome]:
    """What the controllers are told from now on (every attempt's outcome, in order)."""
    seen: list[Outcome] = []
    admission = harness.admission
    real = admission.observe

    def spy(outcome: Outcome, permit: Any = None) -> Any:
        seen.append(outcome)
        return real(outcome, permit)

    admission.observe = spy
    return seen


# -- errors inside 200 bodies ------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    {"error": {"code": "1303", "message": "too fast"}},
    {"code": 1303, "msg": "too fast", "success": False},
    {"type": "error", "error": {"type": "rate_limit_error", "code": "1303", "message": "x"}},
], ids=["openai", "zai", "anthropic"])
async def test_a_retryable_error_in_a_200_is_retried_and_the_client_sees_the_success(
        payload: dict[str, Any]) -> None:
    script = Script(in_200(payload), ok)
    harness = Harness(script)
    async with harness as client:
        seen = learned(harness)
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and response.json()["id"] == "chatcmpl-1"
    assert "x-zai-error-class" not in response.headers
    assert len(script.seen) == 2 and len(harness.delays) == 1
    assert seen == [Outcome.RATE_LIMITED, Outcome.ACCEPTED]
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "frequency", "carrier": "200"}) == 1
    assert harness.sample("zai_proxy_retry_attempts_total", reason="429_frequency") == 1
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "frequency"}) == 0
    assert harness.in_flight() == 0


async def test_a_quota_error_in_a_200_is_relayed_as_is_counted_and_blocks_the_quota(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    reset_ms = int((VirtualTime().wall() + 3600) * 1000)
    script = Script(error_200("1308", next_reset_time=reset_ms))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        again = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json() == {"error": {"code": "1308", "message": "code 1308",
                                         "next_reset_time": reset_ms}}
    assert response.headers["x-zai-error-class"] == "quota_5h"
    assert response.headers["x-zai-error-code"] == "1308"
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "quota_5h", "carrier": "200"}) == 1
    # The request hooks saw it: the quota is blocked locally, the second request never left.
    assert again.status_code == 429 and len(script.seen) == 1
    outcomes = [line["outcome"] for line in access(caplog)]
    assert outcomes[0] == "upstream_error_quota_5h"


async def test_a_200_with_choices_is_an_answer_whatever_else_it_says() -> None:
    body = {"choices": [{"message": {"content": "hi"}}], "code": 1303, "msg": "x",
            "error": {"code": "1303"}}
    script = Script(in_200(body))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and response.json() == body
    assert len(script.seen) == 1 and "x-zai-error-class" not in response.headers


# -- errors in other 4xx -----------------------------------------------------------------------


async def test_a_4xx_with_a_retryable_code_is_retried() -> None:
    script = Script(lambda r: httpx.Response(403, json={"error": {"code": "1302"}}), ok)
    harness = Harness(script)
    async with harness as client:
        seen = learned(harness)
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and len(script.seen) == 2
    assert seen[0] is Outcome.CONCURRENCY_LIMITED
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "concurrency", "carrier": "4xx"}) == 1
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "concurrency"}) == 0


async def test_a_4xx_with_an_account_stop_code_stops_the_account(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    body = {"error": {"code": "1311", "message": "no subscription"}}
    script = Script(lambda r: httpx.Response(403, json=body), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        again = await client.post("/v1/chat/completions", json=CHAT)
    # Classified like the same code in a 429: the account stops, the client is told why.
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "upstream_account_stopped"
    assert "no subscription" in response.json()["error"]["message"]
    assert response.headers["x-zai-error-class"] == "no_subscription"
    assert access(caplog)[0]["outcome"] == "upstream_account_stopped"
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "no_subscription", "carrier": "4xx"}) == 1
    # The next request is refused locally: one upstream attempt in all.
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "proxy_account_stopped"
    assert len(script.seen) == 1


async def test_a_4xx_whose_code_has_no_row_stays_a_plain_4xx() -> None:
    body = {"error": {"code": "1214", "message": "bad parameter"}}
    script = Script(lambda r: httpx.Response(400, json=body), ok)
    harness = Harness(script)
    async with harness as client:
        seen = learned(harness)
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 400 and response.json() == body
    assert len(script.seen) == 1 and "x-zai-error-class" not in response.headers
    assert seen == [Outcome.ACCEPTED]
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "unknown", "carrier": "4xx"}) == 0


# -- errors inside streams ---------------------------------------------------------------------


@pytest.mark.parametrize("counting", ["true", "false"])
async def test_a_stream_error_before_content_is_retried(counting: str) -> None:
    good = [ROLE, EVENT, finish("stop"), DONE]
    script = Script(stream([ROLE, error_event("1303")]), stream(good))
    harness = Harness(script, TOKEN_COUNTING_ENABLED=counting)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=STREAM)
    assert response.status_code == 200 and response.content == b"".join(good)
    assert len(script.seen) == 2
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "frequency", "carrier": "stream"}) == 1
    assert harness.sample("zai_proxy_upstream_stream_errors_total", **{"class": "frequency"}) == 1
    assert harness.in_flight() == 0


async def test_a_stream_error_split_across_reads_before_content_is_still_retried() -> None:
    event = error_event("1302")
    script = Script(stream([ROLE[:10], ROLE[10:] + event[:9], event[9:]]), stream([EVENT, DONE]))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=STREAM)
    assert response.content == EVENT + DONE and len(script.seen) == 2


async def test_a_quota_error_before_content_is_relayed_as_it_came(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    chunks = [ROLE, error_event("1308")]
    script = Script(stream(chunks))
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=STREAM)
    assert response.status_code == 200 and response.content == b"".join(chunks)
    assert response.headers["x-zai-error-class"] == "quota_5h"
    assert len(script.seen) == 1
    assert harness.sample("zai_proxy_upstream_stream_errors_total", **{"class": "quota_5h"}) == 1
    assert access(caplog)[0]["outcome"] == "upstream_error_quota_5h"


@pytest.mark.parametrize("counting", ["true", "false"])
async def test_a_stream_error_after_content_is_relayed_byte_for_byte_and_counted_once(
        counting: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    chunks = [ROLE, EVENT, EVENT, error_event("1303")]
    script = Script(stream(chunks), ok)
    harness = Harness(script, TOKEN_COUNTING_ENABLED=counting)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=STREAM,
                                     headers={"x-request-id": "req-stream-1"})
    assert response.status_code == 200 and response.content == b"".join(chunks)
    assert len(script.seen) == 1
    assert harness.sample("zai_proxy_upstream_stream_errors_total", **{"class": "frequency"}) == 1
    assert harness.sample("zai_proxy_upstream_business_errors_total",
                          **{"class": "frequency", "carrier": "stream"}) == 0
    line = access(caplog)[0]
    assert line["outcome"] == "upstream_stream_error" and line["status"] == 502
    assert harness.sample("zai_proxy_requests_total", method="POST",
                          route="/v1/chat/completions", status_code="502") == 1
    warned = [r for r in caplog.records if r.name == "zai_proxy" and r.getMessage()
              == "upstream stream error"]
    assert len(warned) == 1 and warned[0].fields["request_id"] == "req-stream-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("counting", ["true", "false"])
@pytest.mark.parametrize(("reason", "fault"), [
    ("network_error", True), ("abnormal", True),
    ("stop", False), ("length", False), ("tool_calls", False), ("sensitive", False),
])
async def test_an_abnormal_finish_reason_is_a_stream_error(
        reason: str, fault: bool, counting: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    chunks = [ROLE, EVENT, finish(reason), DONE]
    harness = Harness(Script(stream(chunks)), TOKEN_COUNTING_ENABLED=counting)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=STREAM)
    assert response.content == b"".join(chunks)
    assert harness.sample("zai_proxy_upstream_stream_errors_total",
                          **{"class": "finish_reason"}) == (1 if fault else 0)
    assert access(caplog)[0]["outcome"] == ("upstream_stream_error" if fault else "ok")


@pytest.mark.parametrize(("tail", "cls"), [
    (b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","code":"1312",'
     b'"message":"busy"}}\n\n', "congestion"),
    (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"abnormal"}}'
     b'\n\n', "finish_reason"),
])
async def test_anthropic_stream_faults_after_content_are_counted(tail: bytes, cls: str) -> None:
    chunks = [b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n',
              b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
              b'"delta":{"type":"text_delta","text":"hi"}}\n\n', tail]
    harness = Harness(Script(stream(chunks)))
    async with harness as client:
        response = await client.post("/v1/messages", json={**STREAM, "max_tokens": 8})
    assert response.content == b"".join(chunks)
    assert harness.sample("zai_proxy_upstream_stream_errors_total", **{"class": cls}) == 1


# -- 1305 per prompt ---------------------------------------------------------------------------


async def test_a_1305_that_repeats_for_one_prompt_is_retried_twice_then_relayed() -> None:
    script = Script(z429("1305", retry_after="1"))
    harness = Harness(script, MAX_RETRIES="5")
    async with harness as client:
        seen = learned(harness)
        first = await client.post("/v1/chat/completions", json=CHAT)
        assert len(script.seen) == 3  # the first answer, then two retries at most
        assert first.status_code == 429
        assert first.headers["x-zai-error-class"] == "overloaded_prompt"
        assert seen == [Outcome.RATE_LIMITED, Outcome.OTHER, Outcome.OTHER]
        # The same prompt again: every answer is about the prompt, none lowers the rate.
        again = await client.post("/v1/chat/completions", json=CHAT)
        assert again.status_code == 429 and len(script.seen) == 6
        assert seen[3:] == [Outcome.OTHER] * 3
        # Another prompt's first 1305 is read as today: frequency.
        other = await client.post("/v1/chat/completions",
                                  json={**CHAT, "messages": [{"role": "user", "content": "yo"}]})
    assert other.status_code == 429 and seen[6] is Outcome.RATE_LIMITED
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "frequency"}) == 2
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "overloaded_prompt"}) == 7
    assert harness.sample("zai_proxy_retry_attempts_total", reason="429_overloaded_prompt") == 4
    assert harness.in_flight() == 0


async def test_a_1305_once_for_a_prompt_then_success_is_served() -> None:
    script = Script(z429("1305", retry_after="1"), ok)
    harness = Harness(script)
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and len(script.seen) == 2
    assert harness.sample("zai_proxy_upstream_429_total", **{"class": "frequency"}) == 1


async def test_a_1305_in_a_200_is_remembered_per_prompt_too() -> None:
    script = Script(error_200("1305"))
    harness = Harness(script, MAX_RETRIES="5")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and len(script.seen) == 3
    assert json.loads(response.content)["error"]["code"] == "1305"
    assert response.headers["x-zai-error-class"] == "overloaded_prompt"


async def test_an_error_relayed_in_a_200_is_not_charged_as_tokens() -> None:
    harness = Harness(Script(error_200("1311")), TOKEN_COUNTING_ENABLED="true")
    async with harness as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.headers["x-zai-error-class"] == "no_subscription"
    counted = [s for metric in harness.registry.collect() if metric.name == "zai_proxy_tokens"
               for s in metric.samples if s.name == "zai_proxy_tokens_total" and s.value]
    assert counted == []


# -- the held-back head is bounded ---------------------------------------------------------------


class Reads:
    """An upstream body as reads; counts how many were taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.taken = chunks, 0

    def __aiter__(self) -> Reads:
        return self

    async def __anext__(self) -> bytes:
        if self.taken == len(self.chunks):
            raise StopAsyncIteration
        self.taken += 1
        return self.chunks[self.taken - 1]


def forwarder(first_byte_timeout: float) -> Forwarder:
    return Forwarder(upstream=SimpleNamespace(first_byte_timeout=first_byte_timeout),  # type: ignore[arg-type]
                     admission=None, policy=RetryPolicy(),  # type: ignore[arg-type]
                     metrics=Metrics(CollectorRegistry(), "v1"))


async def test_a_head_without_content_is_held_back_up_to_head_limit_only() -> None:
    keep_alive = b": " + b"x" * 1000 + b"\n\n"
    reads = Reads([ROLE] + [keep_alive] * 100 + [EVENT])
    head = await forwarder(60.0)._head(reads, StreamWatch())  # type: ignore[arg-type]
    assert HEAD_LIMIT <= len(head) < HEAD_LIMIT + len(keep_alive)
    assert reads.taken < len(reads.chunks)  # the rest is relayed as it comes


async def test_a_head_without_content_is_held_back_up_to_the_first_byte_timeout_only() -> None:
    reads = Reads([ROLE, ROLE, EVENT])
    head = await forwarder(0.0)._head(reads, StreamWatch())  # type: ignore[arg-type]
    assert head == ROLE and reads.taken == 1


async def test_the_head_ends_at_the_first_content() -> None:
    reads = Reads([ROLE, EVENT, EVENT, DONE])
    head = await forwarder(60.0)._head(reads, StreamWatch())  # type: ignore[arg-type]
    assert head == ROLE + EVENT and reads.taken == 2
