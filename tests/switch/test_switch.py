"""`zai-proxy switch` against a fake `kubectl` on PATH (tests/fixtures/kubectl/kubectl).

The fake answers from a JSON cluster state (v1 serving, v2 standing by, two ready pods each),
records every call, applies patches, scales and admin calls (retire, limiter state) to the state,
and can model keep-alive traffic in the pods' request counters, so each test reads the outcome.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.switch import V1, V2, Cluster, install_cluster, learned
from zai_proxy import switch
from zai_proxy.switch import kube_objects


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    return install_cluster(tmp_path, monkeypatch)


FAST = ["--timeout", "0.5", "--poll-interval", "0.01", "--samples", "3", "--traffic-quiet", "0",
        "--traffic-timeout", "0.5"]


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
        "[4] carry the learned rate ceilings of 'v1' to 'v2'",
        "[5] target pods take keep-alive clients (not retired)",
        "[6] patch service zai-proxy selector version: v1 -> v2",
        "[7] EndpointSlices of service zai-proxy list exactly the ready pods of zai-proxy-v2",
        "[8] /metrics through service zai-proxy shows only 'v2' (3 sample(s))",
        "[9] retire the pods of 'v1' so their keep-alive clients reconnect to 'v2'",
        "[10] requests: 'v1' receives none for 0s, 'v2' receives them",
        "'v1' received no new request since the patch; there was no traffic to move",
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
    last_probe = max(i for i, c in enumerate(calls) if "/proxy/" in c[-1] and "/pods/" in c[-1]
                     and "v2" in c[-1] and i < patch_at)
    assert patch_at > last_probe
    # Endpoints come from EndpointSlices by the service-name label, never from v1 Endpoints.
    assert ["get", "endpointslices", "-l", "kubernetes.io/service-name=zai-proxy", "-o",
            "json"] in [c[3:] for c in calls]
    assert not any(c[3:5] == ["get", "endpoints"] for c in calls)
    # The old variant's pods are retired after the patch, through exec into the proxy container.
    assert cluster.retired() == dict.fromkeys(V1, True)
    exec_call = next(c for c in calls if "exec" in c and "/admin/retire" in c)
    assert exec_call[3:] == ["exec", V1[0], "-c", "zai-proxy", "-i", "--", "zai-proxy", "admin",
                             "POST", "/admin/retire"]
    retire_at = next(i for i, c in enumerate(calls) if "/admin/retire" in c)
    assert retire_at > patch_at


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
    cluster.edit(lambda s: s.update(limiter_state={V1[0]: learned(18.0, 5.0)}))
    code, out = run(capsys, "--to", "v2", "--dry-run")
    assert code == 0, out
    assert "dry run: would patch service zai-proxy selector version: v1 -> v2" in out
    assert f"dry run: would PUT {V1[0]}'s learned ceilings (rate ceiling 18.00 req/s" in out
    assert f"to {', '.join(V2)}" in out
    assert cluster.selector()["version"] == "v1"
    assert not any("patch" in c or "scale" in c for c in cluster.calls())
    assert all(method == "GET" for _, method, _ in cluster.admin_calls()), cluster.admin_calls()
    assert cluster.retired() == {} and "puts" not in cluster.state()
    assert any("/pods/zai-proxy-v2-7c9f-ccccc:8080/proxy/metrics" in c[-1] for c in cluster.calls())


def test_endpoints_that_lag_are_waited_for(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(endpoints_lag=3))
    code, out = run(capsys, "--to", "v2", "--timeout", "5")
    assert code == 0, out
    reads = [c for c in cluster.calls() if c[3:5] == ["get", "endpointslices"]]
    assert len(reads) == 4


def test_already_on_target_verifies_and_reasserts_retirement(
    cluster: Cluster, capsys: Any
) -> None:
    code, out = run(capsys, "--to", "v1")
    assert code == 0, out
    assert "already selects 'v1'; verifying without patching" in out
    assert cluster.patches() == []
    assert "[4] carry" not in out  # nothing moves, nothing to carry
    assert cluster.retired() == dict.fromkeys(V2, True)


def test_scale_down_previous_after_success(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v2", "--scale-down-previous")
    assert code == 0, out
    v1 = next(d for d in cluster.state()["deployments"] if d["metadata"]["name"] == "zai-proxy-v1")
    assert v1["spec"]["replicas"] == 0
    assert "scale previous Deployment zai-proxy-v1 to 0 (kept for rollback)" in out
    calls = [c[3:] for c in cluster.calls()]
    # Scaled down only after the traffic check said the old variant receives nothing.
    assert calls.index(["scale", "deployment/zai-proxy-v1", "--replicas=0"]) > max(
        i for i, c in enumerate(calls) if "zai-proxy-v1-7c9f-aaaaa:8080/proxy/metrics" in c[-1])


def test_failed_scale_down_warns_and_keeps_the_switch(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(fail=[{"match": "scale deployment/zai-proxy-v1",
                                           "stderr": "Error from server (Forbidden): scale"}]))
    code, out = run(capsys, "--to", "v2", "--scale-down-previous")
    assert code == 0, out
    assert "WARNING: could not scale down 'v1'" in out and "Forbidden" in out
    assert "kubectl -n zai scale deployment/zai-proxy-v1 --replicas=0" in out
    assert cluster.selector()["version"] == "v2"
    v1 = next(d for d in cluster.state()["deployments"] if d["metadata"]["name"] == "zai-proxy-v1")
    assert v1["spec"]["replicas"] == 2


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
        "deployment_variant='v2', found 5 series without deployment_variant" in out
    )
    assert cluster.patches() == []


def test_deployment_variant_env_mismatch(cluster: Cluster, capsys: Any) -> None:
    def mislabelled(state: dict[str, Any]) -> None:
        env = state["deployments"][1]["spec"]["template"]["spec"]["containers"][0]["env"]
        env[0]["value"] = "v1"

    cluster.edit(mislabelled)
    code, out = run(capsys, "--to", "v2")
    assert code == 1, out
    assert "FAILED at step 'check target deployment': zai-proxy-v2 sets " \
           "DEPLOYMENT_VARIANT='v1', not 'v2'" in out
    assert cluster.patches() == []


def test_pods_that_would_not_match_the_new_selector(cluster: Cluster, capsys: Any) -> None:
    def stray(state: dict[str, Any]) -> None:
        # The Service selects on a label this pod lacks (the Deployment does not set it).
        state["service"]["spec"]["selector"]["tier"] = "api"
        for pod in state["pods"]:
            if pod["metadata"]["name"] != V2[1]:
                pod["metadata"]["labels"]["tier"] = "api"
        for deployment in state["deployments"]:
            deployment["metadata"]["labels"]["tier"] = "api"

    cluster.edit(stray)
    code, out = run(capsys, "--to", "v2")
    assert code == 1, out
    assert f"FAILED at step 'check target pods': pods ['{V2[1]}'] would not match the new " \
           "selector app=zai-proxy,tier=api,version=v2" in out
    assert cluster.patches() == []


def test_pods_being_deleted_are_left_out(cluster: Cluster, capsys: Any) -> None:
    def deleting(state: dict[str, Any]) -> None:
        pod = cluster.pod(state, V2[1])
        pod["metadata"]["deletionTimestamp"] = "2026-11-26T10:00:00Z"
        pod["status"]["conditions"][0]["status"] = "False"

    cluster.edit(deleting)
    code, out = run(capsys, "--to", "v2")
    assert code == 0, out
    assert f"left out, being deleted: {V2[1]}" in out
    assert f"1 ready: {V2[0]}" in out
    assert not any(V2[1] in c[-1] for c in cluster.calls() if "--raw" in c)
    assert [pod for pod, _, _ in cluster.admin_calls() if pod.startswith("zai-proxy-v2")] \
        == [V2[0]]


def test_no_ready_pod(cluster: Cluster, capsys: Any) -> None:
    def all_deleting(state: dict[str, Any]) -> None:
        for name in V2:
            cluster.pod(state, name)["metadata"]["deletionTimestamp"] = "2026-11-26T10:00:00Z"

    cluster.edit(all_deleting)
    code, out = run(capsys, "--to", "v2")
    assert code == 1, out
    assert "FAILED at step 'check target pods': zai-proxy-v2 has no ready pod" in out
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
    assert "sample 1: expected only deployment_variant='v2', found 5 series with 'v1'" in out


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
    assert "endpoints (EndpointSlices): 2 ready" in out
    assert "* zai-proxy-v1: version=v1 DEPLOYMENT_VARIANT=v1 image=zai-proxy:0.1.0" in out
    assert "  zai-proxy-v2: version=v2" in out and "[standby]" in out
    assert cluster.patches() == []


def test_status_with_nothing_serving(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: [p["status"].update(phase="Pending") for p in s["pods"]])
    code, out = run(capsys, "status")
    assert code == 1
    assert "endpoints (EndpointSlices): 0 ready" in out


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


def test_ambiguous_rollback_asks_for_to(cluster: Cluster, capsys: Any) -> None:
    def third_variant(state: dict[str, Any]) -> None:
        v3 = json.loads(json.dumps(state["deployments"][1]))
        v3["metadata"]["name"] = "zai-proxy-v3"
        v3["metadata"]["labels"]["version"] = "v3"
        v3["spec"]["selector"]["matchLabels"]["version"] = "v3"
        state["deployments"].append(v3)

    cluster.edit(third_variant)
    code, out = run(capsys, "rollback")
    assert code == 1, out
    assert "FAILED at step 'rollback': no zai-proxy/previous-version annotation and 2 other " \
           "variants ['v2', 'v3']: use --to" in out
    assert cluster.patches() == [] and cluster.admin_calls() == []


def test_rollback_without_annotation_picks_the_other_variant(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "rollback", "--dry-run")
    assert code == 0, out
    assert "rollback: 'v1' -> 'v2'" in out
    assert cluster.patches() == []


# -- verified from traffic


def test_traffic_moves_after_retire(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(traffic={"per_read": 5, "drain_reads": 2}))
    code, out = run(capsys, "--to", "v2", "--traffic-timeout", "5")
    assert code == 0, out
    assert "all traffic on 'v2': 'v1' received its last new request by" in out
    assert "'v2' received" in out and "since the patch" in out
    # Both rates were printed while it waited; the last one shows v1 at zero.
    rates = [line for line in out.splitlines() if "req/s, 'v2':" in line]
    assert len(rates) >= 2 and rates[-1].strip().startswith("'v1': 0.0 req/s"), rates
    assert not rates[0].strip().startswith("'v1': 0.0 req/s"), rates


def test_old_traffic_that_does_not_drain_exits_4_and_keeps_the_selector(
    cluster: Cluster, capsys: Any
) -> None:
    cluster.edit(lambda s: s.update(traffic={"per_read": 5}))
    code, out = run(capsys, "--to", "v2", "--no-retire", "--traffic-timeout", "0.3")
    assert code == switch.EXIT_TRAFFIC, out
    assert "FAILED at step 'verify traffic': 'v1' still receives" in out
    assert "req/s 0.3s after the patch" in out
    assert "stays so (the selector is correct)" in out
    assert cluster.selector()["version"] == "v2"
    assert len(cluster.patches()) == 1  # no restore
    assert "SWITCHED" not in out
    assert cluster.retired() == {}


def test_a_pod_whose_clients_stay_fails_the_traffic_check(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(traffic={"per_read": 5, "sticky": [V1[1]]}))
    code, out = run(capsys, "--to", "v2", "--traffic-timeout", "0.3", "--scale-down-previous")
    assert code == switch.EXIT_TRAFFIC, out
    assert "'v1' still receives" in out
    assert not any("scale" in c for c in cluster.calls())  # not scaled down under traffic


def test_unreadable_old_metrics_are_not_taken_for_quiet(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(fail=[{"match": f"{V1[0]}:8080/proxy/metrics",
                                           "times": -1}]))
    code, out = run(capsys, "--to", "v2", "--traffic-timeout", "0.2")
    assert code == switch.EXIT_TRAFFIC, out
    assert f"'v1' cannot be read ({V1[0]})" in out


def test_no_retire_spares_the_old_variant_but_unretires_the_target(
    cluster: Cluster, capsys: Any
) -> None:
    cluster.edit(lambda s: s.update(retired=dict.fromkeys(V2, True)))
    code, out = run(capsys, "--to", "v2", "--no-retire")
    assert code == 0, out
    assert "pods of the other variants are not retired (--no-retire)" in out
    assert cluster.retired() == dict.fromkeys(V2, False)


def test_traffic_check_can_be_skipped(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(traffic={"per_read": 5}))
    code, out = run(capsys, "--to", "v2", "--no-retire", "--traffic-timeout", "0")
    assert code == 0, out
    assert "traffic not verified (--traffic-timeout 0)" in out


# -- retire and un-retire


def test_rollback_unretires_its_target_and_retires_the_other(
    cluster: Cluster, capsys: Any
) -> None:
    assert run(capsys, "--to", "v2")[0] == 0
    assert cluster.retired() == dict.fromkeys(V1, True)
    code, out = run(capsys, "rollback")
    assert code == 0, out
    assert cluster.retired() == {**dict.fromkeys(V1, False), **dict.fromkeys(V2, True)}
    assert f"ok: {', '.join(V1)}: serving keep-alive clients again (not retired)" in out
    calls = cluster.calls()
    unretire = calls.index(next(c for c in calls if "exec" in c and V1[0] in c and "DELETE" in c))
    rollback_patch = max(i for i, c in enumerate(calls) if "patch" in c)
    assert unretire < rollback_patch


def test_retired_target_that_cannot_be_unretired_stops_the_switch(
    cluster: Cluster, capsys: Any
) -> None:
    def retired_v2(state: dict[str, Any]) -> None:
        state["retired"] = dict.fromkeys(V2, True)
        state["fail"] = [{"match": f"exec {V2[1]}", "stderr": "error: unable to upgrade "
                          "connection: pod does not exist", "times": -1}]

    cluster.edit(retired_v2)
    code, out = run(capsys, "--to", "v2", "--no-carry-limits")
    assert code == 1, out
    assert "FAILED at step 'un-retire target pods'" in out and "unable to upgrade" in out
    assert cluster.patches() == []
    # The pod it did un-retire is retired again: the Service still does not select it.
    assert cluster.retired() == dict.fromkeys(V2, True)


def test_failure_after_the_patch_restores_and_reretires(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(endpoints_frozen=True, retired=dict.fromkeys(V2, True)))
    code, out = run(capsys, "--to", "v2")
    assert_restored(cluster, code, out, "wait for endpoints")
    assert f"re-retiring {', '.join(V2)}: the service does not select 'v2'" in out
    assert cluster.retired() == dict.fromkeys(V2, True)
    assert not any(c[0] in V1 and c[1] == "POST" for c in cluster.admin_calls())


def test_retire_unsupported_warns_and_traffic_tells(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(retire_unsupported=[V1[0]], traffic={"per_read": 3}))
    code, out = run(capsys, "--to", "v2", "--traffic-timeout", "0.3")
    assert f"WARNING: could not retire {V1[0]}: the pod's proxy has no /admin/retire" in out
    assert code == switch.EXIT_TRAFFIC, out


def test_a_pod_that_answers_retired_false_is_not_reported_retired(
    cluster: Cluster, capsys: Any
) -> None:
    # 200, but the answer says the flag did not change: the switch must not count it as done.
    cluster.edit(lambda s: s.update(retire_stuck=[V1[1]]))
    code, out = run(capsys, "--to", "v2", "--no-carry-limits")
    assert code == 0, out
    assert f"ok: {V1[0]}: retired (Connection: close" in out, out
    assert f"{V1[1]}: retired" not in out and f"{V1[0]}, {V1[1]}: retired" not in out, out
    assert f"WARNING: could not retire {V1[1]}: POST /admin/retire answered " \
           "{'retired': False}" in out, out
    assert cluster.retired() == {V1[0]: True}


def test_status_shows_each_pods_retired_flag(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(retired={V1[0]: True, V2[0]: True}))
    code, out = run(capsys, "status")
    assert code == 0, out
    assert f"pod {V1[0]}: ready, status='ok', retired=true, in_flight=0  <- serving but " \
           "retired" in out
    assert f"pod {V1[1]}: ready, status='ok', retired=false, in_flight=0\n" in out
    assert f"pod {V2[0]}: ready, status='ok', retired=true, in_flight=0\n" in out
    assert f"pod {V2[1]}: ready, status='ok', retired=false, in_flight=0  <- standby but not " \
           "retired" in out
    assert not any("exec" in c for c in cluster.calls())  # status never changes anything


# -- learned ceilings carried


def test_carries_the_most_recently_learned_ceiling(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(limiter_state={V1[0]: learned(15.0, 300.0, 6),
                                                   V1[1]: learned(18.5, 12.0, 8)}))
    code, out = run(capsys, "--to", "v2")
    assert code == 0, out
    puts = cluster.state()["puts"]
    assert [pod for pod, _ in puts] == V2
    assert all(doc["rate"]["ceiling"] == 18.5 and doc["concurrency"]["ceiling"] == 8
               for _, doc in puts)
    assert "the serving pods disagree" in out and f"carrying {V1[1]}'s, the most recently " \
           "learned" in out
    assert f"{V2[0]} applied: rate ceiling 18.50 req/s, concurrency ceiling 8" in out
    assert re.search(rf"carried {V1[1]}'s learned ceilings \(rate ceiling 18.50 req/s for the "
                     r"account \(learned 1[23] s ago\), concurrency ceiling 8 per pod\) to 2 'v2' "
                     r"pod\(s\) before moving traffic", out), out
    # Carried before traffic moves.
    calls = cluster.calls()
    last_put = max(i for i, c in enumerate(calls) if "PUT" in c)
    assert last_put < next(i for i, c in enumerate(calls) if "patch" in c)


# The hand-over to a target while the old variant still sends (its backlog, exit 4) is in
# tests/switch/test_switch_handover.py, on virtual time.


def test_shared_limiter_state_needs_no_carry(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(shared=True))
    code, out = run(capsys, "--to", "v2")
    assert code == 0, out
    assert "limiter state is shared through Redis by every pod of both variants (account " \
           "0123456789abcdef): nothing to carry" in out
    assert "puts" not in cluster.state()


@pytest.mark.parametrize("shared_pod", [V1[0], V1[1]])
def test_one_pod_on_redis_is_not_every_pod_on_redis(
    cluster: Cluster, capsys: Any, shared_pod: str
) -> None:
    # Only when every pod of both variants shares state is there nothing to carry; one serving
    # pod on Redis (the others and the target not) still needs the learned ceiling carried.
    docs = {V1[0]: learned(18.0, 5.0), V1[1]: learned(18.0, 5.0)}
    docs[shared_pod] = learned(18.0, 5.0, shared=True)
    cluster.edit(lambda s: s.update(limiter_state=docs))
    code, out = run(capsys, "--to", "v2")
    assert code == 0, out
    assert "nothing to carry" not in out, out
    assert [(pod, put["rate"]["ceiling"]) for pod, put in cluster.state()["puts"]] == \
        [(V2[0], 18.0), (V2[1], 18.0)]


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"admin_off": [V1[1]]}, f"cannot read the learned ceilings of serving (v1) pod {V1[1]}: "
                                 "ADMIN_API_KEY is not set in the pod"),
        ({"admin_off": [V2[0]]}, f"cannot read the learned ceilings of target (v2) pod {V2[0]}"),
        ({"accounts": {V2[0]: "ffffffffffffffff"}},
         f"{V2[0]} belongs to Z.AI account ffffffffffffffff, the serving pods to "
         "0123456789abcdef"),
        ({"fail": [{"match": f"exec {V1[0]}", "stderr": "error: unable to upgrade connection"}]},
         f"{V1[0]}: exec failed: error: unable to upgrade connection"),
        ({"limiter_state": {V1[0]: {"account": "0123456789abcdef"}}},
         f"{V1[0]}: /admin/limiter-state has no boolean 'shared'"),
    ],
    ids=["no-key-source", "no-key-target", "other-account", "unreachable", "malformed"],
)
def test_carry_refuses_before_changing_anything(
    cluster: Cluster, capsys: Any, knobs: dict[str, Any], expected: str
) -> None:
    cluster.edit(lambda s: s.update(knobs))
    code, out = run(capsys, "--to", "v2")
    assert code == 1, out
    assert "FAILED at step 'carry learned ceilings'" in out and expected in out, out
    assert "pass --no-carry-limits to switch without them" in out
    assert "service selector was not changed" in out
    assert cluster.patches() == [] and "puts" not in cluster.state()
    assert not any(method in ("POST", "DELETE", "PUT") for _, method, _ in cluster.admin_calls())


def test_put_refused_with_409_stops_the_switch(cluster: Cluster, capsys: Any) -> None:
    # The GET said the target's account matches, the PUT says otherwise (the pod changed).
    cluster.edit(lambda s: s.update(limiter_state={V1[0]: learned(18.0, 5.0)}, fail=[{
        "match": f"exec {V2[0]} -c zai-proxy -i -- zai-proxy admin PUT",
        "stderr": "zai-proxy admin: HTTP 409 proxy_account_mismatch: limiter state belongs to "
                  "another Z.AI account\ncommand terminated with exit code 1"}]))
    code, out = run(capsys, "--to", "v2")
    assert code == 1, out
    assert f"PUT /admin/limiter-state to {V2[0]}: HTTP 409 proxy_account_mismatch" in out
    assert "it belongs to another Z.AI account" in out
    assert cluster.patches() == []


def test_no_carry_limits_switches_without_admin_reads(cluster: Cluster, capsys: Any) -> None:
    cluster.edit(lambda s: s.update(admin_off=True))
    code, out = run(capsys, "--to", "v2", "--no-carry-limits")
    assert code == 0, out
    assert "learned ceilings of 'v1' are not carried (--no-carry-limits)" in out
    assert not any(path == "/admin/limiter-state" for _, _, path in cluster.admin_calls())
    # Retire needs the admin API too: it warns, and the traffic check has the last word.
    assert f"WARNING: could not retire {V1[0]}: ADMIN_API_KEY is not set in the pod" in out


def test_nothing_learned_yet_is_said(cluster: Cluster, capsys: Any) -> None:
    code, out = run(capsys, "--to", "v2")
    assert code == 0, out
    assert "no serving pod has learned a ceiling yet: 'v2' starts from its own " \
           "RATE_LIMIT_INITIAL" in out


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


def test_slice_endpoints() -> None:
    slices = {"items": [
        {"addressType": "IPv4", "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": True},
             "targetRef": {"kind": "Pod", "name": "a"}},
            {"addresses": ["10.0.0.2"], "conditions": {},  # unset means ready
             "targetRef": {"kind": "Pod", "name": "b"}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "serving": True,
                                                       "terminating": True},
             "targetRef": {"kind": "Pod", "name": "c"}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": False}},
        ]},
        {"addressType": "IPv6", "endpoints": [  # the same pods, other address family
            {"addresses": ["fd00::1"], "conditions": {"ready": True},
             "targetRef": {"kind": "Pod", "name": "a"}},
        ]},
        {"addressType": "IPv4", "endpoints": None},
    ]}
    assert kube_objects.slice_endpoints(slices) == ({"a", "b"}, {"10.0.0.4"})
    assert kube_objects.slice_endpoints({"items": []}) == (set(), set())


def test_requests_started_counts_finished_and_in_flight() -> None:
    text = (
        "# TYPE zai_proxy_requests_total counter\n"
        'zai_proxy_requests_total{route="/v1/a",status_code="200",deployment_variant="v1"} 7\n'
        'zai_proxy_requests_total{route="/v1/b",status_code="429",deployment_variant="v1"} 2\n'
        'zai_proxy_requests_created{route="/v1/a",status_code="200"} 1.7e9\n'
        "# TYPE zai_proxy_concurrent_requests gauge\n"
        'zai_proxy_concurrent_requests{deployment_variant="v1"} 3\n'
    )
    assert kube_objects.requests_started(text) == 12
    fresh = "# HELP zai_proxy_requests_total r\n# TYPE zai_proxy_requests_total counter\n"
    assert kube_objects.requests_started(fresh) == 0
    assert kube_objects.requests_started("up 1\n") is None
    assert kube_objects.requests_started("not { metrics") is None


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
