"""The registry of open client connections on its own: counters, flags, the connection cap,
the bound counters, the refusals it records and the log line releasing writes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from zai_proxy.observe.metrics import Metrics
from zai_proxy.server.connections import ClientBounds, ClientConnections
from zai_proxy.server.http_protocol import ClientProtocol, bound_protocol_class


class Conn:
    """Stands in for a protocol: records what the registry asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def release(self) -> None:
        self.calls.append("release")

    def keep(self) -> None:
        self.calls.append("keep")


class Recorder:
    def __init__(self) -> None:
        self.finished_with: list[Any] = []

    def finished(self, ex: Any) -> None:
        self.finished_with.append(ex)


def make(bounds: ClientBounds | None = None, recorder: Any = None
         ) -> tuple[ClientConnections, CollectorRegistry]:
    registry = CollectorRegistry()
    return ClientConnections(Metrics(registry, "t"), recorder, bounds), registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"deployment_variant": "t", **labels})


def test_a_new_registry_is_not_releasing_and_opened_connections_are_kept() -> None:
    reg, metrics = make()
    assert reg.releasing is False
    assert reg._retired is False and reg._draining is False
    conn = Conn()
    reg.opened(conn)  # type: ignore[arg-type]
    assert conn.calls == []
    assert sample(metrics, "zai_proxy_client_connections") == 1
    assert conn in reg.live


def test_opened_and_closed_move_the_gauge_once_each() -> None:
    reg, metrics = make()
    a, b = Conn(), Conn()
    reg.opened(a)  # type: ignore[arg-type]
    reg.opened(b)  # type: ignore[arg-type]
    assert sample(metrics, "zai_proxy_client_connections") == 2
    reg.closed(a)  # type: ignore[arg-type]
    assert a not in reg.live and b in reg.live
    assert sample(metrics, "zai_proxy_client_connections") == 1
    reg.closed(a)  # type: ignore[arg-type]
    assert sample(metrics, "zai_proxy_client_connections") == 1, "closed twice counts once"
    reg.closed(b)  # type: ignore[arg-type]
    assert sample(metrics, "zai_proxy_client_connections") == 0
    assert reg.live == set()


def test_a_connection_opened_while_retired_or_draining_is_released_at_once() -> None:
    reg, _ = make()
    reg.retire(True)
    late = Conn()
    reg.opened(late)  # type: ignore[arg-type]
    assert late.calls == ["release"]
    reg.retire(False)
    assert late.calls == ["release", "keep"], "keep() undoes release()"
    reg.drain()
    later = Conn()
    reg.opened(later)  # type: ignore[arg-type]
    assert later.calls == ["release"]


def test_retire_releases_every_connection_and_unretire_keeps_them() -> None:
    reg, _ = make()
    conns = [Conn() for _ in range(3)]
    for c in conns:
        reg.opened(c)  # type: ignore[arg-type]
    reg.retire(True)
    assert reg.releasing is True
    assert all(c.calls == ["release"] for c in conns)
    reg.retire(False)
    assert reg.releasing is False
    assert all(c.calls == ["release", "keep"] for c in conns)


def test_drain_releases_for_good_even_when_unretired() -> None:
    reg, _ = make()
    c = Conn()
    reg.opened(c)  # type: ignore[arg-type]
    reg.drain()
    assert reg.releasing is True and c.calls == ["release"]
    reg.retire(False)
    assert reg.releasing is True, "a drain is not undone by un-retiring"
    assert c.calls == ["release", "release"]


def test_releasing_logs_what_it_did_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    reg, _ = make()
    reg.opened(Conn())  # type: ignore[arg-type]
    reg.opened(Conn())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="zai_proxy"):
        reg.retire(True)
        reg.retire(False)
    lines = [r for r in caplog.records if r.name == "zai_proxy"]
    assert [r.getMessage() for r in lines] == ["client connections released",
                                               "client connections kept"]
    assert [r.fields for r in lines] == [{"connections": 2}, {"connections": 2}]  # type: ignore[attr-defined]


def test_over_capacity_only_at_the_cap() -> None:
    reg, metrics = make(ClientBounds(max_connections=2))
    assert sample(metrics, "zai_proxy_max_connections") == 2
    assert not reg.over_capacity()
    reg.opened(Conn())  # type: ignore[arg-type]
    assert not reg.over_capacity()
    reg.opened(Conn())  # type: ignore[arg-type]
    assert reg.over_capacity(), "a third connection would pass MAX_CONNECTIONS=2"


@pytest.mark.parametrize("bound", ["max_header_bytes", "read_timeout", "write_timeout",
                                   "max_connections"])
def test_each_bound_counts_under_its_own_label(bound: str) -> None:
    reg, metrics = make()
    for name in ("max_header_bytes", "read_timeout", "write_timeout", "max_connections"):
        assert sample(metrics, "zai_proxy_client_bound_exceeded_total", bound=name) == 0
    reg.exceeded(bound)
    reg.exceeded(bound)
    assert sample(metrics, "zai_proxy_client_bound_exceeded_total", bound=bound) == 2


def test_the_protocol_class_is_bound_to_this_registry() -> None:
    reg, _ = make()
    cls = bound_protocol_class(reg)
    assert issubclass(cls, ClientProtocol)
    assert cls.registry is reg
    assert cls.__name__ == "BoundClientProtocol"


def test_a_refusal_is_recorded_as_one_complete_exchange() -> None:
    rec = Recorder()
    reg, _ = make(recorder=rec)
    reg.refused("POST", 431, "header_too_large", "headers too large", 70000, "rid-1")
    assert len(rec.finished_with) == 1
    ex = rec.finished_with[0]
    assert ex.request_id == "rid-1"
    assert ex.method == "POST"
    assert isinstance(ex.started, float)
    assert ex.status == 431
    assert ex.outcome == "header_too_large"
    assert ex.error == "headers too large"
    assert ex.request_bytes == 70000
    assert ex.complete is True


def test_a_refusal_without_a_recorder_is_ignored() -> None:
    reg, _ = make()
    reg.refused("GET", 408, "timeout", "slow", 0, "rid")
    assert reg.recorder is None
