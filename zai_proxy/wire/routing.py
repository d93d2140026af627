"""The route table: which Z.AI endpoints the proxy serves, with which methods, and how their
tokens are counted; and `Router.resolve`, which maps a client request onto one of them.

`Router.resolve` is pure: it turns the client's method and raw path into a `Route` (the upstream
URL, the surface, the bounded route label and the endpoint's token kind) or raises NotFound /
MethodNotAllowed. The upstream URL is always the configured base plus a path suffix checked
segment by segment, so no request can make the proxy talk to another host (`//host`, `..`,
percent-encoded variants, absolute URLs), and no segment carries path parameters (`;`).

Closed by default: a `/v1` path outside `ENDPOINTS` is a 404 unless `passthrough_unknown` is
set, and even then it goes upstream only with a method of `PASSTHROUGH_METHODS` (never TRACE,
CONNECT or anything exotic) and is never counted. Endpoints known to consume tokens that the
proxy cannot count (`Tokens.UNCOUNTABLE`) are refused either way: forwarding them would spend
the account's tokens past accounting and the token quotas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import unquote, urlsplit

from zai_proxy.core.errors import MethodNotAllowed, NotFound, RouteNotAccounted

Surface = Literal["openai", "anthropic"]

OTHER_V1 = "/v1/other"
OTHER = "other"

# A path segment may hold only unreserved characters and a few sub-delims; no percent escapes
# (no encoded slash, backslash or dot can be smuggled past the segment check) and no ';' (path
# parameters, which some servers strip and others route on).
_SEGMENT = re.compile(r"[A-Za-z0-9._~:@!$'()*+,=-]+")
_PARAM = "{}"  # a template segment such as {file_id}, in the keys of _BY_SHAPE

# Methods an unknown path may be forwarded with when PASSTHROUGH_UNKNOWN is on.
PASSTHROUGH_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


class Tokens(StrEnum):
    """How an endpoint spends the account's tokens, and so how `Accounting` counts it."""

    NONE = "none"  # spends no tokens (lists, files, media priced per item, count_tokens)
    PROMPT = "prompt"  # a JSON prompt whose answer reports usage; estimated where it does not
    DEFERRED = "deferred"  # spends tokens but answers a task id: counted on the task's result
    RESULT = "result"  # an async task's result: counted from the usage it reports, once
    UNCOUNTABLE = "uncountable"  # spends tokens the answer does not report: refused


@dataclass(frozen=True, slots=True)
class Endpoint:
    template: str  # the client path, with {name} for an id segment; the metric label
    surface: Surface
    methods: frozenset[str]
    tokens: Tokens
    # The request body is a JSON object the proxy reads (model, stream flag; 400 otherwise),
    # and a 2xx answer must be JSON (an empty or broken one is retried).
    json_body: bool = False
    # An OpenAI stream whose usage chunk the proxy may ask for (stream_options.include_usage).
    stream_usage: bool = False


def _endpoint(template: str, surface: Surface, methods: str, tokens: Tokens,
              **flags: bool) -> Endpoint:
    allowed = frozenset(methods.split())
    if "GET" in allowed:
        allowed |= {"HEAD"}  # RFC 9110 §9.1: HEAD wherever GET is served
    return Endpoint(template, surface, allowed, tokens, **flags)


# Paths of Z.AI's OpenAI-compatible API (base .../paas/v4, the client's /v1 dropped) and of its
# Anthropic-compatible API (base .../api/anthropic, /v1 kept); listed in docs/contracts.md.
ENDPOINTS: dict[str, Endpoint] = {
    e.template: e
    for e in (
        _endpoint("/v1/chat/completions", "openai", "POST", Tokens.PROMPT, json_body=True,
                  stream_usage=True),
        _endpoint("/v1/completions", "openai", "POST", Tokens.PROMPT, json_body=True,
                  stream_usage=True),
        _endpoint("/v1/embeddings", "openai", "POST", Tokens.PROMPT, json_body=True),
        _endpoint("/v1/async/chat/completions", "openai", "POST", Tokens.DEFERRED,
                  json_body=True),
        _endpoint("/v1/async-result/{id}", "openai", "GET", Tokens.RESULT),
        _endpoint("/v1/models", "openai", "GET", Tokens.NONE),
        _endpoint("/v1/models/{model}", "openai", "GET", Tokens.NONE),
        _endpoint("/v1/images/generations", "openai", "POST", Tokens.NONE, json_body=True),
        _endpoint("/v1/async/images/generations", "openai", "POST", Tokens.NONE,
                  json_body=True),
        _endpoint("/v1/videos/generations", "openai", "POST", Tokens.NONE, json_body=True),
        _endpoint("/v1/web_search", "openai", "POST", Tokens.NONE, json_body=True),
        _endpoint("/v1/files", "openai", "GET POST", Tokens.NONE),
        _endpoint("/v1/files/{file_id}", "openai", "GET DELETE", Tokens.NONE),
        _endpoint("/v1/files/{file_id}/content", "openai", "GET", Tokens.NONE),
        _endpoint("/v1/audio/transcriptions", "openai", "POST", Tokens.UNCOUNTABLE),
        _endpoint("/v1/batches", "openai", "POST", Tokens.UNCOUNTABLE),
        _endpoint("/v1/agents", "openai", "POST", Tokens.UNCOUNTABLE),
        _endpoint("/v1/messages", "anthropic", "POST", Tokens.PROMPT, json_body=True),
        _endpoint("/v1/messages/count_tokens", "anthropic", "POST", Tokens.NONE,
                  json_body=True),
    )
}


def _shape(template: str) -> tuple[str, ...]:
    return tuple(_PARAM if s.startswith("{") else s for s in template[1:].split("/"))


_EXACT = {t: e for t, e in ENDPOINTS.items() if "{" not in t}
_BY_SHAPE = {_shape(t): e for t, e in ENDPOINTS.items() if "{" in t}
_PARAM_LENGTHS = frozenset(len(shape) for shape in _BY_SHAPE)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes."""

    template: str  # bounded metric label
    surface: Surface
    upstream_url: str  # base + checked path + raw query
    json_body: bool
    tokens: Tokens = Tokens.NONE
    stream_usage: bool = False


class Router:
    """Maps `/v1/...` paths onto the OpenAI and Anthropic upstream bases."""

    def __init__(self, openai_base: str, anthropic_base: str, *,
                 passthrough_unknown: bool = False) -> None:
        self._bases: dict[Surface, str] = {"openai": openai_base, "anthropic": anthropic_base}
        self._hosts = {urlsplit(b).netloc for b in self._bases.values()}
        self.passthrough_unknown = passthrough_unknown

    def resolve(self, method: str, raw_path: str, query: str = "") -> Route:
        """The route for `method raw_path?query`, or NotFound / MethodNotAllowed."""
        segments = _checked_segments(raw_path)
        path = "/" + "/".join(segments)
        endpoint = _EXACT.get(path)  # the hot path: one dict lookup
        if endpoint is None and len(segments) in _PARAM_LENGTHS:
            endpoint = _parametrised(segments)
        if endpoint is None:
            if not self.passthrough_unknown:
                raise NotFound(f"no route for {_shown(raw_path)}")
            if method not in PASSTHROUGH_METHODS:
                raise _not_allowed(method, path, PASSTHROUGH_METHODS, OTHER_V1)
            return self._route(OTHER_V1, "openai", path, query, False, Tokens.NONE, False)
        if method not in endpoint.methods:
            raise _not_allowed(method, path, endpoint.methods, endpoint.template)
        if endpoint.tokens is Tokens.UNCOUNTABLE:
            error = RouteNotAccounted(
                f"{endpoint.template} spends tokens the proxy cannot count; it is not served")
            error.route = endpoint.template
            raise error
        return self._route(endpoint.template, endpoint.surface, path, query, endpoint.json_body,
                           endpoint.tokens, endpoint.stream_usage)

    def _route(self, template: str, surface: Surface, path: str, query: str, json_body: bool,
               tokens: Tokens, stream_usage: bool) -> Route:
        # OpenAI upstream paths drop the /v1 (…/paas/v4 + /chat/completions); Anthropic's keep it.
        suffix = path if surface == "anthropic" else path[len("/v1"):]
        url = self._bases[surface] + suffix + (f"?{query}" if query else "")
        if urlsplit(url).netloc not in self._hosts:  # defence in depth; unreachable by design
            raise NotFound(f"no route for {path}")
        return Route(template, surface, url, json_body, tokens, stream_usage)


def _parametrised(segments: list[str]) -> Endpoint | None:
    """The endpoint whose template matches with one segment taken as its id, if any."""
    for i in range(2, len(segments)):  # /v1/<name>/... : ids never come first
        shape = (*segments[:i], _PARAM, *segments[i + 1:])
        found = _BY_SHAPE.get(shape)
        if found is not None:
            return found
    return None


def _not_allowed(method: str, path: str, allowed: frozenset[str],
                 template: str) -> MethodNotAllowed:
    listed = ", ".join(sorted(allowed))
    shown = method if method.isascii() and method.isprintable() else repr(method)
    error = MethodNotAllowed(f"{shown[:32]} is not allowed on {path}; use {listed}",
                             allow=allowed)
    error.route = template
    return error


def _checked_segments(raw_path: str) -> list[str]:
    """The path's segments from `v1` on, each checked; NotFound for anything else."""
    if not raw_path.startswith("/v1/") and raw_path != "/v1":
        raise NotFound(f"no route for {_shown(raw_path)}")
    segments = raw_path[1:].split("/")
    if raw_path.endswith("/"):
        segments.pop()  # one trailing slash is harmless; '//' elsewhere is not
    for segment in segments:
        if segment in {"", ".", ".."} or not _SEGMENT.fullmatch(segment):
            raise NotFound(f"path {_shown(raw_path)} is not allowed")
    if len(segments) < 2:
        raise NotFound(f"no route for {_shown(raw_path)}")
    return segments


def _shown(raw_path: str) -> str:
    """A short, printable version of a client path for an error message."""
    text = unquote(raw_path)
    return repr(text[:200])
