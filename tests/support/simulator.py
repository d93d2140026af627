"""Requests to the simulated Z.AI upstream in process: its routes, credentials, request bodies,
an httpx client on virtual time, and parsers for its two SSE dialects.

`sim` runs the simulator app on one `VirtualTime` for its monotonic clock, wall clock and sleep,
so a test drives every timed behaviour (windows, daily resets, stream pacing) by advancing it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.clock import VirtualTime
from zai_proxy.simulator import SimulatorSettings, create_simulator_app

CHAT = "/api/paas/v4/chat/completions"
MESSAGES = "/api/anthropic/v1/messages"
BEARER = {"Authorization": "Bearer sk-upstream"}
XKEY = {"x-api-key": "sk-upstream"}


def sim(settings: SimulatorSettings | None = None, vt: VirtualTime | None = None
        ) -> httpx.AsyncClient:
    """A client of a fresh simulator app whose clocks and sleep are all `vt`."""
    vt = vt or VirtualTime()
    app = create_simulator_app(settings or SimulatorSettings(), vt, vt.wall, vt.sleep)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


def chat_body(text: str = "hello there world", **extra: Any) -> dict[str, Any]:
    """An OpenAI-surface chat request with one user message; `extra` adds top-level fields."""
    return {"model": "glm-4.7", "messages": [{"role": "user", "content": text}], **extra}


def anthropic_body(text: str = "hello there") -> dict[str, Any]:
    """An Anthropic-surface messages request with one user message."""
    return {"model": "glm-4.7", "max_tokens": 100, "messages": [{"role": "user", "content": text}]}


def sse_data(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body ([DONE] kept as a string)."""
    out: list[Any] = []
    for line in text.split("\n"):
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an Anthropic-style SSE body, in order."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events
