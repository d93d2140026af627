"""OpenAI-compatible bodies (Z.AI's /api/paas/v4): chat, text completion, embeddings, models.

Streams are `data: {json}\\n\\n` events ending with `data: [DONE]\\n\\n`; the usage-only chunk
(`"choices": []`) is sent only when the request sets `stream_options.include_usage`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

from zai_proxy.simulator.generation import Generation, StreamPlan

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One `data:` event."""
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def usage(gen: Generation) -> dict[str, Any]:
    """OpenAI usage; prompt_tokens includes the cached ones."""
    result: dict[str, Any] = {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": gen.cached_tokens},
    }
    if gen.reasoning_tokens:
        result["completion_tokens_details"] = {"reasoning_tokens": gen.reasoning_tokens}
    return result


def _tool_call(gen: Generation, rid: str) -> dict[str, Any]:
    assert gen.tool is not None
    return {
        "index": 0,
        "id": f"call_{rid}",
        "type": "function",
        "function": {"name": gen.tool.name, "arguments": gen.tool.arguments},
    }


def chat_completion(gen: Generation, model: str, rid: str, created: int, with_usage: bool) -> bytes:
    """A non-stream `chat.completion` body."""
    message: dict[str, Any] = {"role": "assistant", "content": gen.text}
    if gen.reasoning:
        message["reasoning_content"] = gen.reasoning
    if gen.tool is not None:
        message["content"] = None
        message["tool_calls"] = [_tool_call(gen, rid)]
    body: dict[str, Any] = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": gen.finish}],
    }
    if with_usage:
        body["usage"] = usage(gen)
    return json.dumps(body).encode()


def chat_stream(
    gen: Generation, model: str, rid: str, created: int, with_usage: bool
) -> StreamPlan:
    """A `chat.completion.chunk` stream: role chunk, one chunk per piece, finish, [usage], DONE."""
    base = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created,
            "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse({**base, "choices": [choice]})

    first: dict[str, Any] = {"role": "assistant", "content": ""}
    pieces: list[bytes] = []
    if gen.reasoning:
        pieces.append(chunk({"reasoning_content": gen.reasoning}))
    if gen.tool is not None:
        call = _tool_call(gen, rid)
        call["function"] = {"name": gen.tool.name, "arguments": ""}
        first = {"role": "assistant", "content": None, "tool_calls": [call]}
        pieces += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            for part in gen.tool.argument_pieces
        ]
    else:
        pieces += [chunk({"content": piece}) for piece in gen.pieces]
    tail = chunk({}, gen.finish)
    if with_usage:
        tail += sse({**base, "choices": [], "usage": usage(gen)})
    return StreamPlan(chunk(first), tuple(pieces), tail + DONE)


def text_completion(gen: Generation, model: str, rid: str, created: int, with_usage: bool) -> bytes:
    """A non-stream `text_completion` body."""
    body: dict[str, Any] = {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": gen.text, "logprobs": None, "finish_reason": gen.finish}],
    }
    if with_usage:
        body["usage"] = usage(gen)
    return json.dumps(body).encode()


def text_stream(
    gen: Generation, model: str, rid: str, created: int, with_usage: bool
) -> StreamPlan:
    """A text-completion stream: one chunk per piece, a finish chunk, [usage], DONE."""
    base = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model}

    def chunk(text: str, finish: str | None = None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice]})

    pieces = tuple(chunk(piece) for piece in gen.pieces)
    tail = chunk("", gen.finish)
    if with_usage:
        tail += sse({**base, "choices": [], "usage": usage(gen)})
    return StreamPlan(b"", pieces, tail + DONE)


def vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for `text` (SHA-256 counter stream, L2-normalised)."""
    raw = b""
    counter = 0
    while len(raw) < dim * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dim}I", raw[: dim * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embeddings(
    inputs: Sequence[object], counts: Sequence[int], model: str, dim: int, with_usage: bool
) -> bytes:
    """An embeddings list body, one vector per input; usage.prompt_tokens = sum(counts)."""
    data = [
        {"object": "embedding", "index": i, "embedding": vector(json.dumps(item), dim)}
        for i, item in enumerate(inputs)
    ]
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if with_usage:
        total = sum(counts)
        body["usage"] = {"prompt_tokens": total, "total_tokens": total}
    return json.dumps(body).encode()


def models(ids: Sequence[str], created: int) -> bytes:
    """The `/models` list."""
    data = [{"id": m, "object": "model", "created": created, "owned_by": "z-ai"} for m in ids]
    return json.dumps({"object": "list", "data": data}).encode()
