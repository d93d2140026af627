"""Real processes for tests: the proxy, the simulator, redis-server, on free loopback ports;
and a raw recording upstream for tests that need an upstream misbehaving on the wire."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


@dataclass
class SeenRequest:
    """One request as a raw upstream received it."""

    method: str
    target: str  # the request target exactly as sent (path and query)
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


# (raw response bytes, close the connection after them)
Answer = Callable[[SeenRequest], tuple[bytes, bool]]


class RecordingUpstream:
    """A raw HTTP/1.1 server on 127.0.0.1, in a thread (and event loop) of its own.

    It records every request and answers with whatever bytes `answer` returns, so tests can
    send what no well-behaved server would (oversized headers, cut bodies, garbage) and can
    check exactly what the proxy sent. Keep-alive like a real upstream; `close` ends the
    connection after the answer (or without one when the bytes are empty).
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[SeenRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recording-upstream",
                                        daemon=True)

    def __enter__(self) -> RecordingUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recording upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self._loop)  # connections the proxy keeps alive
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [(k.strip(), v.strip()) for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)]
                fields = {k.lower(): v for k, v in headers}
                if fields.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(fields.get("content-length", "0")))
                request = SeenRequest(method, target, headers, body)
                self.seen.append(request)
                raw, close = self.answer(request)
                writer.write(raw)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def http_response(status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = (),
                  *, head: bool = False, length: int | None = None) -> bytes:
    """Raw bytes of one HTTP/1.1 response; no body for HEAD, 1xx, 204 and 304."""
    no_body = head or status in (204, 304) or status < 200
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
    if status not in (204, 304) and status >= 200:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if no_body else body)
