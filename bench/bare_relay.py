"""A bare pass-through: the baseline bench_proxy.py measures the proxy against in the same run.

Run: ``python bench/bare_relay.py --port P --upstream http://127.0.0.1:S/api/paas/v4``

A minimal FastAPI app under uvicorn with the server settings `zai-proxy serve` uses (httptools,
uvloop, one worker, no access log, no server header, lifespan on) that forwards
`POST /v1/chat/completions` to `<upstream>/chat/completions` through one shared aiohttp
ClientSession (keep-alive pool) and answers with the upstream's status, body and content-type.
Event streams are relayed chunk by chunk as they arrive. The request carries only what the
simulator needs: the body, its content-type, a fixed Bearer key and the `x-sim-*` overrides.

It does nothing else -- no client auth, no token accounting, no limiter, no metrics, no
logging -- so its CPU per request is the cost of the web stack and the HTTP client alone, and
the proxy's ratio to it is what the proxy's own work costs on that day's machine. `GET /ready`
answers 200 once the session exists (for the bench's readiness poll). It imports nothing of
zai_proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

# The proxy's upstream pool under bench_proxy.py (UPSTREAM_POOL_SIZE there): the same ceiling.
POOL_SIZE = 1024
UPSTREAM_KEY = "bench-key"


def create_relay(upstream: str) -> FastAPI:
    """The relay app; `upstream` is the OpenAI-compatible base URL (…/api/paas/v4)."""
    target = upstream.rstrip("/") + "/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The session needs the running loop: created at startup, closed at shutdown.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False)
        sessions.append(session)
        try:
            yield
        finally:
            await session.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/ready")
    async def ready() -> Response:
        return Response(status_code=200 if sessions else 503)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        headers = {"Authorization": f"Bearer {UPSTREAM_KEY}",
                   "Content-Type": request.headers.get("content-type", "application/json")}
        for key, value in request.headers.items():
            if key.startswith("x-sim-"):
                headers[key] = value
        upstream_resp = await sessions[0].post(target, data=body, headers=headers)
        content_type = upstream_resp.headers.get("Content-Type", "application/json")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(_chunks(upstream_resp), status_code=upstream_resp.status,
                                     media_type=content_type)
        try:
            data = await upstream_resp.read()
        finally:
            upstream_resp.release()
        return Response(data, status_code=upstream_resp.status, media_type=content_type)

    return app


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's body as it arrives; the connection goes back to the pool at the end."""
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True,
                        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9000/api/paas/v4")
    args = parser.parse_args(list(argv))
    uvicorn.run(create_relay(args.upstream), host=args.host, port=args.port, workers=1,
                http="httptools", loop="uvloop", ws="none", lifespan="on", log_config=None,
                access_log=False, log_level="warning", server_header=False, date_header=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
