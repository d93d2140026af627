"""The verification steps after the selector patch: the EndpointSlices follow it, `/metrics`
through the Service shows the target, and the request counters show the traffic moved
(`traffic.DrainWatch` judges; this module reads and waits)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zai_proxy.switch.cluster import Cluster, ServiceState, pod_name
from zai_proxy.switch.kube import KubectlError
from zai_proxy.switch.kube_objects import check_metrics_variant, pod_is_ready
from zai_proxy.switch.steps import EXIT_OK, EXIT_TRAFFIC, Options, StepFailed, Steps
from zai_proxy.switch.traffic import DrainWatch, Sample, had_traffic

Pods = list[dict[str, Any]]


@dataclass
class Verification:
    """Each method is one numbered step (or, `sample`, a read the steps share)."""

    cluster: Cluster
    options: Options
    steps: Steps
    sleep: Callable[[float], None]
    clock: Callable[[], float]

    def sample(self, pods: Sequence[Mapping[str, Any]]) -> Sample:
        """Requests started on each pod now (pods whose /metrics cannot be read are left out).

        Stamped when the last read returned: a request counted in the sample started before
        that moment, so "received its last request by <sample time>" is a true upper bound.
        """
        counts = {}
        for pod in pods:
            count = self.cluster.pod_requests(pod)
            if count is not None:
                counts[pod_name(pod)] = count
        return Sample(self.clock(), counts)

    def endpoints(self, deployment: Mapping[str, Any]) -> None:
        """Step: the Service's EndpointSlices list exactly the target's ready pods."""
        name = deployment["metadata"]["name"]
        self.steps.step(
            f"EndpointSlices of service {self.options.service} list exactly the ready pods of "
            f"{name} (timeout {self.options.timeout:g}s)"
        )
        deadline = self.clock() + self.options.timeout
        last = "no answer yet"
        while True:
            try:
                pods = [p for p in self.cluster.deployment_pods(deployment) if pod_is_ready(p)]
                ready, not_ready = self.cluster.endpoints()
            except KubectlError as exc:
                last = exc.message
            else:
                want = {pod_name(p) for p in pods}
                want_ips = {str(p.get("status", {}).get("podIP")) for p in pods}
                extra = {a for a in ready if a not in want and a not in want_ips}
                missing = {n for n in want if n not in ready} if want else {"<no ready pod>"}
                if not extra and not missing and not (not_ready - want - want_ips):
                    self.steps.ok(f"{len(ready)} endpoint(s): {', '.join(sorted(ready))}")
                    return
                last = (
                    f"still routed to {sorted(extra)}; missing {sorted(missing)}; "
                    f"not ready {sorted(not_ready)}"
                )
            if self.clock() >= deadline:
                raise StepFailed(
                    "wait for endpoints",
                    f"did not converge within {self.options.timeout:g}s: {last}",
                )
            self.sleep(self.options.poll_interval)

    def service_metrics(self, service: ServiceState, target: str) -> None:
        """Step: `/metrics` fetched through the Service shows only the target variant."""
        samples = max(1, self.options.samples)
        kube = self.cluster.kube
        path = kube.service_proxy_path(self.options.service, service.port_name, "/metrics")
        self.steps.step(
            f"/metrics through service {self.options.service} shows only {target!r} "
            f"({samples} sample(s))"
        )
        summary = ""
        for i in range(samples):
            try:
                summary = check_metrics_variant(self.cluster.kube.get_raw(path), target)
            except KubectlError as exc:
                raise StepFailed("verify service /metrics", exc.message) from None
            except ValueError as exc:
                raise StepFailed("verify service /metrics", f"sample {i + 1}: {exc}") from None
        self.steps.ok(summary)

    def traffic(self, others: Mapping[str, Pods], pods: Pods, target: str, first: Sample,
                       before: tuple[Sample, Sample], patched_at: float) -> int:
        """Step: the other variants receive no new request, the target receives the traffic."""
        old = [p for ps in others.values() for p in ps]
        label = "+".join(repr(v) for v in others) or "the other variants"
        if self.options.traffic_timeout <= 0:
            self.steps.step("traffic not verified (--traffic-timeout 0)")
            return EXIT_OK
        self.steps.step(
            f"requests: {label} receives none for {self.options.traffic_quiet:g}s, {target!r} "
            f"receives them (timeout {self.options.traffic_timeout:g}s)"
        )
        if not old:
            self.steps.ok("no other variant has pods: no traffic to move")
            return EXIT_OK
        unreadable = sorted({pod_name(p) for p in old} - set(before[0].counts))
        if unreadable:
            self.steps.note(f"/metrics unreadable before the patch: {', '.join(unreadable)}")
        traffic_before = had_traffic(first, before[0])
        watch = DrainWatch(before[0], before[1], traffic_before, self.options.traffic_quiet,
                           frozenset(pod_name(p) for p in old))
        deadline = self.clock() + self.options.traffic_timeout
        while True:
            self.sleep(self.options.poll_interval)
            reading = watch.feed(self.sample(old), self.sample(pods))
            missing = f"; /metrics unreadable: {', '.join(reading.unknown)}" if reading.unknown \
                else ""
            self.steps.note(f"{label}: {reading.old_rate:.1f} req/s, {target!r}: "
                            f"{reading.new_rate:.1f} req/s (last {reading.seconds:.1f} s){missing}")
            if reading.drained:
                moved = (f"{target!r} received {reading.new_total:.0f} since the patch"
                         if traffic_before else "there was no traffic to move")
                if watch.last_old_request_by <= before[0].at:
                    last = f"{label} received no new request since the patch"
                else:
                    after = max(0.0, watch.last_old_request_by - patched_at)
                    last = f"{label} received its last new request by {after:.1f} s after the patch"
                self.steps.ok(f"all traffic on {target!r}: {last}; {moved}")
                return EXIT_OK
            if self.clock() >= deadline:
                break
        if reading.old_rate > 0 or reading.unknown:
            still = (f"still receives {reading.old_rate:.1f} req/s" if reading.old_rate > 0
                     else f"cannot be read ({', '.join(reading.unknown)})")
            self.steps.say(
                f"FAILED at step 'verify traffic': {label} {still} "
                f"{self.options.traffic_timeout:g}s after the patch. The service selects "
                f"{target!r} and stays so (the selector is correct): clients are still on "
                f"connections to {label} (pods not retired, or clients that call pod IPs). "
                f"See `zai-proxy switch status -n {self.options.namespace}`."
            )
            return EXIT_TRAFFIC
        self.steps.warn(f"{label} receives nothing, but no request reached {target!r} within "
                        f"{self.options.traffic_timeout:g}s either (did the workers stop?)")
        return EXIT_OK
