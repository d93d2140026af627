"""The read-only checks of the target variant before any change: its Deployment is available and
says it is the target, its pods are ready and would match the new selector, and each pod's
`/health` and `/metrics` report the target variant. (Scaling a target kept at 0 up is the one
change made here, and only when asked with `--replicas`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zai_proxy.switch.cluster import Cluster, ServiceState, is_deleting, pod_name
from zai_proxy.switch.kube import KubectlError
from zai_proxy.switch.kube_objects import (
    check_metrics_variant,
    container_env,
    deployment_problem,
    format_selector,
    pod_is_ready,
    selector_matches,
)
from zai_proxy.switch.steps import Options, StepFailed, Steps


@dataclass
class TargetChecks:
    """Each method is one numbered step; it returns what later steps need or raises StepFailed."""

    cluster: Cluster
    options: Options
    steps: Steps
    sleep: Callable[[float], None]
    clock: Callable[[], float]

    def ensure_replicas(self, service: ServiceState, target: str, replicas: int | None) -> bool:
        """If the target sits at 0 replicas, scale it to `replicas` and wait; False on dry run."""
        deployment = self.cluster.find_deployment(service, target)
        name = deployment["metadata"]["name"]
        current = int(deployment.get("spec", {}).get("replicas", 1))
        if current > 0:
            return True
        if not replicas:
            raise StepFailed(
                "check target deployment",
                f"{name} has 0 replicas; pass --replicas N to scale it up first",
            )
        self.steps.step(f"scale {name} from 0 to {replicas} replicas and wait until available")
        if self.options.dry_run:
            self.steps.ok(
                f"dry run: would run kubectl scale deployment/{name} --replicas={replicas}"
            )
            return False
        try:
            self.cluster.kube.scale(name, replicas)
        except KubectlError as exc:
            raise StepFailed("scale target deployment", exc.message) from None
        deadline = self.clock() + self.options.timeout
        while True:
            deployment = self.cluster.find_deployment(service, target)
            problem = deployment_problem(deployment)
            if problem is None:
                self.steps.ok(f"{name}: {replicas} replicas available")
                return True
            if self.clock() >= deadline:
                raise StepFailed(
                    "scale target deployment",
                    f"{name} not available within {self.options.timeout:g}s: {problem}",
                )
            self.sleep(self.options.poll_interval)

    def deployment(self, service: ServiceState, target: str) -> dict[str, Any]:
        """Step: the target Deployment exists, is available and fully rolled out."""
        labels = self.cluster.variant_labels(service, target)
        self.steps.step(f"target Deployment labelled {format_selector(labels)} is available")
        deployment = self.cluster.find_deployment(service, target)
        name = deployment["metadata"]["name"]
        variant_env = container_env(deployment, "DEPLOYMENT_VARIANT")
        if variant_env is not None and variant_env != target:
            raise StepFailed(
                "check target deployment",
                f"{name} sets DEPLOYMENT_VARIANT={variant_env!r}, not {target!r}",
            )
        problem = deployment_problem(deployment)
        if problem is not None:
            raise StepFailed("check target deployment", f"{name} is not available: {problem}")
        replicas = int(deployment.get("spec", {}).get("replicas", 1))
        self.steps.ok(f"{name}: {replicas}/{replicas} replicas available and up to date")
        return deployment

    def pods(
        self, service: ServiceState, deployment: Mapping[str, Any], target: str
    ) -> list[dict[str, Any]]:
        """Step: every live pod of the target is ready and would match the new selector.

        A pod being deleted is left out (it leaves the endpoints and takes no new traffic);
        the step says so.
        """
        name = deployment["metadata"]["name"]
        self.steps.step(f"pods of {name} are all ready")
        try:
            pods = self.cluster.deployment_pods(deployment)
        except KubectlError as exc:
            raise StepFailed("check target pods", exc.message) from None
        new_selector = {**service.selector, self.options.version_label: target}
        deleting = [pod_name(p) for p in pods if is_deleting(p)]
        live = [p for p in pods if not is_deleting(p)]
        ready = [p for p in live if pod_is_ready(p)]
        not_ready = [pod_name(p) for p in live if not pod_is_ready(p)]
        if deleting:
            self.steps.note(f"left out, being deleted: {', '.join(deleting)}")
        if not ready:
            raise StepFailed("check target pods", f"{name} has no ready pod")
        if not_ready:
            raise StepFailed("check target pods", f"pods not ready: {', '.join(not_ready)}")
        strays = [
            pod_name(p)
            for p in ready
            if not selector_matches(new_selector, p["metadata"].get("labels") or {})
        ]
        if strays:
            raise StepFailed(
                "check target pods",
                f"pods {strays} would not match the new selector {format_selector(new_selector)}",
            )
        self.steps.ok(f"{len(ready)} ready: {', '.join(pod_name(p) for p in ready)}")
        return ready

    def probe(self, pods: Iterable[Mapping[str, Any]], target: str) -> dict[str, dict[str, Any]]:
        """Step: each pod's /health and /metrics (via the API server pod proxy) say `target`.

        Returns each pod's /health document (the switch reads `retired` from it).
        """
        pods = list(pods)
        self.steps.step(
            f"/health and /metrics of {len(pods)} pod(s) report deployment_variant={target!r}"
        )
        healths = {}
        for pod in pods:
            name = pod_name(pod)
            try:
                health = self.cluster.pod_health(pod)
            except KubectlError as exc:
                raise StepFailed("probe pod /health", f"{name}: {exc.message}") from None
            except ValueError as exc:
                raise StepFailed("probe pod /health", f"{name}: not JSON ({exc})") from None
            variant = health.get("deployment_variant")
            if variant != target:
                raise StepFailed(
                    "probe pod /health",
                    f"{name} reports deployment_variant={variant!r}, expected {target!r}",
                )
            if health.get("status") != "ok":
                raise StepFailed(
                    "probe pod /health", f"{name} reports status={health.get('status')!r}, not 'ok'"
                )
            retired = " retired=true" if health.get("retired") else ""
            self.steps.ok(
                f"{name} /health: status='ok' version={health.get('version', '?')!r}{retired}"
            )
            try:
                summary = check_metrics_variant(self.cluster.pod_get(pod, "/metrics"), target)
            except KubectlError as exc:
                raise StepFailed("probe pod /metrics", f"{name}: {exc.message}") from None
            except ValueError as exc:
                raise StepFailed("probe pod /metrics", f"{name}: {exc}") from None
            self.steps.ok(f"{name} /metrics: {summary}")
            healths[name] = health
        return healths
