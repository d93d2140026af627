"""Which upstream a request path goes to, under which route template, or why it may not.

`Router.resolve` is pure: it turns the client's method and raw path into a `Route` (the upstream
URL, the surface and the bounded route label) or raises NotFound / MethodNotAllowed. The upstream
URL is always the configured base plus a path suffix checked segment by segment, so no request
can make the proxy talk to another host (`//host`, `..`, percent-encoded variants, absolute URLs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from zai_proxy.errors import MethodNotAllowed, NotFound

Surface = Literal["openai", "anthropic"]

OTHER_V1 = "/v1/other"
OTHER = "other"

# A path segment may hold only unreserved characters and a few sub-delims; no percent escapes,
# so no encoded slash, backslash or dot can be smuggled past the segment check.
_SEGMENT = re.compile(r"[A-Za-z0-9._~:@!$'()*+,;=-]+")


@dataclass(frozen=True, slots=True)
class Endpoint:
    template: str
    surface: Surface
    methods: frozenset[str]
    # Known endpoints whose body is JSON the proxy inspects (model, stream flag).
    json_body: bool


ENDPOINTS: dict[str, Endpoint] = {
    e.template: e
    for e in (
        Endpoint("/v1/chat/completions", "openai", frozenset({"POST"}), True),
        Endpoint("/v1/completions", "openai", frozenset({"POST"}), True),
        Endpoint("/v1/embeddings", "openai", frozenset({"POST"}), True),
        Endpoint("/v1/models", "openai", frozenset({"GET"}), False),
        Endpoint("/v1/messages", "anthropic", frozenset({"POST"}), True),
        Endpoint("/v1/messages/count_tokens", "anthropic", frozenset({"POST"}), True),
    )
}


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes."""

    template: str  # bounded metric label
    surface: Surface
    upstream_url: str  # base + checked path + raw query
    json_body: bool


class Router:
    """Maps `/v1/...` paths onto the OpenAI and Anthropic upstream bases."""

    def __init__(self, openai_base: str, anthropic_base: str) -> None:
        self._bases: dict[Surface, str] = {"openai": openai_base, "anthropic": anthropic_base}
        self._hosts = {urlsplit(b).netloc for b in self._bases.values()}

    def resolve(self, method: str, raw_path: str, query: str = "") -> Route:
        """The route for `method raw_path?query`, or NotFound / MethodNotAllowed."""
        segments = _checked_segments(raw_path)
        path = "/" + "/".join(segments)
        endpoint = ENDPOINTS.get(path)
        if endpoint is not None:
            if method not in endpoint.methods:
                allowed = ", ".join(sorted(endpoint.methods))
                error = MethodNotAllowed(f"{method} is not allowed on {path}; use {allowed}")
                error.route = endpoint.template
                raise error
            template, surface, json_body = endpoint.template, endpoint.surface, endpoint.json_body
        else:
            template, surface, json_body = OTHER_V1, "openai", False
        # OpenAI upstream paths drop the /v1 (…/paas/v4 + /chat/completions); Anthropic's keep it.
        suffix = path if surface == "anthropic" else path[len("/v1"):]
        url = self._bases[surface] + suffix + (f"?{query}" if query else "")
        if urlsplit(url).netloc not in self._hosts:  # defence in depth; unreachable by design
            raise NotFound(f"no route for {path}")
        return Route(template, surface, url, json_body)


def _checked_segments(raw_path: str) -> list[str]:
    """The path's segments after `/v1`, each checked; NotFound for anything else."""
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
