"""The built-in simulated Z.AI upstream (`zai-proxy simulate`).

Serves Z.AI's paths on one port: `/api/paas/v4/{chat/completions,completions,embeddings,models}`
(Bearer auth), `/api/anthropic/v1/messages[/count_tokens]` (`x-api-key` auth; Bearer alone
gets the edge's bare 404 page) and the quota monitor `/api/monitor/usage/quota/limit` (raw key
in `Authorization`), plus `/health`, `/_stats`, `/_stats/reset` and `/_config`.
Replies and usage are deterministic functions of the request (rules in `generation`); hidden
ceilings answer Z.AI's real 429 bodies (1302 concurrency, 1303 rate with Retry-After,
1308/1310 quota with `next_reset_time` once a five-hour or weekly token budget is spent,
`simulator.quota`); on the Anthropic routes the same error sits in Anthropic's envelope,
`{"type":"error","error":{"type":"rate_limit_error","code":"1303",...}}`.

Per-request overrides (request headers; malformed values are ignored):

- `x-sim-status: N`: answer status N (after the delay) without admission; 5xx gateway codes get
  an nginx-style HTML page, 500 a JSON error, 429 code 1303.
- `x-sim-429-code: C`: answer 429 with Z.AI code C in its real message: 1308/1310 carry
  `next_reset_time` (the window's reset); 1304 (daily call limit) names the next midnight Beijing
  time ("... will reset at 2026-12-08 00:00:00") and carries it as `next_reset_time`; 1113
  ("Insufficient balance or no resource package"), 1309 (plan expired), 1311 (no subscription
  for the model) and 1313 (fair-usage restriction) carry no Retry-After; load codes (1302, 1303,
  1305, 1312, ...) carry Retry-After.
- `x-sim-error-status: N`: the HTTP status of the `x-sim-429-code` answer (default 429, the
  status Z.AI is reported to use for every business code above, 1113 included).
- `x-sim-error-in-200: C`: HTTP 200 whose JSON body is the error object of code C (as Z.AI has
  sent with 1305), in the route's envelope; bypasses the limits like a forced status.
- `x-sim-stream-error: C[@K]`: a stream sends its head and K content chunks (default 0), then
  one error event instead of the tail and ends: `data: {"error": {"code": "C", ...}}` (no
  [DONE]); on the Anthropic route `event: error` with Anthropic's envelope. The request was
  admitted, so its quota (tokens, credits) is charged as for a whole reply. Non-stream requests
  ignore it.
- `x-sim-finish-reason: R`: the reply ends with finish_reason R (e.g. `network_error`,
  `abnormal`) instead of `stop`/`length`/`tool_calls`, stream or not, with no error event
  (Anthropic: stop_reason R).
- `x-sim-retry-after: S`: Retry-After seconds of a forced 429 (default 1).
- `x-sim-empty: 1`: 200 with an empty body (JSON or event-stream content type).
- `x-sim-truncate: 1`: non-stream: 200 with the first half of the JSON; stream: ends cleanly
  without the finish/usage/[DONE] (or message_delta/message_stop) tail.
- `x-sim-reset-after-chunks: K`: drop the connection after K stream chunks (before the tail when
  K >= chunks); non-stream: after half of the announced Content-Length.
- `x-sim-delay-ms`, `x-sim-ttft-ms`, `x-sim-chunks`, `x-sim-chunk-gap-ms`,
  `x-sim-words-per-chunk`: override those settings for this request.
- `x-sim-no-usage: 1`: omit usage (no usage chunk, no usage fields).
- `x-sim-cached-tokens: N`: report N cached prompt tokens.

Account settings (`SIM_*`, also live through `POST /_config`; off by default):

- `account_state`: `ok`, or `daily_limit` (1304), `expired` (1309), `no_subscription` (1311),
  `fair_use` (1313), `no_balance` (1113): every model request (chat, completions, embeddings,
  messages; not /models or count_tokens) gets that 429 until the state is set back to `ok`.
- `key_kind`: `standard` or `coding` (`""` = either): an OpenAI-route request on the other kind's
  base (`/api/paas/v4` vs `/api/coding/paas/v4`) answers 429 code 1113.
- `overloaded_prompt`: requests whose prompt text contains this substring always get 429 code
  1305 ("The service may be temporarily overloaded ...", Retry-After 1), whatever the rate, while
  other prompts are served.
- Credits: `quota_5h_credits` / `quota_weekly_credits` are `CREDIT_LIMIT` budgets (e.g. Lite
  2000 / 10000); each model request costs `credits_per_request` (default 1) + ceil(tokens *
  `credits_per_1k_tokens` / 1000) (default 0) credits, in windows like the token ones; spent
  means 1308 / 1310. `monitor_time_limit` adds a `TIME_LIMIT` entry (unit 5, monthly tool
  calls), `monitor_unknown_entry` a `FUTURE_LIMIT` entry, to the monitor's `limits`.

A stream is: headers after the delay, then after the TTFT the head (OpenAI role chunk; Anthropic
message_start, content_block_start, ping) with the first chunk, then each further chunk after the
gap, then the tail. A non-stream reply waits delay + TTFT + (chunks - 1) * gap before headers.
"""

from __future__ import annotations

from collections.abc import Sequence

from zai_proxy.simulator.app import SimulatorApp, create_simulator_app
from zai_proxy.simulator.ceiling import ConcurrencyCeiling, RateCeiling
from zai_proxy.simulator.quota import PlanQuota, TokenWindow
from zai_proxy.simulator.settings import (
    DEFAULT_MODELS,
    SimulatorSettings,
    add_arguments,
    parse_schedule,
    settings_from_args,
    settings_from_env,
)

__all__ = [
    "DEFAULT_MODELS",
    "ConcurrencyCeiling",
    "PlanQuota",
    "RateCeiling",
    "SimulatorApp",
    "SimulatorSettings",
    "TokenWindow",
    "add_arguments",
    "create_simulator_app",
    "main",
    "parse_schedule",
    "settings_from_args",
    "settings_from_env",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zai-proxy simulate` (see `zai_proxy.simulator.cli`)."""
    from zai_proxy.simulator.cli import main as run

    return run(argv)
