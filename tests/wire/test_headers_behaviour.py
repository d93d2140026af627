"""Which response and request headers come out of the filters (mutation survivors' behaviour)."""

from __future__ import annotations

from zai_proxy.wire.headers import DROPPED, client_response_headers, upstream_request_headers


def _names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def test_connection_list_without_spaces_drops_every_named_header() -> None:
    # kills x__connection_tokens__mutmut_10 (split on whitespace instead of commas)
    upstream = [(b"connection", b"x-a,x-b"), (b"x-a", b"1"), (b"x-b", b"2"), (b"x-c", b"3")]
    out = client_response_headers(upstream, b"rid", b"blue")
    assert _names(out) == [b"x-c", b"x-request-id", b"x-zai-proxy-variant"]
    client = [(b"connection", b"x-a,x-b"), (b"x-a", b"1"), (b"x-b", b"2"), (b"accept", b"*/*")]
    names = _names(upstream_request_headers(client, "openai", "k", "rid", 0))
    assert b"x-a" not in names and b"x-b" not in names and b"accept" in names


def test_response_headers_from_an_iterator_are_relayed() -> None:
    # kills x_client_response_headers__mutmut_1 (the iterator is consumed by the token scan)
    upstream = iter([(b"Content-Type", b"text/event-stream"), (b"x-ratelimit", b"5")])
    out = client_response_headers(upstream, b"rid", b"green")
    assert out == [(b"content-type", b"text/event-stream"), (b"x-ratelimit", b"5"),
                   (b"x-request-id", b"rid"), (b"x-zai-proxy-variant", b"green")]


def test_only_a_bad_value_is_dropped_and_counted() -> None:
    # kills x_client_response_headers__mutmut_19 (bad value with valid names slips through)
    before = DROPPED.total
    upstream = [(b"x-ok", b"fine\tvalue"), (b"x-bad", b"evil\r\ninjected: 1")]
    out = client_response_headers(upstream, b"rid", b"blue")
    assert out == [(b"x-ok", b"fine\tvalue"), (b"x-request-id", b"rid"),
                   (b"x-zai-proxy-variant", b"blue")]
    assert DROPPED.total == before + 1


def test_only_a_bad_name_is_dropped_and_counted() -> None:
    # kills x_client_response_headers__mutmut_20 (a bad name alone needs a bad value too)
    before = DROPPED.total
    upstream = [(b"x bad", b"v"), (b"x-ok", b"v")]
    out = client_response_headers(upstream, b"rid", b"blue")
    assert _names(out) == [b"x-ok", b"x-request-id", b"x-zai-proxy-variant"]
    assert DROPPED.total == before + 1


def test_an_empty_name_is_dropped_and_counted() -> None:
    # kills x_client_response_headers__mutmut_27 (`or all(names)`: an empty name passes)
    before = DROPPED.total
    upstream = [(b"", b"v"), (b"x-ok", b"v")]
    out = client_response_headers(upstream, b"rid", b"blue")
    assert _names(out) == [b"x-ok", b"x-request-id", b"x-zai-proxy-variant"]
    assert DROPPED.total == before + 1


def test_valid_headers_are_not_counted_as_dropped() -> None:
    before = DROPPED.total
    upstream = [(b"x-a", b"1"), (b"x-b", b"two words\t")]
    out = client_response_headers(upstream, b"rid", b"blue")
    assert out[:2] == upstream
    assert DROPPED.total == before
