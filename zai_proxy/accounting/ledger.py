"""Token accounting for one request: usage from the upstream first, estimates otherwise.

`Accounting.open` gives each countable request a `Ledger`. The ledger may rewrite the upstream
body once (asking an OpenAI stream for `include_usage` the client did not ask for), watches the
relayed stream (removing only that extra usage-only chunk), and at the end `settle`s: upstream
usage where the API reported it, tiktoken estimates (or the labelled heuristic) where it did
not, cost from the pricing table, metrics and the log fields. Every direction carries its own
source, so an Anthropic stream cut short keeps its upstream input count and estimates output.

What is counted comes from the route table (`routing.Tokens`): prompt routes as above; an async
task's result (`/v1/async-result/{id}`) from the usage it reports, once per task (a client that
polls a finished task again is not charged twice; remembered per process for the last
`RESULTS_REMEMBERED` tasks), never estimated (its prompt is not in the request). The async
submission itself is not counted: its answer is a task id, and its tokens are the result's.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from zai_proxy.accounting.catalog import ModelCatalog
from zai_proxy.accounting.estimate import (
    anthropic_prompt_overhead,
    anthropic_prompt_text,
    openai_prompt_overhead,
    openai_prompt_text,
)
from zai_proxy.accounting.pricing import PricingTable, Tier
from zai_proxy.accounting.sse import SSEParser
from zai_proxy.accounting.stream_usage import AnthropicStreamTracker, OpenAIStreamTracker
from zai_proxy.accounting.tokenizer import Tokenizer
from zai_proxy.accounting.usage import (
    DIRECTIONS,
    Usage,
    add_include_usage,
    anthropic_usage,
    openai_usage,
    request_wants_usage,
)
from zai_proxy.observe.metrics import Metrics
from zai_proxy.wire.routing import Route, Tokens

RESULTS_REMEMBERED = 10_000
# A read ending in a blank line (LF or CRLF) ends on an event boundary.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")


@dataclass(frozen=True, slots=True)
class Report:
    """What one request used: counts and sources per direction, cost, tier (for the log)."""

    counts: dict[str, int]
    sources: dict[str, str]
    cost_usd: float
    model: str
    tier: str

    def log_fields(self) -> dict[str, Any]:
        return {**self.counts, "source": self.sources, "model_label": self.model,
                "pricing_tier": self.tier}


class Accounting:
    """Shared by all requests: tokenizer, prices, model labels, metrics."""

    def __init__(self, *, tokenizer: Tokenizer, pricing: PricingTable, catalog: ModelCatalog,
                 metrics: Metrics, default_model: str,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.tokenizer = tokenizer
        self.pricing = pricing
        self.catalog = catalog
        self.metrics = metrics
        self.default_model = default_model
        self.wall_clock = wall_clock
        self._series: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self._tier: tuple[Tier, datetime, datetime] | None = None
        self._results: OrderedDict[str, None] = OrderedDict()

    def tier(self) -> Tier:
        """The pricing tier now. Peak windows are given in whole minutes, so the answer is
        kept until the next minute starts (time zone arithmetic once a minute, not per request)."""
        now = self.wall_clock()
        cached = self._tier
        if cached is None or not cached[1] <= now < cached[2]:
            minute = now.replace(second=0, microsecond=0)
            cached = self._tier = (self.pricing.tier_at(now), minute,
                                   minute + timedelta(minutes=1))
        return cached[0]

    def series(self, direction: str, model: str, source: str, tier: str) -> tuple[Any, Any]:
        """The token and cost counters of one label set (looked up once, then cached; the
        label values are bounded, so is the cache)."""
        key = (direction, model, source, tier)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = (self.metrics.tokens.labels(*key),
                                         self.metrics.cost.labels(*key))
        return found

    def open(self, route: Route, payload: dict[str, Any] | None, body: bytes) -> Ledger | None:
        """A ledger for a countable request, or None (nothing to count on this route)."""
        if route.tokens is Tokens.PROMPT:
            if payload is None:
                return None
            return Ledger(self, route.surface, payload, body, stream_usage=route.stream_usage)
        if route.tokens is Tokens.RESULT:
            return Ledger(self, route.surface, {}, body,
                          result_of=route.upstream_url.partition("?")[0])
        return None

    def claim_result(self, task: str) -> bool:
        """True the first time the result of `task` is counted (within the remembered ones)."""
        results = self._results
        if task in results:
            return False
        results[task] = None
        if len(results) > RESULTS_REMEMBERED:
            results.popitem(last=False)
        return True


class Ledger:
    """One request's accounting; `relay` sits on the stream path, so it stays cheap."""

    def __init__(self, accounting: Accounting, surface: str, payload: dict[str, Any],
                 body: bytes, *, stream_usage: bool = False, result_of: str | None = None) -> None:
        self._acc = accounting
        self.surface = surface
        self.payload = payload
        model = payload.get("model")
        self.model = model if isinstance(model, str) and model else accounting.default_model
        self.stream = payload.get("stream") is True
        # An async task's result: counted from the usage it reports, once per task.
        self.result_of = result_of
        strip = self.stream and stream_usage and not request_wants_usage(payload)
        self.upstream_body = add_include_usage(body, payload) if strip else body
        self._strip = strip
        self._dropped_cr = False
        self._lf_only = True  # until a CR shows up (see relay)
        self._held: list[bytes] = []  # LF path: the reads of an event not complete yet
        self._parser = SSEParser() if self.stream else None
        self._tracker: OpenAIStreamTracker | AnthropicStreamTracker | None = None
        if self.stream:
            self._tracker = (AnthropicStreamTracker() if surface == "anthropic"
                             else OpenAIStreamTracker(strip_usage_chunk=strip))
        self._body_usage: Usage | None = None
        self._body_text: str = ""
        self._whole = False  # answered with a whole body (even to a stream request)
        self.settled: Report | None = None

    def relay(self, chunk: bytes) -> bytes:
        """The bytes of `chunk` to send on to the client (all of them unless stripping).

        Stripping relays whole events as soon as they are complete (a partial event is of no
        use to an SSE client), except the usage-only chunk the proxy asked for itself. While
        the stream has only LF line endings (Z.AI's), events are found with one `rfind` per
        read, and a run of events is split into blocks only when it may hold usage or the
        end; a CR hands the rest of the stream to the general parser.
        """
        assert self._parser is not None and self._tracker is not None
        if self._lf_only:
            held = self._held
            if b"\r" not in chunk:
                # Only the new read is searched, and what is held is joined once, when its
                # event completes: one huge event in many reads costs linear work.
                cut = chunk.rfind(b"\n\n") + 2
                if cut == 1:  # no blank line inside the read; maybe one across the reads
                    cut = 1 if held and held[-1][-1:] == b"\n" and chunk[:1] == b"\n" else 0
                if not cut:  # no event completed yet
                    if chunk:
                        held.append(chunk)
                    return b"" if self._strip else chunk
                ready = b"".join([*held, chunk[:cut]]) if held else chunk[:cut]
                held.clear()
                if cut < len(chunk):
                    held.append(chunk[cut:])
                if self._tracker.skippable(ready):
                    self._tracker.defer(ready)
                    return ready if self._strip else chunk
                out = self._blocks(self._parser.feed_raw(ready))  # whole events: parser stays idle
                return out if self._strip else chunk
            data = b"".join([*held, chunk])
            self._lf_only = False
            held.clear()
            out = self._blocks(self._parser.feed_raw(data))
            return out if self._strip else chunk
        if (self._parser.idle and not self._dropped_cr and chunk.endswith(_EVENT_ENDS)
                and self._tracker.skippable(chunk)):
            self._tracker.defer(chunk)
            return chunk
        out = self._blocks(self._parser.feed_raw(chunk))
        return out if self._strip else chunk

    def _blocks(self, blocks: list[bytes]) -> bytes:
        """Feed complete blocks to the tracker; the ones to relay when stripping."""
        assert self._tracker is not None
        if not self._strip:
            for raw in blocks:
                self._tracker.feed_raw(raw)
            return b""
        return b"".join([raw for raw in blocks if self._keep(raw)])

    def _keep(self, raw: bytes) -> bool:
        assert self._tracker is not None
        if self._dropped_cr and raw == b"\n":
            # A read ended between the \r and \n closing the dropped chunk: the parser gave the
            # \n as a block of its own, and it belongs to the chunk that was removed.
            self._dropped_cr = False
            return False
        keep = self._tracker.feed_raw(raw)
        self._dropped_cr = not keep and raw.endswith(b"\r")
        return keep

    def flush(self) -> bytes:
        """At the end of a stream: whatever incomplete tail was held back."""
        if self._parser is None or self._tracker is None:
            return b""
        if self._held:  # an unterminated last event (LF path): the parser closes it
            self._parser.feed_raw(b"".join(self._held))
            self._held.clear()
        return self._blocks([block.raw for block in self._parser.close()])

    def body(self, obj: Any) -> None:
        """A non-stream answer's parsed JSON."""
        self._whole = True
        if not isinstance(obj, dict):
            return
        if self.result_of is not None and isinstance(obj.get("model"), str) and obj["model"]:
            self.model = obj["model"]  # a result names its model; the GET did not
        self._body_usage = (anthropic_usage(obj) if self.surface == "anthropic"
                            else openai_usage(obj))
        if self._body_usage is None:
            self._body_text = _answer_text(obj)

    async def settle(self) -> Report:
        """Final counts (estimating what the upstream did not report), recorded once."""
        if self.settled is not None:
            return self.settled
        acc = self._acc
        tok = acc.tokenizer
        reported = self._body_usage
        if self.result_of is not None and (reported is None
                                           or not acc.claim_result(self.result_of)):
            # Not finished, not a chat task, or counted already: nothing to charge.
            self.settled = Report(dict.fromkeys(DIRECTIONS, 0), dict.fromkeys(DIRECTIONS, "none"),
                                  0.0, acc.catalog.label(self.model), acc.tier())
            return self.settled
        complete = True
        tracker = None if self._whole else self._tracker
        if tracker is not None:
            reported = tracker.usage()
            complete = tracker.done
        counts = dict.fromkeys(DIRECTIONS, 0)
        sources = dict.fromkeys(DIRECTIONS, "upstream")
        if reported is not None:
            counts.update(reported.by_direction())
        started = time.perf_counter()
        counted = False
        if self.result_of is None and (reported is None
                                       or counts["input"] + counts["cache_read"] == 0):
            counts["input"] = await self._estimate_input()
            sources["input"] = tok.source
            counted = True
        if reported is None or not complete:
            # Cut short: a partial upstream count (Anthropic's message_start says 1) is not the
            # output; count what was actually streamed.
            text = tracker.output_text() if tracker is not None else self._body_text
            estimated = await tok.count_async(text)
            counts["output"] = max(counts["output"] if reported else 0, estimated)
            sources["output"] = tok.source
            counted = True
        if counted:
            acc.metrics.token_count_duration.observe(time.perf_counter() - started)
        label = acc.catalog.label(self.model)
        tier = acc.tier()
        usage = Usage(counts["input"], counts["output"], counts["cache_read"],
                      counts["cache_write"])
        costs = acc.pricing.cost(usage, self.model, tier)
        for direction in DIRECTIONS:
            if counts[direction] or direction in ("input", "output"):
                tokens, cost = acc.series(direction, label, sources[direction], tier)
                tokens.inc(counts[direction])
                cost.inc(costs[direction])
        self.settled = Report(counts, sources, round(sum(costs.values()), 9), label, tier)
        return self.settled

    async def _estimate_input(self) -> int:
        tok = self._acc.tokenizer
        if self.surface == "anthropic":
            text, overhead = (anthropic_prompt_text(self.payload),
                              anthropic_prompt_overhead(self.payload))
        else:
            text, overhead = openai_prompt_text(self.payload), openai_prompt_overhead(self.payload)
        return await tok.count_async(text) + overhead


def _answer_text(obj: dict[str, Any]) -> str:
    """Generated text of a non-stream answer (OpenAI or Anthropic), for estimating output."""
    parts: list[str] = []
    for choice in obj.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            parts.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            for key in ("reasoning_content", "content"):
                if isinstance(message.get(key), str):
                    parts.append(message[key])
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    parts.extend(str(function.get(k) or "") for k in ("name", "arguments"))
    for block in obj.get("content") or []:
        if isinstance(block, dict):
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    parts.append(block[key])
            if block.get("type") == "tool_use":
                parts.append(str(block.get("name") or ""))
                tool_input = block.get("input")
                # The model generated JSON: count that, not Python's repr of the parsed dict.
                parts.append(tool_input if isinstance(tool_input, str)
                             else json.dumps(tool_input, ensure_ascii=False))
    return "\n".join(parts)
