"""Deterministic replies and token counts, computable by tests from the request alone.

Token rules (a "word" is a run of non-whitespace, i.e. `len(text.split())`):

- Text of a content value: a string, or the `text` / `thinking` / `content` (recursively) of each
  part of a list of parts; other parts (images, tool_use inputs) count 0 words.
- Chat prompt tokens = words(system) + sum over messages of (1 + words(content)). Anthropic's
  `system` (string or blocks) counts; OpenAI system messages are ordinary messages. Tools, model
  and every other field count nothing, so a proxy rewriting `stream_options` changes nothing.
- Text-completion prompt tokens = sum over prompts of (1 + words(prompt)).
- Embedding tokens = sum over inputs of max(1, words(input)) (a list of ints counts its length).
- Cached prompt tokens = `x-sim-cached-tokens` if sent, else floor(prompt * cache_ratio), at most
  the prompt. OpenAI reports them inside prompt_tokens; Anthropic's input_tokens excludes them.
- Output tokens = chunks * words_per_chunk, capped by `max_tokens` / `max_completion_tokens`
  (finish "length" / "max_tokens" when the cap bites), plus words_per_chunk reasoning tokens when
  the request sets `"thinking": {"type": "enabled"}`. A tool call (request has tools and the last
  user message contains "call a tool") also reports chunks * words_per_chunk output tokens.

Reply words cycle through the words of the last user message (or "zai simulated reply").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FALLBACK_WORDS = ("zai", "simulated", "reply")
TOOL_TRIGGER = "call a tool"


def content_text(value: object) -> str:
    """The text of a message content (string or list of parts), parts joined by spaces."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts: list[str] = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                for key in ("text", "thinking", "content"):
                    if key in part:
                        texts.append(content_text(part[key]))
        return " ".join(texts)
    return ""


def words(value: object) -> int:
    """Word count of a content value (see the module rules)."""
    return len(content_text(value).split())


def chat_prompt_tokens(messages: Sequence[Any], system: object = None) -> int:
    """Prompt tokens of a chat / Anthropic messages request."""
    total = words(system)
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        total += 1 + words(content)
    return total


def completion_prompt_tokens(prompt: object) -> int:
    """Prompt tokens of a text-completion request (`prompt` string or list of strings)."""
    prompts = prompt if isinstance(prompt, list) else [prompt]
    return sum(1 + words(p) for p in prompts)


def embedding_inputs(value: object) -> list[object]:
    """The inputs of an embeddings request: a string, a token-id list, or a list of either."""
    if isinstance(value, list) and value and all(isinstance(i, int) for i in value):
        return [value]
    return list(value) if isinstance(value, list) else [value]


def embedding_tokens(item: object) -> int:
    """Tokens of one embedding input: its length for token ids, else max(1, words)."""
    return len(item) if isinstance(item, list) else max(1, words(item))


def prompt_text(body: dict[str, Any]) -> str:
    """All the prompt text of a request (system, message contents, `prompt`, `input`), joined by
    spaces: what `overloaded_prompt` is looked for in."""
    parts = [content_text(body.get("system"))]
    messages = body.get("messages")
    if isinstance(messages, list):
        parts += [content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    for key in ("prompt", "input"):
        parts.append(content_text(body.get(key)))
    return " ".join(part for part in parts if part)


def last_user_words(messages: Sequence[Any]) -> list[str]:
    """Words of the last user message's text (empty when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content")).split()
    return []


def thinking_enabled(body: dict[str, Any]) -> bool:
    """True for `"thinking": {"type": "enabled", ...}` (GLM and Anthropic style)."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


def tool_name(body: dict[str, Any]) -> str | None:
    """The first tool's name (OpenAI `function.name` or Anthropic `name`), if tools are sent."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    first = tools[0]
    function = first.get("function")
    name = function.get("name") if isinstance(function, dict) else first.get("name")
    return name if isinstance(name, str) and name else "tool"


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """The output cap the request sets, if any."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class ToolCall:
    """A tool call reply: the function name and its JSON arguments split in stream pieces."""

    name: str
    argument_pieces: tuple[str, ...]

    @property
    def arguments(self) -> str:
        return "".join(self.argument_pieces)


@dataclass(frozen=True)
class Generation:
    """What the simulated model answers: text pieces (one per chunk) and the usage numbers."""

    prompt_tokens: int
    cached_tokens: int
    reasoning: str
    reasoning_tokens: int
    pieces: tuple[str, ...]
    tool: ToolCall | None
    finish: str  # "stop", "length", "tool_calls", or what `x-sim-finish-reason` forced
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _split(text: str, parts: int) -> tuple[str, ...]:
    size = max(1, math.ceil(len(text) / max(1, parts)))
    return tuple(text[i : i + size] for i in range(0, len(text), size)) or ("",)


def plan(
    *,
    prompt_tokens: int,
    source: Sequence[str],
    chunks: int,
    words_per_chunk: int,
    cached_tokens: int,
    max_tokens: int | None = None,
    thinking: bool = False,
    tool: str | None = None,
) -> Generation:
    """Compute the reply for the given request facts and effective knobs."""
    vocab = list(source) or list(FALLBACK_WORDS)
    cached = max(0, min(cached_tokens, prompt_tokens))
    reasoning, reasoning_tokens = "", 0
    if thinking:
        reasoning_tokens = words_per_chunk
        cycle = ["considering", *vocab]
        reasoning = " ".join(cycle[i % len(cycle)] for i in range(reasoning_tokens))
    target = chunks * words_per_chunk
    if tool is not None:
        arguments = json.dumps({"query": " ".join(vocab[:3])})
        call = ToolCall(tool, _split(arguments, chunks))
        return Generation(prompt_tokens, cached, reasoning, reasoning_tokens, (), call,
                          "tool_calls", target + reasoning_tokens)
    finish = "stop"
    if max_tokens is not None and max_tokens < target:
        target, finish = max_tokens, "length"
    out = [vocab[i % len(vocab)] for i in range(target)]
    pieces = tuple(
        ("" if start == 0 else " ") + " ".join(out[start : start + words_per_chunk])
        for start in range(0, target, words_per_chunk)
    )
    return Generation(prompt_tokens, cached, reasoning, reasoning_tokens, pieces, None, finish,
                      target + reasoning_tokens)


def wants_tool(body: dict[str, Any], messages: Sequence[Any]) -> str | None:
    """The tool to call when the request has tools and the last user message asks for one."""
    name = tool_name(body)
    if name is None:
        return None
    text = " ".join(last_user_words(messages)).lower()
    return name if TOOL_TRIGGER in text else None


@dataclass(frozen=True)
class StreamPlan:
    """A stream as bytes: `head` after the TTFT, one `pieces` entry per gap, then `tail`."""

    head: bytes
    pieces: tuple[bytes, ...]
    tail: bytes
