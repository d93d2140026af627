"""SSE over a real socket: retry hint, named events with ids, heartbeats, Last-Event-ID resume."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.fixtures.metrics import FakeProxy, FakeTarget
from tests.support.servers import Process, start_zai_proxy


@dataclass
class Message:
    event: str = "message"
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)
    retry: int | None = None


def read_messages(response: httpx.Response, until: float) -> Iterator[Message]:
    """Parse the SSE stream line by line (a client of our own, as a browser would)."""
    msg = Message()
    for line in response.iter_lines():
        if time.monotonic() > until:
            return
        if line == "":
            yield msg
            msg = Message()
        elif line.startswith(":"):
            msg.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                msg.retry = int(value)
            elif name == "data":
                msg.data += value
            elif name == "id":
                msg.id = value
            elif name == "event":
                msg.event = value


@pytest.fixture
def dashboard() -> Iterator[Process]:
    proxy = FakeProxy()
    proxy.set_gauges("v1", concurrent_requests=1)
    target = FakeTarget(proxy.text)
    process = start_zai_proxy("dashboard", "--target", target.url, "--interval", "0.5",
                              "--heartbeat", "0.2", "--db", ":memory:", ready_path="/healthz")
    try:
        yield process
    finally:
        process.terminate(10)
        target.close()


def collect(url: str, seconds: float, headers: dict[str, str] | None = None) -> list[Message]:
    with httpx.Client(timeout=10) as client, client.stream(
        "GET", url + "/api/events", headers=headers or {}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_messages(response, time.monotonic() + seconds))


def seq(msg: Message) -> int:
    assert msg.id is not None
    return int(msg.id.rsplit("-", 1)[1])


def test_stream_has_retry_names_ids_and_heartbeats(dashboard: Process) -> None:
    messages = collect(dashboard.url, 1.6)
    assert messages[0].retry is not None and messages[0].retry >= 1000
    assert messages[1].event == "hello" and json.loads(messages[1].data)["interval"] == 0.5
    named = [m for m in messages if m.id is not None]
    assert {m.event for m in named} == {"metrics", "status"}
    assert [seq(m) for m in named] == list(range(seq(named[0]), seq(named[0]) + len(named)))
    assert any("ping" in c for m in messages for c in m.comments)
    metrics = [json.loads(m.data) for m in named if m.event == "metrics"]
    assert any("v1" in m["points"] for m in metrics)


def test_reconnect_with_last_event_id_gets_what_it_missed(dashboard: Process) -> None:
    first = [m for m in collect(dashboard.url, 1.2) if m.id is not None]
    last = first[-1]
    time.sleep(1.5)  # about three scrape rounds happen while we are away
    again = collect(dashboard.url, 0.8, headers={"Last-Event-ID": str(last.id)})
    resumed = [m for m in again if m.id is not None]
    assert resumed and seq(resumed[0]) == seq(last) + 1  # nothing lost, nothing repeated
    assert [seq(m) for m in resumed] == list(range(seq(last) + 1, seq(last) + 1 + len(resumed)))
    assert len(resumed) >= 4
    stale = collect(dashboard.url, 0.3, headers={"Last-Event-ID": "0-1"})
    assert [m.event for m in stale][1:3] == ["hello", "reset"]  # after the retry hint


def test_resume_by_query_parameter(dashboard: Process) -> None:
    first = [m for m in collect(dashboard.url, 1.0) if m.id is not None]
    time.sleep(0.6)
    url = f"{dashboard.url}/api/events?lastEventId={first[-1].id}"
    with httpx.Client(timeout=10) as client, client.stream("GET", url) as response:
        resumed = [m for m in read_messages(response, time.monotonic() + 0.5) if m.id]
    assert seq(resumed[0]) == seq(first[-1]) + 1
