"""Discrete-event simulation of admission against an upstream with a hidden ceiling, many seeds.

Fake clock, no sleeping: every scenario over several seeds in a few seconds. Drives the real
`RateController`, `ConcurrencyController`, `Gcra` pacer and `RetryPolicy`, and the simulator's
own `RateCeiling` as the upstream, with a queue model like `Admission` (bounded, deadline,
retries ahead of new work, saturated time reported to the controller):

    python bench/limiter_sim.py [--seeds 5] [--window 5] [--jitter-ms 2] [--quiet]
                                [--scenario NAME ...] [--timeline]

Upstreams: *lenient* = at most R requests in any sliding second (back to back allowed);
*strict* = a token bucket holding one token (refuses anything sooner than 1/R after the last
request it admitted); *banking* = a token bucket holding one second of rate. Every send reaches
the upstream after a random delay (1 ms + exponential, mean `--jitter-ms`), so two sends 1/r
apart can arrive closer than 1/R: the send jitter a real network and event loop add.
Demand is open loop: Poisson arrivals, or bursts (k x R for 1 s, then idle until the next 5 s).
Each scenario prints the spread over seeds (min / median / max) of every judged figure, and
PASS only when the worst seed meets the target.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.gcra import Gcra
from zai_proxy.limiter.rate_controller import Outcome, RateController
from zai_proxy.relay.retry import RetryPolicy
from zai_proxy.simulator.ceiling import RateCeiling

BURSTS = {"lenient": 0.0, "strict": 1.0}
QUEUE_TIMEOUT = 60.0
QUEUE_MAX = 2000
LATENCY = 0.02  # upstream answer time of a refused request / time to a 200's status


@dataclass
class Scenario:
    name: str
    ceiling: float  # hidden request-rate ceiling R (req/s)
    demand: float  # mean open-loop arrivals (req/s)
    initial: float
    upstream: str = "lenient"  # lenient | strict | banking
    windows: int = 40
    change_at: int | None = None  # window at which the ceiling becomes `new_ceiling`
    new_ceiling: float = 0.0
    burst: float = 0.0  # > 0: bursts of burst x R for 1 s every 5 s (mean burst/5 x R)
    concurrency: int | None = None  # hidden in-flight ceiling (1302)
    max_workers: int = 200
    duration: float = 0.05  # seconds an accepted request holds its slot (its answer time)
    kind: str = "steady"  # which targets apply: steady, cold, halved, doubled, burst, conc
    upstream_burst: float = 0.0  # RATE_LIMIT_UPSTREAM_BURST the proxy is configured with


@dataclass
class Window:
    ok: int = 0
    limited: int = 0
    c1302: int = 0
    rate: float = 0.0
    ceiling: float | None = None
    floor: float | None = None
    queue: int = 0
    in_flight: float = 0.0
    limit: int = 0
    rejected: int = 0


@dataclass
class Run:
    windows: list[Window]
    bursts: list[float] = field(default_factory=list)  # seconds to drain each burst
    rejected: int = 0


class Upstream:
    """The hidden limits: the simulator's RateCeiling on the fake clock, plus a 1302 cap."""

    def __init__(self, sc: Scenario, now: list[float]) -> None:
        burst = sc.ceiling if sc.upstream == "banking" else BURSTS[sc.upstream]
        self.ceiling = RateCeiling(sc.ceiling, clock=lambda: now[0], burst=max(burst, 0.0))
        self.sc, self.in_flight = sc, 0

    def set_ceiling(self, rate: float) -> None:
        burst = rate if self.sc.upstream == "banking" else None
        self.ceiling.configure(rate, (), burst)

    def answer(self) -> tuple[str, float | None]:
        if self.sc.concurrency is not None and self.in_flight >= self.sc.concurrency:
            return "1302", None
        if not self.ceiling.try_acquire():
            return "1303", max(1.0, math.ceil(self.ceiling.retry_after()))
        self.in_flight += 1
        return "200", None


def run(sc: Scenario, window: float, seed: int, jitter: float) -> Run:
    rng = random.Random(seed)
    now = [0.0]

    def clock() -> float:
        return now[0]

    ctl = RateController(clock=clock, initial=sc.initial, minimum=1, maximum=100, window=window,
                         upstream_burst=sc.upstream_burst)
    conc = ConcurrencyController(clock=clock, max_workers=sc.max_workers, window=window)
    gate = Gcra(0.0)
    retry = RetryPolicy(max_retries=3, rng=rng)
    up = Upstream(sc, now)
    events: list[tuple[float, int, str, Any]] = []
    seq = itertools.count()

    def at(t: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(events, (t, next(seq), kind, payload))

    end = sc.windows * window
    windows = [Window() for _ in range(sc.windows)]
    queue: deque[tuple[float, int]] = deque()  # (arrival, burst index) of new work
    retries: deque[tuple[float, int, int]] = deque()  # (arrival, burst, attempt) ready now
    in_flight = 0
    wake_at = [math.inf]
    burst_last: dict[int, float] = {}
    burst_pending: dict[int, int] = {}

    # open-loop arrivals
    if sc.burst:
        for start in range(0, int(end), 5):
            n = round(sc.burst * sc.ceiling)
            for i in range(n):
                at(start + (i + rng.random()) / n, "arrive", start // 5)
            burst_pending[start // 5] = n
    else:
        t = rng.expovariate(sc.demand)
        while t < end:
            at(t, "arrive", -1)
            t += rng.expovariate(sc.demand)
    tick = 0.0
    while tick < end:
        at(tick, "tick")
        tick += 0.25
    if sc.change_at is not None:
        at(sc.change_at * window, "change")

    def win() -> Window:
        return windows[min(sc.windows - 1, int(now[0] / window))]

    def finish(burst: int) -> None:
        if burst >= 0:
            burst_pending[burst] -= 1
            burst_last[burst] = now[0]

    def dispatch() -> None:
        nonlocal in_flight
        t = now[0]
        while queue and queue[0][0] < t - QUEUE_TIMEOUT:
            win().rejected += 1
            finish(queue.popleft()[1])
        while queue or retries:
            if in_flight >= conc.limit:
                ctl.gate_bound(False)
                conc.note_demand(len(queue) + len(retries))
                return
            wait = gate.try_take(ctl.rate, t)
            if wait > 0:
                ctl.gate_bound(True)
                if t + wait < wake_at[0]:
                    wake_at[0] = t + wait
                    at(t + wait, "wake")
                return
            if retries:
                arrival, burst, attempt = retries.popleft()
            else:
                arrival, burst = queue.popleft()
                attempt = 0
            in_flight += 1
            gen = conc.admitted(in_flight)
            delay = 0.001 + rng.expovariate(1.0 / jitter) if jitter > 0 else 0.001
            at(t + delay, "upstream", (arrival, burst, attempt, in_flight, gen))
        ctl.gate_bound(False)

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if t >= end:
            break
        now[0] = t
        if kind == "arrive":
            if len(queue) >= QUEUE_MAX or (queue and len(queue) / ctl.rate > QUEUE_TIMEOUT):
                win().rejected += 1
                finish(payload)
            else:
                queue.append((t, payload))
        elif kind == "wake":
            wake_at[0] = math.inf
        elif kind == "tick":
            ctl.tick()
            conc.tick()
            w = win()
            w.rate, w.ceiling, w.floor = ctl.rate, ctl.ceiling, ctl.floor
            w.queue, w.limit = len(queue), conc.limit
            w.in_flight += up.in_flight * 0.25 / window
        elif kind == "change":
            up.set_ceiling(sc.new_ceiling)
        elif kind == "upstream":
            arrival, burst, attempt, k, gen = payload
            answer, hint = up.answer()
            w = win()
            if answer == "200":
                w.ok += 1
                at(t + LATENCY, "status", (answer, arrival, burst, attempt, k, gen, hint))
                at(t + sc.duration, "done", (True, burst))
            else:
                w.limited += 1
                w.c1302 += answer == "1302"
                at(t + LATENCY, "status", (answer, arrival, burst, attempt, k, gen, hint))
        elif kind == "status":
            answer, arrival, burst, attempt, k, gen, hint = payload
            if answer == "200":
                ctl.record(Outcome.ACCEPTED)
            else:
                in_flight -= 1
                if answer == "1302":
                    ctl.record(Outcome.CONCURRENCY_LIMITED)
                    conc.record_limited(k, gen)
                else:
                    ctl.record(Outcome.RATE_LIMITED)
                delay = retry.next_delay(attempt, hint)
                if delay is None:
                    finish(burst)
                else:
                    at(t + delay, "retry", (arrival, burst, attempt + 1))
        elif kind == "retry":
            retries.append(payload)
        elif kind == "done":
            _, burst = payload
            in_flight -= 1
            up.in_flight -= 1
            finish(burst)
        dispatch()
    drains = [burst_last[b] - 5 * b for b in sorted(burst_last)
              if burst_pending.get(b) == 0 and 5 * b + 5 <= end - 5]
    return Run(windows, drains, sum(w.rejected for w in windows))


# -- targets ------------------------------------------------------------------------------------


def real_ceiling(sc: Scenario, i: int) -> float:
    return sc.new_ceiling if sc.change_at is not None and i >= sc.change_at else sc.ceiling


def figures(sc: Scenario, r: Run, window: float) -> dict[str, float]:
    """The judged figures of one run (see `TARGETS`)."""
    rows = r.windows

    def span(a: int, b: int | None = None) -> tuple[float, float, float]:
        part = rows[a:b]
        ok, lim = sum(x.ok for x in part), sum(x.limited for x in part)
        return ok / (window * len(part)), lim / max(1, ok + lim), (ok + lim) / (window * len(part))

    out: dict[str, float] = {}
    if sc.kind == "conc":
        half = rows[len(rows) // 2:]
        out["in_flight"] = sum(x.in_flight for x in half) / len(half)
        out["1302s_2nd_half"] = sum(x.c1302 for x in half)
    elif sc.kind in ("steady", "burst"):
        good, frac, _ = span(3)
        out["goodput"] = good / sc.ceiling
        out["429%"] = 100 * frac
        ests = [x.ceiling or 0.0 for x in rows[3:]]
        out["min_estimate"] = min(ests) / sc.ceiling
        out["min_rate"] = min(x.rate for x in rows[3:]) / sc.ceiling
        if sc.kind == "burst":
            out["drain_s_max"] = max(r.bursts[3:]) if len(r.bursts) > 3 else float("nan")
    elif sc.kind == "cold":
        first = next((i for i, x in enumerate(rows) if x.ok / window >= 0.9 * sc.ceiling), 99)
        out["windows_to_90%"] = first
        good, frac, _ = span(min(first + 3, len(rows) - 1))
        out["429%_after"] = 100 * frac
    else:
        c = sc.change_at
        assert c is not None
        if sc.kind == "halved":
            good, frac, _ = span(c + 3)
            out["429%_from_c+3"] = 100 * frac
            out["goodput_after"] = good / sc.new_ceiling
        else:
            first = next((i - c for i, x in enumerate(rows[c:], c)
                          if x.ok / window >= 0.9 * sc.new_ceiling), 99)
            out["windows_to_90%"] = first
            good, frac, _ = span(c + 10)
            out["goodput_after_c+10"] = good / sc.new_ceiling
            out["429%_after_c+10"] = 100 * frac
    return out


# figure -> (bound kind, bound): the worst seed must meet it; None = shown, not judged
TARGETS: dict[str, dict[str, tuple[str, float] | None]] = {
    "steady": {"goodput": (">=", 0.95), "429%": ("<=", 2.0), "min_estimate": None,
               "min_rate": None},
    "steady-strict": {"goodput": (">=", 0.92), "429%": ("<=", 2.0), "min_estimate": None,
                      "min_rate": None},
    "burst": {"goodput": (">=", 0.9), "429%": ("<=", 2.0), "min_estimate": (">=", 0.9),
              "min_rate": None, "drain_s_max": None},
    "burst-drain": {"goodput": None, "429%": ("<=", 2.0), "min_estimate": (">=", 0.9),
                    "min_rate": None, "drain_s_max": ("<=", 4.5)},
    "cold": {"windows_to_90%": ("<=", 10), "429%_after": None},
    "halved": {"429%_from_c+3": ("<", 2.0), "goodput_after": None},
    "doubled": {"windows_to_90%": ("<=", 10), "goodput_after_c+10": (">=", 0.9),
                "429%_after_c+10": None},
    "conc": {"in_flight": None, "1302s_2nd_half": None},
    "info": {},
}

SCENARIOS: list[tuple[Scenario, str]] = [
    (Scenario("lenient steady", 20, 30, 20), "steady"),
    (Scenario("lenient steady, cold from default 10", 20, 30, 10), "steady"),
    (Scenario("lenient halved", 20, 30, 20, change_at=20, new_ceiling=10, kind="halved"),
     "halved"),
    (Scenario("lenient doubled", 20, 60, 20, change_at=20, new_ceiling=40, kind="doubled"),
     "doubled"),
    (Scenario("lenient cold 2 under 20", 20, 30, 2, kind="cold"), "cold"),
    (Scenario("strict steady (new user: default 10 under R=10)", 10, 14, 10, "strict"),
     "steady-strict"),
    (Scenario("strict steady R=20", 20, 28, 20, "strict"), "steady-strict"),
    (Scenario("strict halved", 10, 14, 10, "strict", change_at=20, new_ceiling=5,
              kind="halved"), "halved"),
    (Scenario("strict doubled", 10, 30, 10, "strict", change_at=20, new_ceiling=20,
              kind="doubled"), "doubled"),
    (Scenario("strict cold 2 under 10", 10, 14, 2, "strict", kind="cold"), "cold"),
    (Scenario("strict bursty 6x then idle", 10, 12, 10, "strict", burst=6, kind="burst"),
     "burst"),
    (Scenario("strict bursty 4x then idle", 10, 8, 10, "strict", burst=4, kind="burst"),
     "burst-drain"),
    (Scenario("lenient bursty 6x then idle", 20, 24, 20, burst=6, kind="burst"), "burst"),
    (Scenario("lenient bursty 4x then idle", 20, 16, 20, burst=4, kind="burst"), "burst-drain"),
    (Scenario("banking upstream (1 s bucket) steady, RATE_LIMIT_UPSTREAM_BURST=1", 20, 30, 20,
              "banking", upstream_burst=1.0), "steady"),
    (Scenario("banking upstream doubled, RATE_LIMIT_UPSTREAM_BURST=1", 20, 60, 20, "banking",
              change_at=20, new_ceiling=40, kind="doubled", upstream_burst=1.0), "doubled"),
    (Scenario("concurrency ceiling 8, 15 s streams", 50, 3, 10, concurrency=8, max_workers=20,
              duration=15.0, windows=60, kind="conc"), "conc"),
]


def timeline(sc: Scenario, r: Run, window: float) -> None:
    print(" win   R   rate  ceiling  floor  200s 429s good/R  429%  queue inflight limit rej")
    for i, w in enumerate(r.windows):
        att = w.ok + w.limited
        ceil = f"{w.ceiling:7.2f}" if w.ceiling is not None else "      -"
        floor = f"{w.floor:6.2f}" if w.floor is not None else "     -"
        print(f"{i:4d} {real_ceiling(sc, i):3g} {w.rate:6.2f} {ceil} {floor} {w.ok:5d}"
              f" {w.limited:4d} {w.ok / window / real_ceiling(sc, i):6.2f}"
              f" {100 * w.limited / max(1, att):5.1f} {w.queue:6d} {w.in_flight:8.1f}"
              f" {w.limit:5d} {w.rejected:3d}")


def judge(label: str, values: list[float], target: tuple[str, float] | None) -> bool:
    lo, mid, hi = min(values), statistics.median(values), max(values)
    if target is None:
        mark, bound = "info", ""
    else:
        op, limit = target
        worst = lo if op == ">=" else hi
        passed = worst >= limit if op == ">=" else worst <= limit if op == "<=" else \
            worst < limit
        mark, bound = ("PASS" if passed else "MISS"), f" (target {op} {limit:g})"
    print(f"  [{mark}] {label}: min {lo:.3f} / median {mid:.3f} / max {hi:.3f}{bound}")
    return mark != "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jitter-ms", type=float, default=2.0,
                        help="mean send jitter after the gate (exponential), ms")
    parser.add_argument("--scenario", action="append", help="substring of scenario names")
    parser.add_argument("--timeline", action="store_true", help="per-window rows of seed 1")
    args = parser.parse_args(argv)
    missed: list[str] = []
    print(f"limiter_sim: {args.seeds} seeds, window {args.window:g} s, send jitter "
          f"1 ms + exp(mean {args.jitter_ms:g} ms)")
    for sc, target in SCENARIOS:
        if args.scenario and not any(s in sc.name for s in args.scenario):
            continue
        change = f", R -> {sc.new_ceiling:g} at window {sc.change_at}" if sc.change_at else ""
        demand = f"{sc.burst:g}x R bursts" if sc.burst else f"{sc.demand:g} req/s"
        print(f"\n== {sc.name}: {sc.upstream} R={sc.ceiling:g}, demand {demand}, "
              f"initial {sc.initial:g}{change}, {sc.windows} windows")
        runs = [run(sc, args.window, seed, args.jitter_ms / 1000) for seed in
                range(1, args.seeds + 1)]
        if args.timeline:
            timeline(sc, runs[0], args.window)
        table = [figures(sc, r, args.window) for r in runs]
        for label in table[0]:
            bound = TARGETS[target].get(label)
            if not judge(label, [t[label] for t in table], bound):
                missed.append(f"{sc.name}: {label}")
    print("\nall targets met" if not missed else f"\nMISS: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
