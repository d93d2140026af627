"""Route handlers for admitted API requests: request JSON in, reply bytes or stream plan out.

Handlers are pure (no I/O, no clock): they validate the body, compute the deterministic
`Generation` (see `generation`) and format it. Timing, resets and faults are the app's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from zai_proxy.simulator import anthropic_format as anthropic
from zai_proxy.simulator import errors
from zai_proxy.simulator import openai_format as openai
from zai_proxy.simulator.generation import (
    Generation,
    StreamPlan,
    chat_prompt_tokens,
    completion_prompt_tokens,
    content_text,
    embedding_inputs,
    embedding_tokens,
    last_user_words,
    max_tokens_of,
    plan,
    thinking_enabled,
    wants_tool,
)
from zai_proxy.simulator.overrides import RequestKnobs
from zai_proxy.simulator.settings import SimulatorSettings

OPENAI_PREFIX = "/api/paas/v4"
ANTHROPIC_PREFIX = "/api/anthropic"
DEFAULT_MODEL = "glm-4.7"


@dataclass(frozen=True)
class Call:
    """One admitted API request as the handlers see it."""

    route: str
    body: dict[str, Any]
    knobs: RequestKnobs
    rid: str
    created: int
    settings: SimulatorSettings


@dataclass(frozen=True)
class Reply:
    """A 200 reply: a JSON body or a stream plan; `chunks` paces a non-stream reply; `tokens`
    (prompt + completion) is what the reply costs the plan quota."""

    payload: bytes | StreamPlan
    chunks: int = 0
    tokens: int = 0


Handler = Callable[[Call], "Reply | errors.Answer"]


def _model(call: Call) -> str:
    model = call.body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL


def _cached(call: Call, prompt_tokens: int) -> int:
    if call.knobs.cached_tokens is not None:
        return call.knobs.cached_tokens
    return int(prompt_tokens * call.settings.cache_ratio)


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _generate(call: Call, prompt_tokens: int, source: list[str], tool: str | None) -> Generation:
    knobs = call.knobs
    gen = plan(
        prompt_tokens=prompt_tokens,
        source=source,
        chunks=knobs.chunks,
        words_per_chunk=knobs.words_per_chunk,
        cached_tokens=_cached(call, prompt_tokens),
        max_tokens=max_tokens_of(call.body),
        thinking=thinking_enabled(call.body),
        tool=tool,
    )
    # Z.AI has ended replies with `network_error` / `abnormal` and no error event.
    return replace(gen, finish=knobs.finish_reason) if knobs.finish_reason else gen


def _cost(gen: Generation) -> int:
    """Tokens a generation takes from the plan quota: the whole prompt plus the completion."""
    return gen.prompt_tokens + gen.completion_tokens


def _messages(call: Call) -> list[Any] | None:
    messages = call.body.get("messages")
    return messages if isinstance(messages, list) and messages else None


def chat_completions(call: Call) -> Reply | errors.Answer:
    """`POST /api/paas/v4/chat/completions`."""
    messages = _messages(call)
    if messages is None:
        return errors.bad_request("messages must be a non-empty array")
    gen = _generate(call, chat_prompt_tokens(messages), last_user_words(messages),
                    wants_tool(call.body, messages))
    usage = not call.knobs.no_usage
    if call.body.get("stream"):
        stream_usage = usage and _include_usage(call.body)
        return Reply(openai.chat_stream(gen, _model(call), call.rid, call.created, stream_usage),
                     tokens=_cost(gen))
    body = openai.chat_completion(gen, _model(call), call.rid, call.created, usage)
    return Reply(body, len(gen.pieces) or 1, _cost(gen))


def completions(call: Call) -> Reply | errors.Answer:
    """`POST /api/paas/v4/completions`."""
    prompt = call.body.get("prompt")
    if not isinstance(prompt, (str, list)):
        return errors.bad_request("prompt must be a string or an array of strings")
    gen = _generate(call, completion_prompt_tokens(prompt), content_text(prompt).split(), None)
    usage = not call.knobs.no_usage
    if call.body.get("stream"):
        stream_usage = usage and _include_usage(call.body)
        return Reply(openai.text_stream(gen, _model(call), call.rid, call.created, stream_usage),
                     tokens=_cost(gen))
    body = openai.text_completion(gen, _model(call), call.rid, call.created, usage)
    return Reply(body, len(gen.pieces), _cost(gen))


def embeddings(call: Call) -> Reply | errors.Answer:
    """`POST /api/paas/v4/embeddings`."""
    raw = call.body.get("input")
    inputs = embedding_inputs(raw) if raw is not None else []
    if not inputs:
        return errors.bad_request("input must be a non-empty string or array")
    dimensions = call.body.get("dimensions")
    dim = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 4096 else (
        call.settings.embedding_dim)
    counts = [embedding_tokens(item) for item in inputs]
    model = call.body.get("model") or "embedding-3"
    return Reply(openai.embeddings(inputs, counts, str(model), dim, not call.knobs.no_usage),
                 tokens=sum(counts))


def models(call: Call) -> Reply | errors.Answer:
    """`GET /api/paas/v4/models`."""
    return Reply(openai.models(call.settings.models, call.created))


def messages(call: Call) -> Reply | errors.Answer:
    """`POST /api/anthropic/v1/messages`."""
    items = _messages(call)
    if items is None:
        return errors.json_answer(400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": "messages: field required"}})
    prompt = chat_prompt_tokens(items, call.body.get("system"))
    gen = _generate(call, prompt, last_user_words(items), wants_tool(call.body, items))
    usage = not call.knobs.no_usage
    if call.body.get("stream"):
        return Reply(anthropic.stream(gen, _model(call), call.rid, usage), tokens=_cost(gen))
    return Reply(anthropic.message(gen, _model(call), call.rid, usage), len(gen.pieces) or 1,
                 _cost(gen))


def count_tokens(call: Call) -> Reply | errors.Answer:
    """`POST /api/anthropic/v1/messages/count_tokens` (total prompt tokens, cached included)."""
    items = call.body.get("messages")
    if not isinstance(items, list):
        return errors.json_answer(400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": "messages: field required"}})
    return Reply(anthropic.count_tokens(chat_prompt_tokens(items, call.body.get("system"))))


HANDLERS: dict[str, tuple[str, Handler]] = {
    f"{OPENAI_PREFIX}/chat/completions": ("POST", chat_completions),
    f"{OPENAI_PREFIX}/completions": ("POST", completions),
    f"{OPENAI_PREFIX}/embeddings": ("POST", embeddings),
    f"{OPENAI_PREFIX}/models": ("GET", models),
    f"{ANTHROPIC_PREFIX}/v1/messages": ("POST", messages),
    f"{ANTHROPIC_PREFIX}/v1/messages/count_tokens": ("POST", count_tokens),
}
API_ROUTES: dict[str, str] = {path: method for path, (method, _) in HANDLERS.items()}
# Routes that run the model: the account state refuses them and each one costs credits.
MODEL_ROUTES = frozenset({f"{OPENAI_PREFIX}/chat/completions", f"{OPENAI_PREFIX}/completions",
                          f"{OPENAI_PREFIX}/embeddings", f"{ANTHROPIC_PREFIX}/v1/messages"})


def handle_api(call: Call) -> Reply | errors.Answer:
    """Dispatch an admitted request to its route's handler."""
    return HANDLERS[call.route][1](call)
