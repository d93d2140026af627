"""Simulator knobs: the frozen `SimulatorSettings`, declared with the shared settings idiom.

Every knob has a `SIM_<NAME>` environment variable (e.g. `SIM_CHUNKS=8`), so a container or
another process can configure the simulator without flags; a flag wins over its variable.
`add_arguments` adds the knobs only (not `--host`/`--port`), so a process that embeds the
simulator can reuse them on its own parser without clashing with its own listen options.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from zai_proxy.settings import (
    add_flags,
    flags_from,
    parse_bool,
    parse_float,
    parse_int,
    parse_list,
    read,
    setting,
)

DEFAULT_MODELS: tuple[str, ...] = (
    "glm-4.7",
    "glm-4.6",
    "glm-4.5",
    "glm-4.5-air",
    "glm-4-flash",
    "glm-4",
    "glm-5.3-flash",
    "embedding-3",
)

Schedule = tuple[tuple[float, float], ...]
MONITOR_FAULTS = ("", "error", "slow", "garbage", "unauthorized")
# `account_state` -> the business code every model request gets while it is set.
ACCOUNT_STATES: dict[str, int | None] = {
    "ok": None, "daily_limit": 1304, "expired": 1309, "no_subscription": 1311,
    "fair_use": 1313, "no_balance": 1113,
}
KEY_KINDS = ("", "standard", "coding")


def parse_schedule(text: str) -> Schedule:
    """Parse `"0:20,60:10,120:40"` (seconds since start : req/s) into sorted `(start, rate)` pairs.

    Raises `ValueError` on a malformed entry, a negative number or a repeated start.
    """
    pairs: list[tuple[float, float]] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        start_text, sep, rate_text = item.partition(":")
        if not sep:
            raise ValueError(f"schedule entry {item!r} is not START:RATE")
        start, rate = float(start_text), float(rate_text)
        if start < 0 or rate < 0:
            raise ValueError(f"schedule entry {item!r} has a negative number")
        pairs.append((start, rate))
    pairs.sort()
    if len({start for start, _ in pairs}) != len(pairs):
        raise ValueError(f"schedule {text!r} repeats a start time")
    return tuple(pairs)


def _knob(env: str, parse: Callable[[str], Any], doc: str, **kw: Any) -> Any:
    """A simulator setting: an empty `SIM_*` variable leaves the default, even for text."""
    return setting(env, parse, doc, empty_is_default=True, **kw)


@dataclass(frozen=True)
class SimulatorSettings:
    """Behaviour of the simulated upstream. Defaults are fast: no latency, no ceilings, no faults.

    Times are milliseconds; ceilings of 0 mean "none". `ceiling_schedule`, when non-empty, replaces
    `rate_ceiling` from each entry's start (seconds since the app was created or last reset);
    before its first entry `rate_ceiling` applies.

    Z.AI's account behaviours (all off by default): `account_state` (a key of `ACCOUNT_STATES`)
    answers every model request with that state's code; `key_kind` ("standard" or "coding", ""
    = either) answers 1113 on the other kind's OpenAI base; `overloaded_prompt` (a substring,
    "" = none) answers 1305 to every request whose prompt contains it. Credits:
    `quota_5h_credits` / `quota_weekly_credits` (0 = none) are `CREDIT_LIMIT` budgets each model
    request spends `credits_per_request` + ceil(tokens * `credits_per_1k_tokens` / 1000) of;
    `monitor_time_limit` (0 = none) adds a monthly `TIME_LIMIT` entry to the monitor,
    `monitor_unknown_entry` a `FUTURE_LIMIT` entry no parser knows.
    """

    latency_ms: float = _knob(
        "SIM_LATENCY_MS", parse_float, "base latency before response headers (ms)", default=0.0)
    ttft_ms: float = _knob(
        "SIM_TTFT_MS", parse_float, "time from headers to the first stream chunk (ms)", default=0.0)
    chunks: int = _knob(
        "SIM_CHUNKS", parse_int, "content chunks per reply", default=5)
    chunk_gap_ms: float = _knob(
        "SIM_CHUNK_GAP_MS", parse_float, "gap between content chunks (ms)", default=0.0)
    words_per_chunk: int = _knob(
        "SIM_WORDS_PER_CHUNK", parse_int, "reply words (= output tokens) per chunk", default=2)
    rate_ceiling: float = _knob(
        "SIM_RATE_CEILING", parse_float, "hidden req/s ceiling over a sliding window, 0=none",
        default=0.0)
    rate_burst: float = _knob(
        "SIM_RATE_BURST", parse_float, "burst the rate ceiling allows: 0 = a whole sliding window "
        "(lenient), N >= 1 = token bucket of N (1 = strict, no burst)", default=0.0)
    ceiling_schedule: tuple[tuple[float, float], ...] = _knob(
        "SIM_CEILING_SCHEDULE", parse_schedule, "e.g. '0:20,60:10' (s:req/s)", default=())
    concurrency_ceiling: int = _knob(
        "SIM_CONCURRENCY_CEILING", parse_int, "hidden in-flight ceiling, 0=none", default=0)
    quota_5h_tokens: int = _knob(
        "SIM_QUOTA_5H_TOKENS", parse_int, "five-hour budget in tokens (1308), 0=none", default=0)
    quota_weekly_tokens: int = _knob(
        "SIM_QUOTA_WEEKLY_TOKENS", parse_int, "weekly budget in tokens (1310), 0=none", default=0)
    quota_5h_window_s: float = _knob(
        "SIM_QUOTA_5H_WINDOW_S", parse_float, "length of the five-hour window (s)",
        default=5 * 3600.0)
    quota_weekly_window_s: float = _knob(
        "SIM_QUOTA_WEEKLY_WINDOW_S", parse_float, "length of the weekly window (s)",
        default=7 * 86400.0)
    quota_reset: str = _knob(
        "SIM_QUOTA_RESET", str, "rolling (opens at first use) or fixed (back to back)",
        default="rolling")
    quota_level: str = _knob(
        "SIM_QUOTA_LEVEL", str, "plan level the quota monitor reports", default="pro")
    monitor_fault: str = _knob(
        "SIM_MONITOR_FAULT", str, "quota monitor fault: error, slow, garbage, unauthorized ('' = "
        "none)", default="")
    monitor_delay_ms: float = _knob(
        "SIM_MONITOR_DELAY_MS", parse_float, "quota monitor latency (ms)", default=0.0)
    fail_rate: float = _knob(
        "SIM_FAIL_RATE", parse_float, "fraction of admitted requests answered 500/502", default=0.0)
    seed: int = _knob(
        "SIM_SEED", parse_int, "seed of the fault-injection random generator", default=0)
    cache_ratio: float = _knob(
        "SIM_CACHE_RATIO", parse_float, "fraction of prompt tokens reported as cached", default=0.0)
    embedding_dim: int = _knob(
        "SIM_EMBEDDING_DIM", parse_int, "embedding vector length", default=16)
    expect_key: str | None = _knob(
        "SIM_EXPECT_KEY", str, "only accept this API key (default: any non-empty)", default=None)
    models: tuple[str, ...] = _knob(
        "SIM_MODELS", parse_list, "comma-separated model ids for /models", default=DEFAULT_MODELS)
    account_state: str = _knob(
        "SIM_ACCOUNT_STATE", str, "every model request answers this account state: ok, "
        "daily_limit (1304), expired (1309), no_subscription (1311), fair_use "
        "(1313), no_balance (1113)", default="ok")
    key_kind: str = _knob(
        "SIM_KEY_KIND", str, "the key's kind: standard (/api/paas/v4) or coding "
        "(/api/coding/paas/v4); the other base answers 1113 ('' = either)", default="")
    overloaded_prompt: str = _knob(
        "SIM_OVERLOADED_PROMPT", str, "prompts containing this text always get 429 code 1305 ('' "
        "= none)", default="")
    quota_5h_credits: int = _knob(
        "SIM_QUOTA_5H_CREDITS", parse_int, "five-hour budget in credits (1308), 0=none", default=0)
    quota_weekly_credits: int = _knob(
        "SIM_QUOTA_WEEKLY_CREDITS", parse_int, "weekly budget in credits (1310), 0=none", default=0)
    credits_per_request: int = _knob(
        "SIM_CREDITS_PER_REQUEST", parse_int, "credits each model request costs", default=1)
    credits_per_1k_tokens: float = _knob(
        "SIM_CREDITS_PER_1K_TOKENS", parse_float, "credits per 1000 tokens (prompt + completion) "
        "a model request costs on top", default=0.0)
    monitor_time_limit: int = _knob(
        "SIM_MONITOR_TIME_LIMIT", parse_int, "monthly tool-call allowance the monitor reports as "
        "TIME_LIMIT, 0=none", default=0)
    monitor_unknown_entry: bool = _knob(
        "SIM_MONITOR_UNKNOWN_ENTRY", parse_bool, "add a FUTURE_LIMIT entry of an unknown type to "
        "the monitor's limits", default=False)

    def __post_init__(self) -> None:
        if self.chunks < 1 or self.words_per_chunk < 1:
            raise ValueError("chunks and words_per_chunk must be at least 1")
        if not 0.0 <= self.fail_rate <= 1.0 or not 0.0 <= self.cache_ratio <= 1.0:
            raise ValueError("fail_rate and cache_ratio must be within [0, 1]")
        if self.quota_reset not in ("rolling", "fixed"):
            raise ValueError("quota_reset must be rolling or fixed")
        if self.monitor_fault not in MONITOR_FAULTS:
            raise ValueError(f"monitor_fault must be one of {', '.join(map(repr, MONITOR_FAULTS))}")
        if min(self.quota_5h_tokens, self.quota_weekly_tokens, self.monitor_delay_ms) < 0:
            raise ValueError("quota budgets and monitor_delay_ms must be >= 0")
        if min(self.quota_5h_window_s, self.quota_weekly_window_s) <= 0:
            raise ValueError("quota windows must be longer than 0 s")
        if min(self.latency_ms, self.ttft_ms, self.chunk_gap_ms, self.rate_ceiling) < 0:
            raise ValueError("times and ceilings must not be negative")
        if self.rate_burst != 0 and self.rate_burst < 1:
            raise ValueError("rate_burst must be 0 (sliding window) or at least 1 (token bucket)")
        if self.concurrency_ceiling < 0 or self.embedding_dim < 1:
            raise ValueError("concurrency_ceiling must be >= 0, embedding_dim >= 1")
        if self.account_state not in ACCOUNT_STATES:
            raise ValueError(f"account_state must be one of {', '.join(ACCOUNT_STATES)}")
        if self.key_kind not in KEY_KINDS:
            raise ValueError("key_kind must be standard, coding or '' (either)")
        if min(self.quota_5h_credits, self.quota_weekly_credits, self.credits_per_request,
               self.credits_per_1k_tokens, self.monitor_time_limit) < 0:
            raise ValueError("credit budgets, credit costs and monitor_time_limit must be >= 0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every simulator knob as `--flag` (parsed by `settings_from_args`, over `SIM_*`)."""
    add_flags(parser.add_argument_group("simulated upstream"), SimulatorSettings, "sim_")


def settings_from_env() -> SimulatorSettings:
    """Settings from the `SIM_*` environment variables alone (the simulator `serve` embeds).

    Raises `ValueError` (a `SettingError` naming the variable) on an invalid value.
    """
    return SimulatorSettings(**read(SimulatorSettings, os.environ))


def settings_from_args(ns: argparse.Namespace) -> SimulatorSettings:
    """Settings from a namespace filled by a parser that ran `add_arguments`, over `SIM_*`.

    A flag wins over its variable. Raises `ValueError` (a `SettingError` naming the flag or
    variable) on an invalid value.
    """
    flags = flags_from(ns, SimulatorSettings, "sim_")
    return SimulatorSettings(**read(SimulatorSettings, os.environ, flags))


LIVE_FIELDS = (
    "latency_ms", "ttft_ms", "chunks", "chunk_gap_ms", "words_per_chunk", "rate_ceiling",
    "rate_burst", "ceiling_schedule", "concurrency_ceiling", "fail_rate", "cache_ratio",
    "quota_5h_tokens", "quota_weekly_tokens", "quota_5h_window_s", "quota_weekly_window_s",
    "quota_level", "monitor_fault", "monitor_delay_ms", "account_state", "key_kind",
    "overloaded_prompt", "quota_5h_credits", "quota_weekly_credits", "credits_per_request",
    "credits_per_1k_tokens", "monitor_time_limit", "monitor_unknown_entry",
)


def updated(settings: SimulatorSettings, changes: object) -> SimulatorSettings:
    """`settings` with a `POST /_config` JSON object applied (only `LIVE_FIELDS`).

    `ceiling_schedule` may be a string ("0:20,60:10") or a list of [start, rate] pairs.
    Raises `ValueError` / `TypeError` on unknown fields or invalid values.
    """
    if not isinstance(changes, dict) or set(changes) - set(LIVE_FIELDS):
        raise ValueError(f"only these fields can change: {', '.join(LIVE_FIELDS)}")
    values = dict(changes)
    schedule = values.get("ceiling_schedule")
    if isinstance(schedule, str):
        values["ceiling_schedule"] = parse_schedule(schedule)
    elif isinstance(schedule, list):
        values["ceiling_schedule"] = tuple((float(s), float(r)) for s, r in schedule)
    return replace(settings, **values)
