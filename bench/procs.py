"""Child processes of a benchmark: `zai-proxy simulate`/`serve`, redis-server, on free ports.

`launch` starts one with a clean environment (none of the proxy's own variables leak in from
the shell that runs the bench), its output in a temporary log, and returns once it answers
`ready` over HTTP (or, with `ready=None`, accepts a TCP connection). `Proc.stop` sends SIGTERM
and kills after 15 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Variables of the proxy and the simulator: a bench sets the ones it means, never inherits them.
OWN_PREFIXES = ("ZAI_", "PROXY_", "SIM_", "RATE_LIMIT_", "QUOTA_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def zai(command: str, port: int, *args: str) -> list[str]:
    """The argv of `zai-proxy <command>` on 127.0.0.1:`port`."""
    return [sys.executable, "-m", "zai_proxy", command, "--host", "127.0.0.1", "--port",
            str(port), *args]


def launch(name: str, argv: list[str], env: dict[str, str], port: int, ready: str | None,
           *, timeout: float = 30.0) -> Proc:
    """Start `argv` and wait until it is ready (RuntimeError with its log if it is not)."""
    log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
    base = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**base, **env})
    proc = Proc(name, popen, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log.read_text()}")
        try:
            if ready is None:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return proc
            with urllib.request.urlopen(proc.url + ready, timeout=1) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not start:\n{log.read_text()}")
