"""The blue-green switch as an operator sees it: `zai-proxy switch` moves keep-alive workers,
not just the Service, and fails none of their requests (issue 13).

Two real proxies (v1, v2) against the simulator, behind a stand-in for the Service that routes
each new connection by the current selector and leaves established ones where they are (as
kube-proxy does); the fake kubectl drives the real proxies (pod proxy, `exec zai-proxy admin`,
scale to 0 = SIGTERM). 20 OpenAI SDK and 4 Anthropic SDK workers (own pools, default retries)
call continuously through switch -> rollback -> switch, then through a switch that scales the
old variant to 0. See tests/support/blue_green.py for the harness and the joins.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.blue_green import (
    Cluster,
    ServiceStandIn,
    SwitchRun,
    Workers,
    after_release,
    proxy_env,
    spanning,
)
from tests.support.servers import Process, start_zai_proxy

# The switch samples every 0.3 s and wants 1 s without a request on the old variant.
SWITCH_ARGS = ("--poll-interval", "0.3", "--traffic-quiet", "1", "--traffic-timeout", "30",
               "--timeout", "20", "--samples", "2")
# A learned state for v1, so the first switch really carries one (far above the load: it never
# binds, but the carry shows in v2's own /admin/limiter-state afterwards).
LEARNED = 480.0


@pytest.fixture(scope="module")
def variants(simulator: Process) -> Iterator[dict[str, Process]]:
    pods = {v: start_zai_proxy("serve", env=proxy_env(simulator.url, v), ready_path="/ready")
            for v in ("v1", "v2")}
    yield pods
    for process in pods.values():
        process.terminate()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            variants: dict[str, Process]) -> Cluster:
    return Cluster(Path(tmp_path_factory.mktemp("bluegreen")), variants)


@pytest.fixture(scope="module")
def service(cluster: Cluster) -> Iterator[ServiceStandIn]:
    with ServiceStandIn(cluster.state_path) as standin:
        yield standin


def check_switch(run: SwitchRun, old: str, new: str, workers: Workers,
                 service: ServiceStandIn, settle_until: float) -> None:
    """The claims for one switch from `old` to `new`, against what the workers saw."""
    out = run.output
    assert run.code == 0, out
    assert f"SWITCHED: service zai-proxy serves '{new}'" in out, out
    assert re.search(rf"ok: zai-proxy-{old}-\S+: retired \(Connection: close", out), out
    assert f"all traffic on '{new}'" in out, out
    rates = re.findall(rf"'{old}': ([\d.]+) req/s, '{new}': ([\d.]+) req/s", out)
    assert rates and float(rates[-1][0]) == 0.0 and float(rates[-1][1]) > 0, rates
    patched = run.patched_at()
    released = max(run.retired_at().values())
    seen = after_release(workers.attempts, service.connections, old, patched, released,
                         settle_until)
    # No request on a connection opened after the patch reaches the old variant, and after the
    # release each connection it still had carries at most one more request.
    assert seen.on_new_connections == [], seen.on_new_connections[:3]
    assert seen.unjoined == [], seen.unjoined[:3]
    assert all(n <= 1 for n in seen.per_connection.values()), seen.per_connection
    # The switch's own account matches: the last request it says reached the old variant
    # came no later than the moment it printed (sampled, so an upper bound).
    match = re.search(r"received its last new request by ([\d.]+) s after the patch", out)
    if match and seen.last_start is not None:
        assert seen.last_start - patched <= float(match.group(1)) + 0.1, (seen, out)
    # Streams in flight at the release ran to their end.
    in_flight = spanning(workers.calls, released)
    assert in_flight, "no stream was in flight at the release: the claim was not exercised"
    assert all(c.ok and c.complete for c in in_flight), [c for c in in_flight if not c.complete]


def test_switch_rollback_switch_under_load_fails_no_request(
    cluster: Cluster, service: ServiceStandIn, variants: dict[str, Process]
) -> None:
    cluster.admin("v1", "PUT", "/admin/limiter-state",
                  {**cluster.admin("v1", "GET", "/admin/limiter-state"),
                   "rate": {"ceiling": LEARNED, "learned_seconds_ago": 1.0}})
    with Workers(service.url) as workers:
        time.sleep(1.5)
        runs: list[tuple[SwitchRun, str, str, float]] = []
        for argv, old, new in ((("--to", "v2"), "v1", "v2"), (("rollback",), "v2", "v1"),
                               (("--to", "v2"), "v1", "v2")):
            run = cluster.switch(*argv, *SWITCH_ARGS)
            time.sleep(1.5)
            runs.append((run, old, new, time.monotonic()))
    assert workers.failures() == [], [c.error for c in workers.failures()][:5]
    assert len(workers.calls) >= 150, len(workers.calls)
    assert {a.variant for a in workers.attempts} == {"v1", "v2"}
    for run, old, new, until in runs:
        check_switch(run, old, new, workers, service, until)
    first, rollback, _ = (r[0] for r in runs)
    assert "rollback: 'v2' -> 'v1'" in rollback.output
    assert f"carried zai-proxy-v1-7c9f-aaaaa's learned ceilings (rate ceiling {LEARNED:.2f}" \
           in first.output, first.output
    assert cluster.admin("v2", "GET", "/admin/limiter-state")["rate"]["ceiling"] == LEARNED
    assert cluster.admin("v1", "GET", "/admin/limiter-state")["rate"]["ceiling"] == LEARNED
    assert cluster.selected() == "v2"
    status = cluster.switch("status")
    assert status.code == 0, status.output
    assert "pod zai-proxy-v1-7c9f-aaaaa: ready, status='ok', retired=true" in status.output
    assert "pod zai-proxy-v2-7c9f-ccccc: ready, status='ok', retired=false" in status.output
    assert "<-" not in status.output, status.output  # nothing out of place


def test_switch_that_scales_the_old_variant_to_zero_fails_no_request(
    cluster: Cluster, service: ServiceStandIn, variants: dict[str, Process]
) -> None:
    old = cluster.selected()
    new = "v1" if old == "v2" else "v2"
    with Workers(service.url, seed=2) as workers:
        time.sleep(1.5)
        run = cluster.switch("--to", new, "--scale-down-previous", *SWITCH_ARGS)
        # The fake kubectl's scale to 0 SIGTERMed the old proxy: it drains and exits.
        exit_code = variants[old].proc.wait(30)
        time.sleep(1.5)
        until = time.monotonic()
    assert workers.failures() == [], [c.error for c in workers.failures()][:5]
    assert f"ok: zai-proxy-{old} scaled to 0" in run.output, run.output
    assert exit_code == 0, variants[old].output()[-2000:]
    check_switch(run, old, new, workers, service, until)
    assert [a for a in workers.attempts if a.start > run.ended and a.variant == old] == []
