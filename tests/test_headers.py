from zai_proxy.headers import client_response_headers, upstream_request_headers


def test_client_credentials_and_hop_by_hop_never_go_upstream() -> None:
    client = [(b"host", b"proxy"), (b"authorization", b"Bearer client-key"),
              (b"x-api-key", b"client-key"), (b"connection", b"keep-alive, x-secret"),
              (b"x-secret", b"1"), (b"te", b"trailers"), (b"content-type", b"application/json"),
              (b"anthropic-version", b"2023-06-01"), (b"cookie", b"a=b")]
    out = dict(upstream_request_headers(client, "openai", "up-key", "rid", 12))
    assert out[b"authorization"] == b"Bearer up-key"
    assert b"x-api-key" not in out and b"x-secret" not in out and b"te" not in out
    assert b"cookie" not in out and out[b"host"] if b"host" in out else True
    assert b"client-key" not in b"".join(v for v in out.values())
    assert out[b"content-length"] == b"12" and out[b"x-request-id"] == b"rid"
    assert out[b"anthropic-version"] == b"2023-06-01"


def test_anthropic_surface_uses_x_api_key_not_bearer() -> None:
    client = [(b"authorization", b"Bearer c")]
    out = dict(upstream_request_headers(client, "anthropic", "k", "r", 0))
    assert out[b"x-api-key"] == b"k" and b"authorization" not in out


def test_response_headers_drop_hop_by_hop_and_cookies() -> None:
    upstream = [(b"Content-Type", b"text/event-stream"), (b"Transfer-Encoding", b"chunked"),
                (b"Set-Cookie", b"cdn=1"), (b"Content-Length", b"10"), (b"x-upstream", b"y")]
    out = dict(client_response_headers(upstream, b"rid", b"v2"))
    assert out == {b"content-type": b"text/event-stream", b"x-upstream": b"y",
                   b"x-request-id": b"rid", b"x-zai-proxy-variant": b"v2"}
