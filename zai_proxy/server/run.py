"""`zai-proxy serve`: settings from env and flags, then uvicorn with a graceful drain.

On SIGTERM (or SIGINT) the proxy stops being ready at once, keeps serving for
SHUTDOWN_DRAIN_SECONDS (time for Kubernetes to take it out of the Service), then stops accepting
and gives in-flight requests and streams SHUTDOWN_GRACE_SECONDS to finish, and exits 0. A second
SIGINT forces the exit. With no ZAI_API_KEY the built-in simulator is started on a loopback port
in the same process, so the proxy works offline out of the box.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, cast

import uvicorn

from zai_proxy.core.errors import ConfigError
from zai_proxy.observe import logs
from zai_proxy.relay.lifecycle import Lifecycle
from zai_proxy.server.config import Settings, load_settings
from zai_proxy.settings import add_flags, fields_of, flags_from

log = logging.getLogger("zai_proxy")


def build_parser() -> argparse.ArgumentParser:
    """One flag per setting but the secrets; each help line names its variable and default."""
    secrets = sorted(f.env for f in fields_of(Settings) if f.secret and f.env)
    parser = argparse.ArgumentParser(
        prog="zai-proxy serve",
        description="Run the proxy. Every flag overrides its environment variable; "
                    "invalid values stop the program with a message naming the variable.",
        epilog=f"Secrets are read from the environment only: {', '.join(secrets)}.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, Settings)
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    overrides = flags_from(args, Settings)
    try:
        settings = load_settings(os.environ, overrides)
    except ConfigError as exc:
        print(f"zai-proxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    return asyncio.run(serve(settings))


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT starts a drain instead of an exit."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float,
                 on_drain: Any = None) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        self.on_drain = on_drain
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown and the
        # process would die by the signal instead of exiting 0.
        if self.lifecycle.draining:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self.lifecycle.drain()
        if self.on_drain is not None:
            self.on_drain()
        log.info("drain started", extra={"fields": {
            "signal": signal.Signals(sig).name, "drain_seconds": self.drain_seconds,
            "in_flight": self.lifecycle.in_flight}})
        if self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_seconds,
                                        self._stop_accepting)

    def _stop_accepting(self) -> None:
        log.info("drain period over: closing the listener, waiting for in-flight requests",
                 extra={"fields": {"in_flight": self.lifecycle.in_flight}})
        self.should_exit = True


class _EmbeddedServer(uvicorn.Server):
    """A second server in the same loop (the simulator): leaves signals to the proxy's."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


async def _start_simulator(
    settings: Settings,
) -> tuple[Settings, _EmbeddedServer, asyncio.Task[None]]:
    from zai_proxy.simulator import create_simulator_app, settings_from_env

    sock = _bind("127.0.0.1", settings.simulator_port)
    port = sock.getsockname()[1]
    # SIM_* variables configure it (e.g. SIM_QUOTA_5H_TOKENS); the quota monitor is polled at
    # its origin, which ZAI_MONITOR_URL defaults to.
    config = uvicorn.Config(create_simulator_app(settings_from_env()), log_config=None,
                            access_log=False, lifespan="off", log_level="warning")
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{port}"
    log.warning("ZAI_API_KEY is not set: serving against the built-in simulated upstream",
                extra={"fields": {"simulator": base}})
    # Loud whatever LOG_LEVEL says: answers from here are simulated, not Z.AI's.
    print(f"zai-proxy: SIMULATED UPSTREAM ({base}): ZAI_API_KEY is not set, every answer is "
          "made up by the built-in simulator; /health shows \"upstream\": \"simulated\"",
          file=sys.stderr, flush=True)
    simulated = dataclasses.replace(
        settings, zai_api_key="simulated-upstream-key", zai_target_url=f"{base}/api/paas/v4",
        zai_anthropic_url=f"{base}/api/anthropic", upstream_simulated=True)
    return simulated, server, task


async def serve(settings: Settings) -> int:
    """Run until drained; returns the process exit code."""
    from zai_proxy.server.app import create_app
    from zai_proxy.server.http_protocol import bound_protocol_class

    simulator: tuple[_EmbeddedServer, asyncio.Task[None]] | None = None
    if settings.needs_simulator:
        settings, sim_server, sim_task = await _start_simulator(settings)
        simulator = (sim_server, sim_task)
    app = create_app(settings)
    lifecycle: Lifecycle = app.state.lifecycle
    trusted = list(settings.forwarded_allow_ips)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        lifespan="on", http=bound_protocol_class(app.state.connections), loop="none",
        # No WebSocket: uvicorn would hand an upgrade to a protocol of its own, which the
        # connection registry never hears closing (its MAX_CONNECTIONS slot would leak).
        ws="none",
        # X-Forwarded-For names the client (per-client limits, logs) only when a trusted
        # peer sent it; uvicorn's default trusts loopback, where anyone on the host is.
        proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds + 0.999),
        # uvicorn annotates int; it only hands the value to loop.call_later, seconds as float.
        timeout_keep_alive=cast(int, settings.client_idle_timeout),
        server_header=False, date_header=True)
    loop = asyncio.get_running_loop()

    def on_drain() -> None:  # runs in the signal handler: loop work is scheduled, not done
        app.state.metrics.ready.set(0)
        # Release keep-alive clients during the drain period (as retire does).
        loop.call_soon_threadsafe(app.state.connections.drain)

    server = DrainingServer(config, lifecycle, settings.shutdown_drain_seconds,
                            on_drain=on_drain)
    await server.serve()
    if simulator is not None:
        simulator[0].should_exit = True
        await simulator[1]
    if not server.started:
        return 1
    log.info("stopped", extra={"fields": {"in_flight": lifecycle.in_flight}})
    return 0
