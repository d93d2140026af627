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
hand-over (`interim`): while the old variant still sends requests it had queued before the
switch, the target holds only the part of the ceiling the old variant leaves, and the whole of it
once that backlog is gone.
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
    """The document if it has what the switch relies on, else StepFailed."""
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


MIN_INTERIM_SHARE = 0.05  # of the ceiling: the target always admits something meanwhile


def interim(
    doc: Mapping[str, Any], old_rate: float | None, backlog: float
) -> dict[str, Any] | None:
    """The document the target holds while the old variant still sends its queued requests.

    Without Redis both variants would each send at the full ceiling during that overlap, so the
    account sees twice its ceiling and both learn a lower one from the 429s. The target gets what
    the old variant leaves: the ceiling minus the old variant's current rate (at least 5% of the
    ceiling). None when there is no backlog, or nothing to share.
    """
    ceiling = rate_ceiling(doc)
    if backlog <= 0 or ceiling is None or old_rate is None:
        return None
    share = max(ceiling - old_rate, ceiling * MIN_INTERIM_SHARE)
    if share >= ceiling:
        return None
    # Floor and upper bound too: a proxy adopting its own kind of document takes `upper` as the
    # ceiling and holds at `floor`, so a share in `ceiling` alone would leave it the whole rate.
    return {**doc, "rate": {**doc["rate"], "ceiling": share, "floor": share, "upper": share}}


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
