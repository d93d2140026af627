"""The proxy's error tree, and the one OpenAI-shaped body every proxy-made error uses.

Foreign exceptions (httpx, aiohttp, OS errors) are translated into these once, at the upstream
boundary; the request path only ever sees `ProxyError`s.
"""

from __future__ import annotations

import json


class ConfigError(Exception):
    """An invalid setting; the message names the variable and the expected form."""


class ProxyError(Exception):
    """An error the proxy answers itself, with an OpenAI-shaped JSON body."""

    status = 500
    type = "server_error"
    code = "proxy_internal_error"
    param: str | None = None
    # The route template the error belongs to, when known (a metric label).
    route: str | None = None
    # Response headers the error adds to its answer (besides Retry-After for RateLimited).
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    code = "proxy_invalid_json"


class Unauthorized(ProxyError):
    """Answered with `WWW-Authenticate: Bearer realm="zai-proxy"` (RFC 9110 §11.6.1)."""

    status = 401
    type = "authentication_error"
    code = "proxy_invalid_api_key"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "proxy_not_found"


class RouteNotAccounted(NotFound):
    """A known endpoint that consumes tokens the proxy cannot count: never forwarded."""

    code = "proxy_route_not_accounted"


class MethodNotAllowed(ProxyError):
    """Answered with an `Allow` header listing `allow` (RFC 9110 §15.5.6)."""

    status = 405
    type = "invalid_request_error"
    code = "proxy_method_not_allowed"

    def __init__(self, message: str, *, allow: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.allow = allow


class UriTooLong(ProxyError):
    status = 414
    type = "invalid_request_error"
    code = "proxy_uri_too_long"


class AccountMismatch(ProxyError):
    """A document (learned limiter state) of another Z.AI account than this proxy's."""

    status = 409
    type = "invalid_request_error"
    code = "proxy_account_mismatch"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "proxy_request_too_large"


class RateLimited(ProxyError):
    """The proxy itself refused for now (queue full, queue deadline, client quota)."""

    status = 429
    type = "rate_limit_error"
    code = "proxy_rate_limited"

    def __init__(self, message: str, *, code: str, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class QuotaExhausted(RateLimited):
    """The account's plan quota is spent (or, paced, reserved): answered without the upstream.

    Same class as Z.AI's own 1308/1310 answers (`x-zai-error-class: quota`, the Z.AI code in
    `x-zai-error-code`, a message carrying "Your limit will reset at ...").
    """

    def __init__(self, message: str, *, code: str, retry_after: float, zai_code: str,
                 status: int = 429) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.zai_code = zai_code
        self.status = status
        self.extra_headers = ((b"x-zai-error-class", b"quota"),
                              (b"x-zai-error-code", zai_code.encode()))


class ClientBudgetExhausted(RateLimited):
    """A client used its share of the plan's budget (`five_hour_share`, `weekly_share` in the
    clients file; `paced`: it runs ahead of spending that share evenly): only its requests are
    answered locally, the others go on. `Retry-After` is the time to the window's reset (paced:
    until it may go again); the message names the client's share and the window, never a key."""

    def __init__(self, message: str, *, retry_after: float, paced: bool = False) -> None:
        super().__init__(message, retry_after=retry_after, code=(
            "proxy_client_budget_paced" if paced else "proxy_client_budget_exhausted"))


class AccountStopped(RateLimited):
    """Z.AI says the account itself is stopped (plan expired, no subscription, fair-usage
    restriction, no balance): the proxy's answer in place of Z.AI's, and its local refusal until
    a probe finds the stop lifted. `status` is the code's (403 or 429), `Retry-After` the time
    to the next probe; `x-zai-error-class` / `x-zai-error-code` name the cause as Z.AI did."""

    def __init__(self, message: str, *, code: str, retry_after: float, zai_code: str,
                 zai_class: str, status: int) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.zai_code = zai_code
        self.status = status
        # OpenAI's types: a 403 is a permission matter, a 429 a limit.
        self.type = "permission_error" if status == 403 else "rate_limit_error"
        self.extra_headers = ((b"x-zai-error-class", zai_class.encode()),
                              (b"x-zai-error-code", zai_code.encode()))


class UpstreamError(ProxyError):
    """Something went wrong talking to the upstream; `error_type` is the metric label."""

    status = 502
    type = "upstream_error"
    code = "proxy_upstream_error"
    error_type = "connection"


class UpstreamUnreachable(UpstreamError):
    code = "proxy_upstream_unreachable"
    error_type = "connection"


class UpstreamDisconnected(UpstreamUnreachable):
    """The connection failed after the request may have been written (reset, closed without
    an answer): the upstream may have read it and spent tokens on it. Retried only for a safe
    method (GET, HEAD, OPTIONS); a POST is never sent twice."""

    code = "proxy_upstream_disconnected"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "proxy_upstream_timeout"
    error_type = "timeout"


class UpstreamInterrupted(UpstreamError):
    """The upstream failed after its response started (mid-body)."""

    code = "proxy_upstream_interrupted"
    error_type = "stream_interrupted"


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer could not be read as HTTP (a header over the client's limit, ...).
    Not retried: the same request gets the same answer."""

    code = "proxy_upstream_bad_response"
    error_type = "bad_response"


class UpstreamResponseTooLarge(UpstreamError):
    """A body the proxy must read whole (to count its tokens) is over MAX_RESPONSE_BYTES."""

    code = "proxy_upstream_response_too_large"
    error_type = "response_too_large"


class UpstreamTruncated(UpstreamInterrupted):
    """A body the proxy reads whole (non-stream, error) broke off before its end."""

    code = "proxy_upstream_truncated"
    error_type = "truncated_response"


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as bytes."""
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


def sse_error_event(error: ProxyError, *, anthropic: bool = False) -> bytes:
    """The same error as one SSE event, for a stream that already started.

    Anthropic clients expect `event: error` with `{"type": "error", "error": {...}}`; the inner
    object keeps the OpenAI fields either way.
    """
    if not anthropic:
        return b"data: " + error.body() + b"\n\n"
    inner = {"message": error.message, "type": error.type, "param": error.param,
             "code": error.code}
    return (b"event: error\ndata: " + json.dumps({"type": "error", "error": inner}).encode()
            + b"\n\n")
