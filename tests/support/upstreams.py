"""Fake upstreams the proxy forwards to, shared by the test modules.

- `RecordingUpstream`: a raw HTTP/1.1 server on a loopback socket that records every request
  (`SeenRequest`) and answers whatever bytes a test's `Answer` returns (`http_response` builds
  well-formed ones), so a test can send what no well-behaved server would;
- `recording_upstream(answer)`: a module-scoped pytest fixture running one;
- `read_request(scope, receive, seen)`: the receiving half of a recording ASGI app, for tests
  that drive the server's protocol in process;
- `QuotaUpstream`: a scripted Z.AI as an httpx transport for `InProcessProxy` (chat answers
  with usage, or 1308/1310 once `spent`; the quota monitor answers `monitor_limits(...)`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from zai_proxy.quota.poller import MONITOR_PATH


@dataclass
class SeenRequest:
    """One request as a raw upstream received it."""

    method: str
    target: str  # the request target exactly as sent (path and query)
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


# (raw response bytes, close the connection after them)
Answer = Callable[[SeenRequest], tuple[bytes, bool]]


class RecordingUpstream:
    """A raw HTTP/1.1 server on 127.0.0.1, in a thread (and event loop) of its own.

    It records every request and answers with whatever bytes `answer` returns, so tests can
    send what no well-behaved server would (oversized headers, cut bodies, garbage) and can
    check exactly what the proxy sent. Keep-alive like a real upstream; `close` ends the
    connection after the answer (or without one when the bytes are empty).
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[SeenRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recording-upstream",
                                        daemon=True)

    def __enter__(self) -> RecordingUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recording upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)  # connections the proxy keeps alive
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [(k.strip(), v.strip()) for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)]
                fields = {k.lower(): v for k, v in headers}
                if fields.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(fields.get("content-length", "0")))
                request = SeenRequest(method, target, headers, body)
                self.seen.append(request)
                raw, close = self.answer(request)
                writer.write(raw)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def http_response(status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = (),
                  *, head: bool = False, length: int | None = None) -> bytes:
    """Raw bytes of one HTTP/1.1 response; no body for HEAD, 1xx, 204 and 304."""
    no_body = head or status in (204, 304) or status < 200
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
    if status not in (204, 304) and status >= 200:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if no_body else body)


def recording_upstream(answer: Answer) -> Any:
    """A module-scoped fixture yielding a running `RecordingUpstream(answer)`; assign it to the
    fixture's name in the test module (`upstream = recording_upstream(answer)`)."""

    @pytest.fixture(scope="module")
    def upstream() -> Iterator[RecordingUpstream]:
        with RecordingUpstream(answer) as server:
            yield server

    return upstream


async def read_request(scope: Any, receive: Any, seen: list[dict[str, Any]]) -> bytes | None:
    """Receive one ASGI request's whole body and record it in `seen` as {"scope", "body"}; a
    client that disconnects first is recorded with "disconnected": True and gives None."""
    body = b""
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "http.disconnect":
            seen.append({"scope": scope, "body": body, "disconnected": True})
            return None
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            break
    seen.append({"scope": scope, "body": body})
    return body


# Epoch seconds the quota tests' wall clock starts at; monitor resets default to an hour later.
QUOTA_T0 = 1_767_000_000.0


class QuotaUpstream:
    """Scripted Z.AI: `quota` is the monitor's answer; `spent` makes chat answer 1308/1310."""

    def __init__(self) -> None:
        self.chats = 0
        self.polls: list[httpx.Request] = []
        self.spent: tuple[str, float] | None = None  # (code, reset epoch)
        self.monitor: httpx.Response | None = None
        self.tokens = (10, 5)  # prompt, completion

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == MONITOR_PATH:
            self.polls.append(request)
            return self.monitor or monitor_limits(used=0)
        self.chats += 1
        if self.spent is not None:
            code, reset = self.spent
            return httpx.Response(429, json={"error": {
                "code": code, "message": "Usage limit reached for 5 hour. Your limit will reset "
                "at 2026-01-01 00:00:00", "next_reset_time": int(reset * 1000)}})
        prompt, completion = self.tokens
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "model": "glm-4.7",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})


def monitor_limits(*, used: float, allowance: float = 10_000, reset: float | None = QUOTA_T0 + 3600,
           weekly: dict[str, Any] | None = None, status: int = 200) -> httpx.Response:
    """The monitor's answer: a five-hour token window `used` of `allowance` (and `weekly`)."""
    entry: dict[str, Any] = {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "usage": allowance,
                             "currentValue": used, "remaining": allowance - used,
                             "percentage": int(100 * used / allowance)}
    if reset is not None:
        entry["nextResetTime"] = int(reset * 1000)
    entries = [entry] + ([weekly] if weekly else [])
    return httpx.Response(status, json={"code": 200, "msg": "Operation successful",
                                        "success": True,
                                        "data": {"limits": entries, "level": "pro"}})
