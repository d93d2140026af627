"""Discrete-time simulation of the admission core against an upstream with a hidden ceiling.

Fake clock, no sleeping: runs in seconds. Drives the real `RateController`, `TokenBucket`,
`ConcurrencyController` and `RetryPolicy` with a queue model (bounded, deadline, retries ahead of
new work) under open-loop demand above the ceiling, and checks the targets of issue 4:

    /work/venv/bin/python bench/limiter_sim.py [--window 5] [--quiet] [--seed 1]

The upstream admits requests with a token bucket of the hidden rate R (burst 1 s) and answers 1303
above it; with a concurrency ceiling C it answers 1302 while C requests are in flight.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing

from zai_proxy.concurrency_controller import ConcurrencyController
from zai_proxy.rate_controller import Outcome, RateController, TokenBucket
from zai_proxy.retry import RetryPolicy

DT = 0.01


@dataclass
class Scenario:
    name: str
    ceiling: float  # hidden request-rate ceiling R (req/s)
    demand: float  # open-loop arrivals (req/s)
    initial: float
    windows: int = 60
    change_at: int | None = None  # window at which the ceiling becomes `new_ceiling`
    new_ceiling: float = 0.0
    concurrency: int | None = None  # hidden in-flight ceiling
    max_workers: int = 200
    duration: float = 0.3  # seconds per accepted request (a long stream when large)


@dataclass
class Row:
    rate: float = 0.0
    ceiling: float | None = None
    ok: int = 0
    limited: int = 0
    in_flight: float = 0.0
    queue: int = 0
    limit: int = 0


@dataclass
class Upstream:
    ceiling: float
    concurrency: int | None
    burst: float = 1.0  # seconds of rate the upstream lets a client bank
    tokens: float = 1.0
    updated: float = 0.0
    in_flight: list[float] = field(default_factory=list)

    def answer(self, now: float) -> str:
        self.in_flight = [t for t in self.in_flight if t > now]
        if self.concurrency is not None and len(self.in_flight) >= self.concurrency:
            return "1302"
        refill = (now - self.updated) * self.ceiling
        self.tokens = min(max(1.0, self.ceiling * self.burst), self.tokens + refill)
        self.updated = now
        if self.tokens < 1.0:
            return "1303"
        self.tokens -= 1.0
        return "200"


def run(sc: Scenario, window: float, seed: int, burst: float = 1.0) -> list[Row]:
    rng = random.Random(seed)
    t = 0.0
    ctl = RateController(clock=lambda: t, initial=sc.initial, minimum=1, maximum=50, window=window)
    conc = ConcurrencyController(clock=lambda: t, max_workers=sc.max_workers, window=window)
    bucket = TokenBucket(ctl.rate, t)
    retry = RetryPolicy(max_retries=3, base=0.25, cap=5.0, jitter=1.0, rng=rng)
    up = Upstream(sc.ceiling, sc.concurrency, burst)
    queue: deque[float] = deque()  # arrival times of new work (deadline = arrival + 30 s)
    retries: list[tuple[float, int]] = []  # (ready at, attempt) - go ahead of new work
    pending: list[tuple[float, str, int, int, int]] = []  # (done at, answer, attempt, k, gen)
    busy: list[float] = []  # our own in-flight requests' end times
    rows = [Row() for _ in range(sc.windows)]
    owed = 0.0
    steps = int(sc.windows * window / DT)
    for step in range(steps):
        t = step * DT
        w = min(sc.windows - 1, int(t / window))
        if sc.change_at is not None and w >= sc.change_at:
            up.ceiling = sc.new_ceiling
        owed += sc.demand * DT * rng.uniform(0.5, 1.5)  # open loop, a little bursty
        while owed >= 1.0:
            queue.append(t)
            owed -= 1.0
        while queue and queue[0] < t - 30.0:
            queue.popleft()
        if len(queue) > 1000:
            for _ in range(len(queue) - 1000):
                queue.pop()  # QUEUE_MAX: rejected at once
        done = [p for p in pending if p[0] <= t]
        pending = [p for p in pending if p[0] > t]
        for _, answer, attempt, k, gen in done:
            if answer == "200":
                rows[w].ok += 1
                ctl.record(Outcome.ACCEPTED)
            else:
                rows[w].limited += 1
                if answer == "1302":
                    conc.record_limited(k, gen)
                    ctl.record(Outcome.CONCURRENCY_LIMITED)
                else:
                    ctl.record(Outcome.RATE_LIMITED)
                delay = retry.next_delay(attempt, None)
                if delay is not None:
                    retries.append((t + delay, attempt + 1))
        busy = [b for b in busy if b > t]
        ready = sorted(r for r in retries if r[0] <= t)
        while ready or queue:
            if len(busy) >= conc.limit:
                conc.note_demand(len(queue) + len(ready))
                break
            if bucket.try_take(t) > 0:
                ctl.note_demand(len(queue) + len(ready))
                break
            if ready:
                item = ready.pop(0)
                retries.remove(item)
                attempt = item[1]
            else:
                queue.popleft()
                attempt = 0
            k = len(busy) + 1
            gen = conc.admitted(k)
            answer = up.answer(t)
            length = sc.duration if answer == "200" else 0.05
            busy.append(t + length)
            if answer == "200":
                up.in_flight.append(t + length)
            pending.append((t + length, answer, attempt, k, gen))
        ctl.tick()
        conc.tick()
        bucket.set_rate(ctl.rate, t)
        row = rows[w]
        row.rate, row.ceiling, row.queue, row.limit = ctl.rate, ctl.ceiling, len(queue), conc.limit
        row.in_flight += len([e for e in up.in_flight if e > t]) * DT / window
    return rows


def report(sc: Scenario, rows: list[Row], window: float, quiet: bool) -> list[str]:
    """Print the timeline and return the failed targets."""
    print(f"\n== {sc.name}: R={sc.ceiling:g} demand={sc.demand:g} initial={sc.initial:g}", end="")
    change = f" -> R={sc.new_ceiling:g} at window {sc.change_at}" if sc.change_at else ""
    print(f" window={window:g}s{change}")
    if not quiet:
        print(" win   rate  ceiling   200s  429s  good/R  429%  inflight limit queue")
        for i, r in enumerate(rows):
            real = sc.new_ceiling if sc.change_at is not None and i >= sc.change_at else sc.ceiling
            att = r.ok + r.limited
            ceil = f"{r.ceiling:7.2f}" if r.ceiling is not None else "      -"
            print(f"{i:4d} {r.rate:6.2f} {ceil} {r.ok:6d} {r.limited:5d}"
                  f" {r.ok / window / real:7.2f} {100 * r.limited / max(1, att):5.1f}"
                  f" {r.in_flight:8.1f} {r.limit:5d} {r.queue:5d}")
    failed: list[str] = []

    def check(label: str, ok: bool, figure: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {label}: {figure}")
        if not ok:
            failed.append(f"{sc.name}: {label}")

    def span(a: int, b: int) -> tuple[float, float]:
        part = rows[a:b]
        ok, lim = sum(r.ok for r in part), sum(r.limited for r in part)
        return ok / (window * len(part)), lim / max(1, ok + lim)

    if sc.concurrency is not None:
        settled = [r.in_flight for r in rows[len(rows) // 2:]]
        mean = sum(settled) / len(settled)
        lost = sum(r.limited for r in rows[len(rows) // 2:])
        within = sc.concurrency - 1 <= mean <= sc.concurrency + 1e-6
        check("in-flight settles at or just under C", within,
              f"mean in flight {mean:.2f} (C={sc.concurrency}), 1302s in 2nd half {lost}")
    elif sc.change_at is None:
        good, frac = span(3, len(rows))
        first = next((i for i, r in enumerate(rows) if r.ok / window >= 0.9 * sc.ceiling), None)
        if sc.initial < sc.ceiling / 2:
            check("reaches 90% of R within 10 windows", first is not None and first <= 10,
                  f"first window at >= 90%: {first}")
        else:
            check("goodput >= 95% of R after 3 windows", good >= 0.95 * sc.ceiling,
                  f"{good / sc.ceiling:.3f} of R")
            check("429s <= 2% after 3 windows", frac <= 0.02, f"{frac:.2%}")
    else:
        c = sc.change_at
        if sc.new_ceiling < sc.ceiling:
            good, frac = span(c + 3, len(rows))
            check("429s < 2% from 3 windows after the drop", frac < 0.02, f"{frac:.2%}")
            check("goodput >= 95% of new R after", good >= 0.95 * sc.new_ceiling,
                  f"{good / sc.new_ceiling:.3f} of new R")
        else:
            first = next((i - c for i, r in enumerate(rows[c:], c)
                          if r.ok / window >= 0.9 * sc.new_ceiling), None)
            check("goodput >= 90% of new R within 10 windows", first is not None and first <= 10,
                  f"windows after the change: {first}")
            good, frac = span(c + 10, len(rows))
            check("afterwards goodput / 429s", good >= 0.9 * sc.new_ceiling,
                  f"{good / sc.new_ceiling:.3f} of new R, {frac:.2%} 429s")
    return failed


SCENARIOS = [
    Scenario("steady ceiling", ceiling=20, demand=30, initial=20),
    Scenario("steady ceiling, cold from default 10", ceiling=20, demand=30, initial=10),
    Scenario("ceiling halved", ceiling=20, demand=30, initial=20, change_at=20, new_ceiling=10),
    Scenario("ceiling doubled", ceiling=20, demand=60, initial=20, change_at=20, new_ceiling=40),
    Scenario("cold start at 2 under 20", ceiling=20, demand=30, initial=2, windows=40),
    Scenario("concurrency ceiling, long streams", ceiling=50, demand=3, initial=10,
             concurrency=8, max_workers=20, duration=15.0, windows=60),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--upstream-burst", type=float, default=1.0,
                        help="seconds of rate the model upstream banks (0.05 = nearly strict)")
    parser.add_argument("--quiet", action="store_true", help="summaries only")
    args = parser.parse_args(argv)
    failed: list[str] = []
    for sc in SCENARIOS:
        rows = run(sc, args.window, args.seed, args.upstream_burst)
        failed += report(sc, rows, args.window, args.quiet)
    print("\nall targets met" if not failed else f"\nFAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
