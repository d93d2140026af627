"""Retire, don't kill: tell a variant's pods to release their keep-alive clients, or take them back.

A Service selector change moves only new connections; SDK workers keep their pooled keep-alive
connections to the old pods. `POST /admin/retire` makes a pod answer every response with
`Connection: close` and close its idle keep-alive connections (requests and streams in flight
finish untouched), so each worker reconnects, through the Service, to the variant it selects now.
`DELETE /admin/retire` undoes it. Both go through the pod's admin API over `kubectl exec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zai_proxy.switch.pod_admin import AdminFailure, PodAdmin
from zai_proxy.switch.steps import Steps

RETIRE_PATH = "/admin/retire"


@dataclass
class RetireResult:
    """Pods whose flag is now as asked, and the failures (pod -> why)."""

    done: list[str]
    failed: dict[str, AdminFailure]


def describe(failure: AdminFailure) -> str:
    """Why a retire call failed, in the operator's terms."""
    if failure.kind == "http" and failure.status in (404, 405):
        return f"{failure.pod}: the pod's proxy has no {RETIRE_PATH} (an older image?)"
    return str(failure)


@dataclass
class Retirement:
    """Set or clear the retired flag on pods, reporting each one."""

    admin: PodAdmin
    steps: Steps

    def apply(self, pods: Sequence[str], retired: bool) -> RetireResult:
        """POST (retired) or DELETE (not retired) /admin/retire on every pod."""
        method = "POST" if retired else "DELETE"
        result = RetireResult([], {})
        for pod in pods:
            try:
                answer = self.admin.call(pod, method, RETIRE_PATH)
            except AdminFailure as failure:
                result.failed[pod] = failure
                continue
            flag = answer.get("retired") if isinstance(answer, dict) else None
            if flag is not retired:
                result.failed[pod] = AdminFailure(
                    pod, "http", f"{method} {RETIRE_PATH} answered {answer!r}")
                continue
            result.done.append(pod)
        return result

    def report(self, result: RetireResult, retired: bool) -> None:
        """Print what `apply` did: one ok line for the pods done, a warning per failure."""
        if result.done:
            what = ("retired (Connection: close on every response, idle keep-alive connections "
                    "closed; requests in flight finish)" if retired
                    else "serving keep-alive clients again (not retired)")
            self.steps.ok(f"{', '.join(result.done)}: {what}")
        for failure in result.failed.values():
            self.steps.warn(f"could not {'retire' if retired else 'un-retire'} "
                            f"{describe(failure)}")
