"""Real-socket benchmark of the fleet scheduler: weighted fair shares, priority classes and
budgets per client (the clients file), on one replica and on four sharing a Redis gate.

    .venv/bin/python bench/bench_fleet.py                       # every scenario, 3 runs (~12 min)
    .venv/bin/python bench/bench_fleet.py --quick               # 1 run, shorter phases (~5 min)
    .venv/bin/python bench/bench_fleet.py --scenario weights --runs 1

Processes: `zai-proxy simulate` (20 ms latency; a hidden rate ceiling of 10 req/s over a sliding
window, or a compressed five-hour budget), one or four `zai-proxy serve` with a clients file
(four: DEPLOYMENT_VARIANT v1 and v2, two replicas each, on one throwaway redis-server), and this
script as the load generator (aiohttp). Rates are the load generator's own counts of 2xx answers
per client over a steady interval.

The proxy starts at the ceiling (RATE_LIMIT_INITIAL = RATE_LIMIT_MAX = 10, the ceiling lenient):
what is measured is the scheduler's split of a known rate, not the learner finding it (the
limiter has its own bench, bench_limiter.py). RATE_LIMIT_WINDOW is 5 s, so "within 2 limiter
windows" is 10 s.

- weights: clients of weight 3, 1, 1, each a closed loop of WORKERS concurrent requests (always
  several waiting in the queue, so each client saturates its share without ever meeting the
  queue deadline; an open loop above the rate would fill the queue until requests time out).
  Then one weight-1 client stops; the other two should take 7.5 / 2.5. (The issue says "the
  weight-3 client goes idle", but 7.5 / 2.5 is the 3:1 split of 10: a weight-1 client left.)
  Convergence is measured from that client's last answer (the moment it has nothing left in
  the proxy's queue): the end of the first sliding 2 s interval in which both rates are within
  5 % (or one request) of 7.5 / 2.5.
- priority: 500 batch requests sent at once (a backlog of ~50 s at 10 req/s), then interactive
  requests one at a time every 0.5 s; an interactive request's queue wait is measured at the
  client: its latency minus the median latency of the same request on the idle proxy (the
  upstream's 20 ms and the proxy's own work), cross-checked with the proxy's
  zai_proxy_client_queue_wait_seconds histogram (whose buckets only bound it). Then the
  interactive client saturates (closed loop) while the backlog remains: batch's share of the
  2xx answers against ADMISSION_BATCH_FLOOR (0.1).
- budget: no rate ceiling; a five-hour budget of BUDGET tokens over a WINDOW s rolling window
  (QUOTA_POLL_SECONDS=1); three clients at 5 req/s each (open loop), one with
  five_hour_share = 0.2: the share of the budget its 2xx answers used, and whether the others
  were served until the account's budget ran out.
- replicas: four proxies on one Redis, each client's workers spread evenly over the four; then
  skewed: the weight-3 client on the two v1 replicas only. Each queue alone shares only its own
  replica's part of the shared gate; the skewed spread holds 3:1:1 only through the replicas'
  exchange of their demand (account-wide shares, zai_proxy/limiter/fleet.py).
- hotpath: `bench/bench_proxy.py --quick` (no clients file), its same-run CPU-per-request ratio
  of the proxy to a bare pass-through (reported, and judged by bench_proxy's own rule).

Output also goes to bench/results/fleet-<date>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository root holds tests.support

from tests.support.servers import Process, RedisServer, start_redis, start_zai_proxy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
UPSTREAM_KEY = "bench-upstream-key-fleet-0000"
CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
CEILING = 10.0
LIMITER_WINDOW = 5.0
WORKERS = 6  # closed-loop requests per client: several always waiting at 10 req/s, 20 ms each
TOKENS_PER_REQUEST = 12  # 2 prompt + 5 chunks x 2 words
WINDOW = 30.0
BUDGET = 300 * TOKENS_PER_REQUEST  # 300 requests in the compressed five-hour window
BATCH_FLOOR = 0.1
QUICK = False  # --quick: shorter phases


def key(name: str) -> str:
    return f"bench-fleet-{name}-key-0000"


def clients_file(clients: Sequence[dict[str, Any]]) -> str:
    """A clients file (TOML) for `clients` (name + the fields to set), in a fresh temp dir."""
    lines = []
    for c in clients:
        lines.append("[[client]]")
        lines.append(f'name = "{c["name"]}"')
        lines.append(f'keys = ["{key(c["name"])}"]')
        for field_, value in c.items():
            if field_ != "name":
                lines.append(f"{field_} = {json.dumps(value)}")
    path = Path(tempfile.mkdtemp(prefix="bench-fleet-")) / "clients.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- processes ---------------------------------------------------------------------------------


def start_simulator(*args: str) -> Process:
    return start_zai_proxy("simulate", "--latency-ms", "20", "--expect-key", UPSTREAM_KEY,
                           *args, timeout=30)


def proxy_env(sim: Process, clients: str, **env: str) -> dict[str, str]:
    return {
        "ZAI_API_KEY": UPSTREAM_KEY, "ZAI_TARGET_URL": f"{sim.url}/api/paas/v4",
        "ZAI_ANTHROPIC_URL": f"{sim.url}/api/anthropic", "RATE_LIMIT_STATE_FILE": "",
        "PROXY_CLIENTS_FILE": clients, "RATE_LIMIT_INITIAL": f"{CEILING:g}",
        "RATE_LIMIT_MAX": f"{CEILING:g}", "RATE_LIMIT_WINDOW": f"{LIMITER_WINDOW:g}s",
        "MAX_WORKERS": "64", "QUEUE_MAX": "2000", "QUEUE_TIMEOUT_SECONDS": "120",
        "LOG_LEVEL": "WARNING", "SHUTDOWN_DRAIN_SECONDS": "0", **env}


def start_proxy(sim: Process, clients: str, **env: str) -> Process:
    return start_zai_proxy("serve", env=proxy_env(sim, clients, **env), ready_path="/ready",
                           timeout=30)


def stop(*processes: Process | RedisServer | None) -> None:
    for p in processes:
        if isinstance(p, Process):
            p.terminate(15)
        elif isinstance(p, RedisServer):
            p.stop()


def sim_stats(sim: Process) -> dict[str, Any]:
    with urllib.request.urlopen(sim.url + "/_stats", timeout=5) as answer:
        return dict(json.loads(answer.read()))


def sim_429s(sim: Process) -> int:
    return int(sim_stats(sim)["status"].get("429", 0))


def metric_buckets(proxy: Process, name: str, client: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of a per-client histogram from /metrics."""
    with urllib.request.urlopen(proxy.url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and f'client="{client}"' in line:
            le = line.split('le="')[1].split('"')[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return sorted(out)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    client: str
    sent: float  # monotonic, from the load's start
    done: float
    status: int
    code: str | None = None


@dataclass
class Load:
    """Every answer of a run, with times in seconds from its start."""

    session: aiohttp.ClientSession
    start: float = field(default_factory=time.monotonic)
    answers: list[Answer] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.start

    async def one(self, url: str, client: str) -> Answer:
        sent = self.now()
        try:
            async with self.session.post(f"{url}/v1/chat/completions", json=CHAT,
                                         headers={"authorization": f"Bearer {key(client)}"}) as r:
                body = await r.read()
                code = None
                if r.status != 200:
                    try:
                        code = str(json.loads(body)["error"]["code"])
                    except (ValueError, KeyError, TypeError):
                        code = None
                answer = Answer(client, sent, self.now(), r.status, code)
        except (aiohttp.ClientError, TimeoutError):
            answer = Answer(client, sent, self.now(), 0)
        self.answers.append(answer)
        return answer

    async def closed(self, urls: Sequence[str], client: str, workers: int, until: float) -> None:
        """`workers` concurrent loops of one request after another until `until`; worker i
        sends to urls[i % len(urls)]."""
        async def worker(url: str) -> None:
            while self.now() < until:
                await self.one(url, client)
        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(workers)))

    async def at_rate(self, url: str, client: str, rate: float, until: float) -> None:
        """Open loop: one request every 1/rate s until `until`, whatever the answers."""
        tasks, i = [], 0
        while (at := i / rate) < until:
            await asyncio.sleep(max(0.0, at - self.now()))
            tasks.append(asyncio.create_task(self.one(url, client)))
            i += 1
        await asyncio.gather(*tasks)

    def ok(self, client: str, t0: float, t1: float) -> int:
        return sum(1 for a in self.answers
                   if a.client == client and a.status == 200 and t0 <= a.done < t1)

    def rate(self, client: str, t0: float, t1: float) -> float:
        return self.ok(client, t0, t1) / (t1 - t0)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=180))


def near(count: float, target: float, tolerance: float = 0.05) -> bool:
    return abs(count - target) <= max(tolerance * target, 1.0)


# -- scenarios ----------------------------------------------------------------------------------

WEIGHTED = [{"name": "heavy", "weight": 3}, {"name": "light1", "weight": 1},
            {"name": "light2", "weight": 1}]


def weights(_: int) -> dict[str, float]:
    """3:1:1, every client saturating; then light2 stops -> 7.5 / 2.5."""
    warm, steady, after = 3.0, (10.0 if QUICK else 20.0), (12.0 if QUICK else 15.0)
    sim = start_simulator("--rate-ceiling", f"{CEILING:g}")
    proxy = start_proxy(sim, clients_file(WEIGHTED), TOKEN_COUNTING_ENABLED="false")
    stop_at, end = warm + steady, warm + steady + after

    async def run() -> Load:
        async with session() as s:
            load = Load(s)
            await asyncio.gather(load.closed([proxy.url], "heavy", WORKERS, end),
                                 load.closed([proxy.url], "light1", WORKERS, end),
                                 load.closed([proxy.url], "light2", WORKERS, stop_at))
            return load
    try:
        load = asyncio.run(run())
        upstream_429 = sim_429s(sim)
    finally:
        stop(proxy, sim)
    out = {f"steady_{c}_req_s": load.rate(c, warm, stop_at) for c in ("heavy", "light1",
                                                                       "light2")}
    idle = max(a.done for a in load.answers if a.client == "light2")
    converged = None
    t, span = idle, 2.0
    while t + span <= end:
        if (near(load.ok("heavy", t, t + span), 7.5 * span)
                and near(load.ok("light1", t, t + span), 2.5 * span)):
            converged = t + span - idle
            break
        t += 0.1
    settle = idle + LIMITER_WINDOW
    out.update({
        "light2_drained_after_stop_s": idle - stop_at,
        "converge_windows": (converged if converged is not None else float("nan"))
        / LIMITER_WINDOW,
        "after_heavy_req_s": load.rate("heavy", settle, end),
        "after_light1_req_s": load.rate("light1", settle, end),
        "upstream_429s": float(upstream_429),
        "non_2xx": float(sum(1 for a in load.answers if a.status != 200)),
    })
    return out


WAIT_METRIC = "zai_proxy_client_queue_wait_seconds"


def priority(_: int) -> dict[str, float]:
    """500 batch queued, interactive arrivals one by one, then interactive saturating."""
    arrivals, saturate = (10, 6.0) if QUICK else (20, 10.0)
    sim = start_simulator("--rate-ceiling", f"{CEILING:g}")
    clients = [{"name": "agents", "priority": "interactive"}, {"name": "nightly"}]
    proxy = start_proxy(sim, clients_file(clients), TOKEN_COUNTING_ENABLED="false",
                        ADMISSION_BATCH_FLOOR=f"{BATCH_FLOOR:g}")

    async def run() -> tuple[Load, float, list[float], list[tuple[float, float]], float, float]:
        async with session() as s:
            load = Load(s)
            idle = []
            for _ in range(5):
                a = await load.one(proxy.url, "agents")
                idle.append(a.done - a.sent)
                await asyncio.sleep(0.15)
            base = statistics.median(idle)
            batch = [asyncio.create_task(load.one(proxy.url, "nightly")) for _ in range(500)]
            await asyncio.sleep(2.0)
            waits = []
            before = await asyncio.to_thread(metric_buckets, proxy, WAIT_METRIC, "agents")
            for _ in range(arrivals):
                a = await load.one(proxy.url, "agents")
                waits.append(a.done - a.sent - base)
                await asyncio.sleep(0.5)
            after = await asyncio.to_thread(metric_buckets, proxy, WAIT_METRIC, "agents")
            # the series appears with the client's first queued request (a gap in the idle
            # phase leaves it out), so missing buckets count as zero
            earlier = dict(before)
            buckets = [(le, n - earlier.get(le, 0.0)) for le, n in after]
            b0 = load.now()
            await load.closed([proxy.url], "agents", WORKERS, b0 + saturate)
            b1 = load.now()
            for task in batch:
                task.cancel()
            await asyncio.gather(*batch, return_exceptions=True)
            return load, base, waits, buckets, b0, b1
    try:
        load, base, waits, buckets, b0, b1 = asyncio.run(run())
    finally:
        stop(proxy, sim)
    waits.sort()
    p99 = waits[min(len(waits) - 1, int(0.99 * len(waits)))]
    total = buckets[-1][1] if buckets else 0
    histogram_p99 = next((le for le, n in buckets if n >= 0.99 * total), float("nan"))
    t0, t1 = b0 + 1.0, b1
    batch_ok, inter_ok = load.ok("nightly", t0, t1), load.ok("agents", t0, t1)
    return {
        "idle_latency_ms": 1000 * base,
        "interactive_wait_p50_s": statistics.median(waits),
        "interactive_wait_p99_s": p99,
        "histogram_p99_bound_s": histogram_p99,
        "batch_share_while_saturated": batch_ok / max(1, batch_ok + inter_ok),
        "dispatches_while_saturated": float(batch_ok + inter_ok),
        # the floor is kept per contended stretch in whole dispatches; the measured span cuts
        # stretches at its ends, so it is judged in dispatches, not as a share
        "batch_dispatches_short_of_floor": BATCH_FLOOR * (batch_ok + inter_ok) - batch_ok,
        "batch_left_waiting_at_end": float(500 - load.ok("nightly", 0, 1e9)),
    }


def budget(_: int) -> dict[str, float]:
    """five_hour_share = 0.2 for `ci`; `a` and `b` unlimited; 5 req/s each, open loop."""
    sim = start_simulator("--quota-5h-tokens", str(BUDGET), "--quota-5h-window-s", f"{WINDOW:g}")
    clients: list[dict[str, Any]] = [{"name": "ci", "five_hour_share": 0.2}, {"name": "a"},
                                     {"name": "b"}]
    proxy = start_proxy(sim, clients_file(clients), RATE_LIMIT_INITIAL="100",
                        RATE_LIMIT_MAX="100", QUOTA_POLL_SECONDS="1", QUOTA_BURN_WINDOW="10s")
    end = WINDOW - 3  # stop before the rolling window resets

    async def run() -> Load:
        async with session() as s:
            load = Load(s)
            await asyncio.gather(*(load.at_rate(proxy.url, c, 5.0, end)
                                   for c in ("ci", "a", "b")))
            return load
    try:
        load = asyncio.run(run())
        window = sim_stats(sim)["quota"]["five_hour"]
    finally:
        stop(proxy, sim)
    ci_ok = load.ok("ci", 0, 1e9)
    refused = [a for a in load.answers if a.client == "ci" and a.status != 200]
    spent = [a.sent for a in load.answers
             if a.code in ("1308", "proxy_quota_exhausted")] or [float("inf")]
    exhausted = min(spent)
    others_refused_before = sum(1 for a in load.answers if a.client != "ci"
                                and a.status != 200 and a.sent < exhausted)
    used = window["used"]
    return {
        "ci_share_of_budget": ci_ok * TOKENS_PER_REQUEST / BUDGET,
        "ci_refusals_budget_exhausted": float(
            sum(1 for a in refused if a.code == "proxy_client_budget_exhausted")),
        "ci_first_refused_at_s": min((a.sent for a in refused), default=float("nan")),
        "ci_other_refusals_before_account_spent": float(sum(
            1 for a in refused if a.code != "proxy_client_budget_exhausted"
            and a.sent < exhausted)),
        "others_refused_before_account_spent": float(others_refused_before),
        "account_budget_used": used / BUDGET,
        "account_spent_at_s": exhausted,
    }


def replicas(_: int) -> dict[str, float]:
    """Four proxies (v1, v2 x 2) on one Redis; 3:1:1 spread evenly, then heavy on v1 only."""
    warm, steady = 3.0, (10.0 if QUICK else 20.0)
    sim = start_simulator("--rate-ceiling", f"{CEILING:g}")
    redis = start_redis()
    path = clients_file(WEIGHTED)
    proxies: list[Process] = []
    out: dict[str, float] = {}
    try:
        for i in range(4):
            proxies.append(start_proxy(
                sim, path, TOKEN_COUNTING_ENABLED="false", RATE_LIMIT_STORAGE_URI=redis.url,
                RATE_LIMIT_REPLICAS="2", DEPLOYMENT_VARIANT=f"v{1 + i // 2}"))
        urls = [p.url for p in proxies]
        for spread, heavy_urls in (("even", urls), ("skewed", urls[:2])):
            before = sim_429s(sim)

            async def run(heavy_urls: list[str] = heavy_urls) -> Load:
                async with session() as s:
                    load = Load(s)
                    end = warm + steady
                    await asyncio.gather(
                        load.closed(heavy_urls, "heavy", 2 * WORKERS, end),
                        load.closed(urls, "light1", 2 * WORKERS, end),
                        load.closed(urls, "light2", 2 * WORKERS, end))
                    return load
            load = asyncio.run(run())
            after = sim_429s(sim)
            for c in ("heavy", "light1", "light2"):
                out[f"{spread}_{c}_req_s"] = load.rate(c, warm, warm + steady)
            out[f"{spread}_total_req_s"] = sum(out[f"{spread}_{c}_req_s"]
                                               for c in ("heavy", "light1", "light2"))
            out[f"{spread}_upstream_429s"] = float(after - before)
    finally:
        stop(*proxies, redis, sim)
    return out


def hotpath(_: int) -> dict[str, float]:
    """bench_proxy.py --quick: CPU per request, proxy (no clients file) / bare pass-through."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_proxy.py"), "--quick"],
                          capture_output=True, text=True, timeout=900, check=False)
    out: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("baseline rule:"):
            text = line.split("= ", 1)[1]
            out["cpu_ratio_warning"] = float(text.split("x", 1)[0])
            ms = text.split("(", 1)[1].split(" ms", 1)[0].split(" / ")
            out["proxy_cpu_ms_per_request"] = float(ms[0])
            out["bare_cpu_ms_per_request"] = float(ms[1])
        elif line.startswith("1. CPU / request, x bare relay"):
            figures = line.split("(same run)", 1)[1].split()
            out["cpu_ratio_info"] = float(figures[1])  # WARNING, INFO->file, target, verdict
    if "cpu_ratio_warning" not in out:
        raise RuntimeError(f"bench_proxy.py printed no baseline rule:\n{done.stdout[-3000:]}"
                           f"\n{done.stderr[-3000:]}")
    return out


SCENARIOS: dict[str, Callable[[int], dict[str, float]]] = {
    "weights": weights, "priority": priority, "budget": budget, "replicas": replicas,
    "hotpath": hotpath}


# -- targets ------------------------------------------------------------------------------------


def within(target: float, tolerance: float) -> tuple[str, Callable[[float], bool]]:
    return (f"{target:g} ±{100 * tolerance:g}%",
            lambda v: abs(v - target) <= tolerance * target)


def at_most(limit: float) -> tuple[str, Callable[[float], bool]]:
    return f"<= {limit:g}", lambda v: v <= limit


def at_least(limit: float) -> tuple[str, Callable[[float], bool]]:
    return f">= {limit:g}", lambda v: v >= limit


TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "steady_heavy_req_s": within(6, 0.05), "steady_light1_req_s": within(2, 0.05),
    "steady_light2_req_s": within(2, 0.05), "converge_windows": at_most(2),
    "after_heavy_req_s": within(7.5, 0.05), "after_light1_req_s": within(2.5, 0.05),
    "interactive_wait_p99_s": at_most(2 / CEILING),
    # one dispatch of slack: the floor is kept per contended stretch, counted in whole requests
    "batch_dispatches_short_of_floor": at_most(1.0),
    "ci_share_of_budget": within(0.2, 0.1),  # ±2 points of the budget = ±10 % of 0.2
    "others_refused_before_account_spent": at_most(0), "account_budget_used": at_least(0.97),
    **{f"{s}_{c}_req_s": within(t, 0.07) for s in ("even", "skewed")
       for c, t in (("heavy", 6), ("light1", 2), ("light2", 2))},
    "even_total_req_s": at_most(1.05 * CEILING), "skewed_total_req_s": at_most(1.05 * CEILING),
    "cpu_ratio_warning": at_most(2.1),
}


NOTES = {
    "weights": "the issue says the weight-3 client goes idle, but 7.5 / 2.5 is the 3:1 split of "
               "10, so a weight-1 client stops here; convergence is resolved to the 2 s interval "
               "it is measured over (0.4 windows is the smallest value it can report).",
    "priority": "queue wait measured at the client (latency minus the idle proxy's median "
                "latency); histogram_p99_bound_s is the proxy histogram's bucket holding the "
                "p99 of the same arrivals.",
    "replicas": "the replicas exchange their queues' demand through Redis every tick and pace "
                "each client at its part of its account-wide share; without that exchange "
                "the skewed spread gave heavy ~3 req/s (each replica took about a quarter of "
                "the gate and split it among its own clients: bench/results/"
                "fleet-2026-12-07-before-exchange.txt).",
}


def main() -> int:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=(*SCENARIOS, "all"))
    parser.add_argument("--runs", type=int, default=None, help="default 3; 1 with --quick")
    parser.add_argument("--quick", action="store_true", help="1 run, shorter phases")
    args = parser.parse_args()
    QUICK = args.quick
    runs = args.runs or (1 if args.quick else 3)
    chosen = [s for s in SCENARIOS if not args.scenario or "all" in args.scenario
              or s in args.scenario]
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    emit(f"bench_fleet {dt.datetime.now().isoformat(timespec='seconds')}: ceiling "
         f"{CEILING:g} req/s (proxy started at it), limiter window {LIMITER_WINDOW:g} s, "
         f"{WORKERS} closed-loop workers per client, {runs} run(s){' quick' if QUICK else ''}; "
         f"load average at start {os.getloadavg()[0]:.2f}")
    table: list[tuple[str, str, str, str]] = []
    for name in chosen:
        scenario = SCENARIOS[name]
        n = 1 if name == "hotpath" else runs  # bench_proxy repeats inside itself
        results = [scenario(i) for i in range(n)]
        emit(f"\n== {name}: {scenario.__doc__}")
        for k in results[0]:
            values = [r[k] for r in results]
            med = statistics.median(values)
            emit(f"  {k:40} {med:10.4g}   [{', '.join(f'{v:.4g}' for v in values)}]")
            if k in TARGETS:
                text, ok = TARGETS[k]
                table.append((f"{name}: {k}", f"{med:.4g}", text, "PASS" if ok(med) else "MISS"))
    emit(f"\n{'figure (median of runs)':55} {'measured':>10}  {'target':14} verdict")
    for figure, measured, target, verdict in table:
        emit(f"{figure:55} {measured:>10}  {target:14} {verdict}")
    for name, note in NOTES.items():
        if name in chosen:
            emit(f"note ({name}): {note}")
    emit(f"\nload average at end {os.getloadavg()[0]:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fleet-{dt.date.today().isoformat()}.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
