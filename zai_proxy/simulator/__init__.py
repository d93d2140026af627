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
- `x-sim-429-code: C`: answer 429 with Z.AI code C (1308/1310 carry `next_reset_time`).
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
