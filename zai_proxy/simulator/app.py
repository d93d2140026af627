"""The simulated Z.AI upstream as a pure ASGI app (cheap per request: no framework routing).

Routes (also under the Coding Plan base `/api/coding/paas/v4`):
`POST /api/paas/v4/chat/completions`, `POST /api/paas/v4/completions`,
`POST /api/paas/v4/embeddings`, `GET /api/paas/v4/models` (Bearer auth, 401 JSON otherwise);
`POST /api/anthropic/v1/messages`, `POST /api/anthropic/v1/messages/count_tokens` (`x-api-key`
auth; a Bearer header without it gets the edge's bare 404 page);
`GET /api/monitor/usage/quota/limit` (the quota monitor: raw key in `Authorization`, no Bearer;
`monitor_fault` / `monitor_delay_ms` make it fail or slow); `GET /health`;
`GET /_stats`, `POST /_stats/reset` (zeroes counters, restarts the schedule, refills the quota);
`GET /_config`, `POST /_config` (JSON subset of the live settings, `LIVE_FIELDS`, applied live).

Per API request: auth, then a forced outcome (`x-sim-status`, `x-sim-429-code`,
`x-sim-error-in-200`) bypassing the limits, then the account's refusals (`key_kind` on the other
base: 1113; `account_state` on model routes; `overloaded_prompt`: 1305), then admission in the
order quota (1308/1310) → concurrency (1302) → rate (1303 with Retry-After), then the base
latency, then `fail_rate` faults (500 JSON / 502 edge page), then the reply, whose prompt +
completion tokens (and, on model routes, credits) the plan quota's windows consume
(`simulator.quota`).
In-flight counts a request from admission until its body ended or the client left; the
request's record (`recent_requests`) then gets `ended_at` (the simulator's clock).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.types import Receive, Scope, Send

from zai_proxy.simulator import errors
from zai_proxy.simulator.ceiling import ConcurrencyCeiling, RateCeiling
from zai_proxy.simulator.generation import StreamPlan, prompt_text
from zai_proxy.simulator.overrides import PREFIX, RequestKnobs, apply_headers, base_knobs
from zai_proxy.simulator.quota import PlanQuota
from zai_proxy.simulator.routes import (
    ANTHROPIC_PREFIX,
    API_ROUTES,
    MODEL_ROUTES,
    Call,
    Reply,
    handle_api,
)
from zai_proxy.simulator.settings import ACCOUNT_STATES, SimulatorSettings, updated
from zai_proxy.simulator.stats import Stats, describe_request
from zai_proxy.simulator.transport import (
    BodyTooLarge,
    SimulatedReset,
    install_log_filter,
    read_body,
    send_cut,
    send_stream,
    send_whole,
)

CODING_PREFIX = "/api/coding/paas/v4/"
STANDARD_PREFIX = "/api/paas/v4/"
MONITOR_PATH = "/api/monitor/usage/quota/limit"


class SimulatorApp:
    """ASGI callable; state (limits, counters) lives on the instance."""

    def __init__(self, settings: SimulatorSettings, clock: Callable[[], float],
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.settings = settings
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.rate = RateCeiling(settings.rate_ceiling, settings.ceiling_schedule, clock,
                                settings.rate_burst)
        self.concurrency = ConcurrencyCeiling(settings.concurrency_ceiling)
        self.quota = PlanQuota(
            five_hour=settings.quota_5h_tokens, weekly=settings.quota_weekly_tokens,
            five_hour_s=settings.quota_5h_window_s, weekly_s=settings.quota_weekly_window_s,
            mode="fixed" if settings.quota_reset == "fixed" else "rolling",
            level=settings.quota_level, clock=clock, wall=wall,
            five_hour_credits=settings.quota_5h_credits,
            weekly_credits=settings.quota_weekly_credits,
            time_limit=settings.monitor_time_limit, unknown_entry=settings.monitor_unknown_entry)
        self.stats = Stats(clock)
        self.monitor_polls = 0
        self._knobs = base_knobs(settings)
        self._random = random.Random(settings.seed)
        self._ids = itertools.count(1)
        self._internal: dict[tuple[str, str], Callable[[bytes], Awaitable[errors.Answer]]] = {
            ("GET", "/health"): self._health,
            ("GET", "/_stats"): self._stats,
            ("POST", "/_stats/reset"): self._reset,
            ("GET", "/_config"): self._config,
            ("POST", "/_config"): self._configure,
        }
        install_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        base = "standard" if path.startswith(STANDARD_PREFIX) else ""
        if path.startswith(CODING_PREFIX):
            path, base = STANDARD_PREFIX + path[len(CODING_PREFIX):], "coding"
        if path == MONITOR_PATH:
            await self._monitor(method, scope, send)
            return
        internal = self._internal.get((method, path))
        if internal is not None:
            try:
                raw = await read_body(receive) or b""
            except BodyTooLarge:
                raw = b""
            await send_whole(send, *(await internal(raw)))
            return
        expected = API_ROUTES.get(path)
        if expected is None:
            answer = errors.zai_error(404, "404", f"Not Found: {path}")
            if any(m == method for m, p in self._internal if p == path):
                answer = errors.zai_error(405, "405", "Method Not Allowed")
            self.stats.record_status("other", answer[0])
            await send_whole(send, *answer)
            return
        if method != expected:
            self.stats.record_status(path, 405)
            await send_whole(send, *errors.zai_error(405, "405", "Method Not Allowed"))
            return
        await self._api(path, method, scope, receive, send, base)

    async def _api(
        self, path: str, method: str, scope: Scope, receive: Receive, send: Send, base: str = ""
    ) -> None:
        headers: dict[str, str] = {}
        sim: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = value
            if name.startswith(PREFIX):
                sim[name] = value
        try:
            raw = await read_body(receive)
        except BodyTooLarge:
            await self._answer(send, path, errors.zai_error(413, "1214", "Request too large"))
            return
        if raw is None:
            self.stats.record_event("client_disconnected")
            return
        body: Any = {}
        if method == "POST":
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        info = describe_request(method, path, headers, body, self.clock())
        self.stats.record_request(info)
        if not isinstance(body, dict):
            invalid = errors.bad_request("The request body is not a JSON object")
            await self._answer(send, path, invalid)
            return
        refusal = self._authenticate(path, headers)
        if refusal is not None:
            await self._answer(send, path, refusal)
            return
        knobs = apply_headers(self._knobs, sim)
        if knobs.forced:
            await self._forced(send, path, knobs)
            return
        refused = self._account_refusal(path, base, body)
        if refused is not None:
            self.stats.record_429(refused[0])
            await self._answer(send, path, refused[1])
            return
        rejection = self._admit()
        if rejection is not None:
            self.stats.record_429(rejection[0])
            await self._answer(send, path, rejection[1])
            return
        try:
            self.stats.record_accepted()
            if knobs.latency_s > 0:
                await self.sleep(knobs.latency_s)
            if self.settings.fail_rate and self._random.random() < self.settings.fail_rate:
                self.stats.record_event("injected_fault")
                await self._answer(send, path, errors.server_error(self._random.choice((500, 502))))
                return
            call = Call(path, body, knobs, f"sim{next(self._ids):08x}", int(self.wall()),
                        self.settings)
            reply = handle_api(call)
            if not isinstance(reply, Reply):
                await self._answer(send, path, reply)
                return
            self.quota.consume(reply.tokens, self._credits(path, reply.tokens))
            await self._reply(send, receive, call, reply)
        except SimulatedReset:
            self.stats.record_event("reset")
            raise
        finally:
            self.concurrency.leave()
            # On the monotonic clock, comparable across processes on one host: a test can tell
            # when the simulator saw a request end (body sent, client gone) without polling.
            info["ended_at"] = self.clock()

    def _authenticate(self, path: str, headers: dict[str, str]) -> errors.Answer | None:
        expect = self.settings.expect_key
        if path.startswith(ANTHROPIC_PREFIX):
            key = headers.get("x-api-key", "").strip()
            if not key:
                if "authorization" in headers:
                    return errors.edge_not_found()
                return errors.unauthorized_anthropic()
            return errors.unauthorized_anthropic() if expect and key != expect else None
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token:
            return errors.unauthorized_openai()
        return errors.unauthorized_openai(wrong_key=True) if expect and token != expect else None

    def _account_refusal(self, path: str, base: str,
                         body: dict[str, Any]) -> tuple[str, errors.Answer] | None:
        """What the account, the key or the prompt makes Z.AI refuse before any limit: a key on
        the other kind's base (1113), the account state's code, a prompt the platform is
        "overloaded" by (1305, every time, whatever the rate)."""
        settings = self.settings
        if settings.key_kind and base and base != settings.key_kind:
            return "1113", errors.business_error(1113, self.wall())
        if path not in MODEL_ROUTES:
            return None
        code = ACCOUNT_STATES.get(settings.account_state)
        if code is not None:
            return str(code), errors.business_error(code, self.wall())
        if settings.overloaded_prompt and settings.overloaded_prompt in prompt_text(body):
            self.stats.record_event("overloaded_prompt")
            return "1305", errors.too_many(1305, 1.0)
        return None

    def _credits(self, path: str, tokens: int) -> int:
        """Credits a reply costs: a fixed price per model request plus a price per 1K tokens."""
        if path not in MODEL_ROUTES:
            return 0
        per_1k = self.settings.credits_per_1k_tokens
        return self.settings.credits_per_request + math.ceil(tokens * per_1k / 1000)

    def _business(self, code: int) -> errors.Answer:
        """Z.AI's 429 for `code` as `x-sim-429-code` answers it (quota codes with their window's
        reset), for the error-in-200 and stream-error knobs to carry."""
        return errors.forced_429(code, None, self.quota.seconds_to_reset(code), self.wall())

    async def _forced(self, send: Send, path: str, knobs: RequestKnobs) -> None:
        if knobs.latency_s > 0:
            await self.sleep(knobs.latency_s)
        if knobs.error_in_200 is not None:
            self.stats.record_event("error_in_200")
            answer = errors.error_in_200(self._business(knobs.error_in_200),
                                         path.startswith(ANTHROPIC_PREFIX))
            self.stats.record_status(path, 200)
            await send_whole(send, *answer)
            return
        code = knobs.code_429
        if code is None and knobs.status == 429:
            code = 1303
        if code is not None:
            status = knobs.error_status or 429
            if status == 429:
                self.stats.record_429(str(code))
            answer = errors.forced_429(code, knobs.retry_after, self.quota.seconds_to_reset(code),
                                       self.wall(), status)
        else:
            assert knobs.status is not None
            answer = errors.status_answer(knobs.status)
        await self._answer(send, path, answer)

    def _admit(self) -> tuple[str, errors.Answer] | None:
        """Take a quota unit, an in-flight slot and a rate slot, or say which 429 to send."""
        spent = self.quota.refusal()
        if spent is not None:
            return str(spent[0]), errors.quota_exhausted(*spent, self.wall())
        if not self.concurrency.try_enter():
            return "1302", errors.too_many(1302)
        if not self.rate.try_acquire():
            self.concurrency.leave()
            return "1303", errors.too_many(1303, self.rate.retry_after())
        return None

    async def _answer(self, send: Send, path: str, answer: errors.Answer) -> None:
        if path.startswith(ANTHROPIC_PREFIX):
            answer = errors.anthropic_envelope(answer)
        self.stats.record_status(path, answer[0])
        await send_whole(send, *answer)

    async def _reply(self, send: Send, receive: Receive, call: Call, reply: Reply) -> None:
        payload = reply.payload
        knobs = call.knobs
        self.stats.record_status(call.route, 200)
        if isinstance(payload, StreamPlan):
            if knobs.empty:
                await send_whole(send, 200, [(b"content-type", b"text/event-stream")], b"")
                self.stats.record_event("empty")
                return
            if knobs.stream_error is not None:
                code, after = knobs.stream_error
                self.stats.record_event("stream_error")
                event = errors.stream_error_event(self._business(code),
                                                  call.route.startswith(ANTHROPIC_PREFIX))
                payload = StreamPlan(payload.head, payload.pieces[:after], event)
            ended = await send_stream(send, receive, payload, ttft_s=knobs.ttft_s,
                                      gap_s=knobs.gap_s, reset_after=knobs.reset_after,
                                      truncate=knobs.truncate)
            if ended != "complete":
                self.stats.record_event(ended)
            return
        generation_s = knobs.ttft_s + knobs.gap_s * max(0, reply.chunks - 1)
        if generation_s > 0 and reply.chunks:
            await self.sleep(generation_s)
        json_type = [errors.JSON_TYPE]
        if knobs.empty:
            self.stats.record_event("empty")
            await send_whole(send, 200, json_type, b"")
        elif knobs.reset_after is not None:
            await send_cut(send, json_type, payload)
        elif knobs.truncate:
            self.stats.record_event("truncated")
            await send_whole(send, 200, json_type, payload[: len(payload) // 2])
        else:
            await send_whole(send, 200, json_type, payload)

    async def _monitor(self, method: str, scope: Scope, send: Send) -> None:
        """`GET /api/monitor/usage/quota/limit`: the raw key in `Authorization` (no Bearer)."""
        self.monitor_polls += 1
        if method != "GET":
            await send_whole(send, *errors.zai_error(405, "405", "Method Not Allowed"))
            return
        key = next((v.decode("latin-1").strip() for k, v in scope["headers"]
                    if k.lower() == b"authorization"), "")
        fault = self.settings.monitor_fault
        delay = self.settings.monitor_delay_ms / 1000.0
        if fault == "slow" and not delay:
            delay = 30.0
        if delay:
            await self.sleep(delay)
        expect = self.settings.expect_key
        if fault == "unauthorized" or not key or key.lower().startswith("bearer ") or (
                expect and key != expect):
            answer = errors.json_answer(401, {"code": 1001, "msg": "token expired or incorrect",
                                              "success": False})
        elif fault == "error":
            answer = errors.server_error(503)
        elif fault == "garbage":
            answer = (200, [errors.HTML_TYPE], b"<html><body>maintenance</body></html>")
        else:
            answer = errors.json_answer(200, self.quota.monitor_answer())
        await send_whole(send, *answer)

    # internal routes

    async def _health(self, _: bytes) -> errors.Answer:
        return errors.json_answer(200, {"status": "ok"})

    async def _stats(self, _: bytes) -> errors.Answer:
        snapshot = self.stats.snapshot()
        snapshot["in_flight"] = self.concurrency.in_flight
        snapshot["peak_in_flight"] = self.concurrency.peak
        snapshot["ceilings"] = {
            "rate": self.rate.current(),
            "rate_burst": self.rate.burst,
            "concurrency": self.concurrency.limit,
        }
        snapshot["quota"] = self.quota.snapshot()
        snapshot["monitor_polls"] = self.monitor_polls
        return errors.json_answer(200, snapshot)

    async def _reset(self, _: bytes) -> errors.Answer:
        self.stats.reset()
        self.rate.reset()
        self.quota.reset()
        self.monitor_polls = 0
        self.concurrency.reset_peak()
        return errors.json_answer(200, {"status": "reset"})

    async def _config(self, _: bytes) -> errors.Answer:
        values = asdict(self.settings)
        values["expect_key"] = values["expect_key"] is not None
        return errors.json_answer(200, values)

    async def _configure(self, raw: bytes) -> errors.Answer:
        try:
            self.apply_settings(updated(self.settings, json.loads(raw or b"{}")))
        except (ValueError, TypeError) as exc:
            return errors.bad_request(str(exc))
        return await self._config(b"")

    def apply_settings(self, settings: SimulatorSettings) -> None:
        """Switch to new settings live; counters, schedule origin and quota usage are kept."""
        self.settings = settings
        self._knobs = base_knobs(settings)
        self.rate.configure(settings.rate_ceiling, settings.ceiling_schedule, settings.rate_burst)
        self.concurrency.limit = settings.concurrency_ceiling
        self.quota.configure(
            five_hour=settings.quota_5h_tokens, weekly=settings.quota_weekly_tokens,
            five_hour_s=settings.quota_5h_window_s, weekly_s=settings.quota_weekly_window_s,
            level=settings.quota_level, five_hour_credits=settings.quota_5h_credits,
            weekly_credits=settings.quota_weekly_credits, time_limit=settings.monitor_time_limit,
            unknown_entry=settings.monitor_unknown_entry)


def create_simulator_app(
    settings: SimulatorSettings, clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> SimulatorApp:
    """A fresh simulator (its own limits and counters) as an ASGI app; `clock` drives the limits,
    `wall` dates the quota resets it announces, `sleep` waits out its latencies and delays."""
    return SimulatorApp(settings, clock, wall, sleep)
