"""The fake cluster behind the fake `kubectl` (tests/fixtures/kubectl/kubectl), as the switch
tests read it: its JSON state file and its call log, the pod names of the two variants and the
learned-state document a v1 pod exports.

`install_cluster` puts the fake first on PATH for one test, runs it in process (see
kubectl_fake.py) and starts it from tests/fixtures/kubectl/cluster.json: v1 serving, v2 standing
by, two ready pods each.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import kubectl_fake


class Cluster:
    """The fake cluster's state file and call log."""

    def __init__(self, tmp: Path) -> None:
        self.state_path = tmp / "state.json"
        self.calls_path = tmp / "calls.jsonl"
        self.state_path.write_text(kubectl_fake.CLUSTER.read_text())
        self.calls_path.write_text("")

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        state = self.state()
        change(state)
        self.state_path.write_text(json.dumps(state))

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.state_path.read_text())
        return result

    def selector(self) -> dict[str, str]:
        return dict(self.state()["service"]["spec"]["selector"])

    def calls(self) -> list[list[str]]:
        lines = self.calls_path.read_text().splitlines()
        return [json.loads(line) for line in lines]

    def patches(self) -> list[dict[str, Any]]:
        return [json.loads(c[c.index("-p") + 1]) for c in self.calls() if "patch" in c]

    def pod(self, state: dict[str, Any], name_part: str) -> dict[str, Any]:
        pod: dict[str, Any] = next(p for p in state["pods"] if name_part in p["metadata"]["name"])
        return pod

    def admin_calls(self) -> list[list[str]]:
        """`[pod, METHOD, PATH]` of every `kubectl exec ... zai-proxy admin` call."""
        found = []
        for call in self.calls():
            if "exec" in call:
                command = call[call.index("--") + 1:]
                found.append([call[call.index("exec") + 1], command[2], command[3]])
        return found

    def retired(self) -> dict[str, bool]:
        return dict(self.state().get("retired", {}))


def install_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """Install the fake `kubectl` under `tmp_path` for this test and return its cluster."""
    fake = kubectl_fake.install(tmp_path / "bin")
    kubectl_fake.patch_subprocess(monkeypatch, fake)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KUBECTL_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("FAKE_KUBECTL_CALLS", str(tmp_path / "calls.jsonl"))
    return Cluster(tmp_path)


V1 = ["zai-proxy-v1-7c9f-aaaaa", "zai-proxy-v1-7c9f-bbbbb"]
V2 = ["zai-proxy-v2-7c9f-ccccc", "zai-proxy-v2-7c9f-ddddd"]


def learned(ceiling: float | None, ago: float | None, conc: int | None = None,
            account: str = "0123456789abcdef", shared: bool = False) -> dict[str, Any]:
    """A /admin/limiter-state document as a v1 pod would export it now."""
    return {"version": 1, "account": account, "variant": "v1", "shared": shared, "replicas": 2,
            "exported_at": time.time(), "rate": {"ceiling": ceiling, "current": ceiling or 2.0,
                                                 "learned_seconds_ago": ago},
            "concurrency": {"ceiling": conc}}
