"""What the model sees, as text to count, for requests the upstream reported no usage for.

Each surface has a ``*_prompt_text`` (the text to tokenize) and a ``*_prompt_overhead`` (tokens
that are not text): the OpenAI cookbook's 3 tokens per message and 3 for priming the reply,
a fixed ``IMAGE_TOKENS`` per image part (images are never turned into text; 85 is OpenAI's
low-detail image cost, a placeholder since the GLM vision cost is not published), and token-id
arrays given as ``prompt``/``input`` (counted by length). Role names are part of the text, as
in the cookbook. Tool and function definitions, tool-call arguments and Anthropic tool inputs
are serialised as compact JSON. Counting the text with ``Tokenizer.count_async`` and adding
the overhead keeps big prompts off the event loop; :func:`estimate_input` does both inline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal, Protocol

__all__ = [
    "IMAGE_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "anthropic_prompt_overhead",
    "anthropic_prompt_text",
    "estimate_input",
    "openai_prompt_overhead",
    "openai_prompt_text",
]

TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3
IMAGE_TOKENS = 85
_IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})


class _Counter(Protocol):
    def count(self, text: str) -> int: ...


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _openai_content(content: object, out: list[str]) -> None:
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])


def _messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    messages = payload.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _prompt_strings(value: object) -> Iterable[str]:
    """``prompt`` / ``input``: a string or a list of strings (token-id arrays are overhead)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))


def _token_ids(value: object) -> int:
    if not isinstance(value, list) or not value:
        return 0
    if all(isinstance(item, int) for item in value):
        return len(value)
    return sum(len(item) for item in value if isinstance(item, list))


def openai_prompt_text(payload: dict[str, Any]) -> str:
    """Text of an OpenAI chat, completions or embeddings request, joined with newlines."""
    out: list[str] = []
    for message in _messages(payload):
        for key in ("role", "name"):
            if isinstance(message.get(key), str):
                out.append(message[key])
        _openai_content(message.get("content"), out)
        if isinstance(message.get("reasoning_content"), str):
            out.append(message["reasoning_content"])
        calls = message.get("tool_calls")
        functions = [message.get("function_call")]  # legacy single call
        if isinstance(calls, list):
            functions += [c.get("function") for c in calls if isinstance(c, dict)]
        for function in functions:
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    if isinstance(function.get(key), str):
                        out.append(function[key])
    for key in ("tools", "functions"):
        if payload.get(key):
            out.append(_compact(payload[key]))
    out.extend(_prompt_strings(payload.get("prompt")))
    out.extend(_prompt_strings(payload.get("input")))
    return "\n".join(out)


def _images_openai(message: dict[str, Any]) -> int:
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and p.get("type") in _IMAGE_TYPES)


def openai_prompt_overhead(payload: dict[str, Any]) -> int:
    """Tokens of an OpenAI request that :func:`openai_prompt_text` does not contain."""
    messages = _messages(payload)
    total = _token_ids(payload.get("prompt")) + _token_ids(payload.get("input"))
    if messages:
        total += TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING_TOKENS
        total += IMAGE_TOKENS * sum(_images_openai(m) for m in messages)
    return total


def _blocks(content: object) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _anthropic_content(content: object, out: list[str]) -> None:
    """Append the text of Anthropic content: a string or a list of blocks."""
    if isinstance(content, str):
        out.append(content)
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "tool_use":
            if isinstance(block.get("name"), str):
                out.append(block["name"])
            out.append(_compact(block.get("input", {})))
        elif kind == "tool_result":
            _anthropic_content(block.get("content"), out)
        else:  # text, thinking, and any other block carrying text the same way
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    out.append(block[key])


def _anthropic_images(content: object) -> int:
    return sum(
        _anthropic_images(b.get("content")) if b.get("type") == "tool_result"
        else int(b.get("type") in _IMAGE_TYPES)
        for b in _blocks(content)
    )


def anthropic_prompt_text(payload: dict[str, Any]) -> str:
    """Text of an Anthropic Messages (or count_tokens) request, joined with newlines."""
    out: list[str] = []
    _anthropic_content(payload.get("system"), out)
    for message in _messages(payload):
        if isinstance(message.get("role"), str):
            out.append(message["role"])
        _anthropic_content(message.get("content"), out)
    if payload.get("tools"):
        out.append(_compact(payload["tools"]))
    return "\n".join(out)


def anthropic_prompt_overhead(payload: dict[str, Any]) -> int:
    """Tokens of an Anthropic request that :func:`anthropic_prompt_text` does not contain."""
    messages = _messages(payload)
    images = sum(_anthropic_images(m.get("content")) for m in messages)
    return TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING_TOKENS + IMAGE_TOKENS * images


def estimate_input(
    surface: Literal["openai", "anthropic"], payload: dict[str, Any], tokenizer: _Counter
) -> int:
    """Estimated input tokens: the prompt text counted inline plus the fixed overheads."""
    if surface == "openai":
        return tokenizer.count(openai_prompt_text(payload)) + openai_prompt_overhead(payload)
    return tokenizer.count(anthropic_prompt_text(payload)) + anthropic_prompt_overhead(payload)
