"""A blue-green deployment on one machine, for the switchover e2e test and bench/bench_switch.py.

- two real proxies (`zai-proxy serve`, v1 and v2) against the simulator, one "pod" each;
- `ServiceStandIn`: a local stand-in for a Kubernetes Service as kube-proxy implements it: each
  *new* TCP connection goes to a ready pod that the Service's current selector (read from the
  fake kubectl's state file) matches; an established connection stays where it is until one side
  closes it (half-closes are passed through, as a DNAT would);
- the fake kubectl (tests/fixtures/kubectl) wired to that same state: `get --raw` pod and
  service proxy paths reach the real proxies, `exec ... zai-proxy admin` runs the real command
  against them, `scale` to 0 SIGTERMs them;
- `Workers`: threads, each with its own official OpenAI or Anthropic SDK client (own keep-alive
  pool, default retries), calling continuously, streaming and not; every SDK call and every HTTP
  attempt (with the local port of its connection and the variant that answered) is recorded.

The analysis functions at the end join the workers' attempts to the stand-in's connections and
the fake kubectl's timed events (patch, retire), on the one monotonic clock of this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai

from tests.support import kubectl_fake
from tests.support.servers import Process

ADMIN_KEY = "bluegreen-admin-key-5e1f9a"
CLIENT_KEY = "bluegreen-worker-key-77c2"
NAMESPACE = "zai"
V1_POD = "zai-proxy-v1-7c9f-aaaaa"
V2_POD = "zai-proxy-v2-7c9f-ccccc"
PODS = {"v1": V1_POD, "v2": V2_POD}
MESSAGES = [{"role": "user", "content": "Tell me about blue-green deployments"}]
# Streams of 10 chunks 100 ms apart: long enough that some are in flight at every switch.
STREAM_HEADERS = {"x-sim-chunks": "10", "x-sim-chunk-gap-ms": "100"}


def proxy_env(simulator_url: str, variant: str, **extra: str) -> dict[str, str]:
    """Environment of one variant's proxy: real key, admin key, a limiter that does not bind."""
    return {
        "ZAI_API_KEY": "bluegreen-upstream-key-0000",
        "ZAI_TARGET_URL": f"{simulator_url}/api/paas/v4",
        "ZAI_ANTHROPIC_URL": f"{simulator_url}/api/anthropic",
        "PROXY_API_KEYS": CLIENT_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "DEPLOYMENT_VARIANT": variant,
        "RATE_LIMIT_STATE_FILE": "",
        "RATE_LIMIT_INITIAL": "400",
        "RATE_LIMIT_MAX": "800",
        "MAX_WORKERS": "200",
        "SHUTDOWN_DRAIN_SECONDS": "1",
        "SHUTDOWN_GRACE_SECONDS": "20",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def cluster_state(pods: Mapping[str, Process], admin_key: str = ADMIN_KEY) -> dict[str, Any]:
    """The fake kubectl's state: v1 serving, one pod per variant mapped to a real proxy."""
    state: dict[str, Any] = json.loads(kubectl_fake.CLUSTER.read_text())
    state["pods"] = [p for p in state["pods"] if p["metadata"]["name"] in PODS.values()]
    for deployment in state["deployments"]:
        deployment["spec"]["replicas"] = 1
        deployment["status"].update(replicas=1, updatedReplicas=1, readyReplicas=1,
                                    availableReplicas=1)
    state["pod_urls"] = {PODS[v]: proc.url for v, proc in pods.items()}
    state["pod_pids"] = {PODS[v]: proc.proc.pid for v, proc in pods.items()}
    state["pod_env"] = {PODS[v]: {"ADMIN_API_KEY": admin_key} for v in pods}
    state["exec_python"] = sys.executable
    return state


def read_state(path: Path) -> dict[str, Any]:
    for _ in range(50):  # the fake replaces the file atomically; retry only on a vanished one
        try:
            result: dict[str, Any] = json.loads(path.read_text())
            return result
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.01)
    raise RuntimeError(f"cannot read {path}")


# -- the Service stand-in ---------------------------------------------------------------------


@dataclass
class Connection:
    """One client connection through the stand-in, and the pod it was given."""

    id: int
    client_port: int
    pod: str
    variant: str
    opened: float
    closed: float | None = None


class ServiceStandIn:
    """kube-proxy in miniature: a backend per new connection from the current selector."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.connections: list[Connection] = []
        self.refused = 0
        self._next = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service-stand-in", daemon=True)
        self.port = 0

    def __enter__(self) -> ServiceStandIn:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("service stand-in did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Cut every connection still open and let their tasks end before the loop stops."""
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(server.wait_closed())

    def _pick(self) -> tuple[str, str, str] | None:
        state = read_state(self.state_path)
        selector = state["service"]["spec"]["selector"]
        urls = state.get("pod_urls", {})
        candidates = [
            p for p in state["pods"]
            if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())
            and p["metadata"]["name"] in urls and not p["metadata"].get("deletionTimestamp")
        ]
        if not candidates:
            return None
        pod = candidates[self._next % len(candidates)]
        self._next += 1
        name = pod["metadata"]["name"]
        return name, pod["metadata"]["labels"]["version"], urls[name]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened = time.monotonic()
        picked = self._pick()
        if picked is None:
            self.refused += 1
            writer.transport.abort()
            return
        name, variant, url = picked
        host, port = url.removeprefix("http://").split(":")
        try:
            backend_reader, backend_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            self.refused += 1
            writer.transport.abort()
            return
        record = Connection(len(self.connections), writer.get_extra_info("peername")[1], name,
                            variant, opened)
        self.connections.append(record)
        self._writers |= {writer, backend_writer}
        try:
            await asyncio.gather(_pipe(reader, backend_writer), _pipe(backend_reader, writer))
        finally:
            record.closed = time.monotonic()
            self._writers -= {writer, backend_writer}
            for w in (writer, backend_writer):
                w.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one direction; pass the end on as a half-close, a reset as an abort."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof() and not sink.is_closing():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.transport.abort()


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class SwitchRun:
    """One `zai-proxy switch` invocation: what it printed, its exit code, its kubectl calls."""

    argv: list[str]
    code: int
    output: str
    started: float
    ended: float
    events: list[dict[str, Any]]

    def patched_at(self) -> float:
        """End of the call that patched the selector (new connections go there from then)."""
        patches = [e for e in self.events if "patch" in e["args"] and e["rc"] == 0]
        assert patches, f"no selector patch in this run:\n{self.output}"
        return float(patches[0]["end"])

    def retired_at(self) -> dict[str, float]:
        """Pod -> end of its successful POST /admin/retire in this run."""
        found = {}
        for event in self.events:
            args = event["args"]
            if "exec" in args and "POST" in args and "/admin/retire" in args and not event["rc"]:
                found[args[args.index("exec") + 1]] = float(event["end"])
        return found


class Cluster:
    """The fake kubectl's state, call log and timed events in one directory, and the switch."""

    def __init__(self, directory: Path, pods: Mapping[str, Process]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.state_path = directory / "state.json"
        self.calls_path = directory / "calls.jsonl"
        self.events_path = directory / "events.jsonl"
        self.state_path.write_text(json.dumps(cluster_state(pods)))
        self.calls_path.write_text("")
        self.events_path.write_text("")
        self.kubectl = kubectl_fake.install(directory / "bin")
        self.env = {**os.environ, "FAKE_KUBECTL_STATE": str(self.state_path),
                    "FAKE_KUBECTL_CALLS": str(self.calls_path),
                    "FAKE_KUBECTL_EVENTS": str(self.events_path)}

    def selected(self) -> str:
        return str(read_state(self.state_path)["service"]["spec"]["selector"]["version"])

    def events(self) -> list[dict[str, Any]]:
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def switch(self, *argv: str, timeout: float = 120.0) -> SwitchRun:
        """Run `zai-proxy switch ARGV` against this cluster as an operator would."""
        full = [sys.executable, "-m", "zai_proxy", "switch", *argv, "-n", NAMESPACE,
                "--kubectl", str(self.kubectl)]
        started = time.monotonic()
        done = subprocess.run(full, capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False)
        ended = time.monotonic()
        events = [e for e in self.events() if e["start"] >= started and e["end"] <= ended]
        return SwitchRun(list(argv), done.returncode, done.stdout + done.stderr, started, ended,
                         events)

    def admin(self, variant: str, method: str, path: str, body: Any = None) -> Any:
        """Call a variant's admin API the way the switch does (exec through the fake kubectl)."""
        argv = [str(self.kubectl), "--namespace", NAMESPACE, "exec", PODS[variant], "-c",
                "zai-proxy", "-i", "--", "zai-proxy", "admin", method, path]
        stdin = ""
        if body is not None:
            argv += ["--data", "-"]
            stdin = json.dumps(body)
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


# -- the workers ------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One HTTP attempt an SDK made (its retries are attempts too): when, on which connection."""

    worker: int
    start: float
    port: int
    variant: str | None
    status: int


@dataclass
class Call:
    """One SDK call: ok unless it raised; `complete`: a stream that reached its end."""

    worker: int
    kind: str
    start: float
    end: float
    ok: bool
    complete: bool
    error: str = ""


@dataclass
class Workers:
    """Worker threads calling through `base_url` until stopped, each with its own SDK client."""

    base_url: str
    openai_workers: int = 20
    anthropic_workers: int = 4
    # The first of the OpenAI workers never stream (batch jobs). Worth knowing: the OpenAI SDK
    # does not put a connection back in its pool after a stream, so a streaming worker opens a
    # new connection after each stream and drifts to the new variant on its own; a worker that
    # never streams keeps its pooled connection as long as it calls more often than the
    # keep-alive timeouts.
    batch_workers: int = 10
    seed: int = 1
    pauses: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.95, 1.05)
    calls: list[Call] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Workers:
        total = self.openai_workers + self.anthropic_workers
        for i in range(total):
            kind = "openai" if i < self.openai_workers else "anthropic"
            thread = threading.Thread(target=self._work, args=(i, kind), daemon=True,
                                      name=f"worker-{i}")
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def failures(self) -> list[Call]:
        return [c for c in self.calls if not c.ok]

    def population(self, worker: int) -> str:
        """openai-batch (never streams), openai-chat or anthropic (stream half the time)."""
        if worker >= self.openai_workers:
            return "anthropic"
        return "openai-batch" if worker < self.batch_workers else "openai-chat"

    def _hooks(self, worker: int) -> dict[str, list[Callable[..., Any]]]:
        starts: dict[int, float] = {}

        def on_request(request: httpx.Request) -> None:
            starts[id(request)] = time.monotonic()

        def on_response(response: httpx.Response) -> None:
            stream = response.extensions.get("network_stream")
            address = stream.get_extra_info("client_addr") if stream is not None else None
            start = starts.pop(id(response.request), time.monotonic())
            self.attempts.append(Attempt(worker, start, int(address[1]) if address else -1,
                                         response.headers.get("x-zai-proxy-variant"),
                                         response.status_code))

        return {"request": [on_request], "response": [on_response]}

    def _work(self, worker: int, kind: str) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        hooks = self._hooks(worker)
        client: Any
        if kind == "openai":
            client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=CLIENT_KEY,
                                   timeout=60, http_client=openai.DefaultHttpxClient(
                                       event_hooks=hooks))
        else:
            client = anthropic.Anthropic(base_url=self.base_url, api_key=CLIENT_KEY, timeout=60,
                                         http_client=anthropic.DefaultHttpxClient(
                                             event_hooks=hooks))
        with client:
            batch = self.population(worker) == "openai-batch"
            while not self._stop.is_set():
                stream = not batch and rng.random() < 0.5
                start = time.monotonic()
                complete, ok, error = False, True, ""
                try:
                    complete = (_openai_call if kind == "openai" else _anthropic_call)(
                        client, stream)
                except Exception as exc:  # an SDK call that raises is a failed worker request
                    ok, error = False, repr(exc)
                self.calls.append(Call(worker, f"{kind}-{'stream' if stream else 'once'}",
                                       start, time.monotonic(), ok, complete, error))
                self._stop.wait(rng.choice(self.pauses))


def _openai_call(client: openai.OpenAI, stream: bool) -> bool:
    if not stream:
        reply = client.chat.completions.create(model="glm-4.7", messages=MESSAGES)  # type: ignore[arg-type]
        return bool(reply.choices and reply.choices[0].message.content)
    finish = None
    for chunk in client.chat.completions.create(  # type: ignore[call-overload]
            model="glm-4.7", messages=MESSAGES, stream=True, extra_headers=STREAM_HEADERS):
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return finish == "stop"


def _anthropic_call(client: anthropic.Anthropic, stream: bool) -> bool:
    if not stream:
        message = client.messages.create(model="glm-4.7", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
        return bool(message.content)
    with client.messages.stream(model="glm-4.7", max_tokens=64, messages=MESSAGES,  # type: ignore[arg-type]
                                extra_headers=STREAM_HEADERS) as events:
        for _ in events:
            pass
        final = events.get_final_message()
    return final.stop_reason is not None


# -- analysis ---------------------------------------------------------------------------------


def connection_of(attempt: Attempt, connections: Iterable[Connection]) -> Connection | None:
    """The stand-in connection an attempt went over (its local port, open at that moment)."""
    for conn in connections:
        if conn.client_port == attempt.port and conn.opened <= attempt.start + 0.05 and (
                conn.closed is None or conn.closed >= attempt.start - 0.05):
            return conn
    return None


@dataclass
class AfterRelease:
    """Requests that reached a retired variant after its pods were told to release clients."""

    per_connection: dict[int, int]  # stand-in connection id -> attempts started after release
    on_new_connections: list[Attempt]  # on a connection opened after the patch: must not exist
    unjoined: list[Attempt]  # attempts on the old variant whose connection was not found
    last_start: float | None  # the last attempt start on the old variant after the patch


def after_release(attempts: Iterable[Attempt], connections: Sequence[Connection], old: str,
                  patched_at: float, released_at: float, until: float) -> AfterRelease:
    """What reached variant `old` between its release and `until`, per connection."""
    per: dict[int, int] = {}
    new: list[Attempt] = []
    unjoined: list[Attempt] = []
    last: float | None = None
    for attempt in attempts:
        if attempt.variant != old or not patched_at <= attempt.start <= until:
            continue
        last = attempt.start if last is None else max(last, attempt.start)
        conn = connection_of(attempt, connections)
        if conn is None:
            unjoined.append(attempt)
            continue
        if conn.opened > patched_at:
            new.append(attempt)
        if attempt.start > released_at:
            per[conn.id] = per.get(conn.id, 0) + 1
    return AfterRelease(per, new, unjoined, last)


def spanning(calls: Iterable[Call], moment: float, kind: str = "stream") -> list[Call]:
    """Calls of a kind in flight at `moment`."""
    return [c for c in calls if kind in c.kind and c.start < moment < c.end]
