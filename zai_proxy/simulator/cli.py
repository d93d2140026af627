"""`zai-proxy simulate`: serve the simulated upstream with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Sequence
from types import FrameType

from zai_proxy.simulator.app import create_simulator_app
from zai_proxy.simulator.settings import add_arguments, settings_from_args


def build_parser() -> argparse.ArgumentParser:
    """The `simulate` parser: `--host`, `--port` and every simulator knob."""
    parser = argparse.ArgumentParser(
        prog="zai-proxy simulate",
        description="Run a simulated Z.AI upstream (OpenAI and Anthropic routes) with hidden "
        "rate/concurrency/quota ceilings and fault injection. Per-request x-sim-* headers are "
        "listed in `python -m pydoc zai_proxy.simulator`.",
    )
    parser.add_argument("--host", default=os.environ.get("SIM_HOST", "127.0.0.1"),
                        help="listen address [env SIM_HOST]")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIM_PORT", "8090")),
                        help="listen port [env SIM_PORT]")
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, serve until SIGTERM/SIGINT, return 0 (2 on bad options, via argparse)."""
    import uvicorn

    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        settings = settings_from_args(ns)
    except ValueError as exc:
        parser.error(str(exc))
    app = create_simulator_app(settings)
    config = uvicorn.Config(
        app,
        host=ns.host,
        port=ns.port,
        loop="auto",
        http="auto",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers as
    # the "original" ones that re-raise is a no-op, so a SIGTERM/SIGINT stop exits with 0.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stand-in handler for signals uvicorn already handled."""
