"""The fleet's reports in Redis: how account-wide client shares are exchanged (see
`fleet_shares` for the rule).

Every replica of every variant spending the account keeps one field, its lease id, in the hash
`zai-proxy:acct:<account>:limiter:fleet`: its report (the clients waiting in its queue or with
requests upstream, their recent send rates: `fleet_shares.Demand`), written and read back with
the others in one round trip on each limiter tick. A report older than
`stale_after` seconds (a replica that stopped or lost Redis) is left out and deleted; the hash
itself expires when no replica writes it. Without Redis (never configured, or unreachable now)
the fleet's allocation is dropped at once: each replica shares its own part of the account
(1 / replicas while Redis is away) by its local queue, and `scope` says "replica".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from zai_proxy.core.redis_link import BadAnswer
from zai_proxy.limiter.admission import Admission
from zai_proxy.limiter.fleet_shares import (
    Balance,
    Report,
    SendMeter,
    account_shares,
    allocate,
    cap_parts,
    decode,
    encode,
    local_demand,
)
from zai_proxy.limiter.shared import SharedState

log = logging.getLogger("zai_proxy.fleet")

STALE_AFTER = 5.0  # seconds: a report this old is from a replica that is gone


class FleetShares:
    """One replica's side of the exchange: `sync()` on every limiter tick."""

    def __init__(self, shared: SharedState, admission: Admission, replica: str, *,
                 wall: Callable[[], float] = time.time, interval: float = 1.0,
                 stale_after: float = STALE_AFTER) -> None:
        """`interval`: seconds between two `sync` calls (the limiter's tick)."""
        self.shared, self.admission, self.replica = shared, admission, replica
        self.wall, self.stale_after = wall, stale_after
        self.key = shared.key("fleet")
        self.scope = "replica"  # "account" once the fleet's reports were read
        self.reports: dict[str, Report] = {}  # the live replicas' reports, last read
        self.shares: dict[str, float] = {}  # each waiting client's share of the account
        self.meter = admission.fleet.meter = SendMeter()
        # Hold corrections while the meter still measures the clients waiting before.
        self.balance = Balance(settle=math.ceil(self.meter.span / interval))

    def report(self) -> Report:
        """What this replica's queue holds now, by client."""
        adm = self.admission
        clients = list(adm.queue.clients())
        return local_demand(clients, {c: adm.queue.waiting(c) for c, *_ in clients},
                            self.meter.rates(adm.clock()), adm.client_in_flight, adm.class_of)

    async def sync(self) -> None:
        """Publish this replica's report, read the fleet's, pace clients by the allocation."""
        text = encode(self.report(), self.wall())
        ttl = max(1, int(self.stale_after * 4))

        async def exchange() -> dict[Any, Any]:
            pipe = self.shared.redis.pipeline(transaction=False)
            pipe.hset(self.key, self.replica, text)
            pipe.expire(self.key, ttl)
            pipe.hgetall(self.key)
            result = await pipe.execute()
            if not isinstance(result, list) or len(result) != 3 or \
                    not isinstance(result[2], dict):
                raise BadAnswer(f"fleet: {result!r:.60}")
            return result[2]

        answer = await self.shared.call(exchange)
        if answer is None:
            self._alone()
            return
        now, stale = self.wall(), []
        reports: dict[str, Report] = {}
        for field, raw in answer.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            try:
                at, report = decode(raw)
            except (ValueError, TypeError):
                self.shared.ignored(f"fleet.{name[:40]}", raw)
                continue
            if now - at > self.stale_after:
                stale.append(name)
            else:
                reports[name] = report
        if stale:
            await self.shared.call(lambda: self.shared.redis.hdel(self.key, *stale))
        self.reports, self.scope = reports, "account"
        adm = self.admission
        floor, rate = adm.queue.batch_floor, adm.gate_rate
        self.shares = account_shares(reports, floor, rate)
        adm.set_fleet_parts(
            allocate(reports, self.replica, floor, self.balance, rate),
            cap_parts(reports, self.replica, self._caps(reports)))

    def _caps(self, reports: dict[str, Report]) -> dict[str, int]:
        """The in-flight cap of every reported client that has one (as this replica reads the
        clients file)."""
        caps: dict[str, int] = {}
        for report in reports.values():
            for client in report:
                if client not in caps and \
                        (cap := self.admission.class_of(client).max_in_flight) is not None:
                    caps[client] = cap
        return caps

    def _alone(self) -> None:
        if self.scope == "account":
            log.warning("account-wide client shares suspended: Redis is unavailable; each "
                        "replica shares its own part of the account by its local queue")
        self.scope, self.reports, self.shares = "replica", {}, {}
        self.balance.reset()
        self.admission.set_fleet_parts(None, None, self.shared.replicas)

    def health(self) -> dict[str, Any]:
        """For /health: where shares are decided, how many replicas share the account (the
        divisor while they decide alone), how many report and have work waiting, this replica's
        part of the account's rate for each client it paces, and its
        part of the in-flight caps of clients other replicas want too."""
        busy = sum(1 for report in self.reports.values()
                   if any(d.waiting for d in report.values()))
        fleet = self.admission.fleet
        return {"scope": self.scope, "replicas": self.shared.replicas,
                "replicas_reporting": len(self.reports),
                "replicas_waiting": busy,
                "paced": {c: round(p, 4) for c, p in sorted(fleet.parts.items())},
                "in_flight_caps": dict(sorted((fleet.caps or {}).items()))}
