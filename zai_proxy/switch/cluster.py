"""What the switch reads from the cluster: the Service, the variants' Deployments and pods, the
Service's EndpointSlices, and each pod's `/health` and `/metrics` through the API server's pod
proxy. Reads only; every failure is a `StepFailed` naming the step it belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zai_proxy.switch.kube import Kubectl, KubectlError
from zai_proxy.switch.kube_objects import (
    format_selector,
    metric_total,
    pod_port,
    requests_started,
    slice_endpoints,
)
from zai_proxy.switch.steps import Options, StepFailed


@dataclass
class ServiceState:
    """The Service's selector and where its traffic goes now."""

    selector: dict[str, str]
    annotations: dict[str, str]
    port_name: str

    def variant(self, version_label: str) -> str | None:
        return self.selector.get(version_label)


def pod_name(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["name"])


def is_deleting(pod: Mapping[str, Any]) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


@dataclass
class Cluster:
    """Reads over a `Kubectl` for one Service and its variants."""

    kube: Kubectl
    options: Options

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

    def variant_labels(self, service: ServiceState, version: str) -> dict[str, str]:
        return {**self.app_selector(service), self.options.version_label: version}

    def find_deployment(self, service: ServiceState, version: str) -> dict[str, Any]:
        """The single Deployment labelled with the app selector and `version`."""
        labels = self.variant_labels(service, version)
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
        return sorted(items, key=pod_name)

    def variant_pods(self, service: ServiceState, version: str) -> list[dict[str, Any]]:
        """The live (not deleting) pods labelled as `version` of this app."""
        labels = self.variant_labels(service, version)
        try:
            found = self.kube.get_json("pods", "-l", format_selector(labels))
        except KubectlError as exc:
            raise StepFailed("list pods", f"{format_selector(labels)}: {exc.message}") from None
        items: list[dict[str, Any]] = found.get("items", [])
        return sorted((p for p in items if not is_deleting(p)), key=pod_name)

    def endpoints(self) -> tuple[set[str], set[str]]:
        """(ready, not ready) endpoints of the Service, from its EndpointSlices."""
        return slice_endpoints(self.kube.endpoint_slices(self.options.service))

    def pod_get(self, pod: Mapping[str, Any], path: str) -> str:
        """GET `path` on a pod through the API server's pod proxy (raises KubectlError)."""
        port = pod_port(pod, self.options.port_name)
        return self.kube.get_raw(self.kube.pod_proxy_path(pod_name(pod), port, path))

    def pod_health(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """A pod's `/health` document (raises KubectlError or ValueError)."""
        health = json.loads(self.pod_get(pod, "/health"))
        if not isinstance(health, dict):
            raise ValueError("/health is not a JSON object")
        return health

    def pod_requests(self, pod: Mapping[str, Any]) -> float | None:
        """Requests the pod has started (finished + in flight), or None when unreadable."""
        try:
            return requests_started(self.pod_get(pod, "/metrics"))
        except KubectlError:
            return None

    def pod_queued(self, pod: Mapping[str, Any]) -> float | None:
        """Requests waiting in the pod's admission queue (`zai_proxy_queue_depth`), or None."""
        try:
            return metric_total(self.pod_get(pod, "/metrics"), "zai_proxy_queue_depth")
        except KubectlError:
            return None

    def pod_load(self, pod: Mapping[str, Any]) -> tuple[float | None, float | None]:
        """(queued for admission, requests started) from one read of the pod's `/metrics`;
        (None, None) when it cannot be read, either one None when its family is missing."""
        try:
            text = self.pod_get(pod, "/metrics")
        except KubectlError:
            return None, None
        return metric_total(text, "zai_proxy_queue_depth"), requests_started(text)
