"""Prompt text and overheads for estimates, per surface and payload shape."""

from __future__ import annotations

from typing import Any

import pytest

from zai_proxy.accounting.estimate import (
    IMAGE_TOKENS,
    anthropic_prompt_overhead,
    anthropic_prompt_text,
    estimate_input,
    openai_prompt_overhead,
    openai_prompt_text,
)
from zai_proxy.accounting.tokenizer import load_tokenizer

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

OPENAI_CASES: list[tuple[str, dict[str, Any], str, int]] = [
    ("string content", {"messages": [{"role": "user", "content": "hi"}]}, "user\nhi", 6),
    (
        "parts with an image",
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "?"},
        ]}]},
        "user\nwhat is this\n?", 6 + IMAGE_TOKENS,
    ),
    (
        "tool call and result",
        {"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "assistant", "content": None, "reasoning_content": "hmm",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "f", "arguments": '{"a":1}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ], "tools": TOOLS},
        'system\nbe brief\nassistant\nhmm\nf\n{"a":1}\ntool\n42\n'
        '[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]',
        12,
    ),
    (
        "legacy function_call and functions",
        {"messages": [{"role": "assistant", "name": "bot", "content": "",
                       "function_call": {"name": "g", "arguments": "{}"}}],
         "functions": [{"name": "g"}]},
        'assistant\nbot\n\ng\n{}\n[{"name":"g"}]', 6,
    ),
    ("completions string", {"prompt": "Once upon"}, "Once upon", 0),
    ("completions list", {"prompt": ["a", "b"]}, "a\nb", 0),
    ("completions token ids", {"prompt": [1, 2, 3]}, "", 3),
    ("embeddings token id batches", {"input": [[1, 2], [3]]}, "", 3),
    ("embeddings strings", {"input": ["x", "y"]}, "x\ny", 0),
    ("garbage tolerated", {"messages": "nope", "prompt": 5, "input": None}, "", 0),
]


@pytest.mark.parametrize(("case", "payload", "text", "overhead"), OPENAI_CASES,
                         ids=[c[0] for c in OPENAI_CASES])
def test_openai(case: str, payload: dict[str, Any], text: str, overhead: int) -> None:
    assert openai_prompt_text(payload) == text
    assert openai_prompt_overhead(payload) == overhead


ANTHROPIC_CASES: list[tuple[str, dict[str, Any], str, int]] = [
    ("string system", {"system": "sys", "messages": [{"role": "user", "content": "hi"}]},
     "sys\nuser\nhi", 6),
    (
        "blocks everywhere",
        {"system": [{"type": "text", "text": "s1", "cache_control": {"type": "ephemeral"}}],
         "messages": [
             {"role": "user", "content": [{"type": "text", "text": "q"},
                                          {"type": "image", "source": {"data": "AAAA"}}]},
             {"role": "assistant", "content": [
                 {"type": "thinking", "thinking": "t", "signature": "sig"},
                 {"type": "tool_use", "id": "tu", "name": "w", "input": {"city": "京都"}}]},
             {"role": "user", "content": [
                 {"type": "tool_result", "tool_use_id": "tu", "content": [
                     {"type": "text", "text": "rain"}, {"type": "image", "source": {}}]},
                 {"type": "tool_result", "tool_use_id": "tu", "content": "ok"}]},
         ],
         "tools": [{"name": "w", "input_schema": {"type": "object"}}]},
        's1\nuser\nq\nassistant\nt\nw\n{"city":"京都"}\nuser\nrain\nok\n'
        '[{"name":"w","input_schema":{"type":"object"}}]',
        3 * 3 + 3 + 2 * IMAGE_TOKENS,
    ),
    ("empty", {}, "", 3),
]


@pytest.mark.parametrize(("case", "payload", "text", "overhead"), ANTHROPIC_CASES,
                         ids=[c[0] for c in ANTHROPIC_CASES])
def test_anthropic(case: str, payload: dict[str, Any], text: str, overhead: int) -> None:
    assert anthropic_prompt_text(payload) == text
    assert anthropic_prompt_overhead(payload) == overhead


def test_close_to_the_cookbook_reference() -> None:
    """OpenAI's cookbook example: the API reported 129 prompt tokens with cl100k_base."""
    messages = [
        {"role": "system", "content": "You are a helpful, pattern-following assistant that "
         "translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user",
         "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant",
         "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have "
         "more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant",
         "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the "
         "ocean for the client deliverable."},
    ]
    estimate = estimate_input("openai", {"messages": messages}, load_tokenizer("cl100k_base"))
    assert abs(estimate - 129) <= 129 * 0.06


def test_estimate_input_anthropic_adds_overhead() -> None:
    tok = load_tokenizer("cl100k_base")
    payload = {"messages": [{"role": "user", "content": "hello world"}]}
    assert estimate_input("anthropic", payload, tok) == tok.count("user\nhello world") + 6
