"""Anthropic Messages bodies (Z.AI's /api/anthropic/v1/messages), plain and streamed.

Streams are real Anthropic SSE (`event: X\\ndata: {...}\\n\\n`): message_start (usage with the
input side and output_tokens 1), per block content_block_start / deltas / content_block_stop,
one `ping` after the first block start, message_delta (usage.output_tokens = the final,
cumulative count) and message_stop. Usage: input_tokens excludes cache_read_input_tokens;
cache_creation_input_tokens is always 0.
"""

from __future__ import annotations

import json
from typing import Any

from zai_proxy.simulator.generation import Generation, StreamPlan

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def stop_reason(finish: str) -> str:
    """Anthropic's stop_reason for a finish reason; a forced one (`abnormal`) passes as is."""
    return STOP_REASONS.get(finish, finish)


def event(name: str, payload: dict[str, Any]) -> bytes:
    """One named SSE event."""
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(payload).encode() + b"\n\n"


def usage(gen: Generation) -> dict[str, int]:
    """Anthropic usage of a finished reply."""
    return {
        "input_tokens": gen.prompt_tokens - gen.cached_tokens,
        "output_tokens": gen.completion_tokens,
        "cache_read_input_tokens": gen.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _signature(rid: str) -> str:
    return f"sig_{rid}"


def _tool_input(gen: Generation) -> Any:
    assert gen.tool is not None
    return json.loads(gen.tool.arguments)


def message(gen: Generation, model: str, rid: str, with_usage: bool) -> bytes:
    """A non-stream `message` body."""
    content: list[dict[str, Any]] = []
    if gen.reasoning:
        content.append({"type": "thinking", "thinking": gen.reasoning,
                        "signature": _signature(rid)})
    if gen.tool is not None:
        content.append({"type": "tool_use", "id": f"toolu_{rid}", "name": gen.tool.name,
                        "input": _tool_input(gen)})
    else:
        content.append({"type": "text", "text": gen.text})
    body: dict[str, Any] = {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(gen.finish),
        "stop_sequence": None,
    }
    if with_usage:
        body["usage"] = usage(gen)
    return json.dumps(body).encode()


def stream(gen: Generation, model: str, rid: str, with_usage: bool) -> StreamPlan:
    """The full Messages event sequence; each piece carries one content_block_delta."""
    start_message: dict[str, Any] = {
        "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
    }
    if with_usage:
        start_message["usage"] = {**usage(gen), "output_tokens": 1}
    head = event("message_start", {"type": "message_start", "message": start_message})

    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if gen.reasoning:
        blocks.append((
            {"type": "thinking", "thinking": ""},
            [{"type": "thinking_delta", "thinking": gen.reasoning},
             {"type": "signature_delta", "signature": _signature(rid)}],
        ))
    if gen.tool is not None:
        blocks.append((
            {"type": "tool_use", "id": f"toolu_{rid}", "name": gen.tool.name, "input": {}},
            [{"type": "input_json_delta", "partial_json": p} for p in gen.tool.argument_pieces],
        ))
    else:
        blocks.append((
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": piece} for piece in gen.pieces],
        ))

    pieces: list[bytes] = []
    for index, (block, deltas) in enumerate(blocks):
        opening = event("content_block_start",
                        {"type": "content_block_start", "index": index, "content_block": block})
        if index == 0:
            head += opening + event("ping", {"type": "ping"})
            opening = b""
        else:
            opening = event("content_block_stop", {"type": "content_block_stop",
                                                   "index": index - 1}) + opening
        for n, delta in enumerate(deltas):
            data = event("content_block_delta",
                         {"type": "content_block_delta", "index": index, "delta": delta})
            pieces.append((opening if n == 0 else b"") + data)

    finish: dict[str, Any] = {"type": "message_delta",
                              "delta": {"stop_reason": stop_reason(gen.finish),
                                        "stop_sequence": None}}
    if with_usage:
        finish["usage"] = {"output_tokens": gen.completion_tokens}
    tail = (
        event("content_block_stop", {"type": "content_block_stop", "index": len(blocks) - 1})
        + event("message_delta", finish)
        + event("message_stop", {"type": "message_stop"})
    )
    return StreamPlan(head, tuple(pieces), tail)


def count_tokens(prompt_tokens: int) -> bytes:
    """The count_tokens answer."""
    return json.dumps({"input_tokens": prompt_tokens}).encode()
