"""Which of the package's modules one request runs through (a map of the architecture in use).

    python bench/request_path.py [--stream] [--list]

Builds the proxy in process (tests/support/inprocess.py) in front of a fixed upstream answer,
sends one warm-up request, then traces one `POST /v1/chat/completions` with `sys.settrace` and
prints how many of the package's modules ran code for it (and which, with --list). Start-up,
the warm-up and the harness are not counted; a background tick that fires meanwhile would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.inprocess import InProcessProxy  # noqa: E402

PACKAGE = ROOT / "zai_proxy"
ANSWER = {"id": "c1", "object": "chat.completion", "created": 1, "model": "glm-4.6",
          "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "hello there"}}],
          "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
STREAM = (b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
          b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}\n\n'
          b"data: [DONE]\n\n")


def upstream(request: httpx.Request) -> httpx.Response:
    if json.loads(request.content).get("stream"):
        return httpx.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=ANSWER)


def package_modules() -> set[str]:
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}


async def trace_one(stream: bool) -> set[str]:
    seen: set[str] = set()

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if name.startswith(str(PACKAGE)):
            seen.add(str(Path(name).relative_to(PACKAGE)))

    body = {"model": "glm-4.6", "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]}
    async with InProcessProxy(httpx.MockTransport(upstream), {}) as client:
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        sys.setprofile(tracer)
        try:
            response = await client.post("/v1/chat/completions", json=body)
        finally:
            sys.setprofile(None)
        assert response.status_code == 200, response.text
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stream", action="store_true", help="a streamed request instead")
    parser.add_argument("--list", action="store_true", help="name the modules")
    args = parser.parse_args()
    seen = asyncio.run(trace_one(args.stream))
    total = package_modules()
    print(f"{len(seen)} of {len(total)} modules of zai_proxy/ ran for one "
          f"{'streamed' if args.stream else 'non-streamed'} chat request")
    if args.list:
        for name in sorted(seen):
            print("  " + name)


if __name__ == "__main__":
    main()
