"""The proxy's limiter: controllers, admission, shared state and persistence, wired once.

Everything learned belongs to the Z.AI account (`LimiterConfig.account`), not to the variant:
`Limiter` builds a rate controller, a concurrency controller and the admission queue in front of
them, with send slots from a GCRA pacer in Redis shared by every replica of every variant of the
account (`RATE_LIMIT_STORAGE_URI=redis://...`), else from a local one with the limits divided by
RATE_LIMIT_REPLICAS. `tick` is the background step (every `tick_interval`, on a `Ticker`): sync
with the other replicas, evaluate windows when traffic is quiet, persist learned ceilings when
they change. Gauges are refreshed on scrape; `/health` shows the evidence behind the latest
decisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from zai_proxy.core.errors import AccountMismatch, InvalidRequest
from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.core.ticker import Ticker
from zai_proxy.limiter.admission import Admission
from zai_proxy.limiter.client_class import ClassOf, default_class
from zai_proxy.limiter.concurrency_controller import ConcurrencyController
from zai_proxy.limiter.config import LimiterConfig
from zai_proxy.limiter.fleet import FleetShares
from zai_proxy.limiter.learned import ForeignState, InvalidState, LearnedState
from zai_proxy.limiter.rate_controller import Adjustment, RateController
from zai_proxy.limiter.shared import SharedCoordinator, SharedState, namespace
from zai_proxy.limiter.state_file import AUTO, load_state, save_state, state_path
from zai_proxy.observe.metrics import Metrics

log = logging.getLogger("zai_proxy.limiter")


def _decision(adjustment: Adjustment | None, now: float,
              decided_at: float | None) -> dict[str, Any] | None:
    if adjustment is None:
        return None
    body: dict[str, Any] = {"direction": adjustment.direction, "reason": adjustment.reason,
                            "rate": round(adjustment.rate, 3)}
    if decided_at is not None:
        body["seconds_ago"] = round(now - decided_at, 1)
    if adjustment.evidence is not None:
        body["evidence"] = adjustment.evidence.as_dict()
    return body


class Limiter:
    """Everything admission control needs, with one background task.

    `clock`, `wall` and `sleep` are injected (tests pass virtual time): the background tick and
    the admission queue's waits both sleep through `sleep`, so they run on the same time as
    `clock`. `class_of` gives the admission queue each client's class; `client_label` names a
    client in the per-client series (bounded: key names or fingerprints, `anonymous` when open).
    """

    def __init__(self, config: LimiterConfig, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, *,
                 link: RedisLink | None = None, lease: LeaderLease | None = None,
                 class_of: ClassOf = default_class,
                 client_label: Callable[[str], str] = str) -> None:
        self.metrics = metrics
        self.client_label = client_label
        self._shown_shares: set[str] = set()  # clients with a share gauge out
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.account = config.account
        self.variant = config.deployment_variant
        path = state_path(config.rate_limit_state_file, self.account)
        self.state_file: Path | None = path
        self.state_file_explicit = config.rate_limit_state_file != AUTO
        self.state_max_age = config.rate_limit_state_max_age
        shared = link is not None  # the process's Redis link, when the account is shared
        # Without shared storage each replica takes its share of the account's limits.
        scale = 1.0 if shared else float(config.rate_limit_replicas)
        self.scale = scale
        self.account_bounds = (config.rate_limit_min, config.rate_limit_max)
        self.bounds = (config.rate_limit_min / scale, config.rate_limit_max / scale)
        self.rate = RateController(
            clock=clock, initial=config.rate_limit_initial / scale, minimum=self.bounds[0],
            maximum=self.bounds[1], window=config.rate_limit_window,
            hold_margin=config.rate_limit_hold_margin,
            probe_interval=config.rate_limit_probe_interval,
            upstream_burst=config.rate_limit_upstream_burst)
        self.concurrency = ConcurrencyController(
            clock=clock, max_workers=config.max_workers, window=config.rate_limit_window,
            probe_interval=config.rate_limit_probe_interval)
        # Background tick: every second, or ten times a window when windows are short.
        self.tick_interval = min(1.0, config.rate_limit_window / 10)
        self.shared: SharedState | None = None
        self.coordinator: SharedCoordinator | None = None
        gate = pacer = None
        if link is not None:
            self.shared = SharedState(link, namespace=namespace(self.account),
                                      replicas=config.rate_limit_replicas)
            gate = self.shared.gate("gate", config.rate_limit_burst)
            pacer = self.shared.gate("pacer")
            self.coordinator = SharedCoordinator(self.shared, self.rate, wall=wall,
                                                 state_ttl=self.state_max_age, lease=lease)
        self.admission = Admission(
            self.rate, self.concurrency, queue_max=config.queue_max,
            queue_timeout=config.queue_timeout_seconds, clock=clock, sleep=sleep, gate=gate,
            burst=config.rate_limit_burst, pacer_gate=pacer, on_adjust=self._count,
            class_of=class_of, batch_floor=config.admission_batch_floor,
            on_admit=self._admitted, on_refuse=self._refused)
        # Clients' shares across the fleet (with Redis); else each replica shares its own part.
        self.fleet: FleetShares | None = None
        if self.shared is not None and self.coordinator is not None:
            self.fleet = FleetShares(self.shared, self.admission, self.coordinator.id,
                                     wall=wall, interval=self.tick_interval)
        else:  # each replica holds its part of every client's in-flight cap
            self.admission.fleet.divisor = config.rate_limit_replicas
        self.restored_from: str | None = None  # "redis", "file" or "admin"
        # Nothing learned yet: nothing to write until a ceiling is learned.
        self._saved: tuple[Any, ...] | None = self._learned()
        self._saturated_reported = 0.0
        self.ticker = Ticker(self.tick, interval=self.tick_interval, log=log,
                             failure="limiter tick failed", clock=clock, sleep=sleep)

    # -- per-client series -----------------------------------------------------------------

    def _admitted(self, client: str, waited: float) -> None:
        self.metrics.client_admitted(self.client_label(client), waited)

    def _refused(self, client: str, reason: str) -> None:
        self.metrics.client_rejections.labels(self.client_label(client), reason).inc()

    def _show_shares(self) -> None:
        """The share gauge of each client with waiting requests; absent for the others. With
        the fleet's reports, its share of the account (the same on every replica); else its
        share of this replica's dispatches."""
        fleet = self.fleet
        source = fleet.shares if fleet is not None and fleet.scope == "account" \
            else self.admission.queue.shares()
        shares: dict[str, float] = {}
        for client, share in source.items():
            label = self.client_label(client)
            shares[label] = shares.get(label, 0.0) + share
        gauge = self.metrics.client_share
        for label in self._shown_shares - shares.keys():
            gauge.remove(label)
        for label, share in shares.items():
            gauge.labels(label).set(share)
        self._shown_shares = set(shares)

    # -- decisions -------------------------------------------------------------------------

    def _count(self, adjustment: Adjustment) -> None:
        if adjustment.direction != "hold" or adjustment.evidence is not None:
            self._show_evidence(adjustment)
        if adjustment.direction == "hold":
            return
        self.metrics.adjustments.labels(adjustment.direction).inc()
        fields: dict[str, Any] = {
            "direction": adjustment.direction, "reason": adjustment.reason,
            "rate": round(adjustment.rate * self.scale, 3), "ceiling": self._acct(
                adjustment.ceiling), "floor": self._acct(adjustment.floor)}
        if adjustment.evidence is not None:
            fields["evidence"] = adjustment.evidence.as_dict()
        log.info("rate limit adjusted", extra={"fields": fields})

    def _show_evidence(self, adjustment: Adjustment) -> None:
        ev = adjustment.evidence
        if ev is None:
            return
        m = self.metrics
        m.window_saturation.set(ev.saturated / ev.seconds if ev.seconds else 0.0)
        m.window_throttled.set(ev.throttled)
        m.measured_rate.set((ev.measured or 0.0) * self.scale)

    def _acct(self, rate: float | None) -> float | None:
        if rate is None:
            return None
        # Rounded for people, but never to 0: a learned rate must stay a positive number.
        return round(rate * self.scale, 3) or rate * self.scale

    def _learned(self) -> tuple[Any, ...]:
        return (self.rate.upper, self.rate.hold, self.concurrency.ceiling)

    # -- persistence -----------------------------------------------------------------------

    async def restore(self) -> None:
        """Adopt the account's learned state: from Redis when shared, else the state file."""
        if self.coordinator is not None:
            state = await self.coordinator.read()
            if state is not None and state.ts is not None and self._fresh(state) and \
                    self._restore_rate(state.rate_upper, state.rate_hold or state.rate_floor,
                                       scale=1.0):
                self.restored_from = "redis"
                log.info("limiter state restored from Redis", extra={"fields": {
                    "ceiling": state.rate_upper, "floor": state.rate_floor}})
        if self.state_file is None:
            return
        loaded = await asyncio.to_thread(
            load_state, self.state_file, now=self.wall(), max_age=self.state_max_age,
            rate_min=self.account_bounds[0], rate_max=self.account_bounds[1],
            max_workers=self.concurrency.max_workers, account=self.account,
            legacy=self.state_file_explicit)
        if loaded is None:
            return
        self.concurrency.restore(loaded.concurrency_ceiling)
        if self.restored_from is None:
            self._restore_rate(loaded.resume_upper, loaded.rate_hold, scale=self.scale)
            self.restored_from = "file"
        self._saved = self._learned()
        log.info("limiter state restored", extra={"fields": {
            "path": str(self.state_file), "ceiling": loaded.rate_ceiling,
            "floor": loaded.rate_hold, "concurrency_ceiling": loaded.concurrency_ceiling}})

    def _fresh(self, state: LearnedState) -> bool:
        """Whether the account's state is young enough to adopt (RATE_LIMIT_STATE_MAX_AGE)."""
        try:
            state.validate(account=self.account, now=self.wall(), max_age=self.state_max_age,
                           time_field="at")
        except InvalidState as invalid:
            log.info("limiter state in Redis not restored: %s", invalid)
            return False
        return True

    def _restore_rate(self, ceiling: float | None, floor: float | None, *, scale: float) -> bool:
        if ceiling is None and floor is None:
            return False
        adjustment = self.rate.restore(None if ceiling is None else ceiling / scale,
                                       None if floor is None else floor / scale)
        self._count(adjustment)
        self.admission.wake()
        return adjustment.direction == "restore"

    async def persist(self) -> None:
        """Write the learned ceilings when they changed (atomically, off the event loop)."""
        learned = self._learned()
        if self.state_file is None or learned == self._saved:
            return
        state = LearnedState(self._acct(self.rate.ceiling), self._acct(self.rate.hold),
                             self.concurrency.ceiling, self.wall(), self.account,
                             self._acct(self.rate.upper))
        try:
            await asyncio.to_thread(save_state, self.state_file, state)
        except OSError as exc:
            log.warning("limiter state not saved", extra={"fields": {
                "path": str(self.state_file), "error": str(exc)}})
        self._saved = learned  # on failure too: the next change tries again, not every second

    # -- quota pacing and the admin API ----------------------------------------------------

    def set_quota_pacing(self, rate: float | None) -> None:
        """Cap paced requests at `rate` req/s for the whole account (None: pacing off).

        With Redis the pacer is one GCRA for the account; without, each replica takes its
        share (RATE_LIMIT_REPLICAS) of the account's rate.
        """
        self.admission.set_pacing(None if rate is None else rate / self.scale)

    def export_state(self) -> dict[str, Any]:
        """The learned state as one account-level document (`GET /admin/limiter-state`).

        Rates are for the whole account (this replica's share times RATE_LIMIT_REPLICAS), so a
        target with another replica count takes its own share of them; the concurrency ceiling
        is per replica, like MAX_WORKERS.
        """
        updated = self.rate.ceiling_updated_at
        return LearnedState(
            self._acct(self.rate.ceiling), self._acct(self.rate.hold), self.concurrency.ceiling,
            self.wall(), self.account, self._acct(self.rate.upper),
            rate_current=self._acct(self.rate.rate), variant=self.variant,
            shared=self.shared is not None,
            replicas=self.shared.replicas if self.shared is not None else int(self.scale),
            learned_seconds_ago=None if updated is None else round(self.clock() - updated, 3),
        ).to_admin()

    async def import_state(self, doc: object) -> dict[str, Any]:
        """Adopt the state another proxy of the same account exported (`PUT`).

        Raises InvalidRequest for a malformed or too old document (`LearnedState.from_admin`,
        exported more than RATE_LIMIT_STATE_MAX_AGE ago) and AccountMismatch for another
        account's; persists (and with Redis publishes) what it adopted. Returns what was applied.
        """
        try:
            state = LearnedState.from_admin(doc).validate(
                account=self.account, now=self.wall(), max_age=self.state_max_age,
                time_field="exported_at")
        except ForeignState:
            raise AccountMismatch("limiter state belongs to another Z.AI account "
                                  "(another key or upstream base); not adopted") from None
        except InvalidState as invalid:
            raise InvalidRequest(f"limiter state: {invalid}", param=invalid.field) from None
        ceiling, floor, conc_ceiling = state.resume_upper, state.rate_hold, \
            state.concurrency_ceiling
        applied: dict[str, Any] = {"rate_ceiling": None, "rate_floor": None,
                                   "concurrency_ceiling": None}
        if ceiling is not None or floor is not None:
            self._restore_rate(ceiling, floor, scale=self.scale)
            applied["rate_ceiling"] = self._acct(self.rate.ceiling)
            applied["rate_floor"] = self._acct(self.rate.floor)
            self.restored_from = "admin"
        if conc_ceiling is not None:
            self.concurrency.restore(conc_ceiling)
            applied["concurrency_ceiling"] = self.concurrency.ceiling
        self.admission.wake()
        log.warning("limiter state adopted from another proxy of this account",
                    extra={"fields": {"from_variant": state.variant, **applied}})
        if self.coordinator is not None:
            await self.coordinator.publish()
        await self.persist()
        return applied

    async def reset(self) -> None:
        """Forget learned ceilings (admin action); persisted (and published) at once."""
        self._count(self.rate.reset())
        self.concurrency.reset()
        self.metrics.adjustments.labels("reset").inc()
        self.restored_from = None
        self._saved = None
        if self.coordinator is not None:
            await self.coordinator.publish()
        await self.persist()

    # -- the background task ---------------------------------------------------------------

    def start(self) -> None:
        self.ticker.start()

    async def tick(self) -> None:
        """One background tick: sync with the other replicas, evaluate windows, persist."""
        if self.coordinator is not None:  # first: the others' counts, then decide
            adjustments = await self.coordinator.sync()
            for adjustment in adjustments:
                self._count(adjustment)
            if adjustments:
                self.admission.wake()
        if self.fleet is not None:
            await self.fleet.sync()
        self.admission.tick()
        await self.persist()

    async def stop(self) -> None:
        await self.ticker.stop()
        await self.persist()
        await self.admission.close()

    # -- what operators see ----------------------------------------------------------------

    def refresh_gauges(self) -> None:
        snap = self.admission.snapshot()
        m = self.metrics
        m.rate.set(float(snap["rate"] or 0) * self.scale)
        m.ceiling.set(float(snap["ceiling"] or 0) * self.scale)
        m.floor.set(float(snap["floor"] or 0) * self.scale)
        m.congestion_factor.set(float(snap["congestion_factor"] or 0))
        m.concurrency_limit.set(float(snap["concurrency_limit"] or 0))
        m.concurrency_ceiling.set(float(snap["concurrency_ceiling"] or 0))
        m.queue_depth.set(float(snap["queue_depth"] or 0))
        m.shared_degraded.set(1.0 if self.shared is not None and self.shared.degraded else 0.0)
        self._show_shares()
        saturated = self.admission.saturated_seconds()
        if saturated > self._saturated_reported:
            m.saturated.inc(saturated - self._saturated_reported)
            self._saturated_reported = saturated

    def _clients_health(self, limit: int = 50) -> list[dict[str, Any]]:
        """The clients with waiting requests (most waiting first, at most `limit`): class,
        waiting, in flight, at its cap, and `share`: the part of the dispatches the fair queue
        gives it now (its weight over its class's waiting weights, times its class's part)."""
        adm = self.admission
        shares = adm.queue.shares()
        rows = sorted(((-adm.queue.waiting(client), client, priority, weight)
                       for client, priority, weight, _ in adm.queue.clients()))[:limit]
        return [{"client": client, "priority": priority, "weight": weight, "waiting": -waiting,
                 "in_flight": adm.client_in_flight.get(client, 0),
                 "at_cap": adm.queue.blocked(client), "share": round(shares[client], 4)}
                for waiting, client, priority, weight in rows]

    def health(self) -> dict[str, Any]:
        snap = self.admission.snapshot()
        rate, now = self.rate, self.clock()
        updated = rate.ceiling_updated_at
        body: dict[str, Any] = {
            "account": self.account,
            "current_rate": self._acct(rate.rate), "ceiling": self._acct(rate.ceiling),
            "floor": self._acct(rate.floor), "hold": self._acct(rate.hold),
            "send_rate": self._acct(float(snap["gate_rate"] or 0)),
            "congestion_factor": snap["congestion_factor"],
            "ceiling_updated_seconds_ago": None if updated is None else round(now - updated, 1),
            "probing": rate.probing, "probe_interval_windows": rate.probe_interval_now,
            "saturated_now": self.admission.gate_bound,
            "last_decision": _decision(rate.last, now, None),
            "last_change": _decision(rate.last_change, now, None),
            "concurrency_limit": snap["concurrency_limit"],
            "concurrency_ceiling": snap["concurrency_ceiling"],
            "max_workers": snap["max_workers"], "queue_depth": snap["queue_depth"],
            "in_flight_upstream": snap["in_flight"],
            "slot_hold_seconds": None if snap["slot_hold_seconds"] is None
            else round(float(snap["slot_hold_seconds"]), 3),
            "state_file": None if self.state_file is None else str(self.state_file),
            "restored_from_state": self.restored_from is not None,
            "restored_from": self.restored_from,
            "batch_floor": self.admission.queue.batch_floor,
            "clients": self._clients_health(),
            "shares": self.fleet.health() if self.fleet is not None else {
                "scope": "replica", "replicas": int(self.scale)},
        }
        if self.shared is not None:
            body["shared_state"] = {**self.shared.health(), "leader": self.coordinator is not None
                                    and self.coordinator.leader}
        return body
