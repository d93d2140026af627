"""Token accounting cost: counting throughput and the proxy CPU accounting adds per stream.

Run: ``/work/venv/bin/python bench/bench_accounting.py [--seconds S] [--pairs P] [--save]``
(``--quick``: a one-minute smoke run).

1. Counting throughput (tokens/s) of the bundled tiktoken encodings, with the functions of
   ``bench/bench_tokenizer.py`` (which has the full event-loop stall figures).
2. In-process CPU of one ``Ledger`` on a 20-chunk stream of the simulator's own bytes (open,
   relay every chunk, flush, settle with metrics), with and without the usage chunk to strip.
3. The figure the issue sets a target for -- accounting may cost at most 20% of the proxy's
   per-request CPU on a 20-chunk stream. The simulator (``--chunks 20``, no gaps) runs pinned
   to CPU 1, two real proxies (``zai-proxy serve``, one uvicorn worker) pinned to CPU 0, one
   with ``TOKEN_COUNTING_ENABLED=true`` and one with ``=false``; the load generator (wrk, C,
   one thread, 8 connections, closed loop) runs on CPU 1 next to the simulator. For each of P
   pairs the two proxies are measured back to back (order alternating per pair), S seconds
   each (N = the streams completed in that time, printed), for two clients: one that did NOT
   set ``stream_options.include_usage`` (the proxy asks the upstream for it and strips the
   extra chunk) and one that did (pass-through).
   Proxy CPU = utime+stime delta of the proxy process (/proc/PID/stat) / completed streams.
   Share = (CPU_on - CPU_off) / CPU_on, per pair; the median over pairs is compared with the
   target and printed as PASS or MISS.

Everything it starts runs in its own session and is killed (by pid) on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
PROXY_CPU = "0"
LOAD_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_SHARE = 0.20  # issue 3: accounting <= 20% of the proxy's per-request CPU
CHUNKS = 20
CONNECTIONS = 8

BODY_STRIP = {"model": "glm-4.7", "stream": True,
              "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
BODY_PASS = {**BODY_STRIP, "stream_options": {"include_usage": True}}

WRK_LUA = """
function init(args)
  local f = io.open(args[1], "rb"); local body = f:read("*a"); f:close()
  req = wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                 ["Authorization"] = "Bearer bench-key"}, body)
end
function request() return req end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":%d,"status":%d}\\n', summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all threads), in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int


class Procs:
    """Children started in their own sessions, killed by pid (process group) on close."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def start(self, name: str, argv: list[str], port: int, env: dict[str, str],
              log: Path) -> Proc:
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        proc = Proc(name, popen, port)
        self.items.append(proc)
        wait_ready(proc, "/ready" if name.startswith("proxy") else "/health", log)
        return proc

    def close(self) -> None:
        for proc in self.items:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                try:
                    proc.popen.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.popen.pid, signal.SIGKILL)
                    proc.popen.wait()
        self.items.clear()


def http(port: int, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Minimal blocking HTTP/1.1 request (Connection: close), chunked bodies decoded."""
    head = {"Host": "127.0.0.1", "Connection": "close", "Content-Length": str(len(body)),
            "Content-Type": "application/json", "Authorization": "Bearer bench-key",
            **(headers or {})}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\n".encode()
                  + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in raw_head.lower():
        out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        rest = out
    return int(raw_head.split(b" ", 2)[1]), rest


def wait_ready(proc: Proc, path: str, log: Path, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            if http(proc.port, "GET", path)[0] == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready after {deadline_s}s")


def proxy_env(sim_port: int, counting: bool, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ZAI_", "PROXY_", "RATE_LIMIT_", "SIM_", "TOKEN", "TIKTOKEN"))
           and k not in {"LOG_LEVEL", "MAX_WORKERS", "PORT", "HOST", "PRICING_FILE"}}
    env.update({
        "ZAI_API_KEY": "bench-key",
        "ZAI_TARGET_URL": f"http://127.0.0.1:{sim_port}/api/paas/v4",
        "ZAI_ANTHROPIC_URL": f"http://127.0.0.1:{sim_port}/api/anthropic",
        "RATE_LIMIT_STATE_FILE": "",
        "RATE_LIMIT_INITIAL": "100000",
        "RATE_LIMIT_MAX": "100000",
        "MAX_WORKERS": "1000",
        "LOG_LEVEL": log_level,
        "TOKEN_COUNTING_ENABLED": "true" if counting else "false",
    })
    return env


# --------------------------------------------------------------------------- load


@dataclass
class Run:
    streams: int
    seconds: float
    errors: int
    cpu_ms: float

    @property
    def cpu_per_stream(self) -> float:
        return self.cpu_ms / self.streams if self.streams else float("nan")


def run_wrk(port: int, body_file: Path, lua: Path, seconds: float, pid: int) -> Run:
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s",
            "--timeout", "10s", "-s", str(lua), f"http://127.0.0.1:{port}/v1/chat/completions",
            "--", str(body_file)]
    before = cpu_ticks(pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                         start_new_session=True)
    time.sleep(0.05)  # let the proxy finish the streams wrk dropped when it stopped
    after = cpu_ticks(pid)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out.stdout}\n{out.stderr}")
    d = json.loads(line[len("BENCH_JSON "):])
    return Run(d["requests"], d["duration_us"] / 1e6, d["errors"] + d["status"],
               (after - before) * 1000 / CLK_TCK)


# --------------------------------------------------------------------------- in-process


def throughput_lines(seconds: float) -> Iterator[str]:
    sys.path.insert(0, str(HERE))
    bench_tokenizer = importlib.import_module("bench_tokenizer")
    from zai_proxy.accounting.tokenizer import load_tokenizer

    for name in ("cl100k_base", "o200k_base"):
        tok = load_tokenizer(name)
        for label, text in (("mixed prose/code/JSON/CJK", bench_tokenizer.MIXED * 20),
                            ("short chat reply (~12 tokens)", "hello there friend " * 4)):
            rate = bench_tokenizer.throughput(tok, text, seconds)
            yield (f"  {name:<12} source={tok.source:<8} {label:<30} "
                   f"{rate / 1e6:6.2f} M tokens/s")
        tok.close()
    yield (f"  SSE parse + usage tracking only (bench_tokenizer.stream_accounting_us): "
           f"{bench_tokenizer.stream_accounting_us():.1f} us CPU per 20-chunk stream")


def ledger_us(strip: bool, rounds: int) -> float:
    """CPU (us) of one Ledger over a 20-chunk simulator stream: open, relay, flush, settle."""
    from prometheus_client import CollectorRegistry

    from zai_proxy.accounting.catalog import ModelCatalog
    from zai_proxy.accounting.ledger import Accounting
    from zai_proxy.accounting.pricing import PricingTable
    from zai_proxy.accounting.tokenizer import load_tokenizer
    from zai_proxy.observe.metrics import Metrics
    from zai_proxy.simulator import openai_format
    from zai_proxy.simulator.generation import plan
    from zai_proxy.wire.routing import Router

    pricing = PricingTable.default()
    acc = Accounting(tokenizer=load_tokenizer(), pricing=pricing,
                     catalog=ModelCatalog.from_pricing(pricing),
                     metrics=Metrics(CollectorRegistry(), "bench"), default_model="glm-4.7")
    route = Router("http://u/api/paas/v4", "http://u/api/anthropic").resolve(
        "POST", "/v1/chat/completions")
    gen = plan(prompt_tokens=9, source="Say hello in one short sentence.".split(),
               chunks=CHUNKS, words_per_chunk=2, cached_tokens=0)
    sim_plan = openai_format.chat_stream(gen, "glm-4.7", "x", 0, with_usage=True)
    reads = [sim_plan.head, *sim_plan.pieces, sim_plan.tail]
    payload = BODY_PASS if not strip else BODY_STRIP
    body = json.dumps(payload).encode()

    async def go() -> float:
        start = time.process_time()
        for _ in range(rounds):
            ledger = acc.open(route, payload, body)
            assert ledger is not None
            for data in reads:
                ledger.relay(data)
            ledger.flush()
            await ledger.settle()
        return (time.process_time() - start) / rounds * 1e6

    return asyncio.run(go())


# --------------------------------------------------------------------------- main


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved on/off pairs (>= 3)")
    parser.add_argument("--log-level", default="INFO", help="proxy LOG_LEVEL (INFO: the "
                        "per-request JSON log line is written, as in production)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 pairs x 600")
    parser.add_argument("--save", action="store_true",
                        help="also write the output to bench/results/accounting-<date>.txt")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.pairs = 2.0, 3
    args.pairs = max(3, args.pairs)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"bench_accounting  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%SZ}  "
        f"python {platform.python_version()}  {os.cpu_count()} CPUs  {platform.machine()}")
    say(f"command: {' '.join([Path(PYTHON).name, *sys.argv])}")
    say()
    say("1. counting throughput (Tokenizer.count, one thread)")
    for line in throughput_lines(0.5 if args.quick else 1.0):
        say(line)
    say()
    rounds = 300 if args.quick else 2000
    strip_us, pass_us = ledger_us(True, rounds), ledger_us(False, rounds)
    say("2. in-process Ledger CPU per 20-chunk stream (open + relay 22 reads + flush + settle "
        "with metrics)")
    say(f"  client without include_usage (strip path): {strip_us:7.1f} us")
    say(f"  client with include_usage (pass-through):  {pass_us:7.1f} us")
    say()

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            say(f"3. skipped: {tool} is not installed")
            return 1
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="bench-accounting-"))
    try:
        lua = tmp / "stream.lua"
        lua.write_text(WRK_LUA)
        bodies = {"strip": tmp / "strip.json", "pass": tmp / "pass.json"}
        bodies["strip"].write_text(json.dumps(BODY_STRIP))
        bodies["pass"].write_text(json.dumps(BODY_PASS))
        sim_port = free_port()
        sim_env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
        procs.start("simulator", [
            "taskset", "-c", LOAD_CPU, PYTHON, "-m", "zai_proxy", "simulate", "--host",
            "127.0.0.1", "--port", str(sim_port), "--chunks", str(CHUNKS),
            "--chunk-gap-ms", "0"], sim_port, sim_env, tmp / "sim.log")
        proxies: dict[str, Proc] = {}
        for mode in ("on", "off"):
            port = free_port()
            proxies[mode] = procs.start(f"proxy-{mode}", [
                "taskset", "-c", PROXY_CPU, PYTHON, "-m", "zai_proxy", "serve", "--host",
                "127.0.0.1", "--port", str(port)], port,
                proxy_env(sim_port, mode == "on", args.log_level), tmp / f"proxy-{mode}.log")

        # Sanity: what the clients get, and that the "on" proxy really counts.
        status, streamed = http(proxies["on"].port, "POST", "/v1/chat/completions",
                                json.dumps(BODY_STRIP).encode())
        assert status == 200 and b'"usage"' not in streamed and streamed.endswith(
            b"data: [DONE]\n\n"), streamed[-300:]
        status, streamed = http(proxies["on"].port, "POST", "/v1/chat/completions",
                                json.dumps(BODY_PASS).encode())
        assert status == 200 and b'"usage"' in streamed
        for proc in proxies.values():  # warm-up: connections, code paths
            for body_file in bodies.values():
                run_wrk(proc.port, body_file, lua, 1.0, proc.popen.pid)

        say(f"3. proxy CPU per 20-chunk stream (proxy on CPU {PROXY_CPU}; simulator and wrk "
            f"on CPU {LOAD_CPU}; {CONNECTIONS} connections, {args.seconds:g} s per run, "
            f"{args.pairs} interleaved pairs, LOG_LEVEL={args.log_level})")
        results: dict[tuple[str, str], list[Run]] = {}
        shares: dict[str, list[float]] = {"strip": [], "pass": []}
        for rep in range(args.pairs):
            for kind in ("strip", "pass"):
                order = ("on", "off") if (rep % 2 == 0) else ("off", "on")
                pair: dict[str, Run] = {}
                for mode in order:
                    proc = proxies[mode]
                    pair[mode] = run_wrk(proc.port, bodies[kind], lua, args.seconds,
                                         proc.popen.pid)
                    results.setdefault((kind, mode), []).append(pair[mode])
                on, off = pair["on"].cpu_per_stream, pair["off"].cpu_per_stream
                shares[kind].append((on - off) / on)
                say(f"  pair {rep + 1} {kind:<5}  on {on:6.3f} ms  off {off:6.3f} ms  "
                    f"added {on - off:+6.3f} ms  share {(on - off) / on:6.1%}  "
                    f"({pair['on'].streams}/{pair['off'].streams} streams, "
                    f"{pair['on'].streams / pair['on'].seconds:.0f}/"
                    f"{pair['off'].streams / pair['off'].seconds:.0f} streams/s, "
                    f"errors {pair['on'].errors}/{pair['off'].errors})")
        metrics = http(proxies["on"].port, "GET", "/metrics")[1].decode()
        counted = [line for line in metrics.splitlines()
                   if line.startswith("zai_proxy_tokens_total{") and 'direction="output"' in line]
        say("  counted by the 'on' proxy: " + "; ".join(counted))
        say()
        say("summary (medians over pairs)")
        verdicts = []
        for kind, label in (("strip", "client without include_usage (proxy strips)"),
                            ("pass", "client with include_usage (pass-through)")):
            on = median([r.cpu_per_stream for r in results[(kind, "on")]])
            off = median([r.cpu_per_stream for r in results[(kind, "off")]])
            share = median(shares[kind])
            verdict = "PASS" if share <= TARGET_SHARE else "MISS"
            verdicts.append(verdict)
            say(f"  {label:<46} proxy CPU/stream on {on:.3f} ms, off {off:.3f} ms; "
                f"accounting share {share:.1%} (pairs: "
                + ", ".join(f"{s:.1%}" for s in shares[kind])
                + f")  target <= {TARGET_SHARE:.0%}: {verdict}")
        say()
        say("notes: CPU is utime+stime of the proxy process from /proc/PID/stat "
            f"(clock tick {1000 / CLK_TCK:.0f} ms; a run is several seconds of CPU, so the "
            "tick is < 0.5% of it). 'off' is the same proxy build with "
            "TOKEN_COUNTING_ENABLED=false: no ledger, no body rewrite, no usage chunk "
            "requested, no token fields in the log line.")
    finally:
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.save:
        out = HERE / "results" / f"accounting-{dt.date.today():%Y-%m-%d}.txt"
        out.parent.mkdir(exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        print(f"saved to {out}")
    return 0 if all(v == "PASS" for v in verdicts) else 2


if __name__ == "__main__":
    raise SystemExit(main())

