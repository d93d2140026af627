"""`zai-proxy demo`: the proxy in front of the simulator, a few real calls, then it keeps serving.

A newcomer sees the whole path work offline: a chat completion, a stream, an Anthropic message,
and the metrics they produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence

import httpx

from zai_proxy.core.errors import ConfigError
from zai_proxy.observe import logs
from zai_proxy.server.config import load_settings
from zai_proxy.server.run import build_parser, serve


async def _show(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(100):
            try:
                if (await client.get("/ready")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        chat = await client.post("/v1/chat/completions", json={
            "model": "glm-4.7", "messages": [{"role": "user", "content": "Say hello"}]})
        reply = chat.json()
        print(f"\nPOST /v1/chat/completions -> {chat.status_code}: "
              f"{reply['choices'][0]['message']['content']!r} usage={reply.get('usage')}")
        print("POST /v1/chat/completions (stream):", end=" ", flush=True)
        async with client.stream("POST", "/v1/chat/completions", json={
                "model": "glm-4.7", "stream": True,
                "messages": [{"role": "user", "content": "Count to five"}]}) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: {"):
                    for choice in json.loads(line[6:]).get("choices", []):
                        print(choice.get("delta", {}).get("content") or "", end="", flush=True)
        message = await client.post("/v1/messages", headers={"anthropic-version": "2023-06-01"},
                                    json={"model": "glm-4.7", "max_tokens": 64, "messages": [
                                        {"role": "user", "content": "Hi"}]})
        print(f"\nPOST /v1/messages -> {message.status_code}: usage={message.json().get('usage')}")
        metrics = (await client.get("/metrics")).text
        print("\n" + "\n".join(line for line in metrics.splitlines()
                               if line.startswith(("zai_proxy_requests_total",
                                                   "zai_proxy_tokens_total"))))
        print(f"\nThe proxy keeps serving at {base} (Ctrl+C to stop).", flush=True)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    env = {k: v for k, v in os.environ.items() if k != "ZAI_API_KEY"}  # always the simulator
    try:
        settings = load_settings(env, overrides)
    except ConfigError as exc:
        print(f"zai-proxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure("WARNING")
    host = "127.0.0.1" if settings.host in {"0.0.0.0", "::"} else settings.host

    async def run() -> int:
        shower = asyncio.create_task(_show(f"http://{host}:{settings.port}"))
        code = await serve(settings)
        shower.cancel()
        return code

    return asyncio.run(run())
