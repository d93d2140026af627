"""Settings: read once from the environment (and CLI flags), validated, immutable.

Every setting is declared once, in `Settings`, with the shared idiom of `zai_proxy.settings`
(variable, flag of `zai-proxy serve`, parser, default, doc text, section); the environment
variable names follow the original Go zai-proxy where it had one. `load_settings` raises
`ConfigError` naming the variable (or flag) and the expected form for any invalid value: there is
no silent fallback to a default. `settings_markdown` writes docs/configuration.md from this table
and the simulator's and dashboard's.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zai_proxy.core.errors import ConfigError
from zai_proxy.settings import (
    Section,
    SettingError,
    fields_of,
    markdown_table,
    non_negative,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    parse_list,
    parse_size,
    parse_url,
    positive,
    read,
)

__all__ = [
    "Settings", "load_settings", "parse_bool", "parse_duration", "parse_list", "parse_size",
    "parse_url", "setting_fields", "settings_markdown",
]

def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError("a fraction between 0 and 1, such as 0.02")
    return value


def _at_least_one(text: str) -> float:
    value = parse_float(text)
    if not (1 <= value < math.inf):
        raise ValueError("a number >= 1")
    return value


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _variant(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", text.strip()):
        raise ValueError("a short name of letters, digits, '.', '_' or '-' such as v1")
    return text.strip()


def _storage_uri(text: str) -> str:
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme not in {"memory", "redis", "rediss", "async+redis", "async+rediss"}:
        raise ValueError("memory:// or redis://host:port/db")
    return text.strip()


def _optional_url(text: str) -> str:
    return parse_url(text) if text.strip() else ""


def _pacing_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in {"off", "even"}:
        raise ValueError("off or even")
    return mode


def parse_upstream_key(text: str) -> str:
    """The upstream key, stripped of surrounding blanks (a Secret file's final newline).

    What is left must be printable ASCII without spaces: a key with a line break, a control
    character or a non-ASCII character inside cannot be sent in an `Authorization` header, and a
    proxy started with one would say ready and fail every request. The error never shows the key.
    Empty after stripping is left to `load_settings` ("set but empty").
    """
    key = text.strip()
    if any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise ValueError("printable ASCII without spaces, line breaks or control characters "
                         "inside (surrounding blanks and a final newline are stripped)")
    return key


def _trusted_peers(text: str) -> tuple[str, ...]:
    """FORWARDED_ALLOW_IPS: addresses or networks (`*` = any peer, never in production)."""
    items = parse_list(text)
    for item in items:
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError("IP addresses or networks such as 10.0.0.0/8,127.0.0.1, "
                                 "or *") from None
    return items


_SERVER = Section("Server and upstream")
_REQUEST = Section("Request path")
_PROCESS = Section("Process, build and metrics")
_ACCOUNTING = Section("Token accounting")
_ADMISSION = Section("Admission control")
_CONNECTIONS = Section("Client connections")
_QUOTA = Section("Plan quota")


@dataclass(frozen=True)
class Settings:
    """Every setting of the proxy, validated. Build with `load_settings`."""

    host: str = _SERVER.setting("HOST", str, "address to listen on", default="0.0.0.0")
    port: int = _SERVER.setting("PORT", positive(parse_int), "port to listen on", default=8080)
    zai_api_key: str = _SERVER.setting(
        "ZAI_API_KEY", parse_upstream_key, "upstream API key; unset = run against the built-in "
        "simulator (set but empty: refused). Surrounding blanks and a final newline are "
        "stripped; any other whitespace, control or non-ASCII character inside is refused",
        default="", secret=True)
    zai_target_url: str = _SERVER.setting(
        "ZAI_TARGET_URL", parse_url, "OpenAI-compatible upstream base",
        default="https://api.z.ai/api/paas/v4")
    zai_anthropic_url: str = _SERVER.setting(
        "ZAI_ANTHROPIC_URL", parse_url, "Anthropic-compatible upstream base",
        default="https://api.z.ai/api/anthropic")
    deployment_variant: str = _SERVER.setting(
        "DEPLOYMENT_VARIANT", _variant, "value of the deployment_variant label",
        default="production")
    proxy_api_keys: tuple[str, ...] = _SERVER.setting(
        "PROXY_API_KEYS", parse_list, "comma-separated client keys, each `name:key` or `key`; "
        "unset (and no file) = open proxy", default=(), secret=True)
    proxy_api_keys_file: str = _SERVER.setting(
        "PROXY_API_KEYS_FILE", str, "file with one client key (`name:key` or `key`) per line, "
        "re-read when it changes", default="")
    proxy_clients_file: str = _SERVER.setting(
        "PROXY_CLIENTS_FILE", str, "TOML file declaring the clients (`[[client]]`: name, keys or "
        "keys_file, weight, priority, max_in_flight, budget shares; docs/clients.md), re-read "
        "when it changes; unset = every key a batch client of weight 1", default="")
    max_request_bytes: int = _SERVER.setting(
        "MAX_REQUEST_BYTES", positive(parse_size), "largest request body accepted",
        default=10 * 1024 * 1024)
    passthrough_unknown: bool = _REQUEST.setting(
        "PASSTHROUGH_UNKNOWN", parse_bool,
        "forward /v1 paths outside the route table (only GET, HEAD, POST, PUT, PATCH, DELETE; "
        "never counted); off = 404", default=False)
    max_response_bytes: int = _REQUEST.setting(
        "MAX_RESPONSE_BYTES", positive(parse_size),
        "largest non-stream answer read whole to count its tokens (502 past it); other large "
        "answers are relayed as they arrive", default=32 * 1024 * 1024)
    max_workers: int = _REQUEST.setting(
        "MAX_WORKERS", positive(parse_int), "cap on requests in flight upstream", default=10)
    connect_timeout: float = _REQUEST.setting(
        "UPSTREAM_CONNECT_TIMEOUT", positive(parse_duration), "upstream connect timeout",
        default=10.0)
    first_byte_timeout: float = _REQUEST.setting(
        "UPSTREAM_FIRST_BYTE_TIMEOUT", positive(parse_duration),
        "wait for upstream response headers (non-stream calls send them when done)",
        default=300.0)
    chunk_timeout: float = _REQUEST.setting(
        "UPSTREAM_CHUNK_TIMEOUT", positive(parse_duration),
        "longest silence between two body chunks from upstream", default=120.0)
    upstream_pool_size: int = _REQUEST.setting(
        "UPSTREAM_POOL_SIZE", positive(parse_int),
        "upstream connections (at least MAX_WORKERS are always allowed)", default=256)
    shutdown_drain_seconds: float = _REQUEST.setting(
        "SHUTDOWN_DRAIN_SECONDS", non_negative(parse_duration),
        "after SIGTERM: keep serving with /ready=503 this long", default=5.0)
    shutdown_grace_seconds: float = _REQUEST.setting(
        "SHUTDOWN_GRACE_SECONDS", non_negative(parse_duration),
        "then: wait this long for in-flight requests", default=60.0)
    log_level: str = _PROCESS.setting("LOG_LEVEL", _log_level, "log level", default="INFO")
    simulator_port: int = _PROCESS.setting(
        "SIMULATOR_PORT", non_negative(parse_int),
        "port of the built-in simulator when ZAI_API_KEY is unset (0 = any free port)", default=0)
    version: str = _PROCESS.setting("ZAI_PROXY_VERSION", str, "build version", default="")
    commit: str = _PROCESS.setting("ZAI_PROXY_COMMIT", str, "build commit", default="unknown")
    build_time: str = _PROCESS.setting("ZAI_PROXY_BUILD_TIME", str, "build time", default="unknown")
    metrics_client_names: bool = _PROCESS.setting(
        "METRICS_CLIENT_NAMES", parse_bool,
        "show the per-client series (zai_proxy_client_*{client}) on /metrics to every scrape; "
        "off = only to a scrape that presents ADMIN_API_KEY (the dashboard presents it when "
        "given SCRAPE_KEY)", default=True)
    token_counting_enabled: bool = _ACCOUNTING.setting(
        "TOKEN_COUNTING_ENABLED", parse_bool, "count tokens and cost", default=True)
    tokenizer_encoding: str = _ACCOUNTING.setting(
        "TOKENIZER_ENCODING", str, "tiktoken encoding for estimates", default="cl100k_base")
    tokenizer_model: str = _ACCOUNTING.setting(
        "TOKENIZER_MODEL", str, "model label when a request names none", default="glm-4")
    tiktoken_cache_dir: str = _ACCOUNTING.setting(
        "TIKTOKEN_CACHE_DIR", str, "operator-supplied tiktoken encoding files", default="")
    models: tuple[str, ...] = _ACCOUNTING.setting(
        "MODELS", parse_list, "extra known model names (besides the pricing table)", default=())
    pricing_file: str = _ACCOUNTING.setting(
        "PRICING_FILE", str, "JSON pricing table merged over the built-in prices", default="")
    peak_hours: str = _ACCOUNTING.setting(
        "PEAK_HOURS", str, "peak window HH:MM-HH:MM, 'off', or empty = the pricing table's",
        default="")
    peak_timezone: str = _ACCOUNTING.setting(
        "PEAK_TIMEZONE", str, "IANA time zone of the peak window", default="Asia/Shanghai")
    peak_multiplier: float = _ACCOUNTING.setting(
        "PEAK_MULTIPLIER", positive(parse_float), "price multiplier inside the peak window",
        default=2.0)
    rate_limit_initial: float = _ADMISSION.setting(
        "RATE_LIMIT_INITIAL", positive(parse_float), "starting request rate (req/s) with nothing "
        "learned yet; tried like a probe", default=10.0)
    rate_limit_min: float = _ADMISSION.setting(
        "RATE_LIMIT_MIN", positive(parse_float), "lowest request rate (req/s)", default=1.0)
    rate_limit_max: float = _ADMISSION.setting(
        "RATE_LIMIT_MAX", positive(parse_float), "highest request rate (req/s)", default=50.0)
    rate_limit_window: float = _ADMISSION.setting(
        "RATE_LIMIT_WINDOW", positive(parse_duration), "controller window", default=30.0)
    rate_limit_burst: float = _ADMISSION.setting(
        "RATE_LIMIT_BURST", _at_least_one, "upstream attempts that may leave back to back after "
        "an idle spell (1 = always evenly spaced at the rate)", default=1.0)
    rate_limit_upstream_burst: float = _ADMISSION.setting(
        "RATE_LIMIT_UPSTREAM_BURST", non_negative(parse_float), "seconds of rate the upstream lets "
        "an account bank while it sends below the ceiling (0 = none; probes are discounted by "
        "it)", default=0.0)
    rate_limit_hold_margin: float = _ADMISSION.setting(
        "RATE_LIMIT_HOLD_MARGIN", _fraction, "back off this fraction under a measured ceiling",
        default=0.02)
    rate_limit_probe_interval: int = _ADMISSION.setting(
        "RATE_LIMIT_PROBE_INTERVAL", positive(parse_int), "clean saturated windows before probing "
        "above the learned ceiling (doubles after a failed probe, up to twice this)",
        default=3)
    rate_limit_state_file: str = _ADMISSION.setting(
        "RATE_LIMIT_STATE_FILE", str, "where learned ceilings persist: a path ('{account}' is "
        "replaced by the account hash), 'auto' = $XDG_STATE_HOME (or ~/.local/state)"
        "/zai-proxy/limiter-{account}.json, '' = off", default="auto")
    rate_limit_state_max_age: float = _ADMISSION.setting(
        "RATE_LIMIT_STATE_MAX_AGE", positive(parse_duration), "ignore older state",
        default=6 * 3600.0)
    rate_limit_storage_uri: str = _ADMISSION.setting(
        "RATE_LIMIT_STORAGE_URI", _storage_uri, "memory:// or redis://host:port/db (shared by "
        "every replica of every variant of the account)", default="memory://")
    rate_limit_replicas: int = _ADMISSION.setting(
        "RATE_LIMIT_REPLICAS", positive(parse_int), "replicas sharing the account (without Redis "
        "each takes 1/N of it; with Redis, the fallback share while Redis is away)",
        default=1)
    queue_max: int = _ADMISSION.setting(
        "QUEUE_MAX", non_negative(parse_int), "requests that may wait for admission", default=1000)
    queue_timeout_seconds: float = _ADMISSION.setting(
        "QUEUE_TIMEOUT_SECONDS", positive(parse_duration), "longest admission wait",
        default=60.0)
    admission_batch_floor: float = _ADMISSION.setting(
        "ADMISSION_BATCH_FLOOR", _fraction, "share of the dispatches batch clients keep while "
        "interactive ones wait too (0 = interactive always first)", default=0.1)
    max_retries: int = _ADMISSION.setting(
        "MAX_RETRIES", non_negative(parse_int), "retries after the first attempt", default=3)
    client_rate_limits: tuple[str, ...] = _ADMISSION.setting(
        "CLIENT_RATE_LIMITS", parse_list, "per-client limits, e.g. 600/minute", default=())
    admin_api_key: str = _ADMISSION.setting(
        "ADMIN_API_KEY", str, "enables /admin routes with this key", default="", secret=True)
    max_header_bytes: int = _CONNECTIONS.setting(
        "MAX_HEADER_BYTES", positive(parse_size),
        "largest request line + headers accepted (answered 431)", default=64 * 1024)
    client_read_timeout: float = _CONNECTIONS.setting(
        "CLIENT_READ_TIMEOUT_SECONDS", positive(parse_duration),
        "a request's headers and body must arrive within this from its first byte (else 408)",
        default=30.0)
    client_write_timeout: float = _CONNECTIONS.setting(
        "CLIENT_WRITE_TIMEOUT_SECONDS", positive(parse_duration),
        "longest a client may leave the response unread (slow reader) before it is cut off",
        default=60.0)
    client_send_buffer: int = _CONNECTIONS.setting(
        "CLIENT_SEND_BUFFER_BYTES", non_negative(parse_size),
        "kernel send buffer per client socket (bounds what a stalled reader pins; "
        "0 = kernel autotuning, up to megabytes)", default=256 * 1024)
    max_connections: int = _CONNECTIONS.setting(
        "MAX_CONNECTIONS", positive(parse_int),
        "open client connections served; more get 503 (probes, /metrics and /admin still served)",
        default=4096)
    client_idle_timeout: float = _CONNECTIONS.setting(
        "CLIENT_IDLE_TIMEOUT_SECONDS", positive(parse_duration),
        "an open connection with no request on it (fresh or kept alive) is closed after this",
        default=30.0)
    forwarded_allow_ips: tuple[str, ...] = _CONNECTIONS.setting(
        "FORWARDED_ALLOW_IPS", _trusted_peers,
        "peer addresses or networks whose X-Forwarded-For/-Proto are trusted for the client "
        "address (e.g. 10.0.0.0/8); unset = trust none, the TCP peer is the client", default=())
    zai_monitor_url: str = _QUOTA.setting(
        "ZAI_MONITOR_URL", _optional_url, "quota monitor base (GET /api/monitor/usage/quota/limit);"
        " unset = scheme and host of ZAI_TARGET_URL (https://api.z.ai)", default="")
    quota_poll_seconds: float = _QUOTA.setting(
        "QUOTA_POLL_SECONDS", non_negative(parse_duration),
        "poll the quota monitor this often (0 = off)", default=60.0)
    quota_poll_timeout: float = _QUOTA.setting(
        "QUOTA_POLL_TIMEOUT", positive(parse_duration), "longest wait for one quota poll",
        default=10.0)
    quota_local_reject: bool = _QUOTA.setting(
        "QUOTA_LOCAL_REJECT", parse_bool, "answer 429 locally (no upstream attempt) while a "
        "five-hour or weekly quota is spent, until its reset", default=True)
    quota_pacing: str = _QUOTA.setting(
        "QUOTA_PACING", _pacing_mode, "off, or even: cap the admitted rate so the quota left "
        "lasts until its reset", default="off")
    quota_pacing_exempt: tuple[str, ...] = _QUOTA.setting(
        "QUOTA_PACING_EXEMPT", parse_list, "client key names never paced (comma-separated)",
        default=())
    quota_burn_window: float = _QUOTA.setting(
        "QUOTA_BURN_WINDOW", positive(parse_duration),
        "burn rate and time to exhaustion are measured over this much recent time",
        default=900.0)
    account_stop_probe_seconds: float = _QUOTA.setting(
        "ACCOUNT_STOP_PROBE_SECONDS", positive(parse_duration),
        "while Z.AI says the account is stopped (plan expired, no subscription, fair-usage "
        "restriction, no balance) requests are answered locally; one goes upstream this often "
        "to notice when the stop is lifted", default=60.0)
    # Not read from the environment: set by `serve` when it starts the built-in simulator.
    upstream_simulated: bool = False

    @property
    def needs_simulator(self) -> bool:
        """True when no upstream key is set: `serve` starts the built-in simulator."""
        return not self.zai_api_key

    @property
    def monitor_url(self) -> str:
        """Base of Z.AI's quota monitor: ZAI_MONITOR_URL, else ZAI_TARGET_URL's origin."""
        if self.zai_monitor_url:
            return self.zai_monitor_url
        parts = urlsplit(self.zai_target_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def account(self) -> str:
        """The Z.AI account this proxy spends (hash of key + OpenAI base; see `account`)."""
        from zai_proxy.zai.account import account_id

        return account_id(self.zai_api_key, self.zai_target_url)


def setting_fields() -> list[tuple[str, str, str, Any]]:
    """(attribute, env name, help, default) for every setting read from the environment."""
    return [(f.attr, f.env, f.doc, f.default) for f in fields_of(Settings) if f.env]


def load_settings(env: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate settings from `env`, with CLI `overrides` (attribute -> text) on top.

    Raises ConfigError naming the variable (or the flag it came from) and the expected form.
    """
    try:
        values = read(Settings, env, overrides)
    except SettingError as exc:
        raise ConfigError(str(exc)) from None
    # Unset means the offline simulator (README); set but empty is a broken Secret or a
    # typo, and must never silently turn a production proxy into a simulator.
    if "ZAI_API_KEY" in env and not env["ZAI_API_KEY"].strip():
        raise ConfigError("ZAI_API_KEY is set but empty: set the upstream key, or unset "
                          "ZAI_API_KEY to run against the built-in simulator")
    settings = Settings(**values)
    _check_keys(settings)
    return _validated(settings)


ADMIN_KEY_MIN_LENGTH = 16


def _check_pricing_file(path: str) -> None:
    """Load PRICING_FILE once at startup, so a bad one stops the program with its name."""
    from zai_proxy.accounting.pricing import PricingTable

    try:
        PricingTable.load(path)
    except (ValueError, RecursionError) as exc:  # pricing reports I/O errors as ValueError
        raise ConfigError(f"PRICING_FILE is invalid: {exc}") from None


def _check_keys(settings: Settings) -> None:
    """PROXY_API_KEYS entries and the key file must parse (the file is read again, and
    whenever it changes, by `ClientAuth`)."""
    from zai_proxy.clients.auth import parse_entries, read_key_file

    try:
        inline = parse_entries(settings.proxy_api_keys)
    except ValueError as exc:
        raise ConfigError(f"PROXY_API_KEYS is invalid: {exc}") from None
    path = settings.proxy_api_keys_file
    listed = [(e.key, "PROXY_API_KEYS") for e in inline]
    if path:
        try:
            listed.extend((e.key, "PROXY_API_KEYS_FILE") for e in read_key_file(path))
        except OSError as exc:
            raise ConfigError(f"PROXY_API_KEYS_FILE={path!r} cannot be read: "
                              f"{exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"PROXY_API_KEYS_FILE={path!r} {exc}") from None
    if settings.proxy_clients_file:
        _check_clients(settings.proxy_clients_file, listed)


def _check_clients(path: str, listed: list[tuple[str, str]]) -> None:
    """The clients file must be valid whole, and none of its keys may also be one of `listed`
    (key, the variable it is in): a key stands for one client."""
    from zai_proxy.clients.clients_file import load_clients_file

    try:
        clients = load_clients_file(path).value
    except OSError as exc:
        raise ConfigError(f"PROXY_CLIENTS_FILE={path!r} cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"PROXY_CLIENTS_FILE={path!r} is invalid: {exc}") from None
    for spec in clients:
        if variables := sorted({var for key, var in listed if key in spec.keys}):
            raise ConfigError(f"PROXY_CLIENTS_FILE={path!r}: a key of client {spec.name!r} is "
                              f"also in {' and '.join(variables)}: a key stands for one client; "
                              "remove it from one of them")


def _validated(settings: Settings) -> Settings:
    if settings.rate_limit_min > settings.rate_limit_max:
        raise ConfigError("RATE_LIMIT_MIN must not exceed RATE_LIMIT_MAX")
    if not settings.rate_limit_min <= settings.rate_limit_initial <= settings.rate_limit_max:
        raise ConfigError("RATE_LIMIT_INITIAL must lie between RATE_LIMIT_MIN and RATE_LIMIT_MAX")
    if settings.peak_hours not in {"", "off"} and not re.fullmatch(
            r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", settings.peak_hours):
        raise ConfigError(f"PEAK_HOURS={settings.peak_hours!r} is invalid: expected HH:MM-HH:MM "
                          "or off")
    try:
        ZoneInfo(settings.peak_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"PEAK_TIMEZONE={settings.peak_timezone!r} is not an IANA time zone "
                          "such as Asia/Shanghai") from None
    if settings.quota_pacing == "even" and not settings.quota_poll_seconds:
        raise ConfigError("QUOTA_PACING=even paces by the quota monitor: QUOTA_POLL_SECONDS "
                          "must be more than 0")
    if settings.client_rate_limits:
        from zai_proxy.clients.limits import parse_client_limits

        try:
            parse_client_limits(",".join(settings.client_rate_limits))
        except ValueError as exc:
            raise ConfigError(f"CLIENT_RATE_LIMITS is invalid: {exc}") from None
    if settings.admin_api_key and len(settings.admin_api_key.strip()) < ADMIN_KEY_MIN_LENGTH:
        raise ConfigError(f"ADMIN_API_KEY needs {ADMIN_KEY_MIN_LENGTH}+ characters (it guards "
                          "the limiter state); generate one with: openssl rand -hex 24")
    if settings.pricing_file:
        _check_pricing_file(settings.pricing_file)
    return settings


def settings_markdown() -> str:
    """docs/configuration.md, generated from the settings tables of the proxy, the simulator and
    the dashboard (a test keeps them in sync)."""
    from zai_proxy.dashboard.settings import DashboardSettings
    from zai_proxy.simulator.settings import SimulatorSettings

    rows = [
        "# Configuration", "",
        "Generated from the settings tables of `zai_proxy/server/config.py`, "
        "`zai_proxy/simulator/settings.py` and `zai_proxy/dashboard/settings.py` "
        "(`python -m zai_proxy.server.config`). In every program a flag wins over its variable, "
        "and an invalid value stops the program with a message naming the variable (or flag).",
        "",
        "## Proxy (`zai-proxy serve`)", "",
        "Every variable but the secrets (ZAI_API_KEY, PROXY_API_KEYS, ADMIN_API_KEY: environment "
        "only) can also be given as a flag. Durations take `250ms`, `30s`, `5m`, `6h`; sizes "
        "take `10MiB`.", "",
        *markdown_table(Settings), "",
        "## Simulator (`zai-proxy simulate`, and the one `serve` starts without ZAI_API_KEY)", "",
        "Times are milliseconds; ceilings and budgets of 0 mean none. `serve` reads the `SIM_*` "
        "variables only; `simulate` also takes the flags, and `--host`/`--port` "
        "(SIM_HOST, SIM_PORT; default 127.0.0.1:8090).", "",
        *markdown_table(SimulatorSettings), "",
        "## Dashboard (`zai-proxy dashboard`)", "",
        "Seconds take plain numbers (`2.5`).", "",
        *markdown_table(DashboardSettings),
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
