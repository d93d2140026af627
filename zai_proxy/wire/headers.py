"""Which headers cross the proxy, in each direction.

Hop-by-hop headers (RFC 9110 §7.6.1, plus any named in `Connection`) never cross. Client
credentials never go upstream: the proxy adds the upstream key itself, as `Authorization: Bearer`
for the OpenAI surface and `x-api-key` for the Anthropic surface (Z.AI's edge rejects Bearer
there). Neither client cookies nor the client's forwarding headers (`Forwarded`,
`X-Forwarded-*`, `X-Real-IP`) go upstream, and upstream cookies never reach clients. `Expect`
is dropped: the proxy has read the whole body before it calls the upstream, and a hop that
never answers `100 Continue` would hold the request (and its slot) until the first-byte timeout.

Upstream response headers HTTP forbids (a name that is not a token, a value with a control
byte other than tab) are dropped and counted (`DROPPED`, exported as
`zai_proxy_upstream_headers_dropped_total`): the server refuses to write them, and the client
would get its connection closed with no answer at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection",
})
# Set by the proxy or meaningless upstream.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host", b"content-length", b"authorization", b"x-api-key", b"cookie",
    b"accept-encoding", b"x-request-id", b"forwarded", b"x-forwarded-for",
    b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip", b"expect",
}
_FORWARDED_PREFIX = b"x-forwarded-"
# Not a token character (RFC 9110 5.6.2); a value's forbidden bytes: controls but tab (5.5).
_NOT_TOKEN = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class DroppedHeaders:
    """How many upstream response headers were dropped as invalid, in this process.

    A plain count, not a metric: the filter runs with no metrics at hand, on the hot path;
    `metrics.Metrics` exports it.
    """

    total = 0


DROPPED = DroppedHeaders()

_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"set-cookie", b"x-request-id", b"server",
                               b"date"}


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def upstream_request_headers(client: RawHeaders, surface: str, api_key: str,
                             request_id: str, content_length: int) -> RawHeaders:
    """Headers for the upstream request: the client's, filtered, plus auth and request id.

    `Accept-Encoding: identity` keeps upstream bodies readable for token accounting; bodies are
    relayed as received either way.
    """
    tokens = _connection_tokens(client)
    drop = _REQUEST_DROP | tokens if tokens else _REQUEST_DROP
    out = [(n, v) for n, v in client
           if (k := n.lower()) not in drop and not k.startswith(_FORWARDED_PREFIX)]
    if surface == "anthropic":
        out.append((b"x-api-key", api_key.encode()))
    else:
        out.append((b"authorization", b"Bearer " + api_key.encode()))
    out.append((b"accept-encoding", b"identity"))
    out.append((b"x-request-id", request_id.encode()))
    out.append((b"content-length", str(content_length).encode()))
    return out


def client_response_headers(upstream: Iterable[tuple[bytes, bytes]], request_id: bytes,
                            variant: bytes) -> RawHeaders:
    """Headers for the client: the upstream's, filtered, plus request id and variant.

    Headers HTTP forbids are dropped and counted in `DROPPED` (module docstring).
    """
    upstream = list(upstream)
    tokens = _connection_tokens(upstream)
    drop = _RESPONSE_DROP | tokens if tokens else _RESPONSE_DROP
    out = [(n.lower(), v) for n, v in upstream if n.lower() not in drop]
    # One scan of all names and one of all values (tokens strung together are a token, tab is
    # a valid value byte); the per-header scan runs only when something is wrong.
    names = [n for n, _ in out]
    if (_NOT_TOKEN.search(b"".join(names)) or _BAD_VALUE.search(b"\t".join(v for _, v in out))
            or not all(names)):
        valid = [(n, v) for n, v in out
                 if n and not _NOT_TOKEN.search(n) and not _BAD_VALUE.search(v)]
        DROPPED.total += len(out) - len(valid)
        out = valid
    out.append((b"x-request-id", request_id))
    out.append((b"x-zai-proxy-variant", variant))
    return out


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None
