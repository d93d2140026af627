"""Low-level ASGI sending for the simulator: whole bodies, timed streams, deliberate resets.

A deliberate reset raises `SimulatedReset` out of the ASGI callable after the response started:
uvicorn then closes the connection, so a socket client sees a truncated (chunked or
content-length) body, and an in-process `httpx.ASGITransport` client gets the same exception type
a socket client would (`SimulatedReset` is an `httpx.RemoteProtocolError`). uvicorn logs
"Exception in ASGI application" for it; `install_log_filter` drops exactly those records when the
simulator caused them (a context variable marks the request), so embedding the simulator never
hides another app's genuine errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import NoReturn

import httpx
from starlette.types import Message, Receive, Send

from zai_proxy.simulator.generation import StreamPlan

Headers = list[tuple[bytes, bytes]]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
MAX_BODY = 32 * 1024 * 1024

_RESETTING: contextvars.ContextVar[bool] = contextvars.ContextVar("sim_resetting", default=False)
_UVICORN_COMPLAINTS = ("Exception in ASGI application", "ASGI callable returned without")


class SimulatedReset(httpx.RemoteProtocolError):
    """Raised to drop the connection on purpose (`x-sim-reset-after-chunks`)."""


class _ResetLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_RESETTING.get() and record.getMessage().startswith(_UVICORN_COMPLAINTS))


def install_log_filter() -> None:
    """Silence uvicorn's complaint about the simulator's own deliberate resets (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ResetLogFilter) for f in logger.filters):
        logger.addFilter(_ResetLogFilter())


def reset_connection() -> NoReturn:
    """Drop the connection of the current request (the response must have started)."""
    _RESETTING.set(True)
    raise SimulatedReset("simulated connection reset: peer closed connection mid-body")


class BodyTooLarge(Exception):
    """The request body exceeded `MAX_BODY`."""


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_whole(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """Send a complete response with Content-Length."""
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def send_cut(send: Send, headers: Headers, body: bytes) -> NoReturn:
    """Announce the full length, send half the body, and reset the connection."""
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    reset_connection()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _pause(seconds: float, watcher: asyncio.Future[None] | None) -> bool:
    """Sleep `seconds`; True (early) when the client has gone."""
    if watcher is None:
        if seconds > 0:
            await asyncio.sleep(seconds)
        return False
    if watcher.done():
        return True
    if seconds > 0:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return bool(done)
    return False


async def send_stream(
    send: Send,
    receive: Receive,
    plan: StreamPlan,
    *,
    ttft_s: float,
    gap_s: float,
    reset_after: int | None = None,
    truncate: bool = False,
) -> str:
    """Stream `plan`: headers now, `head` after `ttft_s`, pieces `gap_s` apart, then `tail`.

    `reset_after=K` drops the connection after K pieces (before the tail when K >= pieces);
    (raising `SimulatedReset`); `truncate` ends the body cleanly but without the tail. Returns
    how it ended: "complete", "truncated" or "disconnected" (the client left during a pause).
    """
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    needs_watch = ttft_s > 0 or (gap_s > 0 and len(plan.pieces) > 1)
    watcher = asyncio.ensure_future(_wait_disconnect(receive)) if needs_watch else None
    try:
        if await _pause(ttft_s, watcher):
            return "disconnected"
        if plan.head:
            await send({"type": "http.response.body", "body": plan.head, "more_body": True})
        for index, piece in enumerate(plan.pieces):
            if reset_after is not None and index >= reset_after:
                reset_connection()
            if index and await _pause(gap_s, watcher):
                return "disconnected"
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if reset_after is not None:
            reset_connection()
        if truncate:
            await send({"type": "http.response.body", "body": b""})
            return "truncated"
        await send({"type": "http.response.body", "body": plan.tail})
        return "complete"
    finally:
        if watcher is not None:
            watcher.cancel()
