"""Prometheus series of one proxy app, in its own registry (names: docs/contracts.md).

Every series carries `deployment_variant`, bound here once: a series with only that label is
created as its child (`Gauge`, `Counter`, `Histogram` as prometheus-client has them), one with
more labels as a `Labelled` whose `labels()` takes the caller's own labels and appends the
variant, always last. A call site cannot set the variant: passing it as well is a wrong label
count and raises `TypeError`.

The names follow the original Go zai-proxy where it had them so existing Grafana panels keep
working. Label values are bounded by the callers (route templates, status codes, known models
or `other`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from zai_proxy.wire.headers import DROPPED

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SIZE_BUCKETS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
COUNT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

V = "deployment_variant"

S = TypeVar("S", Counter, Gauge, Histogram)


class Labelled(Generic[S]):
    """A labelled series with `deployment_variant` bound: `labels(*own)` is the child for the
    caller's own labels (`labelnames`, in order), the variant appended.

    Children are cached by their label values: after the first call `labels()` is one dict
    lookup (prometheus-client's own takes a lock and builds a tuple each time). The cache is
    bounded like the label values themselves.
    """

    __slots__ = ("_children", "_series", "_variant", "labelnames")
    _series: S
    _children: dict[tuple[str, ...], S]

    def __init__(self, series: S, labelnames: Sequence[str], variant: str) -> None:
        self._series = series
        self._variant = variant
        self._children = {}
        self.labelnames = tuple(labelnames)

    def labels(self, *own: str) -> S:
        child = self._children.get(own)
        if child is None:
            if len(own) != len(self.labelnames):
                raise TypeError(f"labels {self.labelnames} expected, got {own!r} "
                                f"({V} is bound by Metrics)")
            child = self._children[own] = self._series.labels(*own, self._variant)
        return child

    def remove(self, *own: str) -> None:
        """Drop the child of `own` from the exposition (KeyError when it does not exist)."""
        self._children.pop(own, None)
        self._series.remove(*own, self._variant)


class Metrics:
    """All series, created in `registry` with `variant` bound (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry, variant: str) -> None:
        self.registry = registry
        self.variant = variant
        one, each = self._single, self._labelled
        self.build_info = each(Gauge, "zai_proxy_build_info", "Build of this proxy (always 1)",
                               ["version", "commit", "build_time"])
        self.requests = each(Counter, "zai_proxy_requests", "Requests finished, by outcome",
                             ["method", "route", "status_code"])
        self.request_duration = each(Histogram, "zai_proxy_request_duration_seconds",
                                     "Whole request as the proxy saw it",
                                     ["method", "route", "status_code"], buckets=DURATION_BUCKETS)
        self.upstream_ttfb = each(Histogram, "zai_proxy_upstream_time_to_first_byte_seconds",
                                  "Until upstream response headers", ["route"],
                                  buckets=DURATION_BUCKETS)
        self.upstream_duration = each(Histogram, "zai_proxy_upstream_duration_seconds",
                                      "Upstream request until its body ended", ["route"],
                                      buckets=DURATION_BUCKETS)
        self.request_size = each(Histogram, "zai_proxy_request_size_bytes", "Request body size",
                                 ["method", "route"], buckets=SIZE_BUCKETS)
        self.response_size = each(Histogram, "zai_proxy_response_size_bytes",
                                  "Response body size relayed to the client",
                                  ["method", "route", "status_code"], buckets=SIZE_BUCKETS)
        self.concurrent = one(Gauge, "zai_proxy_concurrent_requests", "Requests in flight")
        self.max_workers = one(Gauge, "zai_proxy_max_workers", "In-flight cap (MAX_WORKERS)")
        self.utilization = one(Gauge, "zai_proxy_worker_utilization_ratio", "In flight / cap")
        self.upstream_errors = each(Counter, "zai_proxy_upstream_errors",
                                    "Upstream failures by type", ["error_type"])
        self.ready = one(Gauge, "zai_proxy_ready", "1 while serving, 0 starting or draining")
        # Token accounting.
        self.tokens = each(Counter, "zai_proxy_tokens", "Tokens by direction, model and source",
                           ["direction", "model", "source", "pricing_tier"])
        self.cost = each(Counter, "zai_proxy_estimated_cost_usd", "Estimated cost in USD",
                         ["direction", "model", "source", "pricing_tier"])
        self.token_count_duration = one(Histogram, "zai_proxy_token_count_duration_seconds",
                                        "Time spent counting tokens locally",
                                        buckets=COUNT_BUCKETS)
        # Admission control.
        self.upstream_429 = each(Counter, "zai_proxy_upstream_429",
                                 "Upstream 429 answers by class", ["class"])
        # A Z.AI business code, judged by its row, by what carried it: 429, 4xx, 200, stream.
        self.business_errors = each(Counter, "zai_proxy_upstream_business_errors",
                                    "Upstream answers carrying a Z.AI business error, by class "
                                    "and carrier (429, 4xx, 200, stream)", ["class", "carrier"])
        self.stream_errors = each(Counter, "zai_proxy_upstream_stream_errors",
                                  "Upstream streams that carried an error event or ended with an "
                                  "abnormal finish reason, by class", ["class"])
        self.rate = one(Gauge, "zai_proxy_rate_limit_requests_per_second", "Current admitted rate")
        self.ceiling = one(Gauge, "zai_proxy_rate_limit_ceiling_requests_per_second",
                           "Learned upstream rate ceiling (0 = none learned)")
        self.concurrency_limit = one(Gauge, "zai_proxy_concurrency_limit",
                                     "Current in-flight limit")
        self.concurrency_ceiling = one(Gauge, "zai_proxy_concurrency_ceiling",
                                       "Learned in-flight ceiling (0 = none learned)")
        self.admission_wait = one(Histogram, "zai_proxy_rate_limit_wait_seconds",
                                  "Time waiting for admission", buckets=WAIT_BUCKETS)
        self.queue_depth = one(Gauge, "zai_proxy_queue_depth", "Requests waiting for admission")
        self.floor = one(Gauge, "zai_proxy_rate_limit_floor_requests_per_second",
                         "Highest rate proven clean (0 = none)")
        self.saturated = one(Counter, "zai_proxy_rate_limit_saturated_seconds",
                             "Seconds requests waited for the rate gate (it was the bottleneck)")
        self.window_saturation = one(
            Gauge, "zai_proxy_rate_limit_window_saturation_ratio",
            "Saturated share of the window behind the latest rate decision")
        self.window_throttled = one(
            Gauge, "zai_proxy_rate_limit_window_throttled_ratio",
            "Share of upstream 429s in the window behind the latest rate decision")
        self.measured_rate = one(
            Gauge, "zai_proxy_rate_limit_measured_requests_per_second",
            "Accepted req/s over the saturated time of the latest decided window (0 = none)")
        self.congestion_factor = one(
            Gauge, "zai_proxy_rate_limit_congestion_factor",
            "Share of the learned rate sent while the upstream is congested (1312); 1 = none")
        self.adjustments = each(Counter, "zai_proxy_rate_limit_adjustments",
                                "Rate controller decisions", ["direction"])
        self.rejections = each(Counter, "zai_proxy_rate_limit_rejections",
                               "Admission rejections", ["reason"])
        self.retries = each(Counter, "zai_proxy_retry_attempts", "Retries by reason", ["reason"])
        # The children of one finished request, looked up together once per label set. Keys are
        # bounded like the labels themselves (route templates, status codes).
        self._request_children: dict[tuple[str, str, int],
                                     tuple[Counter, Histogram, Histogram, Histogram]] = {}
        self._route_children: dict[str, tuple[Histogram, Histogram]] = {}
        self.shared_degraded = one(Gauge, "zai_proxy_shared_state_degraded",
                                   "1 while shared state is unreachable")
        # Server side (conn): retirement, client connections, exposure.
        self.retired = one(Gauge, "zai_proxy_retired",
                           "1 while retired (POST /admin/retire): clients are asked to leave")
        self.client_connections = one(Gauge, "zai_proxy_client_connections",
                                      "Open client connections")
        self.connections_released = one(
            Counter, "zai_proxy_client_connections_released",
            "Idle keep-alive connections closed to release their client (retire, drain)")
        self.client_bounds = each(
            Counter, "zai_proxy_client_bound_exceeded",
            "Clients cut off or refused by a bound (MAX_HEADER_BYTES, CLIENT_READ_TIMEOUT_SECONDS, "
            "CLIENT_WRITE_TIMEOUT_SECONDS, MAX_CONNECTIONS)", ["bound"])
        self.auth_mode = each(Gauge, "zai_proxy_auth_mode",
                              "1 for the client authentication mode in force: keys (client keys "
                              "required) or open (every client that can connect)", ["mode"])
        self.upstream_simulated = one(Gauge, "zai_proxy_upstream_simulated",
                                      "1 when serving the built-in simulator (ZAI_API_KEY "
                                      "unset), 0 against Z.AI")
        self.max_connections = one(Gauge, "zai_proxy_max_connections",
                                   "Client connection cap (MAX_CONNECTIONS)")
        registry.register(_UpstreamHeadersDropped(variant))

        # Plan quota (area: quota). `window` is five_hour, weekly or monthly (the month's tool
        # calls); `unit` what the budget counts: tokens, credits or calls; `client` a key's name.
        self.quota_used = each(Gauge, "zai_proxy_quota_used_ratio",
                               "Share of the window's quota used (estimated now)",
                               ["window", "unit"])
        self.quota_remaining = each(Gauge, "zai_proxy_quota_remaining",
                                    "Quota left in the window as polled, in `unit`",
                                    ["window", "unit"])
        self.quota_reset = each(Gauge, "zai_proxy_quota_reset_timestamp_seconds",
                                "When the window's quota resets (epoch s)", ["window", "unit"])
        self.quota_eta = each(Gauge, "zai_proxy_quota_exhaustion_eta_seconds",
                              "Seconds until the window's quota is spent at the recent burn "
                              "(+Inf: not burning)", ["window", "unit"])
        self.quota_rejections = one(Counter, "zai_proxy_quota_rejections",
                                    "Requests answered locally because the quota is spent")
        self.quota_poll_errors = each(Counter, "zai_proxy_quota_poll_errors",
                                      "Failed polls of the quota monitor", ["reason"])
        # No own label, yet `Labelled`: the series is absent until the first poll sets it.
        self.quota_poll_up = each(Gauge, "zai_proxy_quota_poll_up",
                                  "1 while the last quota poll succeeded (absent: polling off)",
                                  [])
        self.quota_pacing_rate = one(Gauge, "zai_proxy_quota_pacing_requests_per_second",
                                     "Account-level pacing rate (0 = pacing off or paused)")
        # The account stopped by Z.AI (`code`: the stop code that said so). The series stays at
        # 0 once a probe finds the stop lifted, so an alert on it resolves rather than vanishes.
        self.account_stopped = each(Gauge, "zai_proxy_account_stopped",
                                    "1 while Z.AI says the account is stopped (plan expired, no "
                                    "subscription, fair-use restriction, no balance): requests "
                                    "are answered locally; 0 after it was lifted", ["code"])
        self.client_tokens = each(Counter, "zai_proxy_client_tokens",
                                  "Tokens by client key name", ["client", "direction"])
        # Per-client budgets (`five_hour_share`, `weekly_share`): used share / allowed share of
        # each window's budget, and the requests refused for it (`window`: five_hour, weekly).
        self.client_budget_used = each(Gauge, "zai_proxy_client_budget_used_ratio",
                                       "Share of the window's budget the client used, over its "
                                       "share (1: its share is spent)", ["client", "window"])
        self.client_budget_refusals = each(Counter, "zai_proxy_client_budget_refusals",
                                           "Requests answered 429 locally because the client "
                                           "used its share of the window's budget (or, paced, "
                                           "ran ahead of it)", ["client", "window"])

        # Quota monitor entries not understood (area: quota), by why: not_an_object,
        # unknown_type, unknown_unit, no_numbers. Counted per poll; /health keeps them raw.
        self.quota_unparsed = each(Counter, "zai_proxy_quota_unparsed",
                                   "Quota monitor limit entries not understood, per poll",
                                   ["reason"])

        # Admission per client (limiter): `client` is a key's name or fingerprint, `anonymous`
        # on an open proxy (bounded like `client_tokens`; hidden with METRICS_CLIENT_NAMES).
        # Admitted: a plain count per client, exposed at scrape (`_ClientAdmitted`): a counter
        # child's lock on every admission would be the hot path's most expensive line.
        self.client_admitted_counts: dict[str, int] = {}
        registry.register(_ClientAdmitted(variant, self.client_admitted_counts))
        self.client_queue_wait = each(Histogram, "zai_proxy_client_queue_wait_seconds",
                                      "Time an admitted attempt that queued waited, by client",
                                      ["client"], buckets=WAIT_BUCKETS)
        self.client_rejections = each(Counter, "zai_proxy_client_rejections",
                                      "Admission rejections by client and reason",
                                      ["client", "reason"])
        self.client_share = each(Gauge, "zai_proxy_client_rate_share_ratio",
                                 "Fair share of the dispatches a client with waiting requests "
                                 "gets now, from the weights (absent: nothing waiting)",
                                 ["client"])
        self._client_waits: dict[str, Histogram] = {}

        # Client keys (request path): the key file's reloads (PROXY_API_KEYS_FILE).
        self.auth_key_file_loaded = one(
            Gauge, "zai_proxy_auth_key_file_last_load_timestamp_seconds",
            "When the key file version in force was applied (epoch s)")
        self.auth_key_file_keys = one(Gauge, "zai_proxy_auth_key_file_keys",
                                      "Keys from the key file in force")
        self.auth_key_file_error = one(
            Gauge, "zai_proxy_auth_key_file_error",
            "1 while the key file in force has a problem (an invalid line, empty, missing)")
        self.auth_key_file_errors = one(Counter, "zai_proxy_auth_key_file_errors",
                                        "Key file reloads applied with a problem")
        # The clients file's reloads (PROXY_CLIENTS_FILE), the same four series.
        self.clients_file_loaded = one(
            Gauge, "zai_proxy_clients_file_last_load_timestamp_seconds",
            "When the clients file version in force was applied (epoch s)")
        self.clients_file_clients = one(Gauge, "zai_proxy_clients_file_clients",
                                        "Clients from the clients file in force")
        self.clients_file_error = one(
            Gauge, "zai_proxy_clients_file_error",
            "1 while the clients file in force has a problem (an invalid client, empty, missing)")
        self.clients_file_errors = one(Counter, "zai_proxy_clients_file_errors",
                                       "Clients file reloads applied with a problem")

    def _single(self, kind: type[S], name: str, doc: str, **options: Any) -> S:
        """A series whose only label is the variant: its one child."""
        return kind(name, doc, [V], registry=self.registry, **options).labels(self.variant)

    def _labelled(self, kind: type[S], name: str, doc: str, labelnames: Sequence[str],
                  **options: Any) -> Labelled[S]:
        """A series with `labelnames` and then the variant."""
        series = kind(name, doc, [*labelnames, V], registry=self.registry, **options)
        return Labelled(series, labelnames, self.variant)

    def set_auth_mode(self, mode: str) -> None:
        for known in ("keys", "open"):
            self.auth_mode.labels(known).set(1 if known == mode else 0)

    def set_build(self, version: str, commit: str, build_time: str) -> None:
        self.build_info.labels(version, commit, build_time).set(1)

    def set_in_flight(self, in_flight: int, cap: int) -> None:
        self.concurrent.set(in_flight)
        self.utilization.set(in_flight / cap if cap else 0.0)

    def client_admitted(self, client: str, waited: float) -> None:
        """One attempt of `client` admitted after `waited` seconds (children cached). Only
        attempts that queued are observed in the wait histogram: the many admitted at once
        would cost the hot path an observation each and bury the waits in the first bucket."""
        counts = self.client_admitted_counts
        counts[client] = counts.get(client, 0) + 1
        if waited:
            child = self._client_waits.get(client)
            if child is None:
                child = self._client_waits[client] = self.client_queue_wait.labels(client)
            child.observe(waited)

    def upstream_error(self, error_type: str) -> None:
        self.upstream_errors.labels(error_type).inc()

    def finished(self, method: str, route: str, status: int, duration: float,
                 request_bytes: int, response_bytes: int) -> None:
        """Record one finished request: called exactly once per request."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            code = str(status)
            children = self._request_children[key] = (
                self.requests.labels(method, route, code),
                self.request_duration.labels(method, route, code),
                self.request_size.labels(method, route),
                self.response_size.labels(method, route, code))
        children[0].inc()
        children[1].observe(duration)
        children[2].observe(request_bytes)
        children[3].observe(response_bytes)

    def upstream_timing(self, route: str, ttfb: float | None, duration: float | None) -> None:
        children = self._route_children.get(route)
        if children is None:
            children = self._route_children[route] = (self.upstream_ttfb.labels(route),
                                                       self.upstream_duration.labels(route))
        if ttfb is not None:
            children[0].observe(ttfb)
        if duration is not None:
            children[1].observe(duration)


class _ClientAdmitted(Collector):
    """zai_proxy_client_admitted_total{client}: upstream attempts admitted, by client."""

    def __init__(self, variant: str, counts: dict[str, int]) -> None:
        self.variant, self.counts = variant, counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("zai_proxy_client_admitted",
                                     "Upstream attempts admitted, by client", labels=["client", V])
        for client, count in list(self.counts.items()):
            family.add_metric([client, self.variant], count)
        yield family


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
