"""Dashboard budget: CPU and memory with two real targets, and time to first data in Chromium.

    /work/venv/bin/python bench/bench_dashboard.py [--duration 60] [--interval 5] [--loads 5]

Starts proxies v1 and v2 (simulated upstream) and a dashboard scraping both; keeps a trickle of
traffic going and one page connected over SSE; samples the dashboard's /proc for CPU time and RSS;
then loads the page several times in headless Chromium and reads when it first drew data.
Budget (issue 6): under 2% of a core, under 100 MB RSS, first data within 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import CHROMIUM_ARGS, Process, send_traffic, start_zai_proxy  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trickle(proxies: list[Process], stop: threading.Event) -> None:
    while not stop.is_set():
        for proxy in proxies:
            send_traffic(proxy, 2)
        stop.wait(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    proxies = [start_zai_proxy("serve", env={"DEPLOYMENT_VARIANT": v}) for v in ("v1", "v2")]
    db = Path(tempfile.mkdtemp(prefix="zai-dash-bench-")) / "dash.sqlite3"
    targets = [a for p in proxies for a in ("--target", p.url)]
    dash = start_zai_proxy("dashboard", *targets, "--interval", str(args.interval),
                           "--db", str(db), ready_path="/healthz")
    stop = threading.Event()
    traffic = threading.Thread(target=trickle, args=(proxies, stop), daemon=True)
    traffic.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            watcher = browser.new_page()
            watcher.goto(dash.url + "/")  # one live client during the measurement
            time.sleep(2 * args.interval)  # warm-up: imports done, first rounds stored
            pid = dash.proc.pid
            cpu0, t0, peak = cpu_seconds(pid), time.monotonic(), 0.0
            while time.monotonic() - t0 < args.duration:
                time.sleep(1.0)
                peak = max(peak, rss_mb(pid))
            cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
            rss = rss_mb(pid)
            firsts = []
            for _ in range(args.loads):
                page = browser.new_page()
                page.goto(dash.url + "/")
                page.wait_for_function("document.body.dataset.firstData", timeout=10_000)
                firsts.append(float(page.evaluate("document.body.dataset.firstData")))
                page.close()
            browser.close()
    finally:
        stop.set()
        traffic.join(30)
        for process in (dash, *proxies):
            process.terminate(10)
    ok = cpu < 2 and peak < 100 and max(firsts) < 1000
    print(f"targets: 2 real proxies (v1, v2), interval {args.interval:g}s, "
          f"measured {args.duration:g}s with one page connected")
    print(f"dashboard CPU: {cpu:.2f}% of one core (budget < 2%)")
    print(f"dashboard RSS: {rss:.1f} MB now, {peak:.1f} MB peak (budget < 100 MB)")
    print(f"page load to first data: median {statistics.median(firsts):.0f} ms, "
          f"max {max(firsts):.0f} ms over {len(firsts)} loads (budget < 1000 ms)")
    print("within budget" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
