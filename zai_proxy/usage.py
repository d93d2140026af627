"""Token usage as reported by the upstream, for OpenAI- and Anthropic-shaped bodies and streams.

Accounting convention (the same for both surfaces, so metrics never double-count):
``input`` is the prompt tokens that were NOT served from the cache, ``cache_read`` the cached
ones, ``cache_write`` the ones written to the cache. Anthropic already reports
``input_tokens`` that way. OpenAI's ``prompt_tokens`` includes
``prompt_tokens_details.cached_tokens``, so here ``input = prompt_tokens - cached_tokens``.
Hence ``input + cache_read + cache_write`` is the whole prompt, and each direction is priced
on its own. ``reasoning`` is informational: it is already part of ``output`` (as in OpenAI's
``completion_tokens``) and is never priced or summed separately.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from zai_proxy.sse import SSEBlock

__all__ = [
    "AnthropicStreamTracker",
    "OpenAIStreamTracker",
    "Source",
    "Usage",
    "add_include_usage",
    "anthropic_usage",
    "openai_usage",
    "request_wants_usage",
    "usage_from_body",
]

Source = Literal["upstream", "estimate", "heuristic"]
DIRECTIONS = ("input", "output", "cache_read", "cache_write")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request; see the module docstring for what each field includes."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    source: Source = "upstream"

    def by_direction(self) -> dict[str, int]:
        """Counts keyed by the ``direction`` metric label (reasoning excluded: inside output)."""
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
        }


def _int(value: object) -> int | None:
    """A non-negative token count, or None for anything else (bools, strings, negatives)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    return None


def _sub(obj: object, key: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def openai_usage(obj: object) -> Usage | None:
    """Usage of an OpenAI chat/completions/embeddings body or stream chunk, if it has one."""
    usage = _sub(obj, "usage")
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    cached = min(_int(_sub(usage, "prompt_tokens_details").get("cached_tokens")) or 0, prompt)
    reasoning = _int(_sub(usage, "completion_tokens_details").get("reasoning_tokens")) or 0
    return Usage(
        input=prompt - cached,
        output=completion or 0,
        cache_read=cached,
        reasoning=reasoning,
    )


_ANTHROPIC_KEYS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_input_tokens", "cache_read"),
    ("cache_creation_input_tokens", "cache_write"),
)


def _anthropic_fields(usage: dict[str, Any]) -> dict[str, int]:
    values = ((field, _int(usage.get(key))) for key, field in _ANTHROPIC_KEYS)
    return {field: value for field, value in values if value is not None}


def _from_fields(fields: dict[str, int]) -> Usage | None:
    if not fields:
        return None
    get = fields.get
    return Usage(get("input", 0), get("output", 0), get("cache_read", 0), get("cache_write", 0))


def anthropic_usage(obj: object) -> Usage | None:
    """Usage of an Anthropic Messages body (``{"usage": {...}}``), if it has one."""
    return _from_fields(_anthropic_fields(_sub(obj, "usage")))


def usage_from_body(surface: Literal["openai", "anthropic"], body: bytes) -> Usage | None:
    """Usage from a complete non-stream response body; None for invalid or truncated JSON."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return openai_usage(obj) if surface == "openai" else anthropic_usage(obj)


def request_wants_usage(payload: dict[str, Any]) -> bool:
    """Whether the client itself asked for the streamed usage chunk."""
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


_INSERT = b'"stream_options":{"include_usage":true}'


def add_include_usage(raw_body: bytes, payload: dict[str, Any]) -> bytes:
    """Return ``raw_body`` asking for ``stream_options.include_usage``; ``payload`` is its parse.

    When ``stream_options`` is absent the key is inserted right after the top-level ``{`` and
    every other byte the client sent is kept; when it exists without ``include_usage: true``
    the body is re-serialised (compact, non-ASCII kept). Unchanged if the client asked already.
    """
    if request_wants_usage(payload):
        return raw_body
    if "stream_options" not in payload:
        stripped = raw_body.lstrip(b" \t\r\n")
        offset = len(raw_body) - len(stripped)
        if stripped[:1] == b"{":
            rest = stripped[1:].lstrip(b" \t\r\n")
            sep = b"" if rest[:1] == b"}" else b","
            head = offset + 1
            return raw_body[:head] + _INSERT + sep + raw_body[head:]
    options = payload.get("stream_options")
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    return json.dumps(
        {**payload, "stream_options": merged}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


class OpenAIStreamTracker:
    """Follows an OpenAI chat/completions stream block by block.

    ``feed`` returns whether to relay the block: False only for the usage-only chunk
    (``"choices": []`` plus a ``usage`` object) and only when ``strip_usage_chunk`` is set,
    i.e. when the proxy added ``include_usage`` itself. Usage found in any chunk is kept (the
    last one wins); the output text (content, reasoning, tool names and arguments, legacy
    ``text``) is collected as a list of pieces and joined only by :meth:`output_text`.
    """

    __slots__ = ("_parts", "_strip", "_usage", "done", "model")

    def __init__(self, *, strip_usage_chunk: bool = False) -> None:
        self._strip = strip_usage_chunk
        self._usage: Usage | None = None
        self._parts: list[str] = []
        self.model: str | None = None
        self.done = False  # saw a finish_reason or [DONE]: the stream was not cut short

    def feed(self, block: SSEBlock) -> bool:
        data = block.data
        if data is None:
            return True
        if data == "[DONE]":
            self.done = True
            return True
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return True
        if not isinstance(obj, dict):
            return True
        if self.model is None and isinstance(obj.get("model"), str):
            self.model = obj["model"]
        choices = obj.get("choices")
        usage = openai_usage(obj) if obj.get("usage") else None
        if usage is not None:
            self._usage = usage
            if self._strip and choices == []:
                return False
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._collect(choice)
        return True

    def _collect(self, choice: dict[str, Any]) -> None:
        parts = self._parts
        if choice.get("finish_reason"):
            self.done = True
        text = choice.get("text")  # legacy /v1/completions
        if isinstance(text, str):
            parts.append(text)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        for key in ("reasoning_content", "content"):
            value = delta.get(key)
            if isinstance(value, str):
                parts.append(value)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = _sub(call, "function")
                for key in ("name", "arguments"):
                    value = function.get(key)
                    if isinstance(value, str):
                        parts.append(value)

    def usage(self) -> Usage | None:
        """Usage reported by the upstream, or None if the stream never carried it."""
        return self._usage

    def output_text(self) -> str:
        """Everything the model generated so far, for estimating output tokens."""
        return "".join(self._parts)


class AnthropicStreamTracker:
    """Follows an Anthropic Messages stream; every block is relayed.

    Usage merges ``message_start.message.usage`` with each ``message_delta.usage``. Counts in
    the delta are cumulative, so each field keeps its maximum: a later zero never erases an
    earlier real value, and cache fields may come from either event.
    """

    __slots__ = ("_fields", "_parts", "done", "model")

    def __init__(self) -> None:
        self._fields: dict[str, int] = {}
        self._parts: list[str] = []
        self.model: str | None = None
        self.done = False  # saw message_stop

    def feed(self, block: SSEBlock) -> bool:
        data = block.data
        if not data or data[0] != "{":
            return True
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return True
        if not isinstance(obj, dict):
            return True
        kind = obj.get("type") or block.event
        if kind == "content_block_delta":
            delta = _sub(obj, "delta")
            for key in ("text", "thinking", "partial_json"):
                value = delta.get(key)
                if isinstance(value, str):
                    self._parts.append(value)
        elif kind == "content_block_start":
            start = _sub(obj, "content_block")
            for key in ("text", "thinking", "name"):
                value = start.get(key)
                if isinstance(value, str) and value:
                    self._parts.append(value)
        elif kind == "message_start":
            message = _sub(obj, "message")
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._merge(_sub(message, "usage"))
        elif kind == "message_delta":
            self._merge(_sub(obj, "usage"))
        elif kind == "message_stop":
            self.done = True
        return True

    def _merge(self, usage: dict[str, Any]) -> None:
        for field, value in _anthropic_fields(usage).items():
            if value >= self._fields.get(field, 0):
                self._fields[field] = value

    def usage(self) -> Usage | None:
        """Usage reported by the upstream, or None if no event carried it."""
        return _from_fields(self._fields)

    def output_text(self) -> str:
        """Text, thinking and tool-input JSON streamed so far, for estimating output tokens."""
        return "".join(self._parts)
