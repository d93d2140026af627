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

__all__ = [
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
    (or the body does not start with ``{``: a BOM, UTF-16) the body is re-serialised as UTF-8
    (compact, non-ASCII kept, ASCII-escaped if it holds a lone surrogate, which UTF-8 cannot
    carry). Unchanged if the client asked already.
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
    obj = {**payload, "stream_options": merged}
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate the client sent escaped ("\ud800"): keep it so
        return json.dumps(obj, separators=(",", ":")).encode("ascii")
