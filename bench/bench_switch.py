"""Blue-green switch benchmark: how fast `zai-proxy switch` moves keep-alive workers, and whether
the new variant starts at the learned rate (issues 13 and 10).

    /work/venv/bin/python bench/bench_switch.py                  # both scenarios (~6 min)
    /work/venv/bin/python bench/bench_switch.py --scenario move  # one of them
    /work/venv/bin/python bench/bench_switch.py --quick          # fewer runs

Harness: tests/support/blue_green.py, the same as the e2e test: two real `zai-proxy serve` pods
(v1, v2)
against `zai-proxy simulate`, a stand-in for the Service that routes each *new* connection by the
current selector (established ones stay, as with kube-proxy), the fake kubectl driving the real
proxies, and `zai-proxy switch` run as an operator runs it.

- move: 20 OpenAI SDK workers (10 never stream, 10 stream half of their calls) and 4 Anthropic
  SDK workers (stream half), own keep-alive pools, default retries, call continuously. Each run
  switches to the other variant; the figure is the time from the selector
  patch (the fake kubectl's timed call log) to the start of the last request the old variant
  received, from the workers' own records. Baseline, same harness and same run: `--no-retire`
  (what the switch did before: patch and verify through a fresh connection; nothing tells the
  old pods to release their clients): the share of the workers' requests still reaching the old
  variant N seconds after the patch.
- carry (issue 10): no Redis. The simulator hides a rate ceiling (20 req/s); v1 learns it under
  open-loop demand above it (30 req/s, aiohttp keep-alive pool), RATE_LIMIT_WINDOW=5s; v2 starts
  at RATE_LIMIT_INITIAL=2 as the runbook's v2 does. `zai-proxy switch --to v2` (carrying, the
  default) against `--no-carry-limits`, alternated, v2 reset in between: v2's 200s in its first
  5 s window after the switch returns, over v1's learned ceiling that the switch read; and what
  the account got from the simulator while the switch ran (v1 still sends the requests it had
  queued; carrying, v2 holds only the rest of the ceiling until they are sent).

Prints each run and the median / min / max; writes bench/results/switch-<scenario|all>.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.blue_green import (  # noqa: E402
    CLIENT_KEY,
    Cluster,
    ServiceStandIn,
    Workers,
    proxy_env,
)
from tests.support.servers import Process, start_zai_proxy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SWITCH_ARGS = ("--poll-interval", "0.5", "--traffic-quiet", "1", "--timeout", "20",
               "--samples", "2")
LINES: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    LINES.append(text)


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def spread(values: Sequence[float], unit: str = "", digits: int = 2) -> str:
    if not values:
        return "no runs"
    fmt = f"{{:.{digits}f}}{unit}"
    return (f"median {fmt.format(statistics.median(values))}, min {fmt.format(min(values))}, "
            f"max {fmt.format(max(values))} over {len(values)} runs")


@contextmanager
def blue_green(simulator_args: Sequence[str], env: dict[str, dict[str, str]]
               ) -> Iterator[tuple[Process, dict[str, Process], Cluster, ServiceStandIn]]:
    simulator = start_zai_proxy("simulate", *simulator_args)
    pods: dict[str, Process] = {}
    directory: Path | None = None
    try:
        for variant in ("v1", "v2"):
            pods[variant] = start_zai_proxy(
                "serve", env=proxy_env(simulator.url, variant, **env.get(variant, {})),
                ready_path="/ready")
        directory = Path(tempfile.mkdtemp(prefix="bench-switch-"))
        cluster = Cluster(directory, pods)
        with ServiceStandIn(cluster.state_path) as service:
            yield simulator, pods, cluster, service
    finally:
        for process in [*pods.values(), simulator]:
            process.terminate()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def other(variant: str) -> str:
    return "v1" if variant == "v2" else "v2"


# -- move -------------------------------------------------------------------------------------


def scenario_move(runs: int, baseline_runs: int, after: float) -> None:
    say("== move: patch -> all workers' traffic on the new variant "
        "(20 OpenAI + 4 Anthropic SDK workers, keep-alive, default retries)")
    say(f"   {machine_load()}")
    settle = 3.0
    with blue_green(["--chunk-gap-ms", "20", "--chunks", "8"], {}) as (_, _, cluster, service), \
            Workers(service.url, seed=7) as workers:
        time.sleep(3.0)
        moved: list[float] = []
        durations: list[float] = []
        for i in range(runs):
            old = cluster.selected()
            run = cluster.switch("--to", other(old), *SWITCH_ARGS, "--traffic-timeout", "30")
            time.sleep(settle)
            patched = run.patched_at()
            late = [a.start for a in workers.attempts if a.variant == old and a.start >= patched]
            figure = max(late) - patched if late else 0.0
            moved.append(figure)
            durations.append(run.ended - run.started)
            printed = re.search(r"last new request by ([\d.]+) s", run.output)
            say(f"   retire run {i + 1}: {old} -> {other(old)} exit {run.code}; last request on "
                f"{old} {figure:.2f} s after the patch ({len(late)} after the patch); switch "
                f"said by {printed.group(1) if printed else '?'} s; switch took "
                f"{durations[-1]:.1f} s")
        shares: list[float] = []
        by_population: dict[str, list[float]] = {}
        for i in range(baseline_runs):
            old = cluster.selected()
            run = cluster.switch("--to", other(old), *SWITCH_ARGS, "--no-retire",
                                 "--traffic-timeout", f"{after:g}")
            patched = run.patched_at()
            window = [a for a in workers.attempts if patched + after - 2 <= a.start
                      <= patched + after]
            share = sum(a.variant == old for a in window) / len(window) if window else 0.0
            shares.append(share)
            per = []
            for population in ("openai-batch", "openai-chat", "anthropic"):
                mine = [a for a in window if workers.population(a.worker) == population]
                on_old = sum(a.variant == old for a in mine) / len(mine) if mine else 0.0
                by_population.setdefault(population, []).append(on_old)
                per.append(f"{population} {on_old:.0%}")
            say(f"   baseline run {i + 1} (--no-retire): {old} -> {other(old)} exit {run.code}; "
                f"{share:.0%} of {len(window)} requests in [{after - 2:g} s, {after:g} s] after "
                f"the patch still reached {old} ({', '.join(per)})")
            # Put the workers back on the selected variant before the next run.
            cluster.admin(old, "POST", "/admin/retire")
            time.sleep(settle)
    failures = workers.failures()
    say(f"   with retire: last request on the old variant after the patch: "
        f"{spread(moved, ' s')}; switch run time {spread(durations, ' s', 1)}")
    say(f"   baseline (--no-retire): share of requests still on the old variant {after:g} s "
        f"after the patch: {spread([s * 100 for s in shares], ' %', 0)}")
    for population, values in by_population.items():
        say(f"     {population} workers: {spread([v * 100 for v in values], ' %', 0)}")
    say(f"   worker calls {len(workers.calls)}, failed {len(failures)}"
        + (f": {[c.error for c in failures][:3]}" if failures else ""))
    say(f"   {machine_load()}")


# -- carry ------------------------------------------------------------------------------------


@dataclass
class OpenLoop:
    """Open-loop POSTs at a fixed arrival rate through one aiohttp keep-alive pool."""

    url: str
    rate: float
    results: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> OpenLoop:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        body = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hello"}]}
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400),
                                         timeout=timeout, headers=headers) as session:
            tasks: set[asyncio.Task[None]] = set()

            async def one() -> None:
                start = time.monotonic()
                try:
                    async with session.post(f"{self.url}/v1/chat/completions", json=body) as r:
                        await r.read()
                        self.results.append((start, r.status))
                except (TimeoutError, aiohttp.ClientError):
                    self.results.append((start, 0))

            began = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                due = began + sent / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if self.paused.is_set():  # arrivals skipped, not deferred: still open loop
                    sent += 1
                    continue
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.gather(*tasks, return_exceptions=True)


def ok_count(proxy: Process) -> float:
    """Requests this proxy answered 200 (the upstream accepted them)."""
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(
        r'^zai_proxy_requests_total\{[^}]*status_code="200"[^}]*\} (\S+)$', text, re.M))


def upstream(simulator: Process) -> tuple[int, int]:
    """(200s, 429s) the simulator has answered so far: what the account got."""
    status = httpx.get(f"{simulator.url}/_stats", timeout=10).json()["status"]
    return int(status.get("200", 0)), int(status.get("429", 0))


def gauge(proxy: Process, name: str) -> float | None:
    text = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def scenario_carry(reps: int, learn: float) -> None:
    ceiling, demand = 20.0, 30.0
    say(f"== carry: switch without Redis, hidden ceiling {ceiling:g} req/s, open-loop demand "
        f"{demand:g} req/s, RATE_LIMIT_WINDOW=5s, v2 RATE_LIMIT_INITIAL=2")
    say(f"   {machine_load()}")
    common = {"RATE_LIMIT_WINDOW": "5s", "RATE_LIMIT_MAX": "50", "MAX_WORKERS": "64",
              "QUEUE_TIMEOUT_SECONDS": "10"}
    env = {"v1": {**common, "RATE_LIMIT_INITIAL": "10"},
           "v2": {**common, "RATE_LIMIT_INITIAL": "2"}}
    results: dict[str, list[float]] = {"carry": [], "no-carry": []}
    goodput: dict[str, list[float]] = {"carry": [], "no-carry": []}
    with blue_green(["--rate-ceiling", f"{ceiling:g}"], env) as (simulator, pods, cluster,
                                                                  service), \
            OpenLoop(service.url, demand) as load:
        started = time.monotonic()
        while time.monotonic() - started < learn:
            time.sleep(5.0)
        state = cluster.admin("v1", "GET", "/admin/limiter-state")
        say(f"   v1 after {learn:.0f} s: learned ceiling {state['rate']['ceiling']} req/s, rate "
            f"{state['rate']['current']:.2f} req/s")
        for rep in range(reps):
            for mode in ("no-carry", "carry"):
                learned = cluster.admin("v1", "GET", "/admin/limiter-state")["rate"]["ceiling"]
                flags = ["--no-carry-limits"] if mode == "no-carry" else []
                up_before = upstream(simulator)
                run = cluster.switch("--to", "v2", *flags, *SWITCH_ARGS, "--traffic-timeout",
                                     "30")
                up_during = upstream(simulator)
                start_rate = gauge(pods["v2"], "zai_proxy_rate_limit_requests_per_second")
                before = ok_count(pods["v2"])
                time.sleep(5.0)
                admitted = (ok_count(pods["v2"]) - before) / 5.0
                up_after = upstream(simulator)
                ratio = admitted / learned if learned else 0.0
                results[mode].append(ratio)
                took = run.ended - run.started
                during_ok = (up_during[0] - up_before[0]) / took
                during_429 = up_during[1] - up_before[1]
                after_429 = up_after[1] - up_during[1]
                goodput[mode].append(during_ok / learned if learned else 0.0)
                carried = re.search(r"carried .*?rate ceiling ([\d.]+) req/s", run.output)
                interim = re.search(r"holds ([\d.]+) req/s of the account's", run.output)
                note = f" ({interim.group(1)} req/s while v1 drained its queue)" if interim else ""
                say(f"   rep {rep + 1} {mode:8}: switch exit {run.code} in {took:.1f} s"
                    f"{', carried ' + carried.group(1) + ' req/s' if carried else ''}{note}"
                    f"; account during the switch {during_ok:.1f} req/s accepted upstream, "
                    f"{during_429} upstream 429s; v2 rate limit at the switch's end "
                    f"{start_rate or 0:.2f} req/s; first 5 s window {admitted:.2f} req/s = "
                    f"{ratio:.2f} of v1's learned {learned or 0:.2f} ({after_429} upstream 429s)")
                _back_to_v1(cluster, pods, load)
    say(f"   v2 first window / v1 learned, carrying:          {spread(results['carry'])}")
    say(f"   v2 first window / v1 learned, --no-carry-limits: {spread(results['no-carry'])}")
    say(f"   account accepted upstream during the switch / v1's learned, carrying: "
        f"{spread(goodput['carry'])}; --no-carry-limits: {spread(goodput['no-carry'])}")
    say(f"   {machine_load()}")


def _back_to_v1(cluster: Cluster, pods: dict[str, Process], load: OpenLoop) -> None:
    """Serve v1 again with its own state, v2 reset: each rep starts where the first did.

    The load pauses until both queues are empty, so switching back does not make the two
    variants overlap (which would teach v1 a lower ceiling, and the next rep would measure
    against that).
    """
    load.paused.set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            (gauge(p, "zai_proxy_queue_depth") or 0) + (gauge(p, "zai_proxy_concurrent_requests")
                                                         or 0) > 0 for p in pods.values()):
        time.sleep(0.5)
    back = cluster.switch("--to", "v1", "--no-carry-limits", *SWITCH_ARGS, "--traffic-timeout",
                          "30")
    if back.code != 0:
        say(f"   (switch back exited {back.code})")
    cluster.admin("v2", "POST", "/admin/reset-rate-limit")
    load.paused.clear()
    time.sleep(10.0)  # two windows of v1 alone under the load again


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=["move", "carry", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    say(f"bench_switch {time.strftime('%Y-%m-%d %H:%M:%S')} ({args.scenario}"
        f"{', quick' if args.quick else ''})")
    if args.scenario in ("move", "all"):
        scenario_move(runs=3 if args.quick else 8, baseline_runs=1 if args.quick else 3,
                      after=10.0)
    if args.scenario in ("carry", "all"):
        scenario_carry(reps=1 if args.quick else 3, learn=30.0 if args.quick else 60.0)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"switch-{args.scenario}{'-quick' if args.quick else ''}.txt"
    out.write_text("\n".join(LINES) + "\n")
    say(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

