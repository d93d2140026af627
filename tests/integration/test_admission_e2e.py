"""Admission control end to end: the real proxy in front of the simulator's hidden ceiling.

Short controller windows (RATE_LIMIT_WINDOW=2s) keep each test under ~40 s. Load is open-loop
(a fixed arrival schedule, not paced by the answers), from an asyncio client. Timing bounds are
deliberately generous: they tell a working limiter from a broken one, not fast from slow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
import httpx
import pytest

from tests.integration.conftest import proxy_env
from tests.support.servers import (
    Process,
    RedisServer,
    running_zai_proxy,
    start_redis,
    start_zai_proxy,
    wait_http,
)

CHAT = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
KEY_A = "worker-key-aaaaaaaa"
KEY_B = "worker-key-bbbbbbbb"
WINDOW = "2s"


@dataclass
class Result:
    sent: float
    status: int  # 0: the connection failed; NO_ANSWER: nothing came back in time
    latency: float


NO_ANSWER = -1


async def open_loop(url: str, rate: float, seconds: float, grace: float = 15.0) -> list[Result]:
    """Send `rate` req/s for `seconds` on a fixed schedule; every request gets a result, and a
    request still unanswered `grace` seconds after the last send is recorded as NO_ANSWER (a
    proxy that hangs must show, not vanish from the measurement)."""
    # aiohttp: several times less client CPU than httpx, so the schedule holds on 2 cores.
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                   timeout=aiohttp.ClientTimeout(total=60))
    start = time.monotonic()
    results: list[Result] = []

    async def one(at: float) -> None:
        code = NO_ANSWER
        try:
            async with client.post(f"{url}/v1/chat/completions", json=CHAT) as answer:
                await answer.read()
                code = answer.status
        except (aiohttp.ClientError, TimeoutError):
            code = 0
        finally:  # cancelled (no answer within the grace): recorded too
            results.append(Result(at - start, code, time.monotonic() - at))

    tasks = []
    n = int(rate * seconds)
    for i in range(n):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(time.monotonic())))
    await asyncio.wait(tasks, timeout=grace)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    assert len(results) == n
    return results


def unanswered(results: list[Result]) -> list[float]:
    """Send times (s) of the requests that never got an answer."""
    return [round(r.sent, 1) for r in results if r.status == NO_ANSWER]


def sim_counts(simulator: Process) -> tuple[int, int]:
    """(200s, 429s) the simulator has answered since its last reset."""
    status = httpx.get(f"{simulator.url}/_stats").json()["status"]
    return int(status.get("200", 0)), int(status.get("429", 0))


def metric(proxy: Process, name: str) -> float:
    for line in httpx.get(f"{proxy.url}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing")


def reset_sim(simulator: Process) -> None:
    httpx.post(f"{simulator.url}/_stats/reset").raise_for_status()


@pytest.fixture(scope="module")
def ceiling_sim() -> Iterator[Process]:
    with running_zai_proxy("simulate", "--rate-ceiling", "10") as process:
        yield process


def serve(simulator: Process, **env: str) -> Process:
    return start_zai_proxy("serve", env=proxy_env(
        simulator, RATE_LIMIT_WINDOW=WINDOW, LOG_LEVEL="WARNING", **env), ready_path="/ready")


async def sample_counts(simulator: Process, seconds: float) -> list[tuple[float, int, int]]:
    """(time, 200s, 429s) of the simulator once a second."""
    start = time.monotonic()
    series = []
    while time.monotonic() - start < seconds:
        ok, limited = await asyncio.to_thread(sim_counts, simulator)
        series.append((time.monotonic() - start, ok, limited))
        await asyncio.sleep(1.0)
    return series


def between(series: list[tuple[float, int, int]], a: float, b: float) -> tuple[int, int, float]:
    """(200s, 429s, seconds) between the samples nearest to `a` and `b` seconds."""
    first = min(series, key=lambda s: abs(s[0] - a))
    last = min(series, key=lambda s: abs(s[0] - b))
    return last[1] - first[1], last[2] - first[2], last[0] - first[0]


async def test_proxy_learns_the_hidden_ceiling(ceiling_sim: Process) -> None:
    proxy = serve(ceiling_sim, RATE_LIMIT_INITIAL="20", MAX_RETRIES="0",
                  QUEUE_TIMEOUT_SECONDS="5")
    try:
        reset_sim(ceiling_sim)
        load = asyncio.create_task(open_loop(proxy.url, 15, 20))
        series = await sample_counts(ceiling_sim, 20)
        results = await load
        ceiling = metric(proxy, "zai_proxy_rate_limit_ceiling_requests_per_second")
        rate = metric(proxy, "zai_proxy_rate_limit_requests_per_second")
    finally:
        proxy.terminate()
    ok_early, limited_early, _ = between(series, 0, 4)
    ok_late, limited_late, late_s = between(series, 10, 19)
    early_fraction = limited_early / max(1, ok_early + limited_early)
    late_fraction = limited_late / max(1, ok_late + limited_late)
    # The simulator allows 10 req/s. The ceiling gauge is the lowest rate seen throttled: a
    # failed probe, up to max_probe_step (20 %) over a floor just under 10 in gate terms.
    assert 7.0 <= ceiling <= 12.5, ceiling
    assert 6.5 <= rate <= 11.0, rate
    # Started at 2x the ceiling: the guess is refused and given up after a few 429s, not
    # after a window of them.
    assert 2 <= limited_early and early_fraction < 0.25, (ok_early, limited_early)
    assert late_fraction < 0.05 and late_fraction < early_fraction, (ok_late, limited_late)
    # And it still uses the account (generous: a failed probe may lower the estimate a little).
    assert ok_late / late_s >= 6.0, (ok_late, late_s)
    assert not unanswered(results), unanswered(results)
    assert all(r.status in (200, 429) for r in results)


async def test_a_flooding_client_does_not_starve_another(ceiling_sim: Process) -> None:
    proxy = serve(ceiling_sim, RATE_LIMIT_INITIAL="8", PROXY_API_KEYS=f"{KEY_A},{KEY_B}",
                  QUEUE_TIMEOUT_SECONDS="60")
    try:
        reset_sim(ceiling_sim)
        async with httpx.AsyncClient(timeout=60,
                                     limits=httpx.Limits(max_connections=200)) as flood_client:
            flood = [asyncio.create_task(flood_client.post(
                f"{proxy.url}/v1/chat/completions", json=CHAT,
                headers={"authorization": f"Bearer {KEY_A}"})) for _ in range(120)]
            await asyncio.sleep(1.0)  # A's 120 requests are queued: 15 s of work at 8 req/s
            assert metric(proxy, "zai_proxy_queue_depth") >= 50
            latencies = []
            async with httpx.AsyncClient(timeout=30) as other:
                for _ in range(5):
                    started = time.monotonic()
                    response = await other.post(f"{proxy.url}/v1/chat/completions", json=CHAT,
                                                headers={"authorization": f"Bearer {KEY_B}"})
                    latencies.append(time.monotonic() - started)
                    assert response.status_code == 200
            flood_done = sum(task.done() for task in flood)
            for task in flood:
                task.cancel()
            await asyncio.gather(*flood, return_exceptions=True)
    finally:
        proxy.terminate()
    # Round-robin by client: B waits for about one token, never behind A's whole queue.
    assert max(latencies) < 2.0, latencies
    assert flood_done < 100, flood_done  # A was still queued while B was served


async def test_two_proxies_sharing_redis_stay_under_the_ceiling(
        ceiling_sim: Process, redis_server: RedisServer) -> None:
    env = {"RATE_LIMIT_STORAGE_URI": redis_server.url, "RATE_LIMIT_INITIAL": "15",
           "RATE_LIMIT_REPLICAS": "2", "MAX_RETRIES": "0", "QUEUE_TIMEOUT_SECONDS": "5"}
    # v1 and v2 of one account: one shared limiter state, whatever the variant
    proxies = [serve(ceiling_sim, DEPLOYMENT_VARIANT="v1", **env),
               serve(ceiling_sim, DEPLOYMENT_VARIANT="v2", **env)]
    try:
        reset_sim(ceiling_sim)
        loads = [asyncio.create_task(open_loop(p.url, 10, 20)) for p in proxies]
        series = await sample_counts(ceiling_sim, 20)
        answered = [r for load in await asyncio.gather(*loads) for r in load]
        ceilings = [metric(p, "zai_proxy_rate_limit_ceiling_requests_per_second")
                    for p in proxies]
    finally:
        for p in proxies:
            p.terminate()
    ok, limited, seconds = between(series, 11, 19)
    attempts_per_s = (ok + limited) / seconds
    timeline = [(round(t), b[1] - a[1], b[2] - a[2]) for (t, *_), a, b in
                zip(series[1:], series, series[1:], strict=False)]
    # Unshared, each would send its own 15 req/s (30 together, 3x the ceiling).
    assert attempts_per_s <= 12.0, (ok, limited, seconds)
    assert limited / max(1, ok + limited) < 0.10, (ok, limited)
    # Goodput: most of the ceiling in this short run (2 s windows); bench/bench_limiter.py
    # measures the long-run goodput with two variants of two replicas each.
    assert ok / seconds >= 6.0, (ok, seconds, timeline, ceilings)
    assert not unanswered(answered), unanswered(answered)
    assert ceilings[0] == pytest.approx(ceilings[1], rel=0.05), ceilings  # one shared estimate
    assert 6.0 <= ceilings[0] <= 12.0, ceilings


def shared_health(proxy: Process) -> dict[str, object]:
    wait_http(f"{proxy.url}/health", 5)
    return httpx.get(f"{proxy.url}/health").json()["rate_limit"]["shared_state"]


async def wait_for(check: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.25)
    return False


async def test_redis_loss_degrades_loudly_and_recovers(ceiling_sim: Process) -> None:
    redis = start_redis()
    port = redis.port
    env = {"RATE_LIMIT_STORAGE_URI": f"redis://127.0.0.1:{port}/0", "RATE_LIMIT_INITIAL": "6",
           "RATE_LIMIT_REPLICAS": "2", "DEPLOYMENT_VARIANT": "e2e-degrade"}
    proxies = [serve(ceiling_sim, **env), serve(ceiling_sim, **env)]
    try:
        assert all(shared_health(p)["degraded"] is False for p in proxies)
        loads = [asyncio.create_task(open_loop(p.url, 3, 24)) for p in proxies]
        await asyncio.sleep(3)
        redis.stop()  # Redis dies under load
        degraded = await wait_for(lambda: all(shared_health(p)["degraded"] is True
                                              for p in proxies), 8)
        gauges = [metric(p, "zai_proxy_shared_state_degraded") for p in proxies]
        reasons = [shared_health(p)["reason"] for p in proxies]
        await asyncio.sleep(3)
        redis = start_redis(port)  # and comes back
        recovered = await wait_for(lambda: all(shared_health(p)["degraded"] is False
                                               for p in proxies), 12)
        after = [metric(p, "zai_proxy_shared_state_degraded") for p in proxies]
        results = [r for load in await asyncio.gather(*loads) for r in load]
    finally:
        for p in proxies:
            p.terminate()
        redis.stop()
    assert degraded, "proxies did not report the lost Redis"
    assert gauges == [1.0, 1.0]
    assert all(reasons), reasons
    assert recovered, "proxies did not recover when Redis returned"
    assert after == [0.0, 0.0]
    # Served throughout: every request answered, no proxy error, the simulator's 10 req/s is
    # well above 2 x 3 req/s.
    assert not unanswered(results), unanswered(results)
    statuses = [r.status for r in results]
    assert statuses.count(200) >= 0.95 * len(statuses), sorted(set(statuses))
    assert all(s in (200, 429) for s in statuses), sorted(set(statuses))
