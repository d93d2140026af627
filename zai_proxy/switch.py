"""`zai-proxy switch`: move Service traffic between deployment variants, verified, with rollback.

Automates the blue-green runbook with `kubectl` (see docs/deployment.md):

1. read the Service and remember its selector;
2. the target Deployment (`app=<app>,version=<target>`) is available and all its pods are ready;
3. each target pod's `/health` and `/metrics` (through the API server's pod proxy) report
   `deployment_variant=<target>`;
4. patch the Service selector to `version=<target>` (and note the previous variant on the Service);
5. wait until the Service's endpoints are exactly the target's ready pods;
6. `/metrics` through the Service (API server service proxy) shows only the target variant.

Any failed step after the patch restores the previous selector; the command exits non-zero and says
which check failed. `status` shows which variant serves and the state of every variant;
`rollback` switches back to the variant recorded as previous (scaling it up first if it sits at 0).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from zai_proxy.kube import Kubectl, KubectlError
from zai_proxy.kube_objects import (
    check_metrics_variant,
    container_env,
    deployment_problem,
    endpoint_addresses,
    format_selector,
    pod_is_ready,
    pod_port,
    selector_matches,
)

PREVIOUS_ANNOTATION = "zai-proxy/previous-version"
SWITCHED_AT_ANNOTATION = "zai-proxy/switched-at"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RESTORE_FAILED = 3

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


class StepFailed(Exception):
    """A switchover check did not pass; `step` names it, the message says what was seen."""

    def __init__(self, step: str, detail: str) -> None:
        self.step = step
        self.detail = detail
        super().__init__(f"{step}: {detail}")


# --------------------------------------------------------------------------- the runbook


@dataclass
class Options:
    """What `zai-proxy switch` was asked to do."""

    namespace: str = "default"
    service: str = "zai-proxy"
    version_label: str = "version"
    port_name: str = "http"
    dry_run: bool = False
    timeout: float = 180.0
    poll_interval: float = 2.0
    samples: int = 5
    replicas: int | None = None
    scale_down_previous: bool = False


@dataclass
class ServiceState:
    """The Service's selector and where its traffic goes now."""

    selector: dict[str, str]
    annotations: dict[str, str]
    port_name: str

    def variant(self, version_label: str) -> str | None:
        return self.selector.get(version_label)


@dataclass
class Switcher:
    """The switchover steps over a `Kubectl`; each step prints what it checks."""

    kube: Kubectl
    options: Options
    out: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _step: int = field(default=0, init=False)

    # -- output

    def say(self, text: str) -> None:
        self.out(text)

    def step(self, text: str) -> None:
        self._step += 1
        self.out(f"[{self._step}] {text}")

    def ok(self, text: str) -> None:
        self.out(f"    ok: {text}")

    # -- reads

    def read_service(self) -> ServiceState:
        """The Service's selector, annotations and the port name to reach it by."""
        name = self.options.service
        try:
            service = self.kube.get_json("service", name)
        except KubectlError as exc:
            raise StepFailed("read service", exc.message) from None
        spec = service.get("spec", {})
        selector = {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}
        if not selector:
            raise StepFailed("read service", f"service {name} has no selector")
        ports = spec.get("ports") or []
        names = [str(p.get("name") or p.get("port")) for p in ports]
        if not names:
            raise StepFailed("read service", f"service {name} has no ports")
        port_name = self.options.port_name if self.options.port_name in names else names[0]
        annotations = {
            str(k): str(v)
            for k, v in (service.get("metadata", {}).get("annotations") or {}).items()
        }
        return ServiceState(selector, annotations, port_name)

    def app_selector(self, service: ServiceState) -> dict[str, str]:
        """The Service selector without the version key: what every variant's pods share."""
        return {k: v for k, v in service.selector.items() if k != self.options.version_label}

    def find_deployment(self, service: ServiceState, version: str) -> dict[str, Any]:
        """The single Deployment labelled with the app selector and `version`."""
        labels = {**self.app_selector(service), self.options.version_label: version}
        try:
            found = self.kube.get_json("deployments", "-l", format_selector(labels))
        except KubectlError as exc:
            raise StepFailed("find target deployment", exc.message) from None
        items = found.get("items", [])
        if len(items) != 1:
            names = [i.get("metadata", {}).get("name") for i in items]
            raise StepFailed(
                "find target deployment",
                f"expected exactly one Deployment labelled {format_selector(labels)}, found "
                f"{len(items)} {names}",
            )
        deployment: dict[str, Any] = items[0]
        return deployment

    def list_deployments(self, service: ServiceState) -> list[dict[str, Any]]:
        """Every Deployment carrying the app selector (all variants)."""
        found = self.kube.get_json("deployments", "-l", format_selector(self.app_selector(service)))
        items: list[dict[str, Any]] = found.get("items", [])
        return sorted(items, key=lambda d: str(d.get("metadata", {}).get("name")))

    def deployment_pods(self, deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pods selected by a Deployment's `matchLabels`."""
        match = deployment.get("spec", {}).get("selector", {}).get("matchLabels", {})
        found = self.kube.get_json("pods", "-l", format_selector(match))
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    # -- steps

    def check_deployment(self, service: ServiceState, target: str) -> dict[str, Any]:
        """Step: the target Deployment exists, is available and fully rolled out."""
        labels = {**self.app_selector(service), self.options.version_label: target}
        self.step(f"target Deployment labelled {format_selector(labels)} is available")
        deployment = self.find_deployment(service, target)
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
        self.ok(f"{name}: {replicas}/{replicas} replicas available and up to date")
        return deployment

    def check_pods(
        self, service: ServiceState, deployment: Mapping[str, Any], target: str
    ) -> list[dict[str, Any]]:
        """Step: every pod of the target is ready and would match the new selector."""
        name = deployment["metadata"]["name"]
        self.step(f"pods of {name} are all ready")
        try:
            pods = self.deployment_pods(deployment)
        except KubectlError as exc:
            raise StepFailed("check target pods", exc.message) from None
        new_selector = {**service.selector, self.options.version_label: target}
        live = [p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")]
        ready = [p for p in live if pod_is_ready(p)]
        not_ready = sorted(p["metadata"]["name"] for p in live if not pod_is_ready(p))
        if not ready:
            raise StepFailed("check target pods", f"{name} has no ready pod")
        if not_ready:
            raise StepFailed("check target pods", f"pods not ready: {', '.join(not_ready)}")
        strays = [
            p["metadata"]["name"]
            for p in ready
            if not selector_matches(new_selector, p["metadata"].get("labels") or {})
        ]
        if strays:
            raise StepFailed(
                "check target pods",
                f"pods {strays} would not match the new selector {format_selector(new_selector)}",
            )
        names = sorted(p["metadata"]["name"] for p in ready)
        self.ok(f"{len(ready)} ready: {', '.join(names)}")
        return ready

    def probe_pods(self, pods: Iterable[Mapping[str, Any]], target: str) -> None:
        """Step: each pod's /health and /metrics (via the API server pod proxy) say `target`."""
        pods = list(pods)
        self.step(
            f"/health and /metrics of {len(pods)} pod(s) report deployment_variant={target!r}"
        )
        for pod in pods:
            name = pod["metadata"]["name"]
            port = pod_port(pod, self.options.port_name)
            health_path = self.kube.pod_proxy_path(name, port, "/health")
            try:
                health = json.loads(self.kube.get_raw(health_path))
            except KubectlError as exc:
                raise StepFailed("probe pod /health", f"{name}: {exc.message}") from None
            except json.JSONDecodeError as exc:
                raise StepFailed("probe pod /health", f"{name}: not JSON ({exc})") from None
            variant = health.get("deployment_variant") if isinstance(health, dict) else None
            if variant != target:
                raise StepFailed(
                    "probe pod /health",
                    f"{name} reports deployment_variant={variant!r}, expected {target!r}",
                )
            if health.get("status") != "ok":
                raise StepFailed(
                    "probe pod /health", f"{name} reports status={health.get('status')!r}, not 'ok'"
                )
            version = health.get("version", "?")
            self.ok(f"{name} /health: status={health.get('status')!r} version={version!r}")
            metrics_path = self.kube.pod_proxy_path(name, port, "/metrics")
            try:
                summary = check_metrics_variant(self.kube.get_raw(metrics_path), target)
            except KubectlError as exc:
                raise StepFailed("probe pod /metrics", f"{name}: {exc.message}") from None
            except ValueError as exc:
                raise StepFailed("probe pod /metrics", f"{name}: {exc}") from None
            self.ok(f"{name} /metrics: {summary}")

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
        self.step(
            f"patch service {self.options.service} selector "
            f"{self.options.version_label}: {previous} -> {target}"
        )
        try:
            self.kube.patch_merge("service", self.options.service, patch)
        except KubectlError as exc:
            raise StepFailed("patch service selector", exc.message) from None
        self.ok("service patched")

    def wait_endpoints(self, deployment: Mapping[str, Any]) -> None:
        """Step: the Service's endpoints become exactly the target's ready pods."""
        name = deployment["metadata"]["name"]
        self.step(
            f"endpoints of service {self.options.service} are exactly the ready pods of {name} "
            f"(timeout {self.options.timeout:g}s)"
        )
        deadline = self.clock() + self.options.timeout
        last = "no answer yet"
        while True:
            try:
                pods = [p for p in self.deployment_pods(deployment) if pod_is_ready(p)]
                endpoints = self.kube.get_json("endpoints", self.options.service)
            except KubectlError as exc:
                last = exc.message
            else:
                want = {str(p["metadata"]["name"]) for p in pods}
                want_ips = {str(p.get("status", {}).get("podIP")) for p in pods}
                ready, not_ready = endpoint_addresses(endpoints)
                extra = {a for a in ready if a not in want and a not in want_ips}
                missing = {n for n in want if n not in ready} if want else {"<no ready pod>"}
                if not extra and not missing and not (not_ready - want - want_ips):
                    self.ok(f"{len(ready)} endpoint(s): {', '.join(sorted(ready))}")
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

    def verify_service_metrics(self, service: ServiceState, target: str) -> None:
        """Step: `/metrics` fetched through the Service shows only the target variant."""
        samples = max(1, self.options.samples)
        path = self.kube.service_proxy_path(self.options.service, service.port_name, "/metrics")
        self.step(
            f"/metrics through service {self.options.service} shows only {target!r} "
            f"({samples} sample(s))"
        )
        for i in range(samples):
            try:
                summary = check_metrics_variant(self.kube.get_raw(path), target)
            except KubectlError as exc:
                raise StepFailed("verify service /metrics", exc.message) from None
            except ValueError as exc:
                raise StepFailed("verify service /metrics", f"sample {i + 1}: {exc}") from None
        self.ok(summary)

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
            now = self.read_service()
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
            now = self.read_service()
        except StepFailed as exc:
            self.say(f"could not re-read the service ({exc.detail}); restoring anyway")
            return self.restore(service)
        if now.selector == service.selector:
            return None
        return self.restore(service)

    def ensure_replicas(self, service: ServiceState, target: str, replicas: int | None) -> bool:
        """If the target sits at 0 replicas, scale it to `replicas` and wait; False on dry run."""
        deployment = self.find_deployment(service, target)
        name = deployment["metadata"]["name"]
        current = int(deployment.get("spec", {}).get("replicas", 1))
        if current > 0:
            return True
        if not replicas:
            raise StepFailed(
                "check target deployment",
                f"{name} has 0 replicas; pass --replicas N to scale it up first",
            )
        self.step(f"scale {name} from 0 to {replicas} replicas and wait until available")
        if self.options.dry_run:
            self.ok(f"dry run: would run kubectl scale deployment/{name} --replicas={replicas}")
            return False
        try:
            self.kube.scale(name, replicas)
        except KubectlError as exc:
            raise StepFailed("scale target deployment", exc.message) from None
        deadline = self.clock() + self.options.timeout
        while True:
            deployment = self.find_deployment(service, target)
            problem = deployment_problem(deployment)
            if problem is None:
                self.ok(f"{name}: {replicas} replicas available")
                return True
            if self.clock() >= deadline:
                raise StepFailed(
                    "scale target deployment",
                    f"{name} not available within {self.options.timeout:g}s: {problem}",
                )
            self.sleep(self.options.poll_interval)

    # -- commands

    def switch(self, target: str, replicas: int | None = None) -> int:
        """Run the verified switchover to `target`; restore the selector on any failure."""
        mode = " (dry run: nothing is changed)" if self.options.dry_run else ""
        self.say(
            f"switching service {self.options.service} in namespace "
            f"{self.options.namespace} to {target!r}{mode}"
        )
        try:
            service = self.read_service()
        except StepFailed as exc:
            return self._failed(exc, restored=None)
        current = service.variant(self.options.version_label)
        self.say(f"service selector now: {format_selector(service.selector)}")
        patched = attempted = False
        try:
            if not self.ensure_replicas(service, target, replicas):
                self.say("dry run: stopping before the pod checks (the target has no pods yet)")
                return EXIT_OK
            deployment = self.check_deployment(service, target)
            pods = self.check_pods(service, deployment, target)
            self.probe_pods(pods, target)
            if current == target:
                self.say(f"service already selects {target!r}; verifying without patching")
            elif self.options.dry_run:
                self.step(
                    f"dry run: would patch service {self.options.service} selector "
                    f"{self.options.version_label}: {current} -> {target}"
                )
                self.say("dry run complete: all pre-switch checks passed")
                return EXIT_OK
            else:
                attempted = True
                self.patch_selector(service, target)
                patched = True
            self.wait_endpoints(deployment)
            self.verify_service_metrics(service, target)
        except StepFailed as exc:
            restored = self._restore_if_changed(service) if patched or attempted else None
            return self._failed(exc, restored)
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

    def _scale_down(self, service: ServiceState, previous: str) -> None:
        """Scale the previous variant to 0, kept for rollback (a warning, not a failure)."""
        try:
            old = self.find_deployment(service, previous)
            name = old["metadata"]["name"]
            self.step(f"scale previous Deployment {name} to 0 (kept for rollback)")
            self.kube.scale(name, 0)
            self.ok(f"{name} scaled to 0")
        except (KubectlError, StepFailed) as exc:
            self.say(f"    warning: could not scale down {previous!r}: {exc}")

    def _failed(self, exc: StepFailed, restored: bool | None) -> int:
        self.say(f"FAILED at step '{exc.step}': {exc.detail}")
        if restored is None:
            self.say("service selector was not changed")
            return EXIT_FAILED
        if restored:
            self.say("service selector restored to the previous variant")
            return EXIT_FAILED
        return EXIT_RESTORE_FAILED

    def rollback(self) -> int:
        """Switch back to the variant noted as previous (or the only other variant)."""
        try:
            service = self.read_service()
            current = service.variant(self.options.version_label)
            target = service.annotations.get(PREVIOUS_ANNOTATION) or None
            deployments = self.list_deployments(service)
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

    def status(self) -> int:
        """Print which variant serves and the state of every variant; 1 if nothing serves."""
        try:
            service = self.read_service()
            deployments = self.list_deployments(service)
            endpoints = self.kube.get_json("endpoints", self.options.service)
        except KubectlError as exc:
            return self._failed(StepFailed("status", exc.message), None)
        except StepFailed as exc:
            return self._failed(exc, None)
        label = self.options.version_label
        serving = service.variant(label)
        ready, not_ready = endpoint_addresses(endpoints)
        self.say(
            f"service {self.options.service} (namespace {self.options.namespace}): "
            f"selector {format_selector(service.selector)} -> serving {serving!r}"
        )
        previous = service.annotations.get(PREVIOUS_ANNOTATION)
        if previous:
            switched = service.annotations.get(SWITCHED_AT_ANNOTATION, "?")
            self.say(f"  previous variant (rollback target): {previous!r}, switched at {switched}")
        self.say(f"  endpoints: {len(ready)} ready {sorted(ready)}, {len(not_ready)} not ready")
        self.say("deployments:")
        for deployment in deployments:
            meta = deployment["metadata"]
            version = (meta.get("labels") or {}).get(label)
            status = deployment.get("status", {})
            containers = deployment["spec"]["template"]["spec"].get("containers", [{}])
            mark = "*" if version == serving else " "
            state = "serving" if version == serving else "standby"
            problem = deployment_problem(deployment)
            self.say(
                f"  {mark} {meta['name']}: {label}={version} "
                f"DEPLOYMENT_VARIANT={container_env(deployment, 'DEPLOYMENT_VARIANT')} "
                f"image={containers[0].get('image')} replicas "
                f"{deployment['spec'].get('replicas', 1)} desired/"
                f"{status.get('readyReplicas', 0)} ready/"
                f"{status.get('availableReplicas', 0)} available [{state}"
                f"{'' if problem is None else ', ' + problem}]"
            )
        return EXIT_OK if ready else EXIT_FAILED


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `zai-proxy switch`."""
    parser = argparse.ArgumentParser(
        prog="zai-proxy switch",
        description="Switch the zai-proxy Service between deployment variants, verified "
        "step by step; restores the previous selector if any check fails.",
        epilog="examples: zai-proxy switch --to v2 -n zai | zai-proxy switch status -n zai | "
        "zai-proxy switch rollback -n zai",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["to", "status", "rollback"],
        help="status: show what serves; rollback: back to the previous variant; "
        "default with --to: switch",
    )
    parser.add_argument("variant", nargs="?", help="target variant for `to` (same as --to)")
    parser.add_argument("--to", dest="to", help="variant to switch to (e.g. v2)")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("--service", default="zai-proxy")
    parser.add_argument("--context", default=None, help="kubectl context")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl binary (default: on PATH)")
    parser.add_argument("--dry-run", action="store_true", help="run the read-only checks only")
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to wait for endpoints / scale-up (default 180)",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument(
        "--request-timeout", type=float, default=20.0, help="seconds per kubectl call (default 20)"
    )
    parser.add_argument(
        "--samples", type=int, default=5, help="/metrics samples through the Service (default 5)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="scale the target up to N first if it has 0 replicas",
    )
    parser.add_argument(
        "--scale-down-previous",
        action="store_true",
        help="after a verified switch, scale the previous variant to 0",
    )
    parser.add_argument("--version-label", default="version")
    parser.add_argument("--port-name", default="http", help="Service/container port name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zai-proxy switch`; exit 0 ok, 1 check failed, 2 usage, 3 restore failed."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    target = args.to or args.variant
    action = args.action or ("to" if target else None)
    if action is None or (action == "to" and not target):
        parser.print_usage(sys.stderr)
        print("zai-proxy switch: give --to VARIANT, `status` or `rollback`", file=sys.stderr)
        return EXIT_USAGE
    if target and not _LABEL_VALUE.match(target):
        print(f"zai-proxy switch: {target!r} is not a valid label value", file=sys.stderr)
        return EXIT_USAGE
    for name in ("timeout", "poll_interval", "request_timeout"):
        if getattr(args, name) < 0:
            print(f"zai-proxy switch: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return EXIT_USAGE
    kube = Kubectl(
        args.namespace,
        binary=args.kubectl,
        context=args.context,
        request_timeout=args.request_timeout or 20.0,
    )
    options = Options(
        namespace=args.namespace,
        service=args.service,
        version_label=args.version_label,
        port_name=args.port_name,
        dry_run=args.dry_run,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        samples=args.samples,
        replicas=args.replicas,
        scale_down_previous=args.scale_down_previous,
    )
    switcher = Switcher(kube, options, out=lambda text: print(text, flush=True))
    if action == "status":
        return switcher.status()
    if action == "rollback":
        return switcher.rollback()
    return switcher.switch(str(target), args.replicas)
