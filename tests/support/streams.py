"""The recorded upstream streams (tests/fixtures/streams) and what the usage tests know of them.

`CASES` maps each recorded stream to its surface, the usage it reports, the text it carries and
whether it ends with a usage-only chunk; `variants` rewrites a stream's line endings (`EOL`);
`usage_chunk` finds the usage-only block by text, not with the parser under test;
`stream_ledger` opens the accounting ledger a streaming request on either surface gets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from zai_proxy.accounting.catalog import ModelCatalog
from zai_proxy.accounting.ledger import Accounting
from zai_proxy.accounting.pricing import PricingTable
from zai_proxy.accounting.tokenizer import load_tokenizer
from zai_proxy.accounting.usage import Usage
from zai_proxy.observe.metrics import Metrics
from zai_proxy.wire.routing import Router

STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"

REASONING = "The user asks for a haiku about autumn in Kyoto. Keep it 5-7-5."
HAIKU = "Maples blaze on Kamo's banks —\n寺の鐘\nslow bells fold into the dusk 🍁"
THINKING = "The user wants the weather; I should call the tool with city=Kyoto."
ANTHROPIC_TEXT = (
    THINKING + "Let me check the weather in Kyoto — 京都の天気を確認します。"
    + 'get_weather{"city": "Kyoto", "unit": "celsius"}'
)
ANTHROPIC_USAGE = Usage(input=472, output=118, cache_read=9216, cache_write=2048)

# name -> (surface, expected usage, expected output text, has a usage-only chunk)
CASES: dict[str, tuple[str, Usage | None, str, bool]] = {
    "openai_chat_include_usage.sse": (
        "openai", Usage(input=496, output=87, cache_read=1024, reasoning=41),
        REASONING + HAIKU, True,
    ),
    "openai_chat_no_usage.sse": ("openai", None, HAIKU, False),
    "openai_chat_tool_calls_crlf.sse": (
        "openai", Usage(input=312, output=24), 'get_weather{"city": "Kyoto", "unit": "c"}', True,
    ),
    "openai_chat_usage_in_final_chunk.sse": (
        "openai", Usage(input=26, output=9, cache_read=32), "Hello there!", False,
    ),
    "anthropic_thinking_cache.sse": ("anthropic", ANTHROPIC_USAGE, ANTHROPIC_TEXT, False),
    "anthropic_thinking_cache_crlf.sse": ("anthropic", ANTHROPIC_USAGE, ANTHROPIC_TEXT, False),
}


def variants(stream: bytes) -> dict[str, bytes]:
    """The stream with LF, CRLF and lone-CR line endings (JSON in these has no raw newlines)."""
    lf = stream.replace(b"\r\n", b"\n")
    return {"lf": lf, "crlf": lf.replace(b"\n", b"\r\n"), "cr": lf.replace(b"\n", b"\r")}


EOL = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def usage_chunk(stream: bytes, eol: bytes) -> bytes:
    """The usage-only block, found by text rather than by the parser under test."""
    start = stream.rindex(b"data: ", 0, stream.index(b'"choices":[],"usage"'))
    return stream[start : stream.index(eol + eol, start) + 2 * len(eol)]


def stream_ledger(surface: str, strip: bool) -> Any:
    """The ledger for a streaming request on `surface` ("openai" or "anthropic"); with `strip`
    the request did not ask for usage, so the proxy adds it and strips the usage-only chunk."""
    pricing = PricingTable.default()
    acc = Accounting(tokenizer=load_tokenizer("cl100k_base"), pricing=pricing,
                     catalog=ModelCatalog.from_pricing(pricing),
                     metrics=Metrics(CollectorRegistry(), "t"), default_model="glm-4.7")
    path = "/v1/messages" if surface == "anthropic" else "/v1/chat/completions"
    route = Router("http://u/api/paas/v4", "http://u/api/anthropic").resolve("POST", path)
    payload: dict[str, Any] = {"model": "glm-4.7", "stream": True, "messages": []}
    if not strip:
        payload["stream_options"] = {"include_usage": True}
    return acc.open(route, payload, json.dumps(payload).encode())
