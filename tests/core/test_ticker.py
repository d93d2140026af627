"""The background loop (`Ticker`) on virtual time: its schedule, pokes, failing steps, start and
stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.core.ticker import Ticker

log = logging.getLogger("tests.ticker")


def recorder(vt: VirtualTime, steps: list[float], *, fail_at: tuple[int, ...] = (),
             takes: float = 0.0) -> Ticker:
    """A ticker (interval 1 s) whose step notes the time it starts; the `fail_at`-th raise."""

    async def step() -> None:
        steps.append(vt())
        if takes:
            await vt.sleep(takes)
        if len(steps) in fail_at:
            raise RuntimeError("one bad step")

    return Ticker(step, interval=1.0, log=log, failure="test tick failed", clock=vt,
                  sleep=vt.sleep)


async def test_it_ticks_at_the_interval_from_one_interval_after_start() -> None:
    vt = VirtualTime()
    steps: list[float] = []
    ticker = recorder(vt, steps)
    ticker.start()
    await vt.advance(0.9)
    assert steps == []
    await vt.advance(3.1)
    assert steps == [1.0, 2.0, 3.0, 4.0]
    await ticker.stop()


async def test_a_slow_step_does_not_push_the_schedule_back() -> None:
    vt = VirtualTime()
    steps: list[float] = []
    ticker = recorder(vt, steps, takes=0.4)
    ticker.start()
    await vt.advance(3.0)
    assert steps == [1.0, 2.0, 3.0]  # measured from each step's start, not its end
    await ticker.stop()


async def test_a_step_that_overruns_its_interval_is_followed_by_a_full_interval() -> None:
    vt = VirtualTime()
    steps: list[float] = []
    ticker = recorder(vt, steps, takes=2.5)
    ticker.start()
    await vt.advance(8.0)
    assert steps == [1.0, 4.5, 8.0]  # each ends 2.5 s after it starts, then a full second
    await ticker.stop()


async def test_a_failing_step_is_logged_and_does_not_end_the_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    vt = VirtualTime()
    steps: list[float] = []
    ticker = recorder(vt, steps, fail_at=(2, 3))
    with caplog.at_level(logging.ERROR, logger="tests.ticker"):
        ticker.start()
        await vt.advance(5.0)
    assert steps == [1.0, 2.0, 3.0, 4.0, 5.0]
    failures = [r for r in caplog.records if r.name == "tests.ticker"]
    assert [r.getMessage() for r in failures] == ["test tick failed"] * 2
    assert all(r.exc_info is not None for r in failures), "logged with the traceback"
    assert ticker.task is not None and not ticker.task.done()
    await ticker.stop()


async def test_stop_cancels_the_loop_and_a_second_stop_is_harmless() -> None:
    vt = VirtualTime()
    steps: list[float] = []
    ticker = recorder(vt, steps)
    await ticker.stop()  # before any start: nothing to do
    ticker.start()
    await vt.advance(1.0)
    task = ticker.task
    assert steps == [1.0] and task is not None
    await ticker.stop()
    assert task.cancelled() and ticker.task is None
    await vt.advance(5.0)
    assert steps == [1.0], "no step after stop"
    await ticker.stop()
    ticker.start()  # and it starts again after a stop
    await vt.advance(1.0)
    assert steps == [1.0, 7.0]
    await ticker.stop()


async def test_a_second_start_starts_no_second_loop() -> None:
    vt = VirtualTime()
    steps: list[float] = []
    ticker = recorder(vt, steps)
    ticker.start()
    first = ticker.task
    ticker.start()
    assert ticker.task is first
    await vt.advance(2.0)
    assert steps == [1.0, 2.0]
    await ticker.stop()


async def test_a_cancelled_caller_of_stop_stays_cancelled() -> None:
    vt = VirtualTime()

    async def stubborn() -> None:  # takes a while to end once cancelled
        try:
            await vt.sleep(100.0)
        except asyncio.CancelledError:
            await vt.sleep(1.0)
            raise

    ticker = Ticker(stubborn, interval=1.0, log=log, failure="x", immediate=True, clock=vt,
                    sleep=vt.sleep)
    ticker.start()
    await vt.advance(0.0)
    stopping = asyncio.ensure_future(ticker.stop())
    await vt.advance(0.0)
    stopping.cancel()
    await vt.advance(1.0)
    assert stopping.cancelled(), "stop swallowed its own caller's cancellation"


async def test_polls_at_once_on_the_interval_and_soon_after_a_poke() -> None:
    vt = VirtualTime()
    polls: list[float] = []

    async def poll_once() -> None:
        polls.append(vt())
        if len(polls) == 2:
            raise RuntimeError("one bad poll must not end the loop")

    poller = Ticker(poll_once, interval=30.0, min_gap=5.0, immediate=True, log=log,
                    failure="poll failed", clock=vt, sleep=vt.sleep)
    poller.start()
    await vt.advance(29.9)
    assert polls == [0.0]  # at once, then not before the interval
    await vt.advance(0.1)
    assert polls == [0.0, 30.0]  # the interval
    await vt.advance(1.0)
    poller.poke()
    await vt.advance(3.9)
    assert len(polls) == 2  # poked, but not closer than min_gap to the last poll
    await vt.advance(0.1)
    assert polls == [0.0, 30.0, 35.0]  # the failed poll did not stop it
    await vt.advance(29.9)
    assert len(polls) == 3
    await vt.advance(0.1)
    assert polls[-1] == 65.0  # back on the interval
    await poller.stop()


async def test_a_ticker_without_min_gap_takes_no_pokes() -> None:
    async def step() -> None:
        return None

    ticker = Ticker(step, interval=1.0, log=log, failure="x")
    with pytest.raises(RuntimeError):
        ticker.poke()
