"""Which learned state the switch carries (zai_proxy/switch/carry.py), and how it reads a failed
admin call (zai_proxy/switch/pod_admin.py). Pure: documents and kubectl errors in, choices out."""

from __future__ import annotations

from typing import Any

import pytest

from zai_proxy.switch.carry import (
    LoadSample,
    OldLoad,
    choose_source,
    describe,
    interim,
    judge_load,
    learned_at,
    share_beside,
)
from zai_proxy.switch.kube import KubectlError
from zai_proxy.switch.pod_admin import classify

NOW = 1_800_000_000.0


def doc(ceiling: float | None, ago: float | None, conc: int | None = None,
        exported: float = NOW) -> dict[str, Any]:
    return {"version": 1, "account": "a" * 16, "variant": "v1", "shared": False,
            "exported_at": exported,
            "rate": {"ceiling": ceiling, "floor": None if ceiling is None else 0.98 * ceiling,
                     "upper": ceiling, "current": 1.0, "learned_seconds_ago": ago},
            "concurrency": {"ceiling": conc}}


def test_learned_at_is_exported_at_minus_age() -> None:
    assert learned_at(doc(10, 30, exported=NOW - 5)) == NOW - 35
    assert learned_at(doc(10, None)) is None
    assert learned_at({"rate": {"learned_seconds_ago": 3}}) is None


@pytest.mark.parametrize(
    ("docs", "pod", "reason"),
    [
        ({"a": doc(18, 10)}, "a", "a: rate ceiling 18.00 req/s for the account (learned 10 s ago)"),
        ({"a": doc(18, 10), "b": doc(18, 99)}, "a", "the 2 serving pods agree"),
        # The most recently learned wins, even when it is lower.
        ({"a": doc(20, 600), "b": doc(15, 20)}, "b", "carrying b's, the most recently learned"),
        # Pods exported at different moments: the learning moment counts, not the age.
        ({"a": doc(20, 10, exported=NOW - 100), "b": doc(15, 60)}, "b", "disagree"),
        # A dated ceiling beats one of unknown age; a pod with none is listed, not chosen.
        ({"a": doc(30, None), "b": doc(12, 900), "c": doc(None, None)}, "b",
         "c: no rate ceiling learned"),
        # A tie goes to the lower ceiling.
        ({"a": doc(20, 10), "b": doc(19, 10)}, "b", "carrying b's"),
        # Only concurrency learned: the lowest one.
        ({"a": doc(None, None, 8), "b": doc(None, None, 6)}, "b", "concurrency ceiling 6 per pod"),
    ],
)
def test_choose_source(docs: dict[str, dict[str, Any]], pod: str, reason: str) -> None:
    choice = choose_source(docs, NOW)
    assert choice.pod == pod
    assert reason in choice.reason, choice.reason


def test_nothing_learned_chooses_nothing() -> None:
    choice = choose_source({"a": doc(None, None), "b": doc(None, None)}, NOW)
    assert choice.pod is None and "no serving pod has learned a ceiling yet" in choice.reason


def test_describe_ignores_nonsense_numbers() -> None:
    assert describe(doc(float("nan"), 3, conc=-1), NOW) == "no rate ceiling learned"
    assert describe({"rate": {"ceiling": True}}, NOW) == "no rate ceiling learned"


@pytest.mark.parametrize(
    ("ceiling", "old_rate", "backlog", "expected"),
    [
        (20.0, 12.0, 30, 8.0),  # the target gets what the old variant leaves
        (20.0, 16.0, 30, 5.0),  # at least a quarter of the ceiling
        (20.0, 20.0, 30, 5.0),
        (20.0, 25.0, 30, 5.0),
        (20.0, None, 30, 5.0),  # the old rate is unknown: it may send the whole ceiling
        (20.0, 16.0, 0, None),  # nothing queued: the whole ceiling at once
        (20.0, 0.0, 30, None),  # queued but sending nothing: the whole ceiling is safe
        (None, 16.0, 30, None),  # no ceiling learned: nothing to share
        (20.0, 0.5, 30, 19.5),
    ],
)
def test_interim_share(ceiling: float | None, old_rate: float | None, backlog: float,
                       expected: float | None) -> None:
    result = interim(doc(ceiling, 5), old_rate, backlog)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert result["rate"]["ceiling"] == result["rate"]["floor"] == expected
        assert result["rate"]["upper"] == expected


def sample(at: float, queued: dict[str, float], started: dict[str, float]) -> LoadSample:
    return LoadSample(at, queued, started)


@pytest.mark.parametrize(
    ("samples", "backlog", "rate"),
    [
        ([], 0.0, None),
        # Queued in every reading: a backlog (the last total); counters give the rate.
        ([sample(0, {"a": 3, "b": 1}, {"a": 10, "b": 0}), sample(0.5, {"a": 2, "b": 1}, {}),
          sample(1.5, {"a": 5, "b": 0}, {"a": 22, "b": 3})], 5.0, 10.0),
        # A burst: queued once, empty later: no backlog.
        ([sample(0, {"a": 3}, {"a": 0}), sample(0.5, {"a": 0}, {"a": 1}),
          sample(1.0, {"a": 4}, {"a": 2})], 0.0, 2.0),
        ([sample(0, {"a": 3}, {"a": 0})], 3.0, None),  # one reading: no rate
        # A counter that went back (the pod restarted) is no rate.
        ([sample(0, {"a": 3}, {"a": 50}), sample(1.0, {"a": 3}, {"a": 2})], 3.0, None),
        # Pods readable only once are left out of the rate.
        ([sample(0, {"a": 1}, {"a": 0, "b": 100}), sample(2.0, {"a": 1}, {"a": 6})], 1.0, 3.0),
        ([sample(0, {}, {}), sample(1.0, {}, {})], 0.0, None),
    ],
)
def test_judge_load(samples: list[LoadSample], backlog: float, rate: float | None) -> None:
    assert judge_load(samples) == OldLoad(backlog, rate)


def test_share_beside_an_old_variant_that_still_sends() -> None:
    assert share_beside(doc(20.0, 5), 0.0) is None
    assert share_beside(doc(20.0, 5), 3.0) == {**doc(20.0, 5), "rate": {
        **doc(20.0, 5)["rate"], "ceiling": 17.0, "floor": 17.0, "upper": 17.0}}
    result = share_beside(doc(20.0, 5), None)
    assert result is not None and result["rate"]["ceiling"] == 5.0


def error(stderr: str) -> KubectlError:
    return KubectlError(["kubectl", "exec"], f"exit code 1: {stderr}", stderr=stderr)


@pytest.mark.parametrize(
    ("stderr", "kind", "status", "text"),
    [
        ("zai-proxy admin: ADMIN_API_KEY is not set in this environment (admin routes are off)\n"
         "command terminated with exit code 1", "no_key", None, "ADMIN_API_KEY is not set"),
        ("zai-proxy admin: HTTP 409 proxy_account_mismatch: another account\n"
         "command terminated with exit code 1", "http", 409, "HTTP 409 proxy_account_mismatch"),
        ('error: Internal error occurred: error executing command in container: failed to exec '
         'in container: exec: "zai-proxy": executable file not found in $PATH', "missing", None,
         "not in the pod's image"),
        ("error: unable to upgrade connection: pod does not exist", "unreachable", None,
         "exec failed: error: unable to upgrade connection: pod does not exist"),
        ("", "unreachable", None, "exec failed: exit code 1"),
    ],
)
def test_classify_admin_failures(stderr: str, kind: str, status: int | None, text: str) -> None:
    failure = classify("pod-a", error(stderr))
    assert (failure.kind, failure.status) == (kind, status)
    assert text in str(failure) and str(failure).startswith("pod-a: ")
