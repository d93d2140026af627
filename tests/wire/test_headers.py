import pytest

from zai_proxy.wire.headers import client_response_headers, upstream_request_headers

CLIENT = [(b"host", b"proxy"), (b"authorization", b"Bearer client-key"),
          (b"x-api-key", b"client-key"), (b"connection", b"keep-alive, x-secret"),
          (b"x-secret", b"1"), (b"te", b"trailers"), (b"content-type", b"application/json"),
          (b"anthropic-version", b"2023-06-01"), (b"cookie", b"session=client-cookie"),
          (b"expect", b"100-continue"), (b"forwarded", b"for=10.0.0.7"),
          (b"x-forwarded-for", b"10.0.0.7"), (b"x-forwarded-host", b"proxy.internal"),
          (b"x-forwarded-proto", b"http"), (b"x-forwarded-port", b"8080"),
          (b"X-Forwarded-Prefix", b"/zai"), (b"x-real-ip", b"10.0.0.7"),
          (b"proxy-authorization", b"Basic client-key"), (b"accept", b"application/json"),
          (b"user-agent", b"OpenAI/Python 1.40")]


def test_client_credentials_cookies_and_hop_by_hop_never_go_upstream() -> None:
    out = upstream_request_headers(CLIENT, "openai", "up-key", "rid", 12)
    names = [name.lower() for name, _ in out]
    assert len(names) == len(set(names)), "every header appears once"
    headers = dict(out)
    assert headers[b"authorization"] == b"Bearer up-key"
    for dropped in (b"host", b"x-api-key", b"x-secret", b"te", b"connection", b"cookie",
                    b"expect", b"forwarded", b"x-real-ip", b"proxy-authorization"):
        assert dropped not in names, dropped
    assert not [n for n in names if n.startswith(b"x-forwarded-")]
    values = b"".join(v for _, v in out)
    assert b"client-key" not in values and b"client-cookie" not in values
    assert b"10.0.0.7" not in values
    assert headers[b"content-length"] == b"12" and headers[b"x-request-id"] == b"rid"
    assert headers[b"accept-encoding"] == b"identity"


def test_the_clients_other_headers_go_upstream_unchanged() -> None:
    out = upstream_request_headers(CLIENT, "openai", "up-key", "rid", 12)
    for name in (b"content-type", b"anthropic-version", b"accept", b"user-agent"):
        assert (name, dict(CLIENT)[name]) in out


@pytest.mark.parametrize("surface", ["openai", "anthropic"])
def test_each_surface_gets_the_upstream_key_its_way(surface: str) -> None:
    out = dict(upstream_request_headers([(b"authorization", b"Bearer c"),
                                         (b"x-api-key", b"c")], surface, "k", "r", 0))
    if surface == "anthropic":
        assert out[b"x-api-key"] == b"k" and b"authorization" not in out
    else:
        assert out[b"authorization"] == b"Bearer k" and b"x-api-key" not in out


def test_response_headers_drop_hop_by_hop_and_cookies() -> None:
    upstream = [(b"Content-Type", b"text/event-stream"), (b"Transfer-Encoding", b"chunked"),
                (b"Set-Cookie", b"cdn=1"), (b"set-cookie", b"lb=2"), (b"Content-Length", b"10"),
                (b"x-upstream", b"y"), (b"Connection", b"x-hop"), (b"x-hop", b"z"),
                (b"Server", b"nginx"), (b"Date", b"Mon")]
    out = dict(client_response_headers(upstream, b"rid", b"v2"))
    assert out == {b"content-type": b"text/event-stream", b"x-upstream": b"y",
                   b"x-request-id": b"rid", b"x-zai-proxy-variant": b"v2"}
