"""Watching a relayed event stream for the errors Z.AI puts inside it: pure, bytes in.

Z.AI has been seen to end a stream that started fine (HTTP 200) with an error event instead of
its tail (`data: {"error": {"code": ..., "message": ...}}`; on the Anthropic route `event: error`
with Anthropic's envelope), or with only an abnormal `finish_reason` / `stop_reason`. A
`StreamWatch` is fed every chunk of a stream as relayed and keeps:

- `content`: an event that carries something for the client (generated text, reasoning, a tool
  call, a finish, `[DONE]`, or anything it cannot read) was seen. Until then the stream is in
  its *head* (an OpenAI role chunk, Anthropic's `message_start`, an empty `content_block_start`,
  `ping`s, comments), which the forwarder holds back so an error that comes before any content
  can still be retried;
- `fault`: the first error event or abnormal finish, with `before_content` telling whether it
  came in the head. Later ones are ignored (each stream counts once).

Cost: the head is parsed event by event (a few small events). After it a chunk is parsed only
when a cheap byte test says it may hold an error or a finish reason with a value (every OpenAI
chunk says `"finish_reason":null`; those are not parsed); nothing is buffered beyond an event
that straddles two reads, and nothing at all once a fault was found. Which finishes are normal:
`NORMAL_FINISH` (OpenAI's `finish_reason`) and `NORMAL_STOP` (Anthropic's `stop_reason`).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from zai_proxy.accounting.sse import SSEParser, parse_block
from zai_proxy.zai.classify import classify_doc

NORMAL_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "sensitive"})
NORMAL_STOP = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn",
                         "refusal"})
# The `class` label of a fault that carries no business code.
FINISH_CLASS = "finish_reason"
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_REASON = b'_reason"'
_NULLS = (b": null", b":null")  # what follows `_reason"` in every chunk that is not a finish
_BOM = b"\xef\xbb\xbf"
# Anthropic events that come before any content.
_HEAD_EVENTS = frozenset({"message_start", "ping", "content_block_stop"})
_DETAIL_CHARS = 200


class Fault(NamedTuple):
    """What went wrong in a stream. `cls` is a bounded label value: the class of the error's
    code (`unknown` without one) or `finish_reason`; `detail` the reason or the error's message
    (bounded, for the log); `doc` the error event's JSON (None for a finish)."""

    kind: str  # "error" or "finish"
    cls: str
    code: str | None
    detail: str
    doc: Any
    before_content: bool


class StreamWatch:
    """Feed it every chunk of one stream, in order (see the module docstring)."""

    __slots__ = ("_idle", "_parser", "content", "fault")

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._idle = True  # the parser holds no incomplete event (kept here: read per chunk)
        self.content = False
        self.fault: Fault | None = None

    @property
    def head_over(self) -> bool:
        """The first event past the head has come: content, a fault or the end."""
        return self.content or self.fault is not None

    def feed(self, chunk: bytes) -> None:
        """Look at the next chunk of the stream."""
        if self.fault is not None or not chunk:
            return
        if self.content and self._idle and chunk.endswith(_EVENT_ENDS):
            # Whole events, past the head: the usual read, and the cheap test decides.
            if not _suspect(chunk):
                return
        parser = self._parser
        blocks = parser.feed_raw(chunk)
        self._idle = parser.idle
        for raw in blocks:
            if self.content and not _suspect(raw):
                continue
            self._event(raw)
            if self.fault is not None:
                return

    def close(self) -> None:
        """The stream ended: an unterminated last event is read too."""
        if self.fault is None:
            for block in self._parser.close():
                if not self.content or _suspect(block.raw):
                    self._event(block.raw)

    def _event(self, raw: bytes) -> None:
        block = parse_block(raw, strip_bom=raw.startswith(_BOM))
        data = block.data
        if block.event == "error":
            self._error(_loads(data) if data else None, data or "")
            return
        if data is None:
            return  # a comment or a keep-alive
        if data == "[DONE]":
            self.content = True
            return
        doc = _loads(data)
        if not isinstance(doc, dict):
            self.content = True  # something the client gets that this cannot read
            return
        if doc.get("type") == "error" or doc.get("error"):
            self._error(doc, data)
            return
        choices = doc.get("choices")
        if isinstance(choices, list):
            self._choices(choices)
            return
        kind = doc.get("type")
        if kind == "message_delta":
            delta = doc.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            self._finish(reason, NORMAL_STOP)
        elif kind == "content_block_start":
            block_doc = doc.get("content_block")
            if not (isinstance(block_doc, dict) and block_doc.get("type") in ("text", "thinking")
                    and not block_doc.get("text") and not block_doc.get("thinking")):
                self.content = True  # a tool call opening, or text already
        elif kind not in _HEAD_EVENTS:
            self.content = True

    def _choices(self, choices: list[Any]) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")
                                            or delta.get("reasoning_content")):
                self.content = True
            if choice.get("text") or isinstance(choice.get("message"), dict):
                self.content = True
            self._finish(choice.get("finish_reason"), NORMAL_FINISH)
            if self.fault is not None:
                return

    def _finish(self, reason: object, normal: frozenset[str]) -> None:
        if reason is None:
            return
        if isinstance(reason, str) and reason in normal:
            self.content = True
            return
        self.fault = Fault("finish", FINISH_CLASS, None, str(reason)[:_DETAIL_CHARS], None,
                           not self.content)
        self.content = True

    def _error(self, doc: Any, data: str) -> None:
        throttle = classify_doc(doc, {}, 0.0, text=data if doc is None else "")
        error = doc.get("error") if isinstance(doc, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        detail = message if isinstance(message, str) else data
        self.fault = Fault("error", throttle.cls.value, throttle.code, detail[:_DETAIL_CHARS],
                           doc, not self.content)
        self.content = True


def _suspect(events: bytes) -> bool:
    """Whether whole events may hold an error or a finish reason with a value."""
    if b"error" in events:  # an error object, an `event: error`; text saying "error": a parse
        return True
    at = events.find(_REASON)
    while at >= 0:
        at += len(_REASON)
        if not events.startswith(_NULLS, at):
            return True
        at = events.find(_REASON, at)
    return False


def _loads(data: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
