"""A pod's admin API as the switch reaches it: `kubectl exec POD -c CONTAINER -i -- zai-proxy
admin METHOD PATH [--data -]` (BRIEF contract 3; the key stays inside the pod).

Every failure becomes one `AdminFailure` whose `kind` says what the operator has to fix: the pod
has no admin key, the proxy answered an error status, the command is missing from the image, or
the pod could not be reached at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from zai_proxy.switch.admin_client import NO_KEY
from zai_proxy.switch.kube import Kubectl, KubectlError

_ANSWER = re.compile(r"zai-proxy admin: HTTP (?P<status>\d{3}) (?P<code>\S+): (?P<message>.*)")
_MISSING = ("executable file not found", "no such file or directory", "not found in $PATH")


class AdminFailure(Exception):
    """An admin call that did not answer 2xx. `kind`: no_key, http, missing, unreachable."""

    def __init__(
        self, pod: str, kind: str, detail: str, *, status: int | None = None, code: str = ""
    ) -> None:
        self.pod = pod
        self.kind = kind
        self.detail = detail
        self.status = status
        self.code = code
        super().__init__(f"{pod}: {detail}")


def classify(pod: str, error: KubectlError) -> AdminFailure:
    """Read what `kubectl exec ... zai-proxy admin` printed into an AdminFailure."""
    text = error.stderr or error.message
    if NO_KEY in text:
        return AdminFailure(pod, "no_key", "ADMIN_API_KEY is not set in the pod (admin routes "
                            "are off): add it to the Secret the Deployment reads")
    if match := _ANSWER.search(text):
        status = int(match.group("status"))
        return AdminFailure(pod, "http", f"HTTP {status} {match.group('code')}: "
                            f"{match.group('message').strip()}", status=status,
                            code=match.group("code"))
    lowered = text.lower()
    if "zai-proxy" in lowered and any(marker in lowered for marker in _MISSING):
        return AdminFailure(pod, "missing", "`zai-proxy admin` is not in the pod's image "
                            "(an image older than the switch?)")
    last = text.strip().splitlines()[-1] if text.strip() else error.message
    return AdminFailure(pod, "unreachable", f"exec failed: {last}")


@dataclass
class PodAdmin:
    """Admin calls into one container of a pod, over `kubectl exec`."""

    kube: Kubectl
    container: str = "zai-proxy"

    def call(self, pod: str, method: str, path: str, body: Any = None) -> Any:
        """The parsed JSON answer of METHOD PATH on `pod`, or raise AdminFailure."""
        argv = ["zai-proxy", "admin", method, path]
        stdin = ""
        if body is not None:
            argv += ["--data", "-"]
            stdin = json.dumps(body)
        try:
            out = self.kube.exec(pod, self.container, argv, stdin=stdin)
        except KubectlError as exc:
            raise classify(pod, exc) from None
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise AdminFailure(pod, "unreachable", f"{method} {path} answered non-JSON: "
                               f"{out[:120]!r}") from None
