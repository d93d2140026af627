"""Prometheus series of one proxy app, in its own registry (names: docs/contracts.md).

Every series carries `deployment_variant`; the names follow the original Go zai-proxy where it
had them so existing Grafana panels keep working. Label values are bounded by the callers
(route templates, status codes, known models or `other`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from zai_proxy.wire.headers import DROPPED

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
COUNT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

V = "deployment_variant"


class Metrics:
    """All series, created in `registry` with the variant label bound where it is the only one."""

    def __init__(self, registry: CollectorRegistry, variant: str) -> None:
        self.registry = registry
        self.variant = variant
        r = registry
        self.build_info = Gauge("zai_proxy_build_info", "Build of this proxy (always 1)",
                                ["version", "commit", "build_time", V], registry=r)
        self.requests = Counter("zai_proxy_requests", "Requests finished, by outcome",
                                ["method", "route", "status_code", V], registry=r)
        self.request_duration = Histogram(
            "zai_proxy_request_duration_seconds", "Whole request as the proxy saw it",
            ["method", "route", "status_code", V], buckets=DURATION_BUCKETS, registry=r)
        self.upstream_ttfb = Histogram(
            "zai_proxy_upstream_time_to_first_byte_seconds", "Until upstream response headers",
            ["route", V], buckets=DURATION_BUCKETS, registry=r)
        self.upstream_duration = Histogram(
            "zai_proxy_upstream_duration_seconds", "Upstream request until its body ended",
            ["route", V], buckets=DURATION_BUCKETS, registry=r)
        self.request_size = Histogram(
            "zai_proxy_request_size_bytes", "Request body size",
            ["method", "route", V], buckets=SIZE_BUCKETS, registry=r)
        self.response_size = Histogram(
            "zai_proxy_response_size_bytes", "Response body size relayed to the client",
            ["method", "route", "status_code", V], buckets=SIZE_BUCKETS, registry=r)
        self.concurrent = Gauge("zai_proxy_concurrent_requests", "Requests in flight",
                                [V], registry=r).labels(variant)
        self.max_workers = Gauge("zai_proxy_max_workers", "In-flight cap (MAX_WORKERS)",
                                 [V], registry=r).labels(variant)
        self.utilization = Gauge("zai_proxy_worker_utilization_ratio", "In flight / cap",
                                 [V], registry=r).labels(variant)
        self.upstream_errors = Counter("zai_proxy_upstream_errors", "Upstream failures by type",
                                       ["error_type", V], registry=r)
        self.ready = Gauge("zai_proxy_ready", "1 while serving, 0 starting or draining",
                           [V], registry=r).labels(variant)
        # Token accounting.
        self.tokens = Counter("zai_proxy_tokens", "Tokens by direction, model and source",
                              ["direction", "model", "source", "pricing_tier", V], registry=r)
        self.cost = Counter("zai_proxy_estimated_cost_usd", "Estimated cost in USD",
                            ["direction", "model", "source", "pricing_tier", V], registry=r)
        self.token_count_duration = Histogram(
            "zai_proxy_token_count_duration_seconds", "Time spent counting tokens locally",
            [V], buckets=COUNT_BUCKETS, registry=r).labels(variant)
        # Admission control.
        self.upstream_429 = Counter("zai_proxy_upstream_429", "Upstream 429 answers by class",
                                    ["class", V], registry=r)
        self.rate = Gauge("zai_proxy_rate_limit_requests_per_second", "Current admitted rate",
                          [V], registry=r).labels(variant)
        self.ceiling = Gauge("zai_proxy_rate_limit_ceiling_requests_per_second",
                             "Learned upstream rate ceiling (0 = none learned)",
                             [V], registry=r).labels(variant)
        self.concurrency_limit = Gauge("zai_proxy_concurrency_limit", "Current in-flight limit",
                                       [V], registry=r).labels(variant)
        self.concurrency_ceiling = Gauge("zai_proxy_concurrency_ceiling",
                                         "Learned in-flight ceiling (0 = none learned)",
                                         [V], registry=r).labels(variant)
        self.admission_wait = Histogram("zai_proxy_rate_limit_wait_seconds",
                                        "Time waiting for admission", [V],
                                        buckets=WAIT_BUCKETS, registry=r).labels(variant)
        self.queue_depth = Gauge("zai_proxy_queue_depth", "Requests waiting for admission",
                                 [V], registry=r).labels(variant)
        self.floor = Gauge("zai_proxy_rate_limit_floor_requests_per_second",
                           "Highest rate proven clean (0 = none)", [V], registry=r).labels(variant)
        self.saturated = Counter("zai_proxy_rate_limit_saturated_seconds",
                                 "Seconds requests waited for the rate gate (it was the "
                                 "bottleneck)", [V], registry=r).labels(variant)
        self.window_saturation = Gauge(
            "zai_proxy_rate_limit_window_saturation_ratio",
            "Saturated share of the window behind the latest rate decision", [V],
            registry=r).labels(variant)
        self.window_throttled = Gauge(
            "zai_proxy_rate_limit_window_throttled_ratio",
            "Share of upstream 429s in the window behind the latest rate decision", [V],
            registry=r).labels(variant)
        self.measured_rate = Gauge(
            "zai_proxy_rate_limit_measured_requests_per_second",
            "Accepted req/s over the saturated time of the latest decided window (0 = none)",
            [V], registry=r).labels(variant)
        self.congestion_factor = Gauge(
            "zai_proxy_rate_limit_congestion_factor",
            "Share of the learned rate sent while the upstream is congested (1312); 1 = none",
            [V], registry=r).labels(variant)
        self.adjustments = Counter("zai_proxy_rate_limit_adjustments",
                                   "Rate controller decisions", ["direction", V], registry=r)
        self.rejections = Counter("zai_proxy_rate_limit_rejections", "Admission rejections",
                                  ["reason", V], registry=r)
        self.retries = Counter("zai_proxy_retry_attempts", "Retries by reason",
                               ["reason", V], registry=r)
        # Label children looked up once per label set: `labels()` is a lock and a dict per call.
        # Keys are bounded like the labels themselves (route templates, status codes).
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}
        self._route_children: dict[str, tuple[Any, Any]] = {}
        self.shared_degraded = Gauge("zai_proxy_shared_state_degraded",
                                     "1 while shared state is unreachable", [V],
                                     registry=r).labels(variant)
        # Server side (conn): retirement, client connections, exposure.
        self.retired = Gauge("zai_proxy_retired",
                             "1 while retired (POST /admin/retire): clients are asked to leave",
                             [V], registry=r).labels(variant)
        self.client_connections = Gauge("zai_proxy_client_connections",
                                        "Open client connections", [V],
                                        registry=r).labels(variant)
        self.connections_released = Counter(
            "zai_proxy_client_connections_released",
            "Idle keep-alive connections closed to release their client (retire, drain)",
            [V], registry=r).labels(variant)
        self.client_bounds = Counter(
            "zai_proxy_client_bound_exceeded",
            "Clients cut off or refused by a bound (MAX_HEADER_BYTES, CLIENT_READ_TIMEOUT_SECONDS, "
            "CLIENT_WRITE_TIMEOUT_SECONDS, MAX_CONNECTIONS)", ["bound", V], registry=r)
        self.auth_mode = Gauge("zai_proxy_auth_mode",
                               "1 for the client authentication mode in force: keys (client keys "
                               "required) or open (every client that can connect)",
                               ["mode", V], registry=r)
        self.upstream_simulated = Gauge("zai_proxy_upstream_simulated",
                                        "1 when serving the built-in simulator (ZAI_API_KEY "
                                        "unset), 0 against Z.AI", [V],
                                        registry=r).labels(variant)
        self.max_connections = Gauge("zai_proxy_max_connections",
                                     "Client connection cap (MAX_CONNECTIONS)", [V],
                                     registry=r).labels(variant)
        r.register(_UpstreamHeadersDropped(variant))

        # Plan quota (area: quota). `window` is five_hour or weekly; `client` a key's name.
        self.quota_used = Gauge("zai_proxy_quota_used_ratio",
                                "Share of the window's quota used (estimated now)",
                                ["window", V], registry=r)
        self.quota_remaining = Gauge("zai_proxy_quota_remaining",
                                     "Quota left in the window as polled, in the monitor's unit",
                                     ["window", V], registry=r)
        self.quota_reset = Gauge("zai_proxy_quota_reset_timestamp_seconds",
                                 "When the window's quota resets (epoch s)", ["window", V],
                                 registry=r)
        self.quota_eta = Gauge("zai_proxy_quota_exhaustion_eta_seconds",
                               "Seconds until the window's quota is spent at the recent burn "
                               "(+Inf: not burning)", ["window", V], registry=r)
        self.quota_rejections = Counter("zai_proxy_quota_rejections",
                                        "Requests answered locally because the quota is spent",
                                        [V], registry=r).labels(variant)
        self.quota_poll_errors = Counter("zai_proxy_quota_poll_errors",
                                         "Failed polls of the quota monitor", ["reason", V],
                                         registry=r)
        self.quota_poll_up = Gauge("zai_proxy_quota_poll_up",
                                   "1 while the last quota poll succeeded (absent: polling off)",
                                   [V], registry=r)
        self.quota_pacing_rate = Gauge("zai_proxy_quota_pacing_requests_per_second",
                                       "Account-level pacing rate (0 = pacing off or paused)",
                                       [V], registry=r).labels(variant)
        self.client_tokens = Counter("zai_proxy_client_tokens", "Tokens by client key name",
                                     ["client", "direction", V], registry=r)

        # Client keys (request path): the key file's reloads (PROXY_API_KEYS_FILE).
        self.auth_key_file_loaded = Gauge(
            "zai_proxy_auth_key_file_last_load_timestamp_seconds",
            "When the key file version in force was applied (epoch s)", [V],
            registry=r).labels(variant)
        self.auth_key_file_keys = Gauge("zai_proxy_auth_key_file_keys",
                                        "Keys from the key file in force", [V],
                                        registry=r).labels(variant)
        self.auth_key_file_error = Gauge(
            "zai_proxy_auth_key_file_error",
            "1 while the key file in force has a problem (an invalid line, empty, missing)",
            [V], registry=r).labels(variant)
        self.auth_key_file_errors = Counter(
            "zai_proxy_auth_key_file_errors", "Key file reloads applied with a problem", [V],
            registry=r).labels(variant)

    def set_auth_mode(self, mode: str) -> None:
        for known in ("keys", "open"):
            self.auth_mode.labels(known, self.variant).set(1 if known == mode else 0)

    def set_build(self, version: str, commit: str, build_time: str) -> None:
        self.build_info.labels(version, commit, build_time, self.variant).set(1)

    def set_in_flight(self, in_flight: int, cap: int) -> None:
        self.concurrent.set(in_flight)
        self.utilization.set(in_flight / cap if cap else 0.0)

    def upstream_error(self, error_type: str) -> None:
        self.upstream_errors.labels(error_type, self.variant).inc()

    def finished(self, method: str, route: str, status: int, duration: float,
                 request_bytes: int, response_bytes: int) -> None:
        """Record one finished request: called exactly once per request."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            code, v = str(status), self.variant
            children = self._request_children[key] = (
                self.requests.labels(method, route, code, v),
                self.request_duration.labels(method, route, code, v),
                self.request_size.labels(method, route, v),
                self.response_size.labels(method, route, code, v))
        children[0].inc()
        children[1].observe(duration)
        children[2].observe(request_bytes)
        children[3].observe(response_bytes)

    def upstream_timing(self, route: str, ttfb: float | None, duration: float | None) -> None:
        children = self._route_children.get(route)
        if children is None:
            children = self._route_children[route] = (
                self.upstream_ttfb.labels(route, self.variant),
                self.upstream_duration.labels(route, self.variant))
        if ttfb is not None:
            children[0].observe(ttfb)
        if duration is not None:
            children[1].observe(duration)


class _UpstreamHeadersDropped(Collector):
    """zai_proxy_upstream_headers_dropped_total: the process's `headers.DROPPED` count."""

    def __init__(self, variant: str) -> None:
        self.variant = variant

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "zai_proxy_upstream_headers_dropped",
            "Upstream response headers not relayed because HTTP forbids them (a name that is "
            "not a token, a control byte in the value)", labels=[V])
        family.add_metric([self.variant], DROPPED.total)
        yield family
