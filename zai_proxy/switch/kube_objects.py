"""Pure judgments over Kubernetes objects and metrics text, for the switchover runbook.

No kubectl here: each function reads an object (a Deployment, a Pod, EndpointSlices, a /metrics
page) as `kubectl get -o json` returns it and says what it shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_POD_PORT = 8080

_SERIES = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s")
_VARIANT_LABEL = re.compile(r'(?:^|,)\s*deployment_variant="(?P<value>(?:[^"\\]|\\.)*)"')


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every key of an equality selector has the same value in `labels`."""
    return all(labels.get(key) == value for key, value in selector.items())


def format_selector(selector: Mapping[str, str]) -> str:
    """`a=b,c=d`, as `kubectl -l` takes it."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def metric_variants(text: str, prefix: str = "zai_proxy_") -> dict[str | None, int]:
    """Count `prefix*` series per `deployment_variant` value (None: the label is missing)."""
    counts: dict[str | None, int] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SERIES.match(line)
        if match is None or not match.group("name").startswith(prefix):
            continue
        variant_match = _VARIANT_LABEL.search(match.group("labels") or "")
        variant = variant_match.group("value") if variant_match else None
        counts[variant] = counts.get(variant, 0) + 1
    return counts


def check_metrics_variant(text: str, target: str) -> str:
    """Raise ValueError unless every `zai_proxy_*` series says `deployment_variant=target`."""
    counts = metric_variants(text)
    if not counts:
        raise ValueError("no zai_proxy_* series in /metrics")
    wrong = {variant: n for variant, n in counts.items() if variant != target}
    if wrong:
        seen = ", ".join(
            f"{n} series {'without deployment_variant' if v is None else f'with {v!r}'}"
            for v, n in sorted(wrong.items(), key=lambda item: str(item[0]))
        )
        raise ValueError(f"expected only deployment_variant={target!r}, found {seen}")
    return f"{counts[target]} zai_proxy_* series, all deployment_variant={target!r}"


def deployment_problem(deployment: Mapping[str, Any]) -> str | None:
    """Why a Deployment is not fully available and rolled out, or None when it is."""
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    meta = deployment.get("metadata", {})
    desired = int(spec.get("replicas", 1))
    if desired < 1:
        return "it has 0 replicas"
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return "the controller has not observed its latest spec yet"
    for key in ("updatedReplicas", "readyReplicas", "availableReplicas"):
        have = int(status.get(key, 0))
        if have < desired:
            return f"{key} {have} < {desired} desired"
    if int(status.get("replicas", desired)) > desired:
        return f"a rollout is in progress ({status.get('replicas')} pods for {desired} desired)"
    for condition in status.get("conditions", []):
        if condition.get("type") == "Available" and condition.get("status") != "True":
            return (
                f"condition Available is {condition.get('status')}: {condition.get('message', '')}"
            )
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    """Running, not terminating, and its Ready condition is True."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status", {})
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )


def pod_port(pod: Mapping[str, Any], name: str = "http", default: int = DEFAULT_POD_PORT) -> int:
    """The container port called `name` in a pod (or Deployment template) spec, else `default`."""
    spec = pod.get("spec", {})
    spec = spec.get("template", {}).get("spec", spec)
    for container in spec.get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == name:
                return int(port["containerPort"])
    return default


def container_env(deployment: Mapping[str, Any], name: str) -> str | None:
    """A literal env value from the first container of a Deployment's pod template."""
    containers = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    )
    for var in containers[0].get("env", []) if containers else []:
        if var.get("name") == name:
            value = var.get("value")
            return str(value) if value is not None else None
    return None


def slice_endpoints(slices: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(ready, not ready) endpoints in a List of EndpointSlices: the target pod name, else the IP.

    `conditions.ready` unset means ready (discovery.k8s.io/v1). A terminating endpoint is on its
    way out (it takes no new connections), so it is in neither set. A pod listed in several
    slices (one per address family) counts once, ready if any slice says so.
    """
    ready: set[str] = set()
    not_ready: set[str] = set()
    for endpoint_slice in slices.get("items") or []:
        for endpoint in endpoint_slice.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            addresses = endpoint.get("addresses") or ["?"]
            name = str(ref.get("name") or addresses[0])
            conditions = endpoint.get("conditions") or {}
            if conditions.get("terminating"):
                continue
            (not_ready if conditions.get("ready") is False else ready).add(name)
    return ready, not_ready - ready


def metric_total(text: str, family: str) -> float | None:
    """The sum of one metric family's samples on a /metrics page (counters: their `_total`).

    None when the page has no such family or cannot be parsed.
    """
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError):
        return None
    for found in families:
        if found.name == family:
            return float(sum(s.value for s in found.samples
                             if found.type != "counter" or s.name.endswith("_total")))
    return None


def requests_started(text: str) -> float | None:
    """Requests a proxy has started: `zai_proxy_requests_total` (finished) plus in flight.

    Counting finished plus in flight makes a long stream count when it starts, not when it
    ends, so a stream that began before a switch and ends after it is not new traffic. None when
    the page has no `zai_proxy_requests_total` family (not a zai-proxy, or an unreadable page).
    """
    finished = metric_total(text, "zai_proxy_requests")
    if finished is None:
        return None
    return finished + (metric_total(text, "zai_proxy_concurrent_requests") or 0.0)
