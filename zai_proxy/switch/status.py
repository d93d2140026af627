"""`zai-proxy switch status`: which variant serves, its endpoints, every variant and its pods.

Read-only. Each pod's line comes from its `/health` through the API server's pod proxy, so it
shows whether the pod is retired (releasing its keep-alive clients) and what it has in flight;
a serving pod that is retired, or a standby pod that is not, is pointed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zai_proxy.switch.cluster import Cluster, is_deleting, pod_name
from zai_proxy.switch.kube import KubectlError
from zai_proxy.switch.kube_objects import (
    container_env,
    deployment_problem,
    format_selector,
    pod_is_ready,
)
from zai_proxy.switch.steps import (
    EXIT_FAILED,
    EXIT_OK,
    PREVIOUS_ANNOTATION,
    SWITCHED_AT_ANNOTATION,
    StepFailed,
    Steps,
)


def pod_line(pod: Mapping[str, Any], health: Mapping[str, Any] | str, serving: bool) -> str:
    """One pod: readiness, and from /health its retired flag and requests in flight."""
    state = "deleting" if is_deleting(pod) else "ready" if pod_is_ready(pod) else "not ready"
    line = f"      pod {pod_name(pod)}: {state}"
    if isinstance(health, str):
        return f"{line}, /health unreadable ({health})"
    retired = health.get("retired")
    shown = "?" if retired is None else str(bool(retired)).lower()
    line += (f", status={health.get('status')!r}, retired={shown}, "
             f"in_flight={health.get('in_flight', '?')}")
    if serving and retired:
        line += "  <- serving but retired: its clients are pushed away (re-run the switch)"
    elif not serving and retired is False and state != "deleting":
        line += "  <- standby but not retired: keep-alive clients may still use it"
    return line


def status(cluster: Cluster, steps: Steps) -> int:
    """Print which variant serves and the state of every variant; 1 if nothing serves."""
    options = cluster.options
    try:
        service = cluster.read_service()
        deployments = cluster.list_deployments(service)
        ready, not_ready = cluster.endpoints()
    except KubectlError as exc:
        steps.say(f"FAILED at step 'status': {exc.message}")
        return EXIT_FAILED
    except StepFailed as exc:
        steps.say(f"FAILED at step '{exc.step}': {exc.detail}")
        return EXIT_FAILED
    label = options.version_label
    serving = service.variant(label)
    steps.say(
        f"service {options.service} (namespace {options.namespace}): "
        f"selector {format_selector(service.selector)} -> serving {serving!r}"
    )
    previous = service.annotations.get(PREVIOUS_ANNOTATION)
    if previous:
        switched = service.annotations.get(SWITCHED_AT_ANNOTATION, "?")
        steps.say(f"  previous variant (rollback target): {previous!r}, switched at {switched}")
    steps.say(
        f"  endpoints (EndpointSlices): {len(ready)} ready {sorted(ready)}, "
        f"{len(not_ready)} not ready"
    )
    steps.say("deployments:")
    for deployment in deployments:
        meta = deployment["metadata"]
        version = (meta.get("labels") or {}).get(label)
        status_ = deployment.get("status", {})
        containers = deployment["spec"]["template"]["spec"].get("containers", [{}])
        is_serving = version == serving
        state = "serving" if is_serving else "standby"
        problem = deployment_problem(deployment)
        steps.say(
            f"  {'*' if is_serving else ' '} {meta['name']}: {label}={version} "
            f"DEPLOYMENT_VARIANT={container_env(deployment, 'DEPLOYMENT_VARIANT')} "
            f"image={containers[0].get('image')} replicas "
            f"{deployment['spec'].get('replicas', 1)} desired/"
            f"{status_.get('readyReplicas', 0)} ready/"
            f"{status_.get('availableReplicas', 0)} available [{state}"
            f"{'' if problem is None else ', ' + problem}]"
        )
        try:
            pods = cluster.deployment_pods(deployment)
        except KubectlError as exc:
            steps.say(f"      pods unreadable: {exc.message}")
            continue
        for pod in pods:
            health: Mapping[str, Any] | str
            try:
                health = cluster.pod_health(pod)
            except KubectlError as exc:
                health = exc.message
            except ValueError as exc:
                health = f"not JSON: {exc}"
            steps.say(pod_line(pod, health, is_serving))
    return EXIT_OK if ready else EXIT_FAILED
