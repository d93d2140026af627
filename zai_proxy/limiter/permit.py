"""The admission queue's values: a `Permit` (one admitted attempt holding a slot), a
`Rejection` (not admitted, with the client's Retry-After) and a `Waiter` (a request waiting in
the queue), with the predicates the dispatcher chooses waiters by.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol

from zai_proxy.limiter.client_class import Priority
from zai_proxy.limiter.rate_controller import Adjustment, Outcome


class Issuer(Protocol):
    """What a permit reports back to: the admission that granted it."""

    def _release(self, permit: Permit) -> None: ...

    def observe(self, outcome: Outcome, permit: Permit | None = None) -> list[Adjustment]: ...


@dataclass(frozen=True)
class Rejection:
    """Not admitted; `retry_after` is an estimate in seconds for the client's Retry-After."""

    reason: Literal["queue_full", "queue_timeout"]
    retry_after: float


@dataclass(eq=False)
class Permit:
    """One admitted attempt holding one concurrency slot; `release()` is idempotent."""

    admission: Issuer
    client_id: str
    generation: int
    in_flight_at_admission: int
    waited: float
    granted_at: float = 0.0
    released: bool = False
    cap: int | None = None  # the client's max_in_flight when it was granted

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._release(self)

    def observe(self, outcome: Outcome) -> list[Adjustment]:
        """Feed this attempt's outcome to the controllers."""
        return self.admission.observe(outcome, self)

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@dataclass(eq=False)
class Waiter:
    """One request waiting for a send slot and a concurrency slot."""

    client_id: str
    priority: bool  # a retry: ahead of the new work of its class
    deadline: float
    enqueued: float
    future: asyncio.Future[Permit | Rejection] = field(repr=False)
    paced: bool = False  # also needs a slot of the quota pacer (when pacing is on)
    pacer_held: bool = False  # took its pacer slot already, waits for the rate gate
    gone: bool = False  # admitted, expired or cancelled: out of the queue
    klass: Priority = "batch"  # its client's priority class when it arrived
    cap: int | None = None  # its client's max_in_flight when it arrived


def may_go(waiter: Waiter) -> bool:
    """While the quota pacer makes paced work wait: whether `waiter` may go anyway."""
    return not waiter.paced or waiter.pacer_held


def both(first: Callable[[Waiter], bool],
          second: Callable[[Waiter], bool]) -> Callable[[Waiter], bool]:
    return lambda waiter: first(waiter) and second(waiter)
