"""Following a relayed stream for its usage, at the least cost per chunk.

The trackers sit on the stream path, so they parse as little as they can: a chunk is decoded
from JSON only when it may carry usage (OpenAI: the text `"usage"` appears in it; Anthropic:
`message_start` / `message_delta` events) or decides whether it is relayed. Every other chunk is
kept as text and parsed only if an estimate of the output is ever needed (the upstream reported
no usage, or the stream was cut short): the common case pays one substring test per chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from zai_proxy.accounting.sse import SSEBlock, SSEParser, parse_block
from zai_proxy.accounting.usage import Usage, _anthropic_fields, _from_fields, _sub, openai_usage

__all__ = ["AnthropicStreamTracker", "OpenAIStreamTracker"]

_EAGER_ANTHROPIC = frozenset({"message_start", "message_delta", "message_stop", "error"})
# Blocks that only carry generated content (or keep-alives): parsed only for an estimate.
_CONTENT_EVENTS = (b"event: content_block_delta", b"event: content_block_start",
                   b"event: content_block_stop", b"event: ping")
BOM = b"\xef\xbb\xbf"


# Whole events relayed without parsing, split into blocks only if ever needed: a 1-tuple, so
# deferring copies nothing.
_Deferred = tuple[bytes]


def _blocks(
    pending: Sequence[_Deferred | bytes | str | dict[str, Any]],
) -> Iterator[bytes | str | dict[str, Any]]:
    """Pending items in order, deferred runs of events split into their blocks."""
    for item in pending:
        if isinstance(item, tuple):
            yield from SSEParser().feed_raw(item[0])
        else:
            yield item


def _loads(data: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


class OpenAIStreamTracker:
    """Follows an OpenAI chat/completions stream block by block.

    ``feed`` returns whether to relay the block: False only for the usage-only chunk
    (``"choices": []`` plus a ``usage`` object) and only when ``strip_usage_chunk`` is set,
    i.e. when the proxy added ``include_usage`` itself. Usage found in any chunk is kept (the
    last one wins). The output text (content, reasoning, tool names and arguments, legacy
    ``text``) is assembled only when :meth:`output_text` or :attr:`done` is asked for.
    """

    __slots__ = ("_finished", "_parts", "_pending", "_saw_done", "_strip", "_usage", "model")

    def __init__(self, *, strip_usage_chunk: bool = False) -> None:
        self._strip = strip_usage_chunk
        self._usage: Usage | None = None
        self._pending: list[_Deferred | bytes | str | dict[str, Any]] = []  # in stream order
        self._parts: list[str] = []
        self._saw_done = False
        self._finished = False
        self.model: str | None = None

    @staticmethod
    def skippable(events: bytes) -> bool:
        """Whole events that can carry neither usage nor the end of the stream."""
        return b'"usage"' not in events and b"[DONE]" not in events

    def defer(self, events: bytes) -> None:
        """Keep whole `skippable` events unparsed, in stream order (parsed for an estimate)."""
        self._pending.append((events,))

    def feed_raw(self, raw: bytes) -> bool:
        """`feed` for a block's bytes; most blocks are only searched, not parsed."""
        if self.model is not None and b'"usage"' not in raw and b"[DONE]" not in raw:
            self._pending.append(raw)
            return True
        return self.feed(parse_block(raw, strip_bom=raw.startswith(BOM)))

    def feed(self, block: SSEBlock) -> bool:
        data = block.data
        if data is None:
            return True
        if data == "[DONE]":
            self._saw_done = True
            return True
        if self.model is not None and '"usage"' not in data:
            self._pending.append(data)
            return True
        obj = _loads(data)
        if obj is None:
            return True
        if self.model is None and isinstance(obj.get("model"), str):
            self.model = obj["model"]
        if obj.get("usage"):
            usage = openai_usage(obj)
            if usage is not None:
                self._usage = usage
                if self._strip and obj.get("choices") == []:
                    return False
        self._pending.append(obj)
        return True

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for item in _blocks(pending):
            if isinstance(item, bytes):
                item = parse_block(item).data or ""
            obj = item if isinstance(item, dict) else _loads(item)
            choices = obj.get("choices") if obj is not None else None
            if isinstance(choices, list):
                for choice in choices:
                    if isinstance(choice, dict):
                        self._collect(choice)

    def _collect(self, choice: dict[str, Any]) -> None:
        parts = self._parts
        if choice.get("finish_reason"):
            self._finished = True
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

    @property
    def done(self) -> bool:
        """Saw `[DONE]` or a finish_reason: the stream was not cut short."""
        if self._saw_done:
            return True
        self._drain()
        return self._finished

    def usage(self) -> Usage | None:
        """Usage reported by the upstream, or None if the stream never carried it."""
        return self._usage

    def output_text(self) -> str:
        """Everything the model generated so far, for estimating output tokens."""
        self._drain()
        return "".join(self._parts)


class AnthropicStreamTracker:
    """Follows an Anthropic Messages stream; every block is relayed.

    Usage merges ``message_start.message.usage`` with each ``message_delta.usage``. Counts in
    the delta are cumulative, so each field keeps its maximum: a later zero never erases an
    earlier real value, and cache fields may come from either event.
    """

    __slots__ = ("_fields", "_parts", "_pending", "done", "model")

    def __init__(self) -> None:
        self._fields: dict[str, int] = {}
        self._pending: list[_Deferred | bytes | str] = []  # content, parsed for an estimate
        self._parts: list[str] = []
        self.model: str | None = None
        self.done = False  # saw message_stop

    @staticmethod
    def skippable(events: bytes) -> bool:
        """Whole events with no message_start/delta/stop or error among them (a false alarm,
        such as generated text that says "message_", only costs a parse)."""
        return b"message_" not in events and b"error" not in events

    def defer(self, events: bytes) -> None:
        """Keep whole `skippable` events unparsed, in stream order (parsed for an estimate)."""
        self._pending.append((events,))

    def feed_raw(self, raw: bytes) -> bool:
        """`feed` for a block's bytes; content events are kept unparsed."""
        if raw.startswith(_CONTENT_EVENTS):
            self._pending.append(raw)
            return True
        return self.feed(parse_block(raw, strip_bom=raw.startswith(BOM)))

    def feed(self, block: SSEBlock) -> bool:
        data = block.data
        if not data or data[0] != "{":
            return True
        if block.event is not None and block.event not in _EAGER_ANTHROPIC:
            self._pending.append(data)
            return True
        if block.event == "message_stop":
            self.done = True
            return True
        obj = _loads(data)
        if obj is None:
            return True
        kind = obj.get("type") or block.event
        if kind == "message_start":
            message = _sub(obj, "message")
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._merge(_sub(message, "usage"))
        elif kind == "message_delta":
            self._merge(_sub(obj, "usage"))
        elif kind == "message_stop":
            self.done = True
        else:  # an event without an `event:` line: treat it as content
            self._pending.append(data)
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
        pending, self._pending = self._pending, []
        for item in _blocks(pending):
            if isinstance(item, dict):
                continue
            data = (parse_block(item).data or "") if isinstance(item, bytes) else item
            obj = _loads(data)
            if obj is None:
                continue
            kind = obj.get("type")
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
        return "".join(self._parts)
