"""Verify a switch from traffic: the old variant stops receiving requests, the new one gets them.

A fresh connection through the Service proves only where *new* connections go. Workers on
keep-alive connections prove where traffic goes: the switch samples every pod's requests started
(`zai_proxy_requests_total` plus in flight, so a stream counts when it starts) and compares
successive samples. Pure: samples come in, verdicts come out; the runbook does the reading and
the waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """Requests started per pod at one moment (pods whose metrics could not be read are absent)."""

    at: float
    counts: Mapping[str, float]


def new_requests(before: Sample, after: Sample) -> float:
    """Requests started between two samples, summed over the pods seen in both.

    A counter that went down was reset (the pod restarted): everything it counted since is new.
    A pod absent from either sample is left out of this interval and counted from the next one.
    """
    total = 0.0
    for pod, count in after.counts.items():
        previous = before.counts.get(pod)
        if previous is None:
            continue
        total += count if count < previous else count - previous
    return total


@dataclass(frozen=True)
class Reading:
    """One interval: request rates of the old and new variant, and whether the switch is done."""

    old_rate: float
    new_rate: float
    seconds: float
    drained: bool
    quiet_for: float  # seconds the old variant has received nothing
    new_total: float  # requests the new variant received since the patch
    unknown: tuple[str, ...] = ()  # old pods whose count is missing from this interval


@dataclass
class DrainWatch:
    """Decides, sample by sample, when all traffic is on the new variant.

    Done when the old variant has received no new request for `quiet` seconds (at least one
    interval) and, if there was traffic before the patch, the new variant has received some since.
    An old pod whose count is missing from an interval (its /metrics could not be read) might
    have received requests in it, so that interval is not quiet.
    """

    old_start: Sample
    new_start: Sample  # the new variant's pods just before the patch
    traffic_before: bool
    quiet: float
    old_pods: frozenset[str]
    _old: Sample = field(init=False)
    _new: Sample = field(init=False)
    _quiet_since: float = field(init=False)

    def __post_init__(self) -> None:
        self._old, self._new = self.old_start, self.new_start
        self._quiet_since = self.old_start.at

    def feed(self, old: Sample, new: Sample) -> Reading:
        """Take the next sample of both variants; the interval since the last one."""
        seconds = max(old.at - self._old.at, 1e-9)
        old_count = new_requests(self._old, old)
        new_count = new_requests(self._new, new)
        new_seconds = max(new.at - self._new.at, 1e-9)
        unknown = tuple(sorted(
            pod for pod in self.old_pods if pod not in old.counts or pod not in self._old.counts))
        if old_count > 0 or unknown:
            self._quiet_since = old.at
        self._old, self._new = old, new
        quiet_for = old.at - self._quiet_since
        new_total = new_requests(self.new_start, new)
        drained = (
            old.at > self._quiet_since
            and quiet_for >= self.quiet
            and (new_total > 0 or not self.traffic_before)
        )
        return Reading(old_count / seconds, new_count / new_seconds, seconds, drained,
                       quiet_for, new_total, unknown)

    @property
    def last_old_request_by(self) -> float:
        """The sample time by which the old variant had received its last new request."""
        return self._quiet_since


def had_traffic(before: Sample, after: Sample) -> bool:
    """Whether any request started between two samples of the serving variant."""
    return new_requests(before, after) > 0
