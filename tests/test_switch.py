"""`zai-proxy switch` against a fake `kubectl` on PATH (tests/fixtures/kubectl/kubectl).

The fake answers from a JSON cluster state (v1 serving, v2 standing by, two ready pods each),
records every call, and applies patches and scales to the state, so each test reads the outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zai_proxy import kube_objects, switch

FIXTURES = Path(__file__).parent / "fixtures" / "kubectl"


class Cluster:
    """The fake cluster's state file and call log."""

    def __init__(self, tmp: Path) -> None:
        self.state_path = tmp / "state.json"
        self.calls_path = tmp / "calls.jsonl"
        self.state_path.write_text((FIXTURES / "cluster.json").read_text())
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


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("PATH", f"{FIXTURES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KUBECTL_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("FAKE_KUBECTL_CALLS", str(tmp_path / "calls.jsonl"))
    return Cluster(tmp_path)


FAST = ["--timeout", "0.5", "--poll-interval", "0.01", "--samples", "3"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = switch.main(["-n", "zai", *FAST, *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_restored(cluster: Cluster, code: int, out: str, step: str) -> None:
    assert code == switch.EXIT_FAILED, out
    assert f"FAILED at step '{step}'" in out, out
    assert cluster.selector() == {"app": "zai-proxy", "version": "v1"}
    assert "restored: selector is app=zai-proxy,version=v1 again" in out, out


# -- happy paths


def test_switch_to_v2_runs_every_check_then_patches(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v2")
    assert code == 0, out
    assert cluster.selector() == {"app": "zai-proxy", "version": "v2"}
    annotations = cluster.state()["service"]["metadata"]["annotations"]
    assert annotations[switch.PREVIOUS_ANNOTATION] == "v1"
    for text in [
        "[1] target Deployment labelled app=zai-proxy,version=v2 is available",
        "[2] pods of zai-proxy-v2 are all ready",
        "[3] /health and /metrics of 2 pod(s) report deployment_variant='v2'",
        "[4] patch service zai-proxy selector version: v1 -> v2",
        "[5] endpoints of service zai-proxy are exactly the ready pods of zai-proxy-v2",
        "[6] /metrics through service zai-proxy shows only 'v2' (3 sample(s))",
        "SWITCHED: service zai-proxy serves 'v2'",
    ]:
        assert text in out, out
    calls = cluster.calls()
    assert all(c[0:2] == ["--namespace", "zai"] for c in calls)
    raws = [c[-1] for c in calls if "--raw" in c]
    assert "/api/v1/namespaces/zai/pods/zai-proxy-v2-7c9f-ccccc:8080/proxy/health" in raws
    assert "/api/v1/namespaces/zai/pods/zai-proxy-v2-7c9f-ddddd:8080/proxy/metrics" in raws
    assert raws.count("/api/v1/namespaces/zai/services/http:zai-proxy:http/proxy/metrics") == 3
    # The patch happens only after every pod was probed.
    patch_at = next(i for i, c in enumerate(calls) if c[3] == "patch")
    last_probe = max(i for i, c in enumerate(calls) if "/proxy/" in c[-1] and "/pods/" in c[-1])
    assert patch_at > last_probe


def test_switch_positional_form_and_cli_dispatch(cluster: Cluster) -> None:
    env = {**os.environ}
    done = subprocess.run(
        [sys.executable, "-m", "zai_proxy", "switch", "to", "v2", "-n", "zai", *FAST],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert cluster.selector()["version"] == "v2"


def test_dry_run_checks_everything_and_changes_nothing(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v2", "--dry-run")
    assert code == 0, out
    assert "dry run: would patch service zai-proxy selector version: v1 -> v2" in out
    assert cluster.selector()["version"] == "v1"
    assert not any("patch" in c or "scale" in c for c in cluster.calls())
    assert any("/pods/zai-proxy-v2-7c9f-ccccc:8080/proxy/metrics" in c[-1] for c in cluster.calls())


def test_endpoints_that_lag_are_waited_for(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(endpoints_lag=3))
    code, out = run(capsys, "--to", "v2", "--timeout", "5")
    assert code == 0, out
    reads = [c for c in cluster.calls() if c[3:5] == ["get", "endpoints"]]
    assert len(reads) == 4


def test_already_on_target_verifies_without_patching(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v1")
    assert code == 0, out
    assert "already selects 'v1'; verifying without patching" in out
    assert cluster.patches() == []


def test_scale_down_previous_after_success(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v2", "--scale-down-previous")
    assert code == 0, out
    v1 = next(d for d in cluster.state()["deployments"] if d["metadata"]["name"] == "zai-proxy-v1")
    assert v1["spec"]["replicas"] == 0
    assert "scale previous Deployment zai-proxy-v1 to 0 (kept for rollback)" in out


# -- failures before the patch


def test_target_deployment_not_available(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s["deployments"][1]["status"].update(availableReplicas=1))
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert (
        "FAILED at step 'check target deployment': zai-proxy-v2 is not available: "
        "availableReplicas 1 < 2 desired" in out
    )
    assert "service selector was not changed" in out
    assert cluster.patches() == []


def test_target_deployment_missing(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v3")
    assert code == 1
    assert "expected exactly one Deployment labelled app=zai-proxy,version=v3, found 0" in out
    assert cluster.patches() == []


def test_target_with_zero_replicas_needs_replicas_flag(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s["deployments"][1]["spec"].update(replicas=0))
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert "zai-proxy-v2 has 0 replicas; pass --replicas N" in out


def test_pod_not_ready(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(
        lambda s: cluster.pod(s, "ddddd")["status"]["conditions"][0].update(status="False")
    )
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert "FAILED at step 'check target pods': pods not ready: zai-proxy-v2-7c9f-ddddd" in out
    assert cluster.patches() == []


def test_health_reports_wrong_variant(cluster: Cluster, capsys: Any) -> None:
    def wrong(state: dict[str, Any]) -> None:
        state["health"] = {"zai-proxy-v2-7c9f-ddddd": {"status": "ok", "deployment_variant": "v1"}}

    cluster.edit(wrong)
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert (
        "FAILED at step 'probe pod /health': zai-proxy-v2-7c9f-ddddd reports "
        "deployment_variant='v1', expected 'v2'" in out
    )
    assert cluster.patches() == []


def test_health_draining(cluster: Cluster, capsys: Any) -> None:
    def draining(state: dict[str, Any]) -> None:
        state["health"] = {
            "zai-proxy-v2-7c9f-ccccc": {"status": "draining", "deployment_variant": "v2"}
        }

    cluster.edit(draining)
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert "reports status='draining', not 'ok'" in out


def test_pod_health_unreachable(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(
        lambda s: s.update(
            fail=[
                {
                    "match": "ccccc:8080/proxy/health",
                    "stderr": "Error from server (ServiceUnavailable)",
                }
            ]
        )
    )
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert "FAILED at step 'probe pod /health': zai-proxy-v2-7c9f-ccccc:" in out
    assert "ServiceUnavailable" in out


def test_metrics_missing_variant_label(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(metrics_variant={"zai-proxy-v2-7c9f-ccccc": None}))
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert (
        "FAILED at step 'probe pod /metrics': zai-proxy-v2-7c9f-ccccc: expected only "
        "deployment_variant='v2', found 2 series without deployment_variant" in out
    )
    assert cluster.patches() == []


def test_patch_fails(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(
        lambda s: s.update(
            fail=[
                {
                    "match": "patch service",
                    "stderr": 'Error from server (Forbidden): services "zai-proxy" is forbidden',
                }
            ]
        )
    )
    code, out = run(capsys, "--to", "v2")
    assert code == 1
    assert "FAILED at step 'patch service selector'" in out and "Forbidden" in out
    assert "service selector was not changed" in out
    assert cluster.selector()["version"] == "v1"


# -- failures after the patch


def test_endpoints_never_converge_restores(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(endpoints_frozen=True))
    code, out = run(capsys, "--to", "v2")
    assert_restored(cluster, code, out, "wait for endpoints")
    assert "did not converge within 0.5s: still routed to" in out
    assert "zai-proxy-v1-7c9f-aaaaa" in out
    patches = cluster.patches()
    assert len(patches) == 2
    assert patches[1]["spec"]["selector"] == {"app": "zai-proxy", "version": "v1"}
    # The rollback annotation is put back as it was (absent).
    assert switch.PREVIOUS_ANNOTATION not in cluster.state()["service"]["metadata"].get(
        "annotations", {}
    )


def test_service_metrics_show_old_variant_restores(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(service_metrics_variant="v1"))
    code, out = run(capsys, "--to", "v2")
    assert_restored(cluster, code, out, "verify service /metrics")
    assert "sample 1: expected only deployment_variant='v2', found 2 series with 'v1'" in out


def test_service_metrics_unreachable_restores(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(
        lambda s: s.update(
            fail=[
                {
                    "match": "services/http:zai-proxy:http/proxy/metrics",
                    "stderr": "Error from server (ServiceUnavailable)",
                }
            ]
        )
    )
    code, out = run(capsys, "--to", "v2")
    assert_restored(cluster, code, out, "verify service /metrics")


def test_restore_failure_is_loud(cluster: Cluster, capsys: Any) -> None:
    def break_it(state: dict[str, Any]) -> None:
        state["endpoints_frozen"] = True
        # The first patch (the switch) works; the second (the restore) fails.
        state["fail"] = [{"match": '"version": "v1"', "stderr": "Error from server (Timeout)"}]

    cluster.edit(break_it)
    code, out = run(capsys, "--to", "v2")
    assert code == switch.EXIT_RESTORE_FAILED
    assert "RESTORE FAILED" in out and "fix the selector by hand" in out


# -- status and rollback


def test_status(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "status")
    assert code == 0, out
    assert "selector app=zai-proxy,version=v1 -> serving 'v1'" in out
    assert "endpoints: 2 ready" in out
    assert "* zai-proxy-v1: version=v1 DEPLOYMENT_VARIANT=v1 image=zai-proxy:0.1.0" in out
    assert "  zai-proxy-v2: version=v2" in out and "[standby]" in out
    assert cluster.patches() == []


def test_status_with_nothing_serving(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: [p["status"].update(phase="Pending") for p in s["pods"]])
    code, out = run(capsys, "status")
    assert code == 1
    assert "endpoints: 0 ready" in out


def test_rollback_after_switch(cluster: Cluster, capsys: Any) -> None:
    assert run(capsys, "--to", "v2")[0] == 0
    code, out = run(capsys, "rollback")
    assert code == 0, out
    assert "rollback: 'v2' -> 'v1'" in out
    assert cluster.selector()["version"] == "v1"
    annotations = cluster.state()["service"]["metadata"]["annotations"]
    assert annotations[switch.PREVIOUS_ANNOTATION] == "v2"


def test_rollback_scales_up_a_variant_kept_at_zero(cluster: Cluster, capsys: Any) -> None:
    assert run(capsys, "--to", "v2", "--scale-down-previous")[0] == 0
    code, out = run(capsys, "rollback")
    assert code == 0, out
    assert "scale zai-proxy-v1 from 0 to 2 replicas and wait until available" in out
    assert cluster.selector()["version"] == "v1"
    assert ["scale", "deployment/zai-proxy-v1", "--replicas=2"] in [c[3:] for c in cluster.calls()]


def test_rollback_scale_up_that_never_gets_ready(cluster: Cluster, capsys: Any) -> None:
    assert run(capsys, "--to", "v2", "--scale-down-previous")[0] == 0
    cluster.edit(lambda s: s.update(scale_ready=False))
    code, out = run(capsys, "rollback")
    assert code == 1
    assert "FAILED at step 'scale target deployment': zai-proxy-v1 not available within 0.5s" in out
    assert cluster.selector()["version"] == "v2"


def test_rollback_without_annotation_picks_the_other_variant(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "rollback", "--dry-run")
    assert code == 0, out
    assert "rollback: 'v1' -> 'v2'" in out
    assert cluster.patches() == []


# -- usage and helpers


@pytest.mark.parametrize(
    "argv", [[], ["to"], ["--to", "bad value!"], ["--to", "v2", "--timeout", "-1"]]
)
def test_usage_errors(argv: list[str], capsys: Any) -> None:
    assert switch.main(argv) == switch.EXIT_USAGE


def test_missing_kubectl_is_reported(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v2", "--kubectl", "kubectl-does-not-exist")
    assert code == 1
    assert "'kubectl-does-not-exist' not found on PATH" in out


def test_metric_variants_parsing() -> None:
    text = (
        "# HELP zai_proxy_ready r\n"
        'zai_proxy_ready{deployment_variant="v2"} 1.0\n'
        'zai_proxy_requests_total{method="POST",deployment_variant="v2",route="/v1/x"} 3\n'
        "zai_proxy_max_workers 10\n"
        'process_cpu_seconds_total{deployment_variant="zzz"} 1\n'
    )
    assert kube_objects.metric_variants(text) == {"v2": 2, None: 1}
    with pytest.raises(ValueError, match="1 series without deployment_variant"):
        kube_objects.check_metrics_variant(text, "v2")
    with pytest.raises(ValueError, match="no zai_proxy_"):
        kube_objects.check_metrics_variant("up 1\n", "v2")


def test_deployment_problem() -> None:
    base: dict[str, Any] = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
        },
    }
    assert kube_objects.deployment_problem(base) is None
    rolling = json.loads(json.dumps(base))
    rolling["status"]["replicas"] = 3
    assert "rollout is in progress" in str(kube_objects.deployment_problem(rolling))
    stale = json.loads(json.dumps(base))
    stale["metadata"]["generation"] = 3
    assert "not observed" in str(kube_objects.deployment_problem(stale))
