"""Token-counting figures: throughput, a ~200k-token prompt, and the event-loop stall.

Run: ``python bench/bench_tokenizer.py``. Prints figures only (no pass/fail): timing depends on
the machine. The stall is the worst lateness of a 1 ms asyncio ticker running next to the
count, inline (``Tokenizer.count``) versus offloaded (``Tokenizer.count_async``). It also
prints the CPU cost of SSE parsing plus usage tracking for a 20-chunk stream.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

from zai_proxy.accounting.sse import SSEParser
from zai_proxy.accounting.stream_usage import OpenAIStreamTracker
from zai_proxy.accounting.tokenizer import Tokenizer, load_tokenizer

PROSE = (
    "Operators must be able to trust the token numbers: every request ends with input and "
    "output counts, whether it streamed, failed or was cut short. "
)
CODE = "def handler(request: Request) -> Response:\n    return Response(status=200, body=b'ok')\n"
JSON_DOC = json.dumps({"role": "tool", "content": {"city": "Kyoto", "temp_c": 21.5,
                                                   "forecast": ["rain", "sun"]}})
CJK = "我们需要准确统计每个请求的令牌数量\uff0c包括输入\u3001输出和缓存读取\u3002"
MIXED = "\n".join([PROSE * 3, CODE * 2, JSON_DOC, CJK])


def text_of_tokens(tok: Tokenizer, target: int) -> str:
    unit = tok.count(MIXED)
    return MIXED * max(1, target // unit)


def throughput(tok: Tokenizer, text: str, seconds: float = 1.0) -> float:
    tokens = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        tokens += tok.count(text)
    return tokens / (time.perf_counter() - start)


async def max_lateness(work: str, tok: Tokenizer, text: str) -> tuple[float, float]:
    """(worst ticker lateness in ms, count duration in ms) while counting ``text``."""
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        expected = time.perf_counter() + 0.001
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - expected)
            expected = now + 0.001

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)  # let the ticker settle
    worst = 0.0
    start = time.perf_counter()
    if work == "inline":
        tok.count(text)
    else:
        await tok.count_async(text)
    took = time.perf_counter() - start
    await asyncio.sleep(0.005)
    stop.set()
    await task
    return worst * 1000, took * 1000


def stream_accounting_us(chunks: int = 20, rounds: int = 2000) -> float:
    """CPU per stream (µs) to parse and track a ``chunks``-chunk chat stream."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "glm-4.7"}
    blocks = [
        b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {
            "content": f"word{i} and some more text "}}]}).encode() + b"\n\n"
        for i in range(chunks)
    ]
    blocks.append(b"data: " + json.dumps({**base, "choices": [], "usage": {
        "prompt_tokens": 100, "completion_tokens": chunks * 6}}).encode() + b"\n\ndata: [DONE]\n\n")
    start = time.process_time()
    for _ in range(rounds):
        parser = SSEParser()
        tracker = OpenAIStreamTracker(strip_usage_chunk=True)
        for raw in blocks:
            for block in parser.feed(raw):
                tracker.feed(block)
        tracker.usage()
    return (time.process_time() - start) / rounds * 1e6


def main() -> None:
    for name in ("cl100k_base", "o200k_base"):
        tok = load_tokenizer(name)
        print(f"{name}: source={tok.source} origin={tok.origin}")
        rate = throughput(tok, MIXED * 20)
        print(f"  throughput on mixed text: {rate / 1e6:.2f} M tokens/s")
        big = text_of_tokens(tok, 200_000)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            count = tok.count(big)
            runs.append(time.perf_counter() - start)
        print(f"  ~200k-token prompt ({count} tokens, {len(big)} chars): "
              f"median {statistics.median(runs) * 1000:.1f} ms")
        for work in ("inline", "count_async"):
            trials = [asyncio.run(max_lateness(work, tok, big)) for _ in range(7)]
            late = [t[0] for t in trials]
            took = statistics.median(t[1] for t in trials)
            print(f"  1 ms ticker max lateness while counting it {work:>11}: median "
                  f"{statistics.median(late):6.2f} ms, worst {max(late):6.2f} ms over "
                  f"{len(trials)} runs (count took {took:.1f} ms)")
        tok.close()
    print(f"SSE parse + usage tracking, 20-chunk stream: {stream_accounting_us():.1f} µs CPU")


if __name__ == "__main__":
    main()
