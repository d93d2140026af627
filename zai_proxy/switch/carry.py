"""Carry the learned ceilings across a switch, so the new variant does not relearn them with 429s.

Z.AI's ceilings belong to the account, not to a variant. With Redis every pod of both variants
shares one learned state (each pod's `GET /admin/limiter-state` says `"shared": true`) and
nothing needs carrying. Without it, the serving pods' document is read and `PUT` to every target
pod before traffic moves. Anything that stops the carry (no admin key, an unreachable pod,
another account, a malformed document) stops the switch before it changes anything: a new variant
that starts from `RATE_LIMIT_INITIAL` costs its workers minutes of 429s or of a throttled rate.
`--no-carry-limits` switches anyway.

The choice among serving pods that disagree is pure (`choose_source`): the most recently learned
rate ceiling wins, since the account's ceiling is what the latest evidence says it is. So is the
hand-over: the old variant's queue is judged over several readings (`judge_load`: a backlog only
if it stays queued, with the rate the old variant actually sends, from its counters); while it
still sends requests it had queued before the switch, the target holds the part of the ceiling
the old variant leaves, never less than MIN_INTERIM_SHARE of it (`interim`), and the whole of it
once that backlog is gone. If the switch ends with the old variant still receiving requests
(exit 4), the target holds what the old variant leaves at that moment (`share_beside`) and the
switch prints the command that gives it the whole ceiling once the old variant is quiet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zai_proxy.switch.pod_admin import AdminFailure, PodAdmin
from zai_proxy.switch.steps import StepFailed, Steps

STATE_PATH = "/admin/limiter-state"
STEP = "carry learned ceilings"
HINT = ("fix that, or pass --no-carry-limits to switch without them (the target then starts "
        "from its RATE_LIMIT_INITIAL and relearns the ceiling with 429s)")


def number(value: object) -> float | None:
    """A finite positive number, else None (JSON booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def rate_ceiling(doc: Mapping[str, Any]) -> float | None:
    rate = doc.get("rate")
    return number(rate.get("ceiling")) if isinstance(rate, dict) else None


def concurrency_ceiling(doc: Mapping[str, Any]) -> float | None:
    conc = doc.get("concurrency")
    return number(conc.get("ceiling")) if isinstance(conc, dict) else None


def learned_at(doc: Mapping[str, Any]) -> float | None:
    """Epoch second the rate ceiling was learned: `exported_at - rate.learned_seconds_ago`."""
    exported = number(doc.get("exported_at"))
    rate = doc.get("rate")
    ago = rate.get("learned_seconds_ago") if isinstance(rate, dict) else None
    if exported is None or isinstance(ago, bool) or not isinstance(ago, int | float):
        return None
    return exported - max(0.0, float(ago))


def validate(pod: str, doc: object) -> dict[str, Any]:
    """The document if it has what the switch relies on, else StepFailed.

    The document is otherwise opaque here: its schema and validation belong to the proxy
    (`LearnedState.from_admin` in zai_proxy.limiter.learned, which this separate program must
    not import), and the target pod's PUT refuses a bad document whole (400, or 409 for
    another account), which stops the switch. The switch checks only what it decides on before
    any PUT: the account (it never carries across accounts) and `shared` (with Redis there is
    nothing to carry); the rates it reads to choose a source go through `number`, where a bad
    value counts as none learned.
    """
    problem = None
    if not isinstance(doc, dict):
        problem = "is not a JSON object"
    elif not isinstance(doc.get("account"), str) or not doc["account"]:
        problem = "has no account"
    elif not isinstance(doc.get("shared"), bool):
        problem = "has no boolean 'shared'"
    if problem is not None or not isinstance(doc, dict):
        raise StepFailed(STEP, f"{pod}: {STATE_PATH} {problem}; {HINT}")
    return doc


def describe(doc: Mapping[str, Any], now: float) -> str:
    """`rate ceiling 18.4 req/s (learned 12 s ago), concurrency ceiling 8 per pod`."""
    parts = []
    ceiling = rate_ceiling(doc)
    if ceiling is None:
        parts.append("no rate ceiling learned")
    else:
        when = learned_at(doc)
        age = "age unknown" if when is None else f"learned {max(0.0, now - when):.0f} s ago"
        parts.append(f"rate ceiling {ceiling:.2f} req/s for the account ({age})")
    conc = concurrency_ceiling(doc)
    if conc is not None:
        parts.append(f"concurrency ceiling {conc:g} per pod")
    return ", ".join(parts)


@dataclass(frozen=True)
class Choice:
    """The pod whose document is carried (None: nothing learned anywhere) and why."""

    pod: str | None
    reason: str


def choose_source(docs: Mapping[str, Mapping[str, Any]], now: float) -> Choice:
    """Pick the document to carry among the serving pods' documents.

    The most recently learned rate ceiling wins (one of unknown age loses to any dated one; a
    tie goes to the lower ceiling, the safer side); without any rate ceiling, a pod with a
    learned concurrency ceiling; without either, nothing.
    """
    rated = [pod for pod, doc in docs.items() if rate_ceiling(doc) is not None]
    if rated:
        def key(pod: str) -> tuple[float, float]:
            when = learned_at(docs[pod])
            return (-math.inf if when is None else when, -(rate_ceiling(docs[pod]) or 0.0))

        best = max(sorted(rated), key=key)
        ceilings = {rate_ceiling(docs[pod]) for pod in docs}
        if len(docs) == 1:
            reason = f"{best}: {describe(docs[best], now)}"
        elif len(ceilings) == 1:
            reason = f"the {len(docs)} serving pods agree: {describe(docs[best], now)}"
        else:
            listing = "; ".join(f"{pod}: {describe(docs[pod], now)}" for pod in sorted(docs))
            reason = (f"the serving pods disagree ({listing}); carrying {best}'s, the most "
                      "recently learned")
        return Choice(best, reason)
    with_conc = sorted(pod for pod, doc in docs.items() if concurrency_ceiling(doc) is not None)
    if with_conc:
        best = min(with_conc, key=lambda pod: concurrency_ceiling(docs[pod]) or 0.0)
        return Choice(best, f"{best}: {describe(docs[best], now)} (the lowest learned)")
    return Choice(None, "no serving pod has learned a ceiling yet")


# Share of the ceiling the target holds at least while the old variant still sends. The target
# takes every new request from the moment of the patch, so its share is what the workers get
# while the old variant works through its backlog (or, after exit 4, while some clients stay on
# it). 5 % starved them: a twentieth of the account's rate for up to --traffic-timeout. A
# quarter bounds the other side too: even if the old variant sends at its whole ceiling, the
# account sees at most 1.25 times it, and only while that backlog lasts (the old variant sends
# it at about its ceiling, so seconds); a few 429s the limiters absorb, not a relearned ceiling.
MIN_INTERIM_SHARE = 0.25

# How the old variant's queue is judged before the hand-over: a burst puts requests in the
# admission queue for a moment even far below the ceiling, so one reading says nothing. The
# queue counts as a backlog only if it is non-empty in each of QUEUE_SAMPLES readings
# QUEUE_SAMPLE_INTERVAL seconds apart (1.5 s), and the counters read alongside give the rate
# the old variant actually sends.
QUEUE_SAMPLES = 4
QUEUE_SAMPLE_INTERVAL = 0.5


@dataclass(frozen=True)
class LoadSample:
    """One reading of the old variant's pods: when, and per readable pod its queue and its
    requests started (`zai_proxy_queue_depth`, `zai_proxy_requests_total` + in flight)."""

    at: float
    queued: Mapping[str, float]
    started: Mapping[str, float]


@dataclass(frozen=True)
class OldLoad:
    """What the old variant has queued (0 unless queued in every reading) and sends (req/s
    measured from its counters; None when they could not be read twice)."""

    backlog: float
    rate: float | None


def judge_load(samples: Sequence[LoadSample]) -> OldLoad:
    """The old variant's backlog and send rate from successive readings.

    Backlog: the last reading's total queue if every reading had a non-empty queue (a queue that
    empties in any reading was a momentary burst the limiter admits at once), else 0. Rate: the
    requests started between the first and the last reading over the time between them, summed
    over the pods readable in both; None with one reading or a counter that went back (a pod
    restarted: its count is not comparable).
    """
    if not samples:
        return OldLoad(0.0, None)
    totals = [sum(s.queued.values()) for s in samples]
    backlog = totals[-1] if all(t > 0 for t in totals) else 0.0
    first, last = samples[0], samples[-1]
    elapsed = last.at - first.at
    common = set(first.started) & set(last.started)
    if elapsed <= 0 or not common:
        return OldLoad(backlog, None)
    sent = [last.started[pod] - first.started[pod] for pod in common]
    if any(n < 0 for n in sent):
        return OldLoad(backlog, None)
    return OldLoad(backlog, sum(sent) / elapsed)


def limited(doc: Mapping[str, Any], share: float) -> dict[str, Any]:
    """`doc` with its rate ceiling cut to `share` (floor and upper bound too).

    A proxy adopting its own kind of document takes `upper` as the ceiling and holds at `floor`,
    so a share in `ceiling` alone would leave it the whole rate.
    """
    return {**doc, "rate": {**doc["rate"], "ceiling": share, "floor": share, "upper": share}}


def share_beside(doc: Mapping[str, Any], old_rate: float | None) -> dict[str, Any] | None:
    """The document the target holds while the old variant still sends `old_rate` req/s.

    Without Redis both variants would each send up to the full ceiling meanwhile, so the account
    would see more than its ceiling and both learn a lower one from the 429s. The target gets
    what the old variant leaves, `ceiling - old_rate`, but at least MIN_INTERIM_SHARE of the
    ceiling; an unknown `old_rate` counts as the whole ceiling (the floor then). None when the
    whole ceiling is safe (the old variant sends nothing) or nothing was learned to share.
    """
    ceiling = rate_ceiling(doc)
    if ceiling is None:
        return None
    sent = ceiling if old_rate is None else old_rate
    share = max(ceiling - sent, ceiling * MIN_INTERIM_SHARE)
    if share >= ceiling:
        return None
    return limited(doc, share)


def interim(
    doc: Mapping[str, Any], old_rate: float | None, backlog: float
) -> dict[str, Any] | None:
    """The document the target holds while the old variant still sends its queued requests.

    `backlog` as `judge_load` judged it (0: no lasting queue, the whole ceiling at once);
    `old_rate` what the old variant sends (measured, else its limiter's current rate; None if
    neither is known). See `share_beside` for the share.
    """
    if backlog <= 0:
        return None
    return share_beside(doc, old_rate)


@dataclass
class CarryPlan:
    """What the carry step chose: the source pod, its document, the pods it goes to."""

    source: str
    doc: dict[str, Any]
    targets: list[str]
    target_variant: str


@dataclass
class CeilingCarry:
    """The carry step over the pods' admin API: plan (reads only), then put."""

    admin: PodAdmin
    steps: Steps

    def read(self, pods: Sequence[str], role: str) -> dict[str, dict[str, Any]]:
        docs = {}
        for pod in pods:
            try:
                docs[pod] = validate(pod, self.admin.call(pod, "GET", STATE_PATH))
            except AdminFailure as failure:
                raise StepFailed(STEP, f"cannot read the learned ceilings of {role} pod "
                                 f"{failure}; {HINT}") from None
        return docs

    def plan(self, source: Sequence[str], target: Sequence[str], source_variant: str | None,
             target_variant: str, now: float) -> CarryPlan | None:
        """Read the serving pods' state and the target's; None (said why) if nothing to carry."""
        src = self.read(source, f"serving ({source_variant})")
        dst = self.read(target, f"target ({target_variant})")
        accounts = {doc["account"] for doc in src.values()}
        if len(accounts) > 1:
            raise StepFailed(STEP, f"the serving pods belong to {len(accounts)} Z.AI accounts "
                             f"({', '.join(sorted(accounts))}); {HINT}")
        for pod, doc in dst.items():
            if accounts and doc["account"] not in accounts:
                raise StepFailed(STEP, f"{pod} belongs to Z.AI account {doc['account']}, the "
                                 f"serving pods to {next(iter(accounts))} (another ZAI_API_KEY "
                                 f"or ZAI_TARGET_URL): its ceilings are not these; {HINT}")
        if not src:
            self.steps.ok(f"no serving pod to carry ceilings from: {target_variant!r} keeps "
                          "its own")
            return None
        everyone = [*src.values(), *dst.values()]
        if all(doc["shared"] for doc in everyone):
            self.steps.ok(f"limiter state is shared through Redis by every pod of both variants "
                          f"(account {next(iter(accounts))}): nothing to carry")
            return None
        choice = choose_source(src, now)
        if choice.pod is None:
            self.steps.ok(f"{choice.reason}: {target_variant!r} starts from its own "
                          "RATE_LIMIT_INITIAL")
            return None
        self.steps.note(f"source: {choice.reason}")
        return CarryPlan(choice.pod, src[choice.pod], list(target), target_variant)

    def put(self, plan: CarryPlan, doc: Mapping[str, Any]) -> None:
        """PUT `doc` to every target pod, printing what each applied; StepFailed on a refusal."""
        for pod in plan.targets:
            try:
                answer = self.admin.call(pod, "PUT", STATE_PATH, doc)
            except AdminFailure as failure:
                reason = ("it belongs to another Z.AI account" if failure.status == 409
                          else "it refused the document" if failure.status == 400 else "")
                raise StepFailed(STEP, f"PUT {STATE_PATH} to {failure}"
                                 f"{'; ' + reason if reason else ''}; {HINT}") from None
            applied = answer.get("applied", {}) if isinstance(answer, dict) else {}
            self.steps.note(f"{pod} applied: {_applied(applied)}")


def _applied(applied: Mapping[str, Any]) -> str:
    rate = number(applied.get("rate_ceiling"))
    conc = number(applied.get("concurrency_ceiling"))
    parts = [f"rate ceiling {rate:.2f} req/s" if rate is not None else "no rate ceiling",
             f"concurrency ceiling {conc:g}" if conc is not None else "no concurrency ceiling"]
    return ", ".join(parts)
