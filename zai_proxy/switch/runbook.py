"""The switchover runbook: checks, carry, patch, verify, retire, verify from traffic; rollback.

`Switcher.switch(target)` runs, printing each step:

1. the target Deployment is available, says it is the target, and its pods are ready and
   report the target in `/health` and `/metrics` (`checks.py`);
2. the serving pods' learned ceilings are carried to the target pods (`carry.py`), and the
   target pods are told to take keep-alive clients again (un-retired, `retire.py`);
3. the Service selector is patched (the previous variant noted on the Service), its
   EndpointSlices become exactly the target's ready pods, `/metrics` through the Service shows
   the target;
4. the pods of every other variant are retired, so their keep-alive clients reconnect;
5. the request counters show the old variant receiving nothing and the target receiving the
   traffic (`traffic.py`); then, if asked, the previous variant is scaled to 0.

A failure before or during step 3 restores the previous selector (exit 1, or 3 if that fails).
A failure at step 5 leaves the selector where it is, since it is correct, and exits 4.

The learned ceiling ends whole on the target on every path that leaves it serving alone: after
a verified switch (once the old variant's backlog is sent, `handover_step`), and after a failure
that left or put the selector back on the old variant (the target then receives nothing, so the
whole ceiling is safe). After exit 4 the old variant still receives requests, and both holding
the whole ceiling could send the account up to twice it: the target then holds what the old
variant leaves as measured then (`settle_after_traffic_failure`), and the switch prints the
exact command that gives it the whole ceiling once the old variant is quiet.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from zai_proxy.switch.carry import (
    QUEUE_SAMPLE_INTERVAL,
    QUEUE_SAMPLES,
    STATE_PATH,
    CarryPlan,
    CeilingCarry,
    LoadSample,
    OldLoad,
    describe,
    interim,
    judge_load,
    number,
    share_beside,
)
from zai_proxy.switch.checks import TargetChecks
from zai_proxy.switch.cluster import Cluster, ServiceState, pod_name
from zai_proxy.switch.kube import Kubectl, KubectlError
from zai_proxy.switch.kube_objects import format_selector, pod_is_ready
from zai_proxy.switch.pod_admin import PodAdmin
from zai_proxy.switch.retire import Retirement
from zai_proxy.switch.steps import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RESTORE_FAILED,
    PREVIOUS_ANNOTATION,
    SWITCHED_AT_ANNOTATION,
    Options,
    StepFailed,
    Steps,
)
from zai_proxy.switch.verify import Verification

Pods = list[dict[str, Any]]


@dataclass
class Handover:
    """A carry that was PUT to the target: the plan, the old variant's ready pods, and `first`,
    the part of the ceiling the target holds while the old variant drains (None: the whole)."""

    plan: CarryPlan
    old: Pods
    source_variant: str
    first: dict[str, Any] | None = None


@dataclass
class Switcher:
    """The switchover over a `Kubectl`; each step prints what it checks."""

    kube: Kubectl
    options: Options
    out: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    steps: Steps = field(init=False)

    def __post_init__(self) -> None:
        self.steps = Steps(self.out)
        self.cluster = Cluster(self.kube, self.options)
        self.checks = TargetChecks(self.cluster, self.options, self.steps, self.sleep, self.clock)
        self.verify = Verification(self.cluster, self.options, self.steps, self.sleep, self.clock)
        admin = PodAdmin(self.kube, self.options.container)
        self.retirement = Retirement(admin, self.steps)
        self.carry = CeilingCarry(admin, self.steps)

    def say(self, text: str) -> None:
        self.steps.say(text)

    # -- the switch

    def switch(self, target: str, replicas: int | None = None) -> int:
        """Run the verified switchover to `target`; restore the selector on any failure."""
        mode = " (dry run: nothing is changed)" if self.options.dry_run else ""
        self.say(
            f"switching service {self.options.service} in namespace "
            f"{self.options.namespace} to {target!r}{mode}"
        )
        try:
            service = self.cluster.read_service()
        except StepFailed as exc:
            return self._failed(exc, restored=None)
        current = service.variant(self.options.version_label)
        self.say(f"service selector now: {format_selector(service.selector)}")
        patched = attempted = False
        unretired: list[str] = []
        handover: Handover | None = None
        try:
            if not self.checks.ensure_replicas(service, target, replicas):
                self.say("dry run: stopping before the pod checks (the target has no pods yet)")
                return EXIT_OK
            deployment = self.checks.deployment(service, target)
            pods = self.checks.pods(service, deployment, target)
            healths = self.checks.probe(pods, target)
            others = self.other_pods(service, target)
            old = [pod for pods_ in others.values() for pod in pods_]
            first = self.verify.sample(old)
            if current is not None and current != target:
                handover = self.carry_step(others.get(current, []), pods, current, target)
            unretired = self.unretire_step(pods, healths)
            if current == target:
                self.say(f"service already selects {target!r}; verifying without patching")
            elif self.options.dry_run:
                self.steps.step(
                    f"dry run: would patch service {self.options.service} selector "
                    f"{self.options.version_label}: {current} -> {target}"
                )
                self.say("dry run complete: all pre-switch checks passed")
                return EXIT_OK
            before = (self.verify.sample(old), self.verify.sample(pods))
            patched_at = self.clock()
            if current != target:
                attempted = True
                self.patch_selector(service, target)
                patched = True
            self.verify.endpoints(deployment)
            self.verify.service_metrics(service, target)
        except StepFailed as exc:
            restored = self._restore_if_changed(service) if patched or attempted else None
            if unretired and restored is not False:
                self.say(f"re-retiring {', '.join(unretired)}: the service does not select "
                         f"{target!r}")
                self.retirement.report(self.retirement.apply(unretired, True), True)
            if handover is not None and handover.first is not None and restored is not False:
                # The target is not selected (any more): it sends nothing, the whole is safe.
                self._put_whole(handover)
            return self._failed(exc, restored)
        self.retire_step(others, target)
        code = self.verify.traffic(others, pods, target, first, before, patched_at)
        if code != EXIT_OK:
            if handover is not None:
                self.settle_after_traffic_failure(handover)
            return code
        if handover is not None and handover.first is not None:
            self.handover_step(handover)
        if patched and self.options.scale_down_previous and current:
            self._scale_down(service, current)
        self.say(
            f"SWITCHED: service {self.options.service} serves {target!r}"
            + (
                f" (rollback: zai-proxy switch rollback -n {self.options.namespace})"
                if patched
                else ""
            )
        )
        return EXIT_OK

    def other_pods(self, service: ServiceState, target: str) -> dict[str, Pods]:
        """Live pods of every variant but the target, by variant (from the Deployments)."""
        label = self.options.version_label
        try:
            deployments = self.cluster.list_deployments(service)
        except KubectlError as exc:
            raise StepFailed("list variants", exc.message) from None
        versions = sorted(
            {str(v) for d in deployments if (v := d["metadata"].get("labels", {}).get(label))}
            - {target}
        )
        return {version: self.cluster.variant_pods(service, version) for version in versions}

    # -- steps that change something

    def carry_step(self, serving: Pods, target_pods: Pods, current: str,
                   target: str) -> Handover | None:
        """Step: carry the serving pods' learned ceilings to the target pods.

        If the serving pods still have requests queued for admission, the target first gets only
        the part of the ceiling they leave (`carry.interim`); the returned Handover gives it the
        rest once the backlog is sent.
        """
        if not self.options.carry_limits:
            self.steps.step(f"learned ceilings of {current!r} are not carried "
                            "(--no-carry-limits)")
            self.steps.warn(f"{target!r} keeps its own limiter state (RATE_LIMIT_INITIAL on a "
                            "first start) and relearns the account's ceiling")
            return None
        self.steps.step(
            f"carry the learned rate ceilings of {current!r} to {target!r} "
            "(GET/PUT /admin/limiter-state through kubectl exec)"
        )
        ready = [p for p in serving if pod_is_ready(p)]
        now = self.wall()
        plan = self.carry.plan([pod_name(p) for p in ready], [pod_name(p) for p in target_pods],
                               current, target, now)
        if plan is None:
            return None
        load, seconds = self.measure(ready, until_empty=True)
        rate_doc = plan.doc.get("rate")
        gauge = number(rate_doc.get("current")) if isinstance(rate_doc, dict) else None
        old_rate = load.rate if load.rate is not None else gauge
        first = interim(plan.doc, old_rate, load.backlog)
        carried = f"{plan.source}'s learned ceilings ({describe(plan.doc, now)})"
        if self.options.dry_run:
            self.steps.ok(f"dry run: would PUT {carried} to {', '.join(plan.targets)}"
                          + ("" if first is None else
                             f", first {first['rate']['ceiling']:.2f} req/s of it while "
                             f"{current!r} sends its {load.backlog:.0f} queued request(s)"))
            return None
        if first is None:
            self.carry.put(plan, plan.doc)
            self.steps.ok(f"carried {carried} to {len(plan.targets)} {target!r} pod(s) before "
                          "moving traffic")
            return Handover(plan, ready, current)
        source = ("measured from its request counters" if load.rate is not None
                  else "its limiter's current rate; its counters could not be read"
                  if gauge is not None else "unknown, counted as the whole ceiling")
        sends = "?" if old_rate is None else f"{old_rate:.2f}"
        self.steps.note(
            f"{current!r} kept {load.backlog:.0f} request(s) queued for admission in each of "
            f"{QUEUE_SAMPLES} readings over {seconds:.1f} s and sends {sends} req/s ({source}); "
            "without shared state both variants would send up to the full ceiling while it "
            "works through them"
        )
        self.carry.put(plan, first)
        self.steps.ok(
            f"carried {carried} to {len(plan.targets)} {target!r} pod(s) before moving traffic: "
            f"{target!r} holds {first['rate']['ceiling']:.2f} req/s of the account's "
            f"{plan.doc['rate']['ceiling']:.2f} until {current!r} has sent its queued requests, "
            "then all of it"
        )
        return Handover(plan, ready, current, first)

    def measure(self, pods: Pods, *, until_empty: bool) -> tuple[OldLoad, float]:
        """The old variant's backlog and send rate over up to QUEUE_SAMPLES readings
        QUEUE_SAMPLE_INTERVAL apart (`carry.judge_load`), and the seconds they spanned.

        `until_empty`: stop at the first reading with an empty queue (no backlog then, and the
        rate is not needed); otherwise take every reading, for the rate.
        """
        samples: list[LoadSample] = []
        for i in range(QUEUE_SAMPLES):
            if i:
                self.sleep(QUEUE_SAMPLE_INTERVAL)
            queued: dict[str, float] = {}
            started: dict[str, float] = {}
            for pod in pods:
                depth, count = self.cluster.pod_load(pod)
                if depth is not None:
                    queued[pod_name(pod)] = depth
                if count is not None:
                    started[pod_name(pod)] = count
            samples.append(LoadSample(self.clock(), queued, started))
            if until_empty and sum(queued.values()) <= 0:
                break
        return judge_load(samples), samples[-1].at - samples[0].at if samples else 0.0

    def handover_step(self, handover: Handover) -> None:
        """Step: once the old variant's queue is empty, the target holds the whole ceiling."""
        plan, old = handover.plan, handover.source_variant
        self.steps.step(f"hand the whole learned ceiling to {plan.target_variant!r} once {old!r} "
                        f"has sent its queued requests (timeout {self.options.traffic_timeout:g}s)")
        deadline = self.clock() + self.options.traffic_timeout
        while True:
            backlog = sum(q or 0.0 for q in (self.cluster.pod_queued(p) for p in handover.old))
            if backlog <= 0:
                self.steps.note(f"{old!r} has no request queued any more")
                break
            if self.clock() >= deadline:
                self.steps.warn(f"{old!r} still has {backlog:.0f} request(s) queued; handing "
                                "over the whole ceiling anyway")
                break
            self.sleep(self.options.poll_interval)
        self._put_whole(handover)

    def _put_whole(self, handover: Handover) -> None:
        """PUT the whole carried ceiling to the target pods (a refusal is a warning here: the
        selector is already where it ends, only the ceiling is left to the operator)."""
        plan = handover.plan
        try:
            self.carry.put(plan, plan.doc)
        except StepFailed as exc:
            self.steps.warn(f"could not hand {plan.target_variant!r} the whole learned ceiling: "
                            f"{exc.detail}")
            self._print_handover_commands(plan)
            return
        handover.first = None
        self.steps.ok(f"{plan.target_variant!r} holds the whole learned ceiling "
                      f"({describe(plan.doc, self.wall())})")

    def settle_after_traffic_failure(self, handover: Handover) -> None:
        """After exit 4: the target holds what the old variant leaves, not more.

        The old variant still receives requests (clients that stay on it), with the whole
        ceiling; the target holding the whole too could send the account up to twice its
        ceiling, and both would learn a lower one from the 429s. So the old variant's send rate
        is measured now and the target holds `carry.share_beside` of it (the whole ceiling if
        the old variant sends nothing, at least MIN_INTERIM_SHARE); the switch then prints the
        exact commands that give the target the whole ceiling, for the operator to run once
        the old variant is quiet (or scaled to 0).
        """
        plan, old = handover.plan, handover.source_variant
        self.steps.step(f"learned ceiling of {plan.target_variant!r} while {old!r} still "
                        "receives requests")
        load, seconds = self.measure(handover.old, until_empty=False)
        share = share_beside(plan.doc, load.rate)
        if share is None:
            self.steps.note(f"{old!r} sends {0.0 if load.rate is None else load.rate:.2f} "
                            f"req/s over {seconds:.1f} s")
            if handover.first is not None:
                self._put_whole(handover)
            else:
                self.steps.ok(f"{plan.target_variant!r} holds the whole learned ceiling")
            return
        try:
            self.carry.put(plan, share)
        except StepFailed as exc:
            self.steps.warn(f"could not set {plan.target_variant!r}'s share: {exc.detail}")
        else:
            handover.first = share
        sends = ("cannot be read, so it may send up to the whole ceiling" if load.rate is None
                 else f"sends {load.rate:.2f} req/s (measured over {seconds:.1f} s)")
        self.steps.warn(
            f"{old!r} {sends}: {plan.target_variant!r} holds {share['rate']['ceiling']:.2f} "
            f"req/s of the account's {plan.doc['rate']['ceiling']:.2f}, so that both together "
            "stay within it"
        )
        self._print_handover_commands(plan)

    def _print_handover_commands(self, plan: CarryPlan) -> None:
        """The commands that give the target pods the whole carried ceiling, run by hand."""
        self.steps.note(
            f"once {plan.target_variant!r} serves alone (no pod of the old variant has "
            f"in_flight > 0 in `zai-proxy switch status -n {self.options.namespace}`, or the "
            f"old variant is scaled to 0), give {plan.target_variant!r} the whole learned "
            "ceiling by running:"
        )
        body = shlex.quote(json.dumps(plan.doc, sort_keys=True))
        for pod in plan.targets:
            argv = self.kube.command("exec", pod, "-c", self.options.container, "-i", "--",
                                     "zai-proxy", "admin", "PUT", STATE_PATH, "--data", "-")
            self.steps.note(f"  echo {body} | {shlex.join(argv)}")

    def unretire_step(self, pods: Pods, healths: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Step: the target's pods keep their keep-alive clients (DELETE /admin/retire).

        Only pods whose /health says `retired` are called; one that stays retired would push
        every client away after each response, so failing to un-retire it stops the switch.
        (Done with --no-retire too: that flag spares the old variant, not a retired target.)
        """
        retired = [pod_name(p) for p in pods if healths.get(pod_name(p), {}).get("retired")]
        self.steps.step("target pods take keep-alive clients (not retired)")
        if not retired:
            self.steps.ok("none of them is retired")
            return []
        if self.options.dry_run:
            self.steps.ok(f"dry run: would DELETE /admin/retire on {', '.join(retired)}")
            return []
        result = self.retirement.apply(retired, False)
        self.retirement.report(result, False)
        if result.failed:
            if result.done:  # the switch stops here: they are not selected, retire them again
                self.retirement.report(self.retirement.apply(result.done, True), True)
            raise StepFailed("un-retire target pods",
                             "; ".join(str(f) for f in result.failed.values()))
        return result.done

    def retire_step(self, others: Mapping[str, Pods], target: str) -> None:
        """Step: every pod of the other variants releases its keep-alive clients."""
        if not self.options.retire:
            self.steps.step("pods of the other variants are not retired (--no-retire)")
            self.steps.warn("workers on keep-alive connections stay on them until they "
                            "reconnect on their own")
            return
        names = [pod_name(p) for pods in others.values() for p in pods]
        variants = ", ".join(repr(v) for v in others) or "no other variant"
        self.steps.step(f"retire the pods of {variants} so their keep-alive clients reconnect "
                        f"to {target!r} (POST /admin/retire through kubectl exec)")
        if not names:
            self.steps.ok("no pod to retire")
            return
        if self.options.dry_run:
            self.steps.ok(f"dry run: would POST /admin/retire on {', '.join(names)}")
            return
        self.retirement.report(self.retirement.apply(names, True), True)

    def patch_selector(self, service: ServiceState, target: str) -> None:
        """Step: point the Service at `target`, noting the previous variant for rollback."""
        previous = service.variant(self.options.version_label)
        patch: dict[str, Any] = {
            "metadata": {
                "annotations": {
                    PREVIOUS_ANNOTATION: previous,
                    SWITCHED_AT_ANNOTATION: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            },
            "spec": {"selector": {self.options.version_label: target}},
        }
        self.steps.step(
            f"patch service {self.options.service} selector "
            f"{self.options.version_label}: {previous} -> {target}"
        )
        try:
            self.kube.patch_merge("service", self.options.service, patch)
        except KubectlError as exc:
            raise StepFailed("patch service selector", exc.message) from None
        self.steps.ok("service patched")

    # -- failure handling

    def restore(self, service: ServiceState) -> bool:
        """Put the previous selector (and rollback annotation) back; True when that worked."""
        self.say(
            f"restoring service {self.options.service} selector {format_selector(service.selector)}"
        )
        patch: dict[str, Any] = {
            "metadata": {
                "annotations": {
                    PREVIOUS_ANNOTATION: service.annotations.get(PREVIOUS_ANNOTATION),
                    SWITCHED_AT_ANNOTATION: service.annotations.get(SWITCHED_AT_ANNOTATION),
                }
            },
            "spec": {"selector": dict(service.selector)},
        }
        try:
            self.kube.patch_merge("service", self.options.service, patch)
            now = self.cluster.read_service()
        except (KubectlError, StepFailed) as exc:
            self.say(
                f"RESTORE FAILED: {exc} -- fix the selector by hand: "
                f"kubectl -n {self.options.namespace} patch service {self.options.service} "
                f"--type merge -p '{json.dumps({'spec': {'selector': service.selector}})}'"
            )
            return False
        if now.selector != service.selector:
            self.say(f"RESTORE FAILED: selector is {format_selector(now.selector)}")
            return False
        self.say(f"    restored: selector is {format_selector(now.selector)} again")
        return True

    def _restore_if_changed(self, service: ServiceState) -> bool | None:
        """After a failure: restore if the selector moved (None: it had not moved)."""
        try:
            now = self.cluster.read_service()
        except StepFailed as exc:
            self.say(f"could not re-read the service ({exc.detail}); restoring anyway")
            return self.restore(service)
        if now.selector == service.selector:
            return None
        return self.restore(service)

    def _scale_down(self, service: ServiceState, previous: str) -> None:
        """Scale the previous variant to 0, kept for rollback (a warning, not a failure)."""
        name = f"the {previous!r} Deployment"
        try:
            old = self.cluster.find_deployment(service, previous)
            name = old["metadata"]["name"]
            self.steps.step(f"scale previous Deployment {name} to 0 (kept for rollback)")
            self.kube.scale(name, 0)
            self.steps.ok(f"{name} scaled to 0")
        except (KubectlError, StepFailed) as exc:
            self.steps.warn(
                f"could not scale down {previous!r}: {exc}; the switch itself is done. Scale it "
                f"by hand: kubectl -n {self.options.namespace} scale deployment/{name} "
                "--replicas=0"
            )

    def _failed(self, exc: StepFailed, restored: bool | None) -> int:
        self.say(f"FAILED at step '{exc.step}': {exc.detail}")
        if restored is None:
            self.say("service selector was not changed")
            return EXIT_FAILED
        if restored:
            self.say("service selector restored to the previous variant")
            return EXIT_FAILED
        return EXIT_RESTORE_FAILED

    # -- rollback

    def rollback(self) -> int:
        """Switch back to the variant noted as previous (or the only other variant)."""
        try:
            service = self.cluster.read_service()
            current = service.variant(self.options.version_label)
            target = service.annotations.get(PREVIOUS_ANNOTATION) or None
            deployments = self.cluster.list_deployments(service)
        except KubectlError as exc:
            return self._failed(StepFailed("rollback", exc.message), None)
        except StepFailed as exc:
            return self._failed(exc, None)
        label = self.options.version_label
        versions = {d["metadata"].get("labels", {}).get(label) for d in deployments} - {None}
        if not target or target == current:
            others = sorted(str(v) for v in versions if v != current)
            if len(others) != 1:
                return self._failed(
                    StepFailed(
                        "rollback",
                        f"no {PREVIOUS_ANNOTATION} annotation and {len(others)} other "
                        f"variants {others}: use --to",
                    ),
                    None,
                )
            target = others[0]
        self.say(f"rollback: {current!r} -> {target!r}")
        replicas = self.options.replicas
        if replicas is None:
            live = [d for d in deployments if d["metadata"].get("labels", {}).get(label) == current]
            replicas = max([int(d.get("spec", {}).get("replicas", 1)) for d in live] + [1])
        return self.switch(target, replicas)
