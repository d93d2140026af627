"""Real-socket benchmark of quota awareness: the proxy in front of the simulator's compressed
five-hour window (issue 11's targets), several runs, spread reported.

    .venv/bin/python bench/bench_quota.py                      # every scenario, 3 runs (~9 min)
    .venv/bin/python bench/bench_quota.py --scenario wall --runs 1

Processes: `zai-proxy simulate` (a five-hour budget of BUDGET tokens over a WINDOW-second rolling
window, 20 ms latency, each chat request 12 tokens) and one `zai-proxy serve` (QUOTA_POLL_SECONDS
=1, QUOTA_BURN_WINDOW=10s, limiter ceilings raised so they never bind), and this script as an
open-loop load generator (aiohttp: requests leave on a fixed schedule whatever the answers).
Twice a second it samples the proxy's /health quota block. The simulator records, per window,
when it opened and reset, every request it refused (arrival time) and the tokens used.

- wall (pacing off, demand 1.4x what the budget allows, so the budget runs out at ~0.7 of the
  window): upstream attempts between the first 1308 and the reset; clients' Retry-After against
  the true reset; how long after the reset service resumes; the time to exhaustion the proxy
  projected at the middle of the window against when the 1308 actually came (when a poll saw
  the budget spent before any request hit it, no 1308 comes at all: then against the first
  request the proxy refused). wall-bursty: the same with the demand in 4 s on/off bursts.
- pacing (QUOTA_PACING=even, demand 2x what the budget allows): 1308s in the window, share of
  the budget used by its end.
- monitor (budget never runs out, 10 req/s): 4 s phases with the monitor answering normally,
  503, slowly (3 s, over QUOTA_POLL_TIMEOUT=1s), garbage, 401, and not listening at all (a second
  proxy whose ZAI_MONITOR_URL is a closed port): requests served, median latency against the
  first normal phase, and what /health says at the end of each phase.

Output also goes to bench/results/quota-<date>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root holds tests.support

from tests.support.servers import Process, free_port, start_zai_proxy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
UPSTREAM_KEY = "bench-upstream-key-quota-0000"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
TOKENS_PER_REQUEST = 12  # 2 prompt + 5 chunks x 2 words
WINDOW = 30.0
BUDGET = 300 * TOKENS_PER_REQUEST  # 300 requests: 10 req/s over the window
BUDGET_RATE = BUDGET / TOKENS_PER_REQUEST / WINDOW


# -- processes ---------------------------------------------------------------------------------


def start_simulator(budget: int) -> Process:
    return start_zai_proxy("simulate", "--latency-ms", "20", "--expect-key", UPSTREAM_KEY,
                           "--quota-5h-tokens", str(budget), "--quota-5h-window-s",
                           f"{WINDOW:g}", timeout=30)


def start_proxy(sim: Process, **env: str) -> Process:
    return start_zai_proxy("serve", env={
        "ZAI_API_KEY": UPSTREAM_KEY, "ZAI_TARGET_URL": f"{sim.url}/api/paas/v4",
        "ZAI_ANTHROPIC_URL": f"{sim.url}/api/anthropic", "RATE_LIMIT_STATE_FILE": "",
        "RATE_LIMIT_INITIAL": "100", "RATE_LIMIT_MAX": "100", "MAX_WORKERS": "64",
        "LOG_LEVEL": "WARNING", "QUOTA_POLL_SECONDS": "1", "QUOTA_BURN_WINDOW": "10s",
        "SHUTDOWN_DRAIN_SECONDS": "0", **env}, ready_path="/ready", timeout=30)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    sent: float  # epoch
    done: float
    status: int
    code: str | None = None
    cls: str | None = None
    retry_after: float | None = None


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    health: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


def schedule(rate: float, seconds: float, burst: float | None = None) -> list[float]:
    """Send times (s from start): evenly at `rate`, or with `burst` s periods, twice the rate in
    the first half of each and nothing in the second (the same mean)."""
    if burst is None:
        return [i / rate for i in range(int(rate * seconds))]
    times, half = [], burst / 2
    for period in range(int(seconds / burst)):
        times += [period * burst + i / (2 * rate) for i in range(int(2 * rate * half))]
    return times


async def load(proxy: Process, rate: float, seconds: float, run: Run,
               health_every: float = 0.5, burst: float | None = None) -> None:
    """Open loop: `rate` req/s for `seconds` (see `schedule`), every answer kept; /health
    sampled meanwhile."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one() -> None:
            sent = time.time()
            try:
                async with session.post(f"{proxy.url}/v1/chat/completions", json=CHAT) as r:
                    body = await r.read()
                    code = None
                    if r.status != 200:
                        try:
                            code = str(json.loads(body)["error"]["code"])
                        except (ValueError, KeyError, TypeError):
                            code = None
                    retry = r.headers.get("retry-after")
                    run.answers.append(Answer(sent, time.time(), r.status, code,
                                              r.headers.get("x-zai-error-class"),
                                              float(retry) if retry else None))
            except (aiohttp.ClientError, TimeoutError):
                run.answers.append(Answer(sent, time.time(), 0))

        async def sampler() -> None:
            while True:
                try:
                    async with session.get(f"{proxy.url}/health") as r:
                        run.health.append((time.time(), (await r.json())["quota"]))
                except (aiohttp.ClientError, TimeoutError, KeyError):
                    pass
                await asyncio.sleep(health_every)

        sampling = asyncio.create_task(sampler())
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for at in schedule(rate, seconds, burst):
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)


def sim_quota(sim: Process) -> dict[str, Any]:
    with urllib.request.urlopen(sim.url + "/_stats", timeout=5) as answer:
        return dict(json.loads(answer.read())["quota"]["five_hour"])


def sim_config(sim: Process, **values: Any) -> None:
    request = urllib.request.Request(sim.url + "/_config", data=json.dumps(values).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5):
        pass


# -- scenarios ----------------------------------------------------------------------------------


def wall(_: int, burst: float | None = None) -> dict[str, float]:
    """Pacing off, demand 1.4x the budget's rate, through the first reset and a bit beyond."""
    sim = start_simulator(BUDGET)
    proxy = start_proxy(sim)
    run = Run()
    try:
        asyncio.run(load(proxy, 1.4 * BUDGET_RATE, WINDOW + 6, run, burst=burst))
        window = sim_quota(sim)["history"][0]
    finally:
        proxy.terminate(15)
        sim.terminate(15)
    opened, reset = window["opened_at"], window["reset_at"]
    refusals = window["refusals"]
    local = [a for a in run.answers if a.code == "proxy_quota_exhausted"]
    # The budget ran out when the first request was refused: by the upstream (1308), or by the
    # proxy itself when a poll saw the budget spent before any request hit the wall.
    first_1308 = window["first_refusal_at"] or min(a.sent for a in local)
    # The proxy knows once its first quota answer (relayed 1308 or local) left it.
    learned = min(a.done for a in run.answers if a.code in ("1308", "proxy_quota_exhausted"))
    deviation = [a.done + (a.retry_after or 0) - reset for a in local]
    after_reset = sorted((a for a in run.answers if a.sent >= reset), key=lambda a: a.sent)
    refused_after = [a for a in after_reset if a.cls is not None and a.cls.startswith("quota")]
    middle = opened + WINDOW / 2
    t, quota = next((t, q) for t, q in run.health if t >= middle)
    eta = quota["windows"]["five_hour"]["exhaustion_eta_seconds"]
    projected = t + eta
    return {
        "first_1308_at_fraction": (first_1308 - opened) / WINDOW,
        "upstream_1308s": len(refusals),
        "attempts_after_first_1308": max(0, len(refusals) - 1),
        "attempts_after_proxy_learned": sum(1 for r in refusals if r > learned),
        "local_429s": len(local),
        "retry_after_minus_true_reset_min_s": min(deviation),
        "retry_after_minus_true_reset_max_s": max(deviation),
        "first_sent_after_reset_s": after_reset[0].sent - reset,
        "first_sent_after_reset_served": float(after_reset[0].status == 200),
        "quota_429s_of_requests_sent_after_reset": len(refused_after),
        "eta_error_vs_1308_from_middle": abs(projected - first_1308) / (first_1308 - middle),
        "eta_projected_minus_actual_s": projected - first_1308,
    }


def pacing(_: int) -> dict[str, float]:
    """QUOTA_PACING=even, demand 2x the budget's rate, for the whole first window."""
    sim = start_simulator(BUDGET)
    proxy = start_proxy(sim, QUOTA_PACING="even", QUEUE_TIMEOUT_SECONDS="5")
    run = Run()
    try:
        asyncio.run(load(proxy, 2 * BUDGET_RATE, WINDOW + 2, run))
        window = sim_quota(sim)["history"][0]
    finally:
        proxy.terminate(15)
        sim.terminate(15)
    codes: dict[str | None, int] = {}
    for a in run.answers:
        if a.sent < window["reset_at"]:
            codes[a.code] = codes.get(a.code, 0) + 1
    return {
        "upstream_1308s_in_window": len(window["refusals"]),
        "budget_used": window["used"] / window["limit"],
        "answered_200_of_sent_in_window": codes.get(None, 0),
        "paced_queue_429s": codes.get("proxy_queue_timeout", 0) + codes.get(
            "proxy_queue_full", 0),
        "paced_reserved_429s": codes.get("proxy_quota_paced", 0),
    }


def wall_bursty(i: int) -> dict[str, float]:
    """The same, demand in 4 s bursts (twice 1.4x for 2 s, then nothing for 2 s)."""
    return wall(i, burst=4.0)


PHASES = (("normal", {}), ("503", {"monitor_fault": "error"}),
          ("slow 3 s", {"monitor_fault": "slow", "monitor_delay_ms": 3000}),
          ("garbage", {"monitor_fault": "garbage"}), ("401", {"monitor_fault": "unauthorized"}),
          ("normal again", {}))


def monitor(_: int) -> dict[str, Any]:
    """The monitor failing in every way while requests flow."""
    sim = start_simulator(10**9)
    proxy = start_proxy(sim, QUOTA_POLL_TIMEOUT="1s")
    down = start_proxy(sim, ZAI_MONITOR_URL=f"http://127.0.0.1:{free_port()}",
                       QUOTA_POLL_TIMEOUT="1s")
    out: dict[str, Any] = {}
    try:
        for name, fault in (*PHASES, ("down", None)):
            target = proxy
            if fault is None:
                target = down
            else:
                sim_config(sim, **{"monitor_fault": "", "monitor_delay_ms": 0, **fault})
            run = Run()
            asyncio.run(load(target, 10, 4.0, run, health_every=1.0))
            ok = [a for a in run.answers if a.status == 200]
            out[name] = {
                "served": len(ok) / len(run.answers),
                "median_ms": 1000 * statistics.median(a.done - a.sent for a in ok),
                "health": run.health[-1][1]["polling"]["state"] + (
                    f" ({run.health[-1][1]['polling']['reason']})"
                    if run.health[-1][1]["polling"]["reason"] else ""),
            }
    finally:
        for p in (down, proxy, sim):
            p.terminate(15)
    return out


# -- report -------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return (f"median {statistics.median(values):.3g} (min {min(values):.3g}, "
            f"max {max(values):.3g})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("wall", "wall-bursty", "pacing", "monitor", "all"),
                        default="all")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lines = [f"bench_quota {dt.datetime.now().isoformat(timespec='seconds')}: window "
             f"{WINDOW:g} s, budget {BUDGET} tokens ({BUDGET_RATE:g} req/s of "
             f"{TOKENS_PER_REQUEST} tokens), {args.runs} runs; load average at start "
             f"{os.getloadavg()[0]:.2f}"]

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    emit(lines[0])
    for name, scenario in (("wall", wall), ("wall-bursty", wall_bursty), ("pacing", pacing)):
        if args.scenario not in (name, "all"):
            continue
        results = [scenario(i) for i in range(args.runs)]
        emit(f"\n== {name}: {scenario.__doc__}")
        for key in results[0]:
            emit(f"  {key:40} {spread([r[key] for r in results])}   "
                 f"[{', '.join(f'{r[key]:.3g}' for r in results)}]")
    if args.scenario in ("monitor", "all"):
        emit(f"\n== monitor: {monitor.__doc__}")
        runs = [monitor(i) for i in range(args.runs)]
        base = [r["normal"]["median_ms"] for r in runs]
        for phase in runs[0]:
            served = [r[phase]["served"] for r in runs]
            ratio = [r[phase]["median_ms"] / b for r, b in zip(runs, base, strict=True)]
            said = ", ".join(sorted({r[phase]["health"] for r in runs}))
            emit(f"  {phase:14} served {spread(served)}; median latency / normal "
                 f"{spread(ratio)}; /health: {said}")
    emit(f"\nload average at end {os.getloadavg()[0]:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"quota-{dt.date.today().isoformat()}.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
