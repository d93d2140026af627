"""The fair queue on its own: weighted shares, work conservation, no burst after idling, priority
classes with the batch floor, retries, blocked clients, removal, deterministic ties."""

from __future__ import annotations

from collections import Counter

import pytest

from zai_proxy.limiter.client_class import Priority
from zai_proxy.limiter.fair_queue import FairQueue

Item = tuple[str, int]


def backlog(fq: FairQueue[Item], client: str, n: int, *, weight: float = 1.0,
            priority: Priority = "batch") -> None:
    for i in range(n):
        fq.push(client, (client, i), weight=weight, priority=priority)


def drain(fq: FairQueue[Item], n: int) -> list[str]:
    out = []
    for _ in range(n):
        item = fq.pop()
        assert item is not None
        out.append(item[0])
    return out


def test_weights_3_1_1_give_6_2_2_of_every_ten_dispatches() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 1000, weight=3)
    backlog(fq, "b", 1000)
    backlog(fq, "c", 1000)
    order = drain(fq, 1000)
    for start in range(0, 1000, 10):
        assert Counter(order[start:start + 10]) == {"a": 6, "b": 2, "c": 2}, start
    # Sliding too: any ten in a row past the first period.
    for start in range(5, 990):
        assert Counter(order[start:start + 10]) == {"a": 6, "b": 2, "c": 2}, start


def test_idle_clients_share_goes_to_the_others_by_weight() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 1000, weight=3)
    backlog(fq, "b", 1000)
    backlog(fq, "c", 5)  # c runs dry early: a and b split 3:1 (7.5 / 2.5 of 10 req/s)
    order = drain(fq, 400)
    assert order.count("c") == 5
    tail = Counter(order[100:400])
    assert tail == {"a": 225, "b": 75}


def test_returning_client_gets_no_burst_for_its_idle_time() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 1000)
    backlog(fq, "b", 1000)
    drain(fq, 200)  # a and b alternate for a while; c was idle all along
    backlog(fq, "c", 100)
    order = drain(fq, 30)
    assert Counter(order) == {"a": 10, "b": 10, "c": 10}
    assert max(len(run) for run in "".join(order).replace("a", " ").replace("b", " ").split()) \
        == 1  # c never goes twice in a row


def test_quick_return_starts_after_its_last_finish() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 100)
    fq.push("b", ("b", 0))
    assert drain(fq, 2) == ["a", "b"]  # b ran dry: its next start is one tag later
    fq.push("b", ("b", 1))
    assert drain(fq, 4) == ["a", "b", "a", "a"]


def test_interactive_goes_before_batch() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.1)
    backlog(fq, "bulk", 500)
    fq.push("agent", ("agent", 0), priority="interactive")
    assert fq.pop() == ("agent", 0)


def test_batch_floor_holds_while_interactive_saturates() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.1)
    backlog(fq, "bulk", 500)
    backlog(fq, "agent", 500, priority="interactive")
    order = drain(fq, 200)
    for start in range(0, 200, 10):
        assert order[start:start + 10] == ["agent"] * 9 + ["bulk"], start


def test_batch_floor_zero_starves_batch_while_interactive_waits() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.0)
    backlog(fq, "bulk", 10)
    backlog(fq, "agent", 50, priority="interactive")
    assert drain(fq, 50) == ["agent"] * 50
    assert drain(fq, 10) == ["bulk"] * 10


def test_batch_earns_no_floor_credit_while_alone() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.5)
    backlog(fq, "bulk", 100)
    drain(fq, 20)  # batch alone: not contended
    backlog(fq, "agent", 10, priority="interactive")
    assert drain(fq, 4) == ["agent", "bulk", "agent", "bulk"]


def test_retries_keep_their_place_ahead_of_new_work_of_their_class() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 5)
    backlog(fq, "b", 5)
    fq.push("b", ("b-retry", 0), retry=True)
    fq.push("a", ("a-retry", 0), retry=True)
    assert [fq.pop() for _ in range(3)] == [("b-retry", 0), ("a-retry", 0), ("a", 0)]
    # A retry does not move its client's tags: b's next new item comes in its normal turn.
    assert fq.pop() == ("b", 0)


def test_interactive_retry_goes_first_and_batch_retry_stays_batch() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.0)
    backlog(fq, "agent", 3, priority="interactive")
    fq.push("bulk", ("bulk-retry", 0), retry=True)
    fq.push("agent", ("agent-retry", 0), priority="interactive", retry=True)
    assert drain(fq, 5) == ["agent-retry", "agent", "agent", "agent", "bulk-retry"]


def test_blocked_client_is_passed_over_and_returns_without_credit() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 100)
    backlog(fq, "b", 100)
    fq.block("a")
    assert drain(fq, 10) == ["b"] * 10
    fq.unblock("a")
    assert drain(fq, 4) == ["a", "b", "a", "b"]  # a does not catch up its ten


def test_blocked_clients_retries_wait_too() -> None:
    fq: FairQueue[Item] = FairQueue()
    fq.push("a", ("a", 0), retry=True)
    fq.push("b", ("b", 0))
    fq.block("a")
    assert fq.pop() == ("b", 0)
    assert fq.pop() is None and len(fq) == 1
    fq.unblock("a")
    assert fq.pop() == ("a", 0)


def test_push_while_blocked_waits_for_unblock() -> None:
    fq: FairQueue[Item] = FairQueue()
    fq.block("a")
    fq.push("a", ("a", 0))
    assert fq.peek() is None
    fq.unblock("a")
    assert fq.pop() == ("a", 0)


def test_removed_items_are_never_dispatched_and_a_dry_flow_leaves() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 3)
    fq.push("b", ("b", 0))
    fq.push("b", ("b-retry", 0), retry=True)
    fq.remove("b", ("b", 0))
    fq.remove("b", ("b-retry", 0), retry=True)
    fq.remove("a", ("a", 1))
    assert len(fq) == 2
    assert drain(fq, 2) == ["a", "a"]
    assert fq.pop() is None and len(fq) == 0


def test_accept_passes_over_refused_heads_in_order() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 2)
    backlog(fq, "b", 2)
    backlog(fq, "c", 2)

    def not_a(item: Item) -> bool:
        return item[0] != "a"

    assert fq.peek(not_a) == ("b", 0)
    assert fq.pop(not_a) == ("b", 0)
    assert fq.pop(lambda item: False) is None
    assert fq.pop() == ("a", 0)


def test_ties_are_broken_by_arrival_deterministically() -> None:
    orders = set()
    for _ in range(3):
        fq: FairQueue[Item] = FairQueue()
        for client in ("x", "y", "z"):
            backlog(fq, client, 3)
        orders.add(tuple(drain(fq, 9)))
    assert orders == {("x", "y", "z") * 3}


def test_reweighting_applies_to_later_items() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 100)
    backlog(fq, "b", 100)
    drain(fq, 10)
    fq.push("a", ("a", 999), weight=4)
    assert Counter(drain(fq, 50)) == {"a": 40, "b": 10}


def test_shares_and_ahead_follow_weights_and_classes() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.2)
    backlog(fq, "a", 10, weight=3)
    backlog(fq, "b", 10)
    assert fq.shares() == {"a": 0.75, "b": 0.25}
    assert fq.ahead("b") == 20  # b's 11th item: behind every item waiting now
    assert fq.ahead("c") == 4  # a newcomer of weight 1 among 5: about one in five
    backlog(fq, "i", 2, priority="interactive")
    assert fq.shares() == pytest.approx({"a": 0.15, "b": 0.05, "i": 0.8})
    # Its two and itself at interactive's 80 % of the dispatches: about the 4th.
    assert fq.ahead("i", priority="interactive") == 3
    assert fq.ahead("b", retry=True) == 2  # a batch retry: at most behind the interactive two
    assert fq.waiting("a") == 10 and sorted(c for c, *_ in fq.clients()) == ["a", "b", "i"]


def test_batch_floor_is_a_fraction() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            FairQueue(batch_floor=bad)


def test_floor_counts_only_contended_dispatches_and_restarts_after_them() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.5)
    backlog(fq, "agent", 10, priority="interactive")
    drain(fq, 10)  # interactive alone: batch is owed nothing for these
    backlog(fq, "agent", 10, priority="interactive")
    backlog(fq, "bulk", 10)
    assert drain(fq, 4) == ["agent", "bulk", "agent", "bulk"]


def test_a_floor_of_0_4_gives_batch_exactly_two_of_every_five() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.4)
    backlog(fq, "agent", 100, priority="interactive")
    backlog(fq, "bulk", 100)
    order = drain(fq, 50)
    for start in range(0, 50, 5):
        assert order[start:start + 5].count("bulk") == 2, start


def test_accept_applies_to_interactive_heads_and_retries() -> None:
    fq: FairQueue[Item] = FairQueue()
    fq.push("agent", ("agent", 0), priority="interactive")
    fq.push("r", ("r", 0), retry=True)
    fq.push("bulk", ("bulk", 0))

    def only_bulk(item: Item) -> bool:
        return item[0] == "bulk"

    assert fq.pop(only_bulk) == ("bulk", 0)
    assert fq.pop(only_bulk) is None and len(fq) == 2


def test_shares_of_one_class_alone_are_whole() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.1)
    backlog(fq, "i", 2, priority="interactive")
    backlog(fq, "j", 2, weight=3, priority="interactive")
    assert fq.shares() == {"i": 0.25, "j": 0.75}
    fq = FairQueue(batch_floor=0.1)
    backlog(fq, "b", 1)
    assert fq.shares() == {"b": 1.0}


def test_waiting_counts_a_clients_retries_and_items_only() -> None:
    fq: FairQueue[Item] = FairQueue()
    backlog(fq, "a", 2)
    fq.push("a", ("a", 9), retry=True)
    fq.push("b", ("b", 9), retry=True)
    fq.push("b", ("b", 8), priority="interactive", retry=True)
    assert fq.waiting("a") == 3 and fq.waiting("b") == 2 and fq.waiting("c") == 0


def test_ahead_of_a_new_item_by_class_and_weight() -> None:
    fq: FairQueue[Item] = FairQueue(batch_floor=0.25)
    backlog(fq, "a", 4)
    fq.push("a", ("a", 9), retry=True)
    assert fq.ahead("a") == 5  # its retry, its four, then it
    assert fq.ahead("n", weight=4) == 1  # weight 4 beside a weight-1 flow: after the retry
    assert fq.ahead("a", retry=True) == 1
    backlog(fq, "i", 3, priority="interactive")
    assert fq.ahead("i", priority="interactive") == 4  # its 3 + itself at 3/4 of dispatches
    assert fq.ahead("a", retry=True) == 4  # behind the interactive three at most
    zero: FairQueue[Item] = FairQueue(batch_floor=0.0)
    backlog(zero, "i", 3, priority="interactive")
    assert zero.ahead("b") == 3  # no floor: behind every interactive item


def test_the_floor_error_names_the_value() -> None:
    with pytest.raises(ValueError, match="batch_floor"):
        FairQueue(batch_floor=1.5)
