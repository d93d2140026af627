"""Real processes for tests: the proxy, the simulator, redis-server, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str, *candidates: str) -> str:
    """The path of an external program, or skip (a failure in CI, see conftest)."""
    for candidate in (name, *candidates):
        path = shutil.which(candidate)
        if path:
            return path
    pytest.skip(f"{name} is not installed (.ci/run installs it)")


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 2xx, or fail with what the process printed."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).is_success:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last: {last!r})")


@dataclass
class Process:
    """A child process with its combined output captured to a file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: Sequence[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_zai_proxy(
    command: str,
    *args: str,
    env: dict[str, str] | None = None,
    ready_path: str = "/health",
    timeout: float = 20.0,
) -> Process:
    """Run `python -m zai_proxy COMMAND --host 127.0.0.1 --port P ARGS`; wait until it answers."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"zai-{command}-", suffix=".log")[1])
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAI_", "PROXY_"))}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "zai_proxy", command, "--host", "127.0.0.1", "--port",
            str(port), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    process = Process(proc, port, log, argv)
    try:
        wait_http(process.url + ready_path, timeout, proc)
    except Exception:
        process.terminate(5)
        raise RuntimeError(f"{' '.join(argv)} did not start:\n{process.output()}") from None
    return process


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_redis() -> RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""
    binary = require_binary("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return RedisServer(proc, port)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")
