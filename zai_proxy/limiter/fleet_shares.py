"""Account-wide fair shares: each replica's part of every client's share of the account's rate.

The fair queue (`fair_queue`) shares what one process sends. Replicas of both variants draw
their send slots from one gate in Redis, so each would otherwise share only its own part: a
weight-3 client whose workers all reach one replica of four would get a quarter of the slots,
not three fifths. To make the shares hold across the fleet, every replica reports on each
limiter tick the clients with requests waiting in its queue (`Demand`: weight, class, how many
wait), and reads every live replica's report. From them `allocate` computes

- each waiting client's share of the account's rate, by the same rule the queue uses in one
  process (`class_shares`: its weight over the waiting weights of its class; interactive before
  batch, batch keeping its floor), then
- this replica's part of it: the share times the part of the client's waiting requests that
  wait here (a client waiting on two replicas is served from both, in proportion).

`ClientGates` then paces each allocated client here at its part of the account's rate (as the
rate is now, so a lowered ceiling lowers every part at once), under the account's own gate. A
client the allocation does not name (it was not waiting at the last report) is not paced until
it is. When at most one replica has work waiting, `allocate` answers None: the local queue
alone is then exact and work-conserving, and nothing is paced per client.

Reports are JSON, read back from Redis and validated here (`decode`): a replica's report that is
not a well-formed one is dropped as a whole, and the fleet decides without it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zai_proxy.limiter.client_class import PRIORITIES, Priority
from zai_proxy.limiter.fair_queue import class_shares
from zai_proxy.limiter.gcra import Gcra

FLEET_BURST = 2.0  # a client slowed by the account's gate may catch up one slot


@dataclass(frozen=True, slots=True)
class Demand:
    """One client's requests waiting in one replica's queue, and its class there."""

    weight: float
    priority: Priority
    waiting: int


Report = Mapping[str, Demand]


def encode(report: Report, at: float) -> str:
    """A replica's report as stored: `{"at": wall seconds, "clients": {name: [w, p, n]}}`."""
    return json.dumps({"at": at, "clients": {
        client: [d.weight, d.priority, d.waiting] for client, d in report.items()}},
        separators=(",", ":"))


def decode(text: str | bytes) -> tuple[float, dict[str, Demand]]:
    """(written at, report) from `encode`'s text; ValueError for anything else (a weight that
    is not a finite positive number, a count that is not a whole number >= 0, ...)."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), dict):
        raise ValueError("not a fleet report")
    at = doc.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError(f"bad time {at!r:.40}")
    report: dict[str, Demand] = {}
    for client, row in doc["clients"].items():
        if not isinstance(row, list) or len(row) != 3:
            raise ValueError(f"bad row for {client!r:.40}")
        weight, priority, waiting = row
        if isinstance(weight, bool) or not isinstance(weight, int | float) or \
                not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"bad weight {weight!r:.40}")
        if priority not in PRIORITIES:
            raise ValueError(f"bad priority {priority!r:.40}")
        if isinstance(waiting, bool) or not isinstance(waiting, int) or waiting < 0:
            raise ValueError(f"bad waiting count {waiting!r:.40}")
        report[client] = Demand(float(weight), priority, waiting)
    return float(at), report


def allocate(reports: Mapping[str, Report], me: str,
             batch_floor: float) -> dict[str, float] | None:
    """This replica's (`me`) part of the account's rate for each client waiting here, as a
    fraction of the rate; None when fewer than two replicas have work waiting (the local queue
    decides alone). A client's weight and class are the largest weight and the highest class
    any replica reports (replicas agree on the answer whatever order they read the reports in,
    also while a reloaded clients file has reached only some of them)."""
    busy = {replica: report for replica, report in reports.items()
            if any(d.waiting for d in report.values())}
    mine = busy.get(me)
    if mine is None or len(busy) < 2:
        return None
    weight: dict[str, float] = {}
    priority: dict[str, Priority] = {}
    waiting: dict[str, int] = {}
    for report in busy.values():
        for client, d in report.items():
            if not d.waiting:
                continue
            weight[client] = max(weight.get(client, 0.0), d.weight)
            priority[client] = "interactive" if d.priority == "interactive" or \
                priority.get(client) == "interactive" else "batch"
            waiting[client] = waiting.get(client, 0) + d.waiting
    shares = class_shares(((c, priority[c], weight[c]) for c in weight), batch_floor)
    return {client: shares[client] * d.waiting / waiting[client]
            for client, d in mine.items() if d.waiting}


def local_demand(clients: Iterable[tuple[str, Priority, float, int]],
                 waiting: Mapping[str, int]) -> dict[str, Demand]:
    """This replica's report from its queue's flows ((client, priority, weight, items), as
    `FairQueue.clients` gives them) and each client's waiting count (retries included)."""
    report: dict[str, Demand] = {}
    for client, klass, weight, _ in clients:
        known = report.get(client)
        if known is None or klass == "interactive":
            report[client] = Demand(weight, klass, waiting.get(client, 0))
    return report


class ClientGates:
    """Paces each client the fleet's allocation names at its part of the account's rate.

    `parts` maps a client to its fraction of the rate (`allocate`); `wait` and `charge` take the
    rate as it is now. A client outside `parts` is never held back. Pure: times are passed in.
    """

    def __init__(self, burst: float = FLEET_BURST) -> None:
        self.burst = burst
        self.parts: dict[str, float] = {}
        self._gcra: dict[str, Gcra] = {}

    @property
    def active(self) -> bool:
        return bool(self.parts)

    def set(self, parts: Mapping[str, float] | None) -> None:
        """Adopt a new allocation (None or empty: pace no one). A client that stays keeps its
        pacing state (no burst of credit at each report); one that left is forgotten."""
        self.parts = {c: p for c, p in (parts or {}).items() if p > 0}
        self._gcra = {c: g for c, g in self._gcra.items() if c in self.parts}

    def _rate(self, client: str, rate: float) -> float | None:
        part = self.parts.get(client)
        return None if part is None else rate * part

    def wait(self, client: str, rate: float, now: float) -> float:
        """Seconds until `client` may send at its part of `rate` (0.0: now, or not paced)."""
        own = self._rate(client, rate)
        if own is None:
            return 0.0
        gcra = self._gcra.get(client)
        return 0.0 if gcra is None else gcra.wait_time(own, now)

    def charge(self, client: str, rate: float, now: float) -> None:
        """`client` sent one request now (also one that did not wait its turn: a retry)."""
        own = self._rate(client, rate)
        if own is None:
            return
        gcra = self._gcra.get(client)
        if gcra is None:
            gcra = self._gcra[client] = Gcra(now, self.burst)
        gcra.wait_time(own, now)  # adopt the rate first: slots already promised are re-spaced
        gcra.tat = max(gcra.tat, now) + 1.0 / own

    def refund(self, client: str, rate: float, now: float) -> None:
        """Give back a slot charged for a request that never went upstream."""
        own = self._rate(client, rate)
        gcra = self._gcra.get(client)
        if own is not None and gcra is not None:
            gcra.give_back(own, now)

    def opens_in(self, clients: Iterable[str], rate: float, now: float) -> float | None:
        """Seconds until the first of `clients` may send (None: none of them is paced)."""
        waits = [self.wait(c, rate, now) for c in clients if c in self.parts]
        return min(waits) if waits else None
