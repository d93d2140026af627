"""Which waiting request goes next: weighted fair queueing across clients, two priority classes.

Pure and clock-free: `push` waiting items, `pop` the next one; the admission dispatcher decides
*when* (the rate gate, the concurrency slots), this decides *who*.

- **Weighted fair share (start-time fair queueing).** Within a class, every client with waiting
  items is a flow; its head carries a virtual start tag, the flow with the lowest tag goes next
  and its next item is tagged `1/weight` later. Over a backlog, dispatches follow the weights
  exactly (3:1:1 gives 3, 1 and 1 of every 5, in the same order every period). Work-conserving:
  only flows with waiting items take part, so an idle client's share goes to the others in
  proportion to theirs. A flow that (re)starts is tagged no earlier than the class's virtual time
  (the tag last dispatched) nor than its own last finish tag: a client gains no credit while it
  was idle or blocked, so it cannot burst when it returns. Ties go to the flow tagged first.
- **Priority classes.** Interactive items go before batch ones, except that while both classes
  have items to give, batch gets at least `batch_floor` of the dispatches (one in ten at 0.1),
  counted over the contended stretch only (batch served alone earns no credit against a later
  interactive burst, and a stretch ends as soon as either class has nothing to give).
- **Retries keep their place.** An item pushed with `retry=True` goes ahead of the new work of
  its class, first in first out, and does not move its client's tags (it was admitted before).
- **Blocked clients** (`block`, e.g. at their in-flight cap) are passed over and keep their
  items; `unblock` puts them back, again without credit for the time they sat out.

`pop(accept)` and `peek(accept)` pass over clients whose head item `accept` refuses (items
waiting for another gate): the next flow in order goes instead. Costs: O(log n) per push and pop
in the number of waiting clients; `accept`, `remove` and blocked retries scan.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from zai_proxy.limiter.client_class import PRIORITIES, Priority

T = TypeVar("T")
EPSILON = 1e-9  # float slack for "batch is owed a dispatch" (0.1 * 10 is not always 1.0)


@dataclass(eq=False, slots=True)
class _Flow(Generic[T]):
    """One client's waiting items in one class; its head's tag is `base + served / weight`."""

    weight: float
    base: float
    items: deque[T] = field(default_factory=deque)
    served: int = 0
    key: int = -1  # the live heap entry's sequence number (-1: not in the heap)

    @property
    def tag(self) -> float:
        return self.base + self.served / self.weight

    def rebase(self, floor: float) -> None:
        """Start the flow's tags again at max(its head tag, `floor`) (no credit below it)."""
        self.base, self.served = max(self.tag, floor), 0


@dataclass(eq=False, slots=True)
class _Class(Generic[T]):
    """One priority class: its retries, its flows, the heap of flow heads and its virtual time."""

    retries: deque[tuple[str, T]] = field(default_factory=deque)
    flows: dict[str, _Flow[T]] = field(default_factory=dict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    now: float = 0.0  # virtual time: the tag last dispatched
    finished: dict[str, float] = field(default_factory=dict)  # idle flows' last finish tags
    size: int = 0


class FairQueue(Generic[T]):
    """Waiting items of many clients; `pop` gives the next by class, retry, weight and tag."""

    def __init__(self, batch_floor: float = 0.1) -> None:
        if not 0 <= batch_floor < 1:
            raise ValueError(f"batch_floor is a fraction in [0, 1), not {batch_floor!r}")
        self.batch_floor = batch_floor
        self._classes: dict[Priority, _Class[T]] = {p: _Class() for p in PRIORITIES}
        self._blocked: set[str] = set()
        self._seq = itertools.count()
        self._contended = 0  # dispatches since both classes last had items to give
        self._batch_served = 0  # of which batch

    def __len__(self) -> int:
        return sum(c.size for c in self._classes.values())

    # -- what waits ------------------------------------------------------------------------

    def push(self, client: str, item: T, *, weight: float = 1.0,
             priority: Priority = "batch", retry: bool = False) -> None:
        """Queue `item` of `client` (`weight` and `priority` as the client's class says now)."""
        cls = self._classes[priority]
        cls.size += 1
        if retry:
            cls.retries.append((client, item))
            return
        flow = cls.flows.get(client)
        if flow is None:
            start = max(cls.now, cls.finished.pop(client, cls.now))
            flow = cls.flows[client] = _Flow(weight, start)
        elif flow.weight != weight:  # reweighted (reload): earlier tags stand, later ones move
            flow.rebase(cls.now)
            flow.weight = weight
        flow.items.append(item)
        if flow.key < 0 and client not in self._blocked:
            self._enter(cls, client, flow)

    def remove(self, client: str, item: T, *, priority: Priority = "batch",
               retry: bool = False) -> None:
        """Take out an item that will not be dispatched (its request left or expired)."""
        cls = self._classes[priority]
        if retry:
            cls.retries.remove((client, item))
        else:
            flow = cls.flows[client]
            flow.items.remove(item)
            if not flow.items:  # never served: it neither pays nor gains
                self._retire(cls, client, flow)
        cls.size -= 1

    def block(self, client: str) -> None:
        """Pass `client` over until `unblock` (its items stay in place)."""
        if client in self._blocked:
            return
        self._blocked.add(client)
        for cls in self._classes.values():
            flow = cls.flows.get(client)
            if flow is not None:
                flow.key = -1  # its heap entry goes stale

    def unblock(self, client: str) -> None:
        """Let `client` be dispatched again, from the class's virtual time (no credit)."""
        if client not in self._blocked:
            return
        self._blocked.discard(client)
        for cls in self._classes.values():
            flow = cls.flows.get(client)
            if flow is not None:
                flow.rebase(cls.now)
                self._enter(cls, client, flow)

    def blocked(self, client: str) -> bool:
        return client in self._blocked

    # -- who goes next ---------------------------------------------------------------------

    def peek(self, accept: Callable[[T], bool] | None = None) -> T | None:
        """The item `pop(accept)` would return now, without taking it."""
        chosen = self._choose(accept)
        return None if chosen is None else chosen[2]

    def pop(self, accept: Callable[[T], bool] | None = None) -> T | None:
        """Take the next item (None: nothing waiting that may go now)."""
        chosen = self._choose(accept)
        if chosen is None:
            return None
        priority, client, item, retry, contended = chosen
        if contended:
            self._contended += 1
            self._batch_served += priority == "batch"
        else:
            self._contended = self._batch_served = 0
        cls = self._classes[priority]
        cls.size -= 1
        if retry:
            cls.retries.remove((client, item))
            return item
        flow = cls.flows[client]
        flow.items.popleft()
        cls.now = flow.tag
        flow.served += 1
        if cls.heap and cls.heap[0][1] == flow.key:
            heapq.heappop(cls.heap)
        if flow.items:
            self._enter(cls, client, flow)
        else:
            self._retire(cls, client, flow)
        return item

    def _choose(self, accept: Callable[[T], bool] | None
                ) -> tuple[Priority, str, T, bool, bool] | None:
        first = self._head(self._classes["interactive"], accept)
        second = self._head(self._classes["batch"], accept)
        if first is None:
            return None if second is None else ("batch", *second, False)
        if second is None:
            return ("interactive", *first, False)
        owed = self._batch_served + 1 <= self.batch_floor * (self._contended + 1) + EPSILON
        return ("batch", *second, True) if owed else ("interactive", *first, True)

    def _head(self, cls: _Class[T], accept: Callable[[T], bool] | None
              ) -> tuple[str, T, bool] | None:
        """The class's next (client, item, retry): its first retry that may go, else the flow
        with the lowest tag whose head may go."""
        for client, item in cls.retries:
            if client not in self._blocked and (accept is None or accept(item)):
                return client, item, True
        heap = cls.heap
        while heap and not self._live(cls, heap[0]):
            heapq.heappop(heap)  # stale: the flow moved on, left or is blocked
        if not heap:
            return None
        if accept is None:
            client = heap[0][2]
            return client, cls.flows[client].items[0], False
        for entry in sorted(heap):
            if self._live(cls, entry) and accept(cls.flows[entry[2]].items[0]):
                return entry[2], cls.flows[entry[2]].items[0], False
        return None

    @staticmethod
    def _live(cls: _Class[T], entry: tuple[float, int, str]) -> bool:
        flow = cls.flows.get(entry[2])
        return flow is not None and flow.key == entry[1]

    def _enter(self, cls: _Class[T], client: str, flow: _Flow[T]) -> None:
        flow.key = next(self._seq)
        heapq.heappush(cls.heap, (flow.tag, flow.key, client))

    def _retire(self, cls: _Class[T], client: str, flow: _Flow[T]) -> None:
        """The flow has no items left: remember its finish tag while it is ahead of the
        class's virtual time (a quick return must not start before it)."""
        del cls.flows[client]
        if flow.tag > cls.now:
            cls.finished[client] = flow.tag
        if len(cls.finished) > 2 * len(cls.flows) + 64:  # forget the ones time has passed
            cls.finished = {c: t for c, t in cls.finished.items() if t > cls.now}

    # -- what operators see ----------------------------------------------------------------

    def waiting(self, client: str) -> int:
        """Items `client` has waiting (both classes, retries included)."""
        return sum(len(f.items) for c in self._classes.values()
                   if (f := c.flows.get(client)) is not None) + \
            sum(1 for c in self._classes.values() for who, _ in c.retries if who == client)

    def clients(self) -> Iterator[tuple[str, Priority, float, int]]:
        """(client, priority, weight, items) of every flow with items (retries not counted)."""
        for priority, cls in self._classes.items():
            for client, flow in cls.flows.items():
                yield client, priority, flow.weight, len(flow.items)

    def shares(self) -> dict[str, float]:
        """The part of the dispatches each client with waiting items gets now (`class_shares`
        over the flows; blocked clients count, as they return to their share)."""
        return class_shares(((client, p, flow.weight) for p, c in self._classes.items()
                             for client, flow in c.flows.items()), self.batch_floor)

    def ahead(self, client: str, *, weight: float = 1.0, priority: Priority = "batch",
              retry: bool = False) -> int:
        """About how many dispatches go before a new item of `client` pushed now (for the
        expected wait): its own items and the retries ahead of it, the others' items in
        proportion to the weights, the other class's part when it has waiting items too."""
        cls = self._classes[priority]
        other = self._classes["batch" if priority == "interactive" else "interactive"]
        if retry:
            mine = len(cls.retries) + 1
        else:
            flow = cls.flows.get(client)
            own = 1 + (len(flow.items) if flow is not None else 0)
            total = sum(f.weight for f in cls.flows.values()) + (0 if flow else weight)
            mine = len(cls.retries) + min(cls.size - len(cls.retries) + 1,
                                          int(own * total / weight + 0.5))
        if other.size:
            part = (1 - self.batch_floor) if priority == "interactive" else self.batch_floor
            mine = min(mine + other.size, int(mine / part + 0.5)) if part > 0 \
                else mine + other.size
        return max(0, mine - 1)


def class_shares(flows: Iterable[tuple[str, Priority, float]],
                 batch_floor: float) -> dict[str, float]:
    """Each flow's part of the dispatches, from (client, priority, weight) of the flows with
    waiting items: its weight over its class's waiting weights, times its class's part
    (interactive 1 - `batch_floor` and batch `batch_floor` while both classes wait, else the
    whole). The one rule for a queue in one process and for the account's fleet of them."""
    rows = list(flows)
    weights = {p: sum(w for _, q, w in rows if q == p) for p in PRIORITIES}
    both = weights["interactive"] > 0 and weights["batch"] > 0
    part = {"interactive": 1 - batch_floor if both else 1.0,
            "batch": batch_floor if both else 1.0}
    return {client: part[p] * w / weights[p] for client, p, w in rows}
