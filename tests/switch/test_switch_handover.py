"""The hand-over of the learned ceiling (zai_proxy/switch/runbook.py with carry.py) against the
fake kubectl, on virtual time: the `Switcher` gets the test's clock and a sleep that only moves
it, so the readings of the old variant's queue and counters are spaced without real waiting.

What is checked: the old variant's queue counts as a backlog only if it stays queued over the
readings; the target's interim share is the ceiling minus what the old variant is measured to
send, never below a quarter of it; the target ends with the whole ceiling after a verified
switch and after a failure that restores the selector; after exit 4 it holds what the old
variant leaves then, and the switch prints the commands that give it the whole ceiling.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.clock import VirtualTime
from tests.support.switch import V1, V2, Cluster, install_cluster, learned
from zai_proxy import switch
from zai_proxy.switch.kube import Kubectl
from zai_proxy.switch.runbook import Switcher
from zai_proxy.switch.steps import Options


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    return install_cluster(tmp_path, monkeypatch)


def switch_to_v2(**options: Any) -> tuple[int, str, VirtualTime]:
    """Run `switch --to v2` on virtual time; (exit code, output, the clock)."""
    vt = VirtualTime()
    lines: list[str] = []
    settings: dict[str, Any] = {"namespace": "zai", "timeout": 1.0, "poll_interval": 0.25,
                                "samples": 3, "traffic_quiet": 0.0, "traffic_timeout": 2.0,
                                **options}
    switcher = Switcher(Kubectl("zai"), Options(**settings), out=lines.append, sleep=vt.jump,
                        clock=vt, wall=vt.wall)
    code = switcher.switch("v2")
    return code, "\n".join(lines), vt


def ceiling_20(current: float = 16.0) -> dict[str, Any]:
    return {**learned(20.0, 30.0), "rate": {"ceiling": 20.0, "current": current,
                                             "learned_seconds_ago": 30.0}}


def puts(fake: Cluster) -> list[tuple[str, float]]:
    return [(pod, put["rate"]["ceiling"]) for pod, put in fake.state().get("puts", [])]


def edit(fake: Cluster, **knobs: Any) -> None:
    change: Callable[[dict[str, Any]], None] = lambda s: s.update(knobs)  # noqa: E731
    fake.edit(change)


def test_a_queue_seen_once_is_no_backlog(fake: Cluster) -> None:
    # A burst: 3 queued when the hand-over reads first, none after (the read before it, the
    # traffic baseline, sees 3 too). One reading would have cut v2 down.
    edit(fake, limiter_state={V1[0]: ceiling_20()}, queued_series={V1[0]: [3, 3, 0]})
    code, out, _ = switch_to_v2()
    assert code == 0, out
    assert puts(fake) == [(V2[0], 20.0), (V2[1], 20.0)], out
    assert "queued for admission" not in out


def test_a_queue_that_empties_in_a_later_reading_is_no_backlog(fake: Cluster) -> None:
    edit(fake, limiter_state={V1[0]: ceiling_20()}, queued_series={V1[0]: [3, 3, 2, 0, 4]})
    code, out, _ = switch_to_v2()
    assert code == 0, out
    assert puts(fake) == [(V2[0], 20.0), (V2[1], 20.0)], out


def test_a_lasting_backlog_gives_v2_what_v1_leaves_by_its_counters(fake: Cluster) -> None:
    # v1 is selected before the patch: its queue stays, and each /metrics read of a pod adds 3
    # requests, 4 readings 0.5 s apart: 2 pods * 3 * 3 / 1.5 s = 12 req/s measured, whatever
    # the limiter's gauge says (16).
    edit(fake, limiter_state={V1[0]: ceiling_20(current=16.0)}, queued={V1[0]: 4, V1[1]: 2},
         traffic={"per_read": 3, "drain_reads": 0})
    code, out, _ = switch_to_v2()
    assert code == 0, out
    assert puts(fake) == [(V2[0], 8.0), (V2[1], 8.0), (V2[0], 20.0), (V2[1], 20.0)], out
    assert "'v1' kept 6 request(s) queued for admission in each of 4 readings over 1.5 s and " \
           "sends 12.00 req/s (measured from its request counters)" in out, out
    assert "'v2' holds 8.00 req/s of the account's 20.00 until 'v1' has sent its queued " \
           "requests, then all of it" in out
    assert "ok: 'v2' holds the whole learned ceiling (rate ceiling 20.00 req/s" in out
    calls = fake.calls()
    put_at = [i for i, c in enumerate(calls) if "PUT" in c]
    patch_at = next(i for i, c in enumerate(calls) if "patch" in c)
    assert put_at[1] < patch_at < put_at[2]


@pytest.mark.parametrize(("per_read", "sent"), [(4, 16.0), (5, 20.0), (7, 28.0)])
def test_the_share_never_falls_below_a_quarter(fake: Cluster, per_read: int, sent: float) -> None:
    # 2 pods * 3 reads * per_read / 1.5 s: v1 sends 16, 20 or 28 req/s of a ceiling of 20.
    edit(fake, limiter_state={V1[0]: ceiling_20()}, queued={V1[0]: 4},
         traffic={"per_read": per_read, "drain_reads": 0})
    code, out, _ = switch_to_v2()
    assert code == 0, out
    assert f"sends {sent:.2f} req/s (measured from its request counters)" in out, out
    assert puts(fake) == [(V2[0], 5.0), (V2[1], 5.0), (V2[0], 20.0), (V2[1], 20.0)], out


def test_counters_that_stand_still_leave_the_whole_ceiling(fake: Cluster) -> None:
    # A queue that stays while the counters do not move: v1 admits nothing, so it sends nothing
    # the account could see twice; v2 takes the whole ceiling at once.
    edit(fake, limiter_state={V1[0]: ceiling_20(current=16.0)}, queued={V1[0]: 4})
    code, out, _ = switch_to_v2()
    assert code == 0, out
    assert puts(fake) == [(V2[0], 20.0), (V2[1], 20.0)], out


def test_unreadable_counters_fall_back_on_the_limiters_rate(fake: Cluster) -> None:
    edit(fake, limiter_state={V1[0]: ceiling_20(current=13.0)}, queued={V1[0]: 4},
         no_counters=V1)
    code, out, _ = switch_to_v2(traffic_timeout=0.0)
    assert code == 0, out
    assert "sends 13.00 req/s (its limiter's current rate; its counters could not be read)" \
        in out, out
    assert puts(fake) == [(V2[0], 7.0), (V2[1], 7.0), (V2[0], 20.0), (V2[1], 20.0)], out


def test_exit_4_leaves_v2_what_v1_still_leaves_and_says_how_to_finish(fake: Cluster) -> None:
    # Clients stay on v1 (not retired): after the patch it still receives 3 per read per pod.
    edit(fake, limiter_state={V1[0]: ceiling_20()}, queued={V1[0]: 40, V1[1]: 40},
         traffic={"per_read": 3})
    code, out, _ = switch_to_v2(retire=False)
    assert code == switch.EXIT_TRAFFIC, out
    # Interim (12 req/s measured before), then what v1 leaves after exit 4 (12 again): never
    # the share of 5 % and never the whole 20 while v1 still sends.
    assert puts(fake) == [(V2[0], 8.0), (V2[1], 8.0), (V2[0], 8.0), (V2[1], 8.0)], out
    assert "WARNING: 'v1' sends 12.00 req/s (measured over 1.5 s): 'v2' holds 8.00 req/s of " \
           "the account's 20.00, so that both together stay within it" in out, out
    assert "give 'v2' the whole learned ceiling by running:" in out
    for pod in V2:
        assert f"| kubectl --namespace zai --request-timeout=20s exec {pod} -c zai-proxy -i " \
               "-- zai-proxy admin PUT /admin/limiter-state --data -" in out, out
    assert '"ceiling": 20.0' in out


def test_exit_4_with_v1_quiet_by_then_hands_over_the_whole(fake: Cluster) -> None:
    # v1's traffic goes on past the traffic timeout, then stops before the last readings.
    edit(fake, limiter_state={V1[0]: ceiling_20()}, queued={V1[0]: 40, V1[1]: 40},
         traffic={"per_read": 3})
    vt = VirtualTime()
    lines: list[str] = []
    switcher = Switcher(Kubectl("zai"), Options(namespace="zai", timeout=1.0, poll_interval=0.25,
                                                samples=3, traffic_quiet=0.0,
                                                traffic_timeout=2.0, retire=False),
                        out=lines.append, sleep=vt.jump, clock=vt, wall=vt.wall)
    verify = switcher.verify.traffic

    def traffic_then_quiet(*args: Any) -> int:
        code = verify(*args)
        edit(fake, traffic={"per_read": 0})
        return code

    switcher.verify.traffic = traffic_then_quiet  # type: ignore[method-assign]
    code = switcher.switch("v2")
    out = "\n".join(lines)
    assert code == switch.EXIT_TRAFFIC, out
    assert puts(fake)[-2:] == [(V2[0], 20.0), (V2[1], 20.0)], out
    assert "ok: 'v2' holds the whole learned ceiling" in out


def test_a_failure_after_the_interim_put_restores_the_whole(fake: Cluster) -> None:
    edit(fake, limiter_state={V1[0]: ceiling_20()}, queued={V1[0]: 4},
         traffic={"per_read": 3, "drain_reads": 0}, endpoints_frozen=True)
    code, out, _ = switch_to_v2()
    assert code == switch.EXIT_FAILED, out
    assert fake.selector()["version"] == "v1"
    assert puts(fake) == [(V2[0], 8.0), (V2[1], 8.0), (V2[0], 20.0), (V2[1], 20.0)], out
