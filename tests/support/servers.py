"""Real processes for the integration tests and the benchmarks: `zai-proxy serve`, `simulate`
and `dashboard`, and redis-server, each on a loopback port, started with a clean environment
and returned once it answers.

One launcher for both: `start_zai_proxy` (a `Process`, stopped with `terminate`) and
`start_redis` (a `RedisServer`, stopped with `stop`). `bench/` imports them from here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (real time, 50 ms apart) until it returns something truthy, and return that;
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


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


# Variables of the proxy and the simulator: a child gets the ones its caller passes, never the
# ones of the shell that runs the tests or the bench.
OWN_PREFIXES = ("ZAI_", "PROXY_", "SIM_", "RATE_LIMIT_", "QUOTA_")


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
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
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


@contextmanager
def running_zai_proxy(command: str, *args: str, env: dict[str, str] | None = None,
                      ready_path: str = "/health") -> Iterator[Process]:
    """`start_zai_proxy` for the length of a `with` block (a fixture's body): terminated after."""
    process = start_zai_proxy(command, *args, env=env, ready_path=ready_path)
    try:
        yield process
    finally:
        process.terminate()


# Debian's Chromium as root, headless, on a machine with no internet: no sandbox, no GPU, and
# none of its background connections (refused here, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def dashboard_stack(
    db_dir: Path, env: Mapping[str, str] | None = None, variants: Sequence[str] = ("v1", "v2")
) -> Iterator[tuple[Process, list[Process]]]:
    """One `serve` per variant (built-in simulator, `env` on top) and a dashboard scraping them
    every second; yields (dashboard, proxies) and stops them all."""
    proxies: list[Process] = []
    dashboard = None
    try:
        for variant in variants:
            proxies.append(start_zai_proxy("serve", env={**(env or {}),
                                                         "DEPLOYMENT_VARIANT": variant}))
        args = [a for p in proxies for a in ("--target", p.url)]
        dashboard = start_zai_proxy("dashboard", *args, "--interval", "1",
                                    "--db", str(db_dir / "dash.sqlite3"), ready_path="/healthz")
        yield dashboard, proxies
    finally:
        for process in [dashboard, *proxies]:
            if process is not None:
                process.terminate(10)


def send_traffic(proxy: Process, count: int) -> dict[str, int]:
    """Chat completions through one proxy: every third one streamed, one for an unknown model
    and one the upstream fails with a 502 (so the error panel has something to show).

    Returns what was sent: {"requests": n, "5xx": n}, counted when the answer is complete.
    """
    sent = {"requests": 0, "5xx": 0}
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for i in range(count):
            model = "no-such-model-7" if i == 1 else "glm-4.6"
            body: dict[str, Any] = {"model": model, "max_tokens": 40,
                                    "messages": [{"role": "user", "content": f"hello {i}"}]}
            headers = {"x-sim-status": "502"} if i == 2 else {}
            if i % 3 == 0:
                body["stream"] = True
                with client.stream("POST", "/v1/chat/completions", json=body,
                                   headers=headers) as response:
                    for _ in response.iter_bytes():
                        pass
                    status = response.status_code
            else:
                status = client.post("/v1/chat/completions", json=body,
                                     headers=headers).status_code
            sent["requests"] += 1
            sent["5xx"] += status >= 500
    return sent


@dataclass
class RedisServer:
    """A redis-server child; `stop` ends it (SIGTERM, waited for)."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_redis(port: int | None = None) -> RedisServer:
    """A throwaway redis-server on loopback, no persistence, once it accepts connections: on a
    free port, or on `port` (to bring a stopped one back at the same address)."""
    binary = require_binary("redis-server")
    port = free_port() if port is None else port
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
