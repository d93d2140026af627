"""A small `kubectl` runner: every call is `kubectl [--context C] -n NS ...`, JSON in and out.

The switchover command talks to the cluster only through this class, so its tests can put a fake
`kubectl` on `PATH` that records calls and answers from fixtures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any


class KubectlError(RuntimeError):
    """A `kubectl` call failed (non-zero exit, bad JSON, or the binary is missing)."""

    def __init__(
        self, command: Sequence[str], message: str, *, stdout: str = "", stderr: str = ""
    ) -> None:
        self.command = list(command)
        self.message = message.strip()
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"`{' '.join(self.command)}` failed: {self.message}")


MIN_REQUEST_TIMEOUT = 0.001  # seconds: kubectl's finest useful unit here is the millisecond


def request_timeout_flag(seconds: float) -> str:
    """kubectl's `--request-timeout` value for `seconds`, fractions kept: `20s`, `1500ms`.

    kubectl reads a Go duration, and `0` there means *no* timeout, so a positive value must never
    round down to 0: whole seconds are written as `Ns`, anything else in whole milliseconds
    (rounded). A value below one millisecond (or not positive) is a ValueError: kubectl cannot
    express it, and sending `0ms` would switch the timeout off.
    """
    if not seconds >= MIN_REQUEST_TIMEOUT:  # also refuses NaN
        raise ValueError(f"a kubectl request timeout must be at least {MIN_REQUEST_TIMEOUT:g}s "
                         f"(1ms), not {seconds:g}s")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


class Kubectl:
    """Runs `kubectl` for one namespace (and optional context) with a per-call timeout.

    `request_timeout` (seconds, fractions allowed, at least `MIN_REQUEST_TIMEOUT`) goes to every
    call as `--request-timeout` (see `request_timeout_flag`); ValueError if kubectl cannot take it.
    """

    def __init__(
        self,
        namespace: str,
        *,
        binary: str = "kubectl",
        context: str | None = None,
        request_timeout: float = 20.0,
    ) -> None:
        self.namespace = namespace
        self.binary = binary
        self.context = context
        self.timeout_flag = request_timeout_flag(request_timeout)
        self.request_timeout = request_timeout

    def command(self, *args: str) -> list[str]:
        """The full argv for `kubectl ARGS` in this namespace."""
        argv = [self.binary]
        if self.context:
            argv += ["--context", self.context]
        argv += ["--namespace", self.namespace, f"--request-timeout={self.timeout_flag}"]
        return [*argv, *args]

    def run(self, *args: str, stdin: str | None = None) -> str:
        """Run `kubectl ARGS` and return its stdout, or raise `KubectlError`."""
        argv = self.command(*args)
        executable = shutil.which(self.binary)
        if executable is None:
            raise KubectlError(argv, f"{self.binary!r} not found on PATH")
        try:
            done = subprocess.run(
                [executable, *argv[1:]],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.request_timeout + 10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise KubectlError(argv, f"no answer within {self.request_timeout + 10:.0f}s") from None
        if done.returncode != 0:
            detail = done.stderr.strip() or done.stdout.strip() or "no output"
            raise KubectlError(
                argv,
                f"exit code {done.returncode}: {detail}",
                stdout=done.stdout,
                stderr=done.stderr,
            )
        return done.stdout

    def get_json(self, *args: str) -> dict[str, Any]:
        """`kubectl get ARGS -o json`, parsed."""
        out = self.run("get", *args, "-o", "json")
        try:
            parsed = json.loads(out)
        except json.JSONDecodeError as exc:
            raise KubectlError(
                self.command("get", *args, "-o", "json"), f"bad JSON: {exc}"
            ) from None
        if not isinstance(parsed, dict):
            raise KubectlError(self.command("get", *args), "expected a JSON object")
        return parsed

    def get_raw(self, path: str) -> str:
        """`kubectl get --raw PATH`: a request through the API server (e.g. a service proxy)."""
        return self.run("get", "--raw", path)

    def patch_merge(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        """Apply a JSON merge patch to one object."""
        self.run("patch", kind, name, "--type", "merge", "-p", json.dumps(patch, sort_keys=True))

    def endpoint_slices(self, service: str) -> dict[str, Any]:
        """The Service's EndpointSlices (`discovery.k8s.io/v1`), as one List."""
        return self.get_json(
            "endpointslices", "-l", f"kubernetes.io/service-name={service}"
        )

    def exec(self, pod: str, container: str, argv: Sequence[str], stdin: str = "") -> str:
        """`kubectl exec POD -c CONTAINER -i -- ARGV` with `stdin`; its stdout."""
        return self.run("exec", pod, "-c", container, "-i", "--", *argv, stdin=stdin)

    def scale(self, deployment: str, replicas: int) -> None:
        """Set a Deployment's replica count."""
        self.run("scale", f"deployment/{deployment}", f"--replicas={replicas}")

    def pod_proxy_path(self, pod: str, port: int, path: str) -> str:
        """API server path reaching `path` on a pod's port (`.../pods/NAME:PORT/proxy/PATH`)."""
        return f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"

    def service_proxy_path(self, service: str, port_name: str, path: str) -> str:
        """API server path reaching `path` through a Service (`.../http:SVC:PORT/proxy/PATH`)."""
        return (
            f"/api/v1/namespaces/{self.namespace}/services/http:{service}:{port_name}"
            f"/proxy/{path.lstrip('/')}"
        )
