"""The drain judgment of `zai-proxy switch` (zai_proxy/switch/traffic.py): samples in, verdicts
out."""

from __future__ import annotations

import pytest

from zai_proxy.switch.traffic import DrainWatch, Sample, had_traffic, new_requests

OLD = frozenset({"v1-a", "v1-b"})


def old(at: float, a: float | None, b: float | None) -> Sample:
    counts = {k: v for k, v in (("v1-a", a), ("v1-b", b)) if v is not None}
    return Sample(at, counts)


def new(at: float, c: float) -> Sample:
    return Sample(at, {"v2-c": c})


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"a": 10, "b": 5}, {"a": 12, "b": 5}, 2),
        ({"a": 10}, {"a": 3}, 3),  # the counter was reset (the pod restarted): 3 since
        ({"a": 10}, {"a": 10, "b": 7}, 0),  # b was not read before: counted from the next one
        ({"a": 10, "b": 4}, {"b": 6}, 2),  # a unreadable now
    ],
)
def test_new_requests(before: dict[str, float], after: dict[str, float], expected: float) -> None:
    assert new_requests(Sample(0, before), Sample(1, after)) == expected


def test_drained_once_the_old_variant_is_quiet_and_the_new_one_serves() -> None:
    watch = DrainWatch(old(0, 100, 100), new(0, 0), traffic_before=True, quiet=2.0, old_pods=OLD)
    readings = [
        watch.feed(old(1, 110, 104), new(1, 5)),  # retire in progress: both receive
        watch.feed(old(2, 110, 104), new(2, 20)),  # quiet for 0 s so far (since t=1)
        watch.feed(old(3, 110, 104), new(3, 35)),  # quiet for 2 s: done
    ]
    assert [r.drained for r in readings] == [False, False, True]
    assert readings[0].old_rate == 14 and readings[0].new_rate == 5
    assert readings[2].old_rate == 0 and readings[2].new_rate == 15
    assert readings[2].quiet_for == 2 and readings[2].new_total == 35
    assert watch.last_old_request_by == 1


def test_one_request_on_the_old_variant_restarts_the_quiet_period() -> None:
    watch = DrainWatch(old(0, 0, 0), new(0, 0), traffic_before=True, quiet=1.5, old_pods=OLD)
    assert not watch.feed(old(1, 0, 0), new(1, 9)).drained
    assert not watch.feed(old(2, 1, 0), new(2, 9)).drained
    assert not watch.feed(old(3, 1, 0), new(3, 9)).drained  # quiet for 1 s of 1.5
    assert watch.feed(old(4, 1, 0), new(4, 9)).drained


def test_with_traffic_before_the_new_variant_must_receive_some() -> None:
    watch = DrainWatch(old(0, 5, 5), new(0, 0), traffic_before=True, quiet=0, old_pods=OLD)
    reading = watch.feed(old(1, 5, 5), new(1, 0))
    assert not reading.drained and reading.old_rate == 0
    assert watch.feed(old(2, 5, 5), new(2, 1)).drained


def test_without_traffic_before_quiet_is_enough() -> None:
    watch = DrainWatch(old(0, 5, 5), new(0, 0), traffic_before=False, quiet=0, old_pods=OLD)
    assert watch.feed(old(1, 5, 5), new(1, 0)).drained


def test_an_unreadable_old_pod_is_not_quiet() -> None:
    watch = DrainWatch(old(0, 5, 5), new(0, 0), traffic_before=False, quiet=0, old_pods=OLD)
    reading = watch.feed(old(1, 5, None), new(1, 3))
    assert not reading.drained and reading.unknown == ("v1-b",)
    # Readable again: this interval still lacks b's start, the next one is clean.
    assert not watch.feed(old(2, 5, 9), new(2, 3)).drained
    assert watch.feed(old(3, 5, 9), new(3, 3)).drained


def test_a_stream_that_ends_is_not_new_traffic() -> None:
    # Started = finished + in flight: a stream moving from in flight to finished changes nothing.
    assert not had_traffic(old(0, 10 + 2, 0), old(1, 11 + 1, 0))
    assert had_traffic(old(0, 12, 0), old(1, 13, 0))
