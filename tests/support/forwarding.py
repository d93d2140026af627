"""The whole proxy app in process on virtual time, with a scripted upstream.

`Script` answers upstream requests from a list of answers (the last one repeats) and keeps the
requests it saw; `ok`, `z429`, `status`, `refuse` and `stream` build the answers. `Harness` runs
the app on a `VirtualTime` that a driver task moves forward in small steps whenever the test
awaits, so retry backoffs, queue waits and deadlines pass without real waiting; the backoffs the
request handlers slept are recorded in `delays`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy

# A chat request body, and one upstream answer: a response, or an awaitable of one.
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
Answer = Callable[[httpx.Request], Any]


class Script:
    """Answers upstream requests from a list; the last answer repeats."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers[min(len(self.seen), len(self.answers)) - 1]
        result = answer(request)
        response: httpx.Response = await result if asyncio.iscoroutine(result) else result
        return response


# Virtual seconds the driver moves time by per step (wake-ups still happen at their own time).
STEP = 0.05


class Harness(InProcessProxy):
    """The app on virtual time with a scripted upstream; `delays` are the retry backoffs."""

    def __init__(self, script: Script, **env: str) -> None:
        self.script = script
        self.vt = VirtualTime()
        self.delays: list[float] = []

        async def sleep(seconds: float) -> None:
            # The limiter's tick, the admission dispatcher and the quota's tick loop sleep too;
            # a request handler's sleep is a retry backoff. The dispatcher runs its sleep as a
            # task of its own (raced against a wake-up), so a task whose coroutine is this very
            # function is never a backoff.
            quota = self.app.state.quota
            task = asyncio.current_task()
            own = task is not None and getattr(task.get_coro(), "cr_code", None) is code
            if not own and task not in (self.limiter.ticker.task, self.admission._task,
                                        quota.ticker.task, quota.poller and quota.poller.task):
                self.delays.append(seconds)
            await self.vt.sleep(seconds)

        code = sleep.__code__

        # The upstream timeouts run on the event loop's real clock: generous, so a test that
        # holds an answer back never meets them however busy the machine is.
        super().__init__(httpx.MockTransport(script), {
            "MAX_RETRIES": "3", "RATE_LIMIT_INITIAL": "1000", "RATE_LIMIT_MAX": "1000",
            "TOKEN_COUNTING_ENABLED": "false", "UPSTREAM_FIRST_BYTE_TIMEOUT": "60",
            "UPSTREAM_CHUNK_TIMEOUT": "60", **env}, clock=self.vt, sleep=sleep, wall=self.vt.wall)

    async def __aenter__(self) -> httpx.AsyncClient:
        client = await super().__aenter__()
        self._driver = asyncio.create_task(self._drive())
        return client

    async def __aexit__(self, *exc: object) -> None:
        self._driver.cancel()
        await asyncio.gather(self._driver, return_exceptions=True)
        await super().__aexit__(*exc)

    async def _drive(self) -> None:
        """Move virtual time on while the test waits (each step lets every ready task run)."""
        while True:
            await self.vt.advance(STEP)

    def in_flight(self) -> int:
        return int(self.admission.snapshot()["in_flight"])


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "chatcmpl-1", "choices": [],
                                     "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


def z429(code: str, *, retry_after: str | None = None, **extra: Any) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        error = {"code": code, "message": f"code {code}", **extra}
        return httpx.Response(429, json={"error": error}, headers=headers)

    return answer


def status(code: int, body: bytes = b"<html>bad gateway</html>") -> Answer:
    return lambda request: httpx.Response(code, content=body,
                                          headers={"content-type": "text/html"})


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


class Chunks(httpx.AsyncByteStream):
    """A streamed body; `fail` raises a read error after the chunks."""

    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self.chunks, self.fail = chunks, fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail:
            raise httpx.ReadError("connection reset by peer")


SSE = {"content-type": "text/event-stream"}
EVENT = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'


def stream(chunks: list[bytes], fail: bool = False) -> Answer:
    return lambda request: httpx.Response(200, headers=SSE, stream=Chunks(chunks, fail))
