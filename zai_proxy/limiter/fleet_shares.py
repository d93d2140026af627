"""Account-wide fair shares: each replica's part of every client's share of the account's rate.

The fair queue (`fair_queue`) shares what one process sends. Replicas of both variants draw
their send slots from one gate in Redis, so each would otherwise share only its own part: a
weight-3 client whose workers all reach one replica of four would get a quarter of the slots,
not three fifths. To make the shares hold across the fleet, every replica reports on each
limiter tick the clients with requests waiting in its queue or upstream (`Demand`: weight,
class, how many wait, its recent send rate, how many are upstream), and reads every live
replica's report. From them every replica computes the same:

- each waiting client's share of the account's rate (`account_shares`), by the rule the queue
  uses in one process (`class_shares`: its weight over the waiting weights of its class;
  interactive before batch, batch keeping its floor), max-min fair: never more than the client
  can use, what it leaves going to the others by the same rule;
- this replica's part of it (`allocate`): the share times the part of the client's waiting
  requests that wait here (a client waiting on two replicas is served from both, in
  proportion), corrected a little by what each client was delivered (`Balance`);
- this replica's part of each client's in-flight cap (`cap_parts`).

`FleetParts` then paces each allocated client here at its part of the account's rate (as the
rate is now, so a lowered ceiling lowers every part at once), under the account's own gate. A
client the allocation does not name (it was not waiting at the last report) is not paced until
it is. When at most one replica has work waiting, `allocate` answers None: the local queue
alone is then exact and work-conserving, and nothing is paced per client.

Reports are JSON, read back from Redis and validated here (`decode`): a replica's report that is
not a well-formed one is dropped as a whole, and the fleet decides without it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zai_proxy.core.redis_link import finite
from zai_proxy.limiter.client_class import PRIORITIES, ClassOf, Priority
from zai_proxy.limiter.fair_queue import class_shares
from zai_proxy.limiter.gcra import Gcra

# A client slowed by the account's gate (another replica took the slot it was due) may catch
# up this many seconds of its part: the same time for every client, whatever its rate (a
# burst counted in slots would let slow clients catch up more and take from fast ones).
CATCH_UP = 1.0
# What a client can use: its recent rate plus its waiting requests spread over this many seconds.
HORIZON = 1.0
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Demand:
    """One client's requests waiting in one replica's queue, its class there, the rate (req/s)
    that replica sent it upstream lately, and how many of its requests it has upstream now."""

    weight: float
    priority: Priority
    waiting: int
    rate: float = 0.0
    in_flight: int = 0


Report = Mapping[str, Demand]


def encode(report: Report, at: float) -> str:
    """A replica's report as stored: `{"at": wall seconds, "clients": {name: [w, p, n]}}`."""
    return json.dumps({"at": at, "clients": {
        client: [d.weight, d.priority, d.waiting, round(d.rate, 4), d.in_flight]
        for client, d in report.items()}},
        separators=(",", ":"))


def decode(text: str | bytes) -> tuple[float, dict[str, Demand]]:
    """(written at, report) from `encode`'s text; ValueError for anything else (a weight that
    is not a finite positive number, a count that is not a whole number >= 0, ...)."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), dict):
        raise ValueError("not a fleet report")
    at = finite(doc.get("at"))
    if at is None:
        raise ValueError(f"bad time {doc.get('at')!r:.40}")
    report: dict[str, Demand] = {}
    for client, row in doc["clients"].items():
        if not isinstance(row, list) or len(row) != 5:
            raise ValueError(f"bad row for {client!r:.40}")
        weight, rate = finite(row[0]), finite(row[3])
        priority, waiting, in_flight = row[1], row[2], row[4]
        if weight is None or weight <= 0 or rate is None or rate < 0 or \
                priority not in PRIORITIES or not _count(waiting) or not _count(in_flight):
            raise ValueError(f"bad row for {client!r:.40}: {row!r:.60}")
        report[client] = Demand(weight, priority, waiting, rate, in_flight)
    return at, report


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def cap_parts(reports: Mapping[str, Report], me: str, caps: Mapping[str, int]) -> dict[str, int]:
    """The part of each client's in-flight cap (`caps`) this replica (`me`) may hold, for the
    clients another replica reports requests of (a client wanted here alone keeps its whole
    cap): the cap split between the replicas in proportion to each one's requests (waiting
    and upstream; largest remainders first, ties by replica, so every replica computes the same
    split), and never more than the cap less what the others hold now (a replica over its new
    part drains before the others take it up)."""
    out: dict[str, int] = {}
    for client, cap in caps.items():
        demand = {replica: report[client].waiting + report[client].in_flight
                  for replica, report in reports.items() if client in report}
        if not any(d for replica, d in demand.items() if replica != me):
            continue
        total = sum(demand.values())
        quota = {replica: cap * d / total for replica, d in demand.items()}
        part = {replica: int(q) for replica, q in quota.items()}
        left = cap - sum(part.values())
        for replica in sorted(quota, key=lambda r: (part[r] - quota[r], r))[:left]:
            part[replica] += 1
        held = sum(reports[r][client].in_flight for r in demand if r != me)
        out[client] = min(part.get(me, 0), max(0, cap - held))
    return out


class Balance:
    """Corrects each client's part by what the fleet delivered to it (an integral controller).

    Replicas race for the account's slots; a client that reaches them through few replicas
    loses more of the races than one spread over many, and paced at its bare share it would
    get a little less than that share. Each report round, a client's delivered rate (summed over
    the replicas) is compared with its share of what all the paced clients got together; its
    factor moves by (wanted / got) ** `gain`, within `bounds` (a small, bounded correction: the
    pacing does the sharing, this only evens out who wins the races). The delivered rates lag
    by the meter's span, so after the set of waiting clients changes the factors are held for
    `settle` rounds rather than chasing rates that still describe the old set. A client that
    stops waiting is forgotten: it starts again at 1.
    """

    def __init__(self, gain: float = 0.05, bounds: tuple[float, float] = (0.8, 1.25),
                 settle: int = 3) -> None:
        self.gain, self.bounds, self.settle = gain, bounds, settle
        self.factor: dict[str, float] = {}
        self._held = 0  # rounds left to hold the factors

    def update(self, shares: Mapping[str, float],
               delivered: Mapping[str, float]) -> dict[str, float]:
        """New factors for the clients of `shares` given their `delivered` rates (req/s)."""
        if shares.keys() != self.factor.keys():
            self.factor = {c: self.factor.get(c, 1.0) for c in shares}
            self._held = self.settle
        if self._held:
            self._held -= 1
            return self.factor
        total = sum(delivered.get(c, 0.0) for c in shares)
        for client, share in shares.items():
            got = delivered.get(client, 0.0)
            if total > 0 and got > 0:
                factor = self.factor[client] * (share * total / got) ** self.gain
                self.factor[client] = min(self.bounds[1], max(self.bounds[0], factor))
        return self.factor

    def reset(self) -> None:
        self.factor, self._held = {}, 0


def account_shares(reports: Mapping[str, Report], batch_floor: float,
                   rate: float | None = None) -> dict[str, float]:
    """Each client waiting on any replica: its share of the account's rate, by the queue's rule
    (`class_shares`: weight over the waiting weights of its class; interactive first, batch
    keeping its floor). With `rate` (the account's send rate now) no client is given more than
    it can use - its recent rate plus its waiting requests over `HORIZON` seconds - and what one
    leaves goes to the others by the same rule (max-min fair): an agent with one request
    waiting when the reports were read does not hold nine tenths of the rate for a whole tick.
    What no one wants is spread by weight, so the shares add up to 1.

    A client's weight and class are the largest weight and the highest class any replica
    reports, so replicas agree whatever order they read the reports in, also while a reloaded
    clients file has reached only some of them."""
    weight: dict[str, float] = {}
    priority: dict[str, Priority] = {}
    for report in reports.values():
        for client, d in report.items():
            if d.waiting:
                weight[client] = max(weight.get(client, 0.0), d.weight)
                priority[client] = "interactive" if d.priority == "interactive" or \
                    priority.get(client) == "interactive" else "batch"
    if rate is None or rate <= 0 or not weight:
        return class_shares(((c, priority[c], weight[c]) for c in weight), batch_floor)
    wanted = dict.fromkeys(weight, 0.0)
    for report in reports.values():
        for client, d in report.items():
            if client in wanted:
                wanted[client] += (d.rate + d.waiting / HORIZON) / rate
    first = [c for c in weight if priority[c] == "interactive"]
    second = [c for c in weight if priority[c] == "batch"]
    both = bool(first and second)
    given: dict[str, float] = {}
    left = _fill(first, weight, wanted, given, 1.0 - batch_floor if both else 1.0)
    left = _fill(second, weight, wanted, given, (batch_floor if both else 0.0) + left)
    left = _fill(first, weight, wanted, given, left)  # batch left some: interactive wants more
    total = sum(weight.values())
    return {c: given.get(c, 0.0) + left * weight[c] / total for c in weight}


def _fill(clients: list[str], weight: Mapping[str, float], wanted: Mapping[str, float],
          given: dict[str, float], budget: float) -> float:
    """Share `budget` between `clients` by weight, none past what it wants (adding to `given`);
    returns what is left when all of them have what they want."""
    hungry = [c for c in clients if wanted[c] - given.get(c, 0.0) > EPSILON]
    while hungry and budget > EPSILON:
        total = sum(weight[c] for c in hungry)
        fair = {c: budget * weight[c] / total for c in hungry}
        sated = [c for c in hungry if wanted[c] - given.get(c, 0.0) <= fair[c]]
        if not sated:
            for c in hungry:
                given[c] = given.get(c, 0.0) + fair[c]
            return 0.0
        for c in sated:
            need = wanted[c] - given.get(c, 0.0)
            given[c] = given.get(c, 0.0) + need
            budget -= need
            hungry.remove(c)
    return max(0.0, budget)


def allocate(reports: Mapping[str, Report], me: str, batch_floor: float,
             balance: Balance | None = None, rate: float | None = None
             ) -> dict[str, float] | None:
    """This replica's (`me`) part of the account's rate for each client waiting here, as a
    fraction of the rate: its `account_shares` share (`rate`: the account's send rate now;
    corrected by what it was delivered, with `balance`) times the part of its waiting requests
    that wait here. None when fewer than two replicas have work waiting (the local queue
    decides alone)."""
    busy = {replica: report for replica, report in reports.items()
            if any(d.waiting for d in report.values())}
    mine = busy.get(me)
    if mine is None or len(busy) < 2:
        if balance is not None:
            balance.reset()
        return None
    waiting: dict[str, int] = {}
    delivered: dict[str, float] = {}
    for report in reports.values():
        for client, d in report.items():
            delivered[client] = delivered.get(client, 0.0) + d.rate
            waiting[client] = waiting.get(client, 0) + d.waiting
    shares = account_shares(reports, batch_floor, rate)
    factor = balance.update(shares, delivered) if balance is not None else {}
    return {client: shares[client] * factor.get(client, 1.0) * d.waiting / waiting[client]
            for client, d in mine.items() if d.waiting}


def local_demand(clients: Iterable[tuple[str, Priority, float, int]],
                 waiting: Mapping[str, int], rates: Mapping[str, float],
                 in_flight: Mapping[str, int], class_of: ClassOf) -> dict[str, Demand]:
    """This replica's report: every client with requests waiting (its flows in the queue,
    (client, priority, weight, items) as `FairQueue.clients` gives them, in its highest class)
    or upstream now (in its class as `class_of` says), with its waiting count (retries
    included), the rate it was sent lately (`SendMeter`) and its requests upstream."""
    report: dict[str, Demand] = {}
    for client, klass, weight, _ in clients:
        known = report.get(client)
        if known is None or klass == "interactive":
            report[client] = Demand(weight, klass, waiting.get(client, 0),
                                    rates.get(client, 0.0), in_flight.get(client, 0))
    for client, held in in_flight.items():
        if client not in report:
            c = class_of(client)
            report[client] = Demand(c.weight, c.priority, 0, rates.get(client, 0.0), held)
    return report


class SendMeter:
    """Each client's sends over the last `span` seconds, as a rate (times passed in). A client
    that began sending less than `span` ago is measured over the time since (at least
    `shortest` seconds): a client that just joined is not taken for a slow one."""

    def __init__(self, span: float = 3.0, shortest: float = 0.5) -> None:
        self.span, self.shortest = span, shortest
        self._sent: dict[str, deque[float]] = {}
        self._since: dict[str, float] = {}

    def note(self, client: str, now: float) -> None:
        times = self._sent.get(client)
        if times is None:
            times = self._sent[client] = deque()
            self._since[client] = now
        times.append(now)

    def rates(self, now: float) -> dict[str, float]:
        """req/s of every client that sent within the span (the others are forgotten)."""
        out: dict[str, float] = {}
        for client in list(self._sent):
            times = self._sent[client]
            while times and times[0] <= now - self.span:
                times.popleft()
            if times:
                seconds = min(self.span, max(self.shortest, now - self._since[client]))
                out[client] = len(times) / seconds
            else:
                del self._sent[client], self._since[client]
        return out


class FleetParts:
    """What this replica may use of each client's account-wide allowances: its part of the
    client's share of the rate, and its part of the client's in-flight cap.

    Rate: `parts` maps a client to its fraction of the rate (`allocate`); `wait` and `charge`
    take the rate as it is now. A client outside `parts` is never held back. With a `meter`
    (set by the fleet's exchange, which reads it each round) every charge is also counted.

    In-flight caps (`cap`): with the fleet's reports, this replica's part of a client's cap
    (`cap_parts`; the whole cap for a client no other replica reported); without them, its
    `1 / divisor` part (rounded up: a client with a cap can always send one). Pure: times are
    passed in.
    """

    def __init__(self, catch_up: float = CATCH_UP) -> None:
        self.catch_up = catch_up
        self.parts: dict[str, float] = {}
        self._gcras: dict[str, Gcra] = {}
        self.meter: SendMeter | None = None
        self.caps: Mapping[str, int] | None = None  # parts of caps from the fleet's reports
        self.divisor = 1

    @property
    def active(self) -> bool:
        return bool(self.parts)

    def set(self, parts: Mapping[str, float] | None) -> None:
        """Adopt a new allocation (None or empty: pace no one). A client that stays keeps its
        pacing state (no burst of credit at each report); one that left is forgotten."""
        self.parts = {c: p for c, p in (parts or {}).items() if p > 0}
        self._gcras = {c: g for c, g in self._gcras.items() if c in self.parts}

    def cap(self, client: str, cap: int | None) -> int | None:
        """The part of `client`'s in-flight `cap` this replica may hold (None: no cap)."""
        if cap is None:
            return None
        if self.caps is not None:
            return self.caps.get(client, cap)
        return -(-cap // self.divisor)

    def _rate(self, client: str, rate: float) -> float | None:
        part = self.parts.get(client)
        return None if part is None else rate * part

    def _gcra(self, client: str, own: float, now: float) -> Gcra:
        gcra = self._gcras.get(client)
        if gcra is None:
            gcra = self._gcras[client] = Gcra(now)
        gcra.burst = 1.0 + own * self.catch_up
        return gcra

    def wait(self, client: str, rate: float, now: float) -> float:
        """Seconds until `client` may send at its part of `rate` (0.0: now, or not paced)."""
        own = self._rate(client, rate)
        if own is None or client not in self._gcras:
            return 0.0
        return self._gcra(client, own, now).wait_time(own, now)

    def charge(self, client: str, rate: float, now: float) -> None:
        """`client` sent one request now (also one that did not wait its turn: a retry)."""
        if self.meter is not None:
            self.meter.note(client, now)
        own = self._rate(client, rate)
        if own is None:
            return
        gcra = self._gcra(client, own, now)
        gcra.wait_time(own, now)  # adopt the rate first: slots already promised are re-spaced
        gcra.tat = max(gcra.tat, now) + 1.0 / own

    def refund(self, client: str, rate: float, now: float) -> None:
        """Give back a slot charged for a request that never went upstream."""
        own = self._rate(client, rate)
        gcra = self._gcras.get(client)
        if own is not None and gcra is not None:
            gcra.give_back(own, now)

    def opens_in(self, clients: Iterable[str], rate: float, now: float) -> float | None:
        """Seconds until the first of `clients` may send (None: none of them is paced)."""
        waits = [self.wait(c, rate, now) for c in clients if c in self.parts]
        return min(waits) if waits else None
