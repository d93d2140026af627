"""The shared limiter state's logic on a fake Redis (tests/support/redis.py), on virtual time:
the fallback share, a Redis that hangs or lies, published states that are not usable, and a
state imported on a follower reaching the leader. The same against a real redis-server:
tests/integration/test_shared_state.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.support.clock import VirtualTime
from tests.support.redis import FakeRedis, virtual_timeout
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.learned import clean_state
from zai_proxy.limiter.rate_controller import RateController
from zai_proxy.limiter.shared import SharedCoordinator, SharedState, namespace

NS = namespace("acct0")


def shared(fake: FakeRedis, vt: VirtualTime, replicas: int = 1) -> SharedState:
    link = RedisLink(fake, clock=vt, timeout=virtual_timeout(vt))
    return SharedState(link, namespace=NS, replicas=replicas)


def controller(vt: VirtualTime, initial: float = 30) -> RateController:
    return RateController(clock=vt, initial=initial, minimum=1, maximum=50, window=5)


def coordinator(fake: FakeRedis, vt: VirtualTime, replicas: int = 1,
                initial: float = 30) -> SharedCoordinator:
    return SharedCoordinator(shared(fake, vt, replicas), controller(vt, initial), wall=vt.wall)


async def test_gate_spaces_every_replica_on_one_account_rate() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    one, two = shared(fake, vt).gate("gate"), shared(fake, vt).gate("gate")
    assert await one.take(10.0, vt()) == 0.0
    assert await two.take(10.0, vt()) == pytest.approx(0.1)  # the other replica's slot
    await one.refund(10.0, vt())
    assert await two.take(10.0, vt()) == 0.0


async def test_fallback_share_divides_by_the_live_replicas_when_more_than_configured() -> None:
    """Mid-switch both variants' pods are live (4) though RATE_LIMIT_REPLICAS says 2: when
    Redis goes away each must take a quarter of the account's rate, not a half."""
    vt = VirtualTime()
    fake = FakeRedis(vt)
    pods = [coordinator(fake, vt, replicas=2) for _ in range(4)]
    for pod in pods:
        await pod.sync()
    state = pods[-1].shared
    assert state.live_replicas == 4 and state.replicas == 4
    fake.mode = "down"
    gate = state.gate("gate")
    assert await gate.take(40.0, 100.0) == 0.0
    assert state.degraded
    # 40 / 4 = 10 req/s on this replica: the next slot is 0.1 s later (40 / 2 would be 0.05).
    assert await gate.take(40.0, 100.0) == pytest.approx(0.1)
    assert state.health()["replicas"] == 4


async def test_fallback_share_never_below_the_configured_replicas() -> None:
    vt = VirtualTime()
    state = shared(FakeRedis(vt, mode="down"), vt, replicas=3)
    state.live_replicas = 1  # the last heartbeat saw only this pod (the others not yet up)
    gate = state.gate("gate")
    assert await gate.take(30.0, 0.0) == 0.0
    assert await gate.take(30.0, 0.0) == pytest.approx(0.1)  # 30 / 3


async def test_a_hanging_redis_costs_one_timeout_then_is_skipped_until_the_retry() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt, mode="hang")
    state = shared(fake, vt, replicas=2)
    gate = state.gate("gate")
    take = asyncio.create_task(gate.take(20.0, 0.0))
    await vt.advance(0.49)
    assert not take.done()
    await vt.advance(0.01)
    try:
        assert take.done(), "a stalled Redis must not hold a request past op_timeout"
        assert take.result() == 0.0  # the local fallback admitted it
    finally:
        take.cancel()
    assert state.degraded and state.reason == "TimeoutError: no answer within 0.5 s"
    calls = fake.calls
    # Backing off: no Redis call at all, answered at once from the fallback (20 / 2 = 10/s).
    assert await gate.take(20.0, 0.0) == pytest.approx(0.1)
    assert fake.calls == calls
    fake.mode = "ok"
    vt.jump(5.0)
    assert await gate.take(20.0, 5.0) == 0.0
    assert not state.degraded and state.reason is None


async def test_a_redis_that_answers_ok_to_everything_is_a_degraded_redis(
        caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt, mode="lie")
    pod = coordinator(fake, vt, replicas=2)
    state = pod.shared
    with caplog.at_level(logging.INFO):
        assert await pod.load() is None  # startup: nothing to restore, no traceback
        assert await pod.sync() == []
        assert state.degraded and state.reason is not None and "heartbeat" in state.reason
        assert state.live_replicas is None  # b"OK"[0] is 79: never read as a member count
        assert pod.controller.auto_evaluate and not pod.leader  # deciding alone
        gate = state.gate("gate")
        assert await gate.take(20.0, 0.0) == 0.0  # the local fallback
        assert await gate.take(20.0, 0.0) == pytest.approx(0.1)  # at 20 / 2
        await pod.publish()
        state.link._retry_at = 0.0  # past the back-off: each call is tried and rejected again
        assert await gate.take(20.0, 1.0) == 0.0
        assert "take" in (state.reason or "")
        state.link._retry_at = 0.0
        await pod.publish()
        assert "INCR" in (state.reason or "")
    assert not any(r.exc_info for r in caplog.records)
    assert sum("degraded" in r.getMessage() for r in caplog.records) == 1


async def test_a_lying_take_or_heartbeat_reply_is_rejected() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    pod = coordinator(fake, vt)
    state = pod.shared

    async def negative(keys: list[str], args: list[object]) -> bytes:
        return b"-3.5"

    async def nan(keys: list[str], args: list[object]) -> bytes:
        return b"nan"

    async def members(keys: list[str], args: list[object]) -> list[int]:
        return [0, 1]

    gate = state.gate("gate")
    for bad in (negative, nan):
        gate._take = bad
        state.link.degraded, state.link._retry_at = False, 0.0
        await gate.take(10.0, 0.0)
        assert state.degraded and "take" in (state.reason or "")
    state.link.degraded = False
    pod.lease._script = members
    assert await pod.sync() == [] and state.degraded and "heartbeat" in (state.reason or "")


BAD = [float("nan"), float("inf"), float("-inf"), -1.0, 0, "12", True, [1], {"x": 1}]


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize("field", ["rate", "ceiling", "floor", "hold", "seq", "at"])
def test_clean_state_drops_unusable_fields(field: str, bad: object) -> None:
    good = {"seq": 7, "rate": 20.0, "ceiling": 25.0, "floor": 19.0, "hold": 19.5,
            "at": 1.8e9, "by": "x"}
    seen: list[str] = []
    cleaned = clean_state({**good, field: bad}, lambda what, value: seen.append(what))
    # Any finite time is a valid `at` (too old is the reader's call), and 0 a valid `seq`.
    if (field == "at" and type(bad) in (int, float) and bad in (0, -1.0)) or \
            (field == "seq" and type(bad) is int and bad == 0):
        assert cleaned[field] == bad and seen == []
        return
    assert field not in cleaned and seen == [f"state.{field}"]
    assert {k: v for k, v in cleaned.items() if k != field} == \
        {k: v for k, v in good.items() if k != field}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5, "20", None])
async def test_a_state_with_a_bad_rate_is_not_adopted(
        bad: object, caplog: pytest.LogCaptureFixture) -> None:
    """A `state` holding "rate": NaN once pinned every follower to RATE_LIMIT_MIN."""
    vt = VirtualTime()
    fake = FakeRedis(vt)
    leader, follower = coordinator(fake, vt), coordinator(fake, vt, initial=30)
    await leader.sync()
    await follower.sync()
    assert not follower.leader
    doc = {"seq": 1000, "rate": bad, "ceiling": 25.0, "floor": 20.0, "by": "someone",
           "at": vt.wall()}
    fake.raw_set(follower.shared.key("state"), json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        assert await follower.sync() == []
        assert await follower.sync() == []
    assert follower.controller.rate == 30  # not the minimum (1)
    assert not follower.shared.degraded  # a bad document is not a bad Redis
    if bad is not None:
        assert sum("state.rate" in r.getMessage() for r in caplog.records) == 1  # once


@pytest.mark.parametrize("field", ["ceiling", "floor"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "25"])
async def test_a_bad_ceiling_or_floor_is_ignored_the_rate_adopted(field: str,
                                                                 bad: object) -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    leader, follower = coordinator(fake, vt), coordinator(fake, vt)
    await leader.sync()
    await follower.sync()
    doc = {"seq": 1000, "rate": 12.0, "ceiling": 25.0, "floor": 11.0, "by": "someone",
           field: bad}
    fake.raw_set(follower.shared.key("state"), json.dumps(doc))
    [adjustment] = await follower.sync()
    c = follower.controller
    assert c.rate == 12.0 and adjustment.reason == "adopted from the shared leader"
    assert (c.upper, c.floor) == ((None, 11.0) if field == "ceiling" else (25.0, None))


async def test_unparseable_or_foreign_states_and_counts_are_ignored() -> None:
    vt = VirtualTime()
    fake = FakeRedis(vt)
    pod = coordinator(fake, vt)
    for raw in (b"\xff\xfe", b"OK", b"[1, 2]", b'"text"'):
        fake.raw_set(pod.shared.key("state"), raw)
        assert await pod.load() is None
    await pod.sync()
    assert pod.leader
    # A follower's counts with nonsense in them: the good ones count, the bad are dropped.
    fake.data[pod.shared.key("counts")] = {b"ok": 5.0, b"limited": float("nan"),
                                           b"sent": -3.0, b"bogus": 1.0}
    values = await pod.shared.call(pod._take_counts_now)
    assert values == {"ok": 5.0}
    assert not pod.shared.degraded


async def test_a_state_put_on_a_follower_is_adopted_by_the_leader_not_overwritten() -> None:
    """`PUT /admin/limiter-state` on a follower publishes; the leader must adopt it (and keep
    publishing it), not write its own decisions back over it."""
    vt = VirtualTime()
    fake = FakeRedis(vt)
    leader, follower = coordinator(fake, vt), coordinator(fake, vt)
    await leader.sync()
    await follower.sync()
    assert leader.leader and not follower.leader
    follower.controller.restore(12.0, 11.5)  # what the admin PUT does on the follower
    await follower.publish()
    await leader.sync()
    assert (leader.controller.upper, leader.controller.floor) == (12.0, 11.5)
    vt.jump(61.0)  # past REPUBLISH_SECONDS: the leader rewrites the account's state
    await leader.sync()
    state = await leader.load() or {}
    assert state["by"] == leader.id and (state["ceiling"], state["floor"]) == (12.0, 11.5)
    await follower.sync()
    assert (follower.controller.upper, follower.controller.floor) == (12.0, 11.5)
