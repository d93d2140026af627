"""`LocalGate`: the in-process pacing gate, from the clock it is created at and with its burst."""

from __future__ import annotations

from zai_proxy.limiter.gcra import LocalGate


async def test_a_new_gate_lets_the_first_request_go_at_once_at_any_clock_reading() -> None:
    for start in (0.0, 0.25, 1000.0):
        gate = LocalGate(start)
        assert await gate.take(1.0, start) == 0.0
        assert await gate.take(1.0, start) > 0.0  # the second waits for the rate


async def test_the_burst_lets_that_many_go_at_once_and_the_next_waits() -> None:
    gate = LocalGate(0.0, burst=3.0)
    assert [await gate.take(2.0, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await gate.take(2.0, 0.0) > 0.0
