"""Server-side hostile input that needs no socket: upstream headers HTTP forbids, and the
settings for the idle timeout and for trusting forwarded headers."""

from __future__ import annotations

import pytest

from zai_proxy.core.errors import ConfigError
from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.config import load_settings
from zai_proxy.wire.headers import DROPPED, client_response_headers


def test_upstream_headers_http_forbids_are_dropped_and_counted() -> None:
    before = DROPPED.total
    upstream = [(b"content-type", b"application/json"), (b"x-ctl", b"a\x01b"),
                (b"x-del", b"\x7f"), (b"x-lf", b"a\nb"), (b"x-nul", b"\x00"),
                (b"bad name", b"1"), (b"x(paren)", b"1"), (b"", b"empty name"),
                (b"x-tab", b"a\tb"), (b"x-latin", b"caf\xe9"), (b"X-Ok", b"fine")]
    out = client_response_headers(upstream, b"rid", b"v1")
    assert out == [(b"content-type", b"application/json"), (b"x-tab", b"a\tb"),
                   (b"x-latin", b"caf\xe9"), (b"x-ok", b"fine"), (b"x-request-id", b"rid"),
                   (b"x-zai-proxy-variant", b"v1")]
    assert DROPPED.total == before + 7


def test_valid_upstream_headers_pass_untouched_and_uncounted() -> None:
    before = DROPPED.total
    upstream = [(b"Content-Type", b"text/event-stream"), (b"x-ratelimit-remaining", b"9"),
                (b"cache-control", b"no-cache, no-transform"), (b"x-weird!#$%&'*+.^_`|~", b"")]
    out = client_response_headers(upstream, b"rid", b"v1")
    assert [n for n, _ in out] == [b"content-type", b"x-ratelimit-remaining", b"cache-control",
                                   b"x-weird!#$%&'*+.^_`|~", b"x-request-id",
                                   b"x-zai-proxy-variant"]
    assert DROPPED.total == before


def test_the_dropped_count_is_exported() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    Metrics(registry, "v9")
    client_response_headers([(b"x-ctl", b"\x01")], b"rid", b"v9")
    text = generate_latest(registry).decode()
    assert (f'zai_proxy_upstream_headers_dropped_total{{deployment_variant="v9"}} '
            f"{float(DROPPED.total)}") in text


def test_idle_timeout_and_trusted_forwarders_are_settings() -> None:
    default = load_settings({})
    assert default.client_idle_timeout == 30.0
    assert default.forwarded_allow_ips == (), "forwarded headers are trusted from no peer"
    set_ = load_settings({"CLIENT_IDLE_TIMEOUT_SECONDS": "1.5s",
                          "FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.1,::1"})
    assert set_.client_idle_timeout == 1.5
    assert set_.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1", "::1")
    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS"):
        load_settings({"FORWARDED_ALLOW_IPS": "proxy.internal"})
    with pytest.raises(ConfigError, match="CLIENT_IDLE_TIMEOUT_SECONDS"):
        load_settings({"CLIENT_IDLE_TIMEOUT_SECONDS": "0"})
