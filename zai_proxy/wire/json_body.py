"""JSON bodies of any size, parsed without stalling the event loop for long.

Call sites parse a body of up to `INLINE_MAX` bytes inline (cheap, no await on the hot path)
and hand a larger one to `parse_off_loop`. `json.loads` holds the GIL while it runs, so a
worker thread does not make the parse free; it makes it preemptible: the interpreter switches
back to the event loop every `sys.getswitchinterval()` (5 ms) instead of blocking it for the
whole parse (an 8 MiB embeddings answer takes ~140 ms here).

Measured on the 2-core dev machine (python -c, json.loads, median of 20): 64 KiB of chat
prompt 0.1 ms, of embedding floats 1.5 ms; one `asyncio.to_thread` hop ~0.1 ms. Below 64 KiB
the hop would cost as much as the parse.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

INLINE_MAX = 64 * 1024

# What a parse of untrusted bytes may raise: invalid JSON or encoding (ValueError, including
# UnicodeDecodeError) and nesting deeper than the interpreter's recursion limit.
PARSE_ERRORS = (ValueError, RecursionError)


async def parse_off_loop(body: bytes) -> Any:
    """`json.loads(body)` in a worker thread; raises one of `PARSE_ERRORS`."""
    return await asyncio.to_thread(json.loads, body)
