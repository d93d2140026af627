"""The proxy's limiter: controllers, admission, shared state and persistence, wired once.

`Limiter.build` turns settings into a rate controller, a concurrency controller and the
admission queue in front of them (rate tokens from Redis when several replicas share the
account, else from a local bucket, with the limits divided by RATE_LIMIT_REPLICAS).
`run` is the background loop: evaluate windows when traffic is quiet, sync with the other
replicas, persist learned ceilings when they change. Gauges are refreshed on scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from zai_proxy.admission import Admission
from zai_proxy.concurrency_controller import ConcurrencyController
from zai_proxy.config import Settings
from zai_proxy.errors import AccountMismatch, InvalidRequest
from zai_proxy.limiter_state import LimiterState, load_state, save_state
from zai_proxy.metrics import Metrics
from zai_proxy.rate_controller import Adjustment, RateController
from zai_proxy.shared_state import SharedCoordinator, SharedState

log = logging.getLogger("zai_proxy.limiter")
STATE_DOC_VERSION = 1


def _positive_number(value: object, name: str) -> float | None:
    """A positive finite number, None for null/absent; InvalidRequest for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 < value < float("inf")):
        raise InvalidRequest(f"limiter state: {name} must be a positive number", param=name)
    return float(value)


class Limiter:
    """Everything admission control needs, with one background task."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.clock, self.wall = clock, wall
        self.account = settings.account
        self.variant = settings.deployment_variant
        self.state_file = settings.rate_limit_state_file
        self.state_max_age = settings.rate_limit_state_max_age
        shared_uri = settings.rate_limit_storage_uri
        shared = shared_uri.startswith(("redis", "async+redis"))
        self.shared: SharedState | None = None
        # Without shared storage each replica takes its share of the account's limits.
        share = 1.0 if shared else float(settings.rate_limit_replicas)
        self.share = share
        self.bounds = (settings.rate_limit_min / share, settings.rate_limit_max / share)
        self.rate = RateController(
            clock=clock, initial=settings.rate_limit_initial / share, minimum=self.bounds[0],
            maximum=self.bounds[1], window=settings.rate_limit_window,
            hold_margin=settings.rate_limit_hold_margin,
            ceiling_alpha=settings.rate_limit_ceiling_alpha,
            probe_interval=settings.rate_limit_probe_interval)
        self.concurrency = ConcurrencyController(
            clock=clock, max_workers=settings.max_workers, window=settings.rate_limit_window,
            probe_interval=settings.rate_limit_probe_interval)
        self.coordinator: SharedCoordinator | None = None
        # Background tick: every second, or ten times a window when windows are short.
        self.tick_interval = min(1.0, settings.rate_limit_window / 10)
        if shared:
            url = shared_uri.removeprefix("async+")
            self.shared = SharedState(url, namespace=f"zai-proxy:{settings.deployment_variant}",
                                      replicas=settings.rate_limit_replicas, clock=clock)
            # Every replica pushes its counts at its first tick after a window ends; the leader
            # must wait longer than one tick before it sums them, or it decides on part of the
            # replicas' counts (one of two replicas: a ceiling learned at half its value).
            self.coordinator = SharedCoordinator(self.shared, self.rate, wall=wall,
                                                 grace=2.5 * self.tick_interval)
        self.admission = Admission(
            self.rate, self.concurrency, queue_max=settings.queue_max,
            queue_timeout=settings.queue_timeout_seconds, clock=clock, gate=self.shared,
            on_adjust=self._count)
        self.restored_from_state = False
        # Nothing learned yet: nothing to write until a ceiling is learned.
        self._saved: tuple[Any, ...] | None = self._learned()
        self._task: asyncio.Task[None] | None = None

    def _count(self, adjustment: Adjustment) -> None:
        if adjustment.direction != "hold":
            self.metrics.adjustments.labels(adjustment.direction, self.metrics.variant).inc()
            log.info("rate limit adjusted", extra={"fields": {
                "direction": adjustment.direction, "reason": adjustment.reason,
                "rate": round(adjustment.rate, 3), "ceiling": adjustment.ceiling}})

    def restore(self) -> None:
        """Adopt the persisted ceilings, if a fresh enough state file exists."""
        if not self.state_file:
            return
        state = load_state(self.state_file, now=self.wall(), max_age=self.state_max_age,
                           rate_min=self.bounds[0], rate_max=self.bounds[1],
                           max_workers=self.concurrency.max_workers)
        if state is None:
            return
        self._count(self.rate.restore(state.rate_ceiling))
        self.concurrency.restore(state.concurrency_ceiling)
        self.restored_from_state = True
        self._saved = self._learned()
        log.info("limiter state restored", extra={"fields": {
            "ceiling": state.rate_ceiling, "concurrency_ceiling": state.concurrency_ceiling}})

    def _learned(self) -> tuple[Any, ...]:
        return (self.rate.ceiling, self.rate.hold, self.concurrency.ceiling)

    async def persist(self) -> None:
        """Write the learned ceilings when they changed (atomically, off the event loop)."""
        learned = self._learned()
        if not self.state_file or learned == self._saved:
            return
        state = LimiterState(self.rate.ceiling, self.rate.hold, self.concurrency.ceiling,
                             self.wall())
        try:
            await asyncio.to_thread(save_state, self.state_file, state)
            self._saved = learned
        except OSError as exc:
            log.warning("limiter state not saved", extra={"fields": {
                "path": self.state_file, "error": str(exc)}})
            self._saved = learned  # do not retry every second; the next change tries again

    def set_quota_pacing(self, rate: float | None) -> None:
        """Cap paced requests at `rate` req/s for the whole account (None: pacing off).

        Each replica takes its share (RATE_LIMIT_REPLICAS) of the account's rate.
        """
        replicas = self.shared.replicas if self.shared is not None else self.share
        self.admission.set_pacing(None if rate is None else rate / replicas)

    def export_state(self) -> dict[str, Any]:
        """The learned ceilings as one account-level document (`GET /admin/limiter-state`).

        Rates are for the whole account (this replica's share times RATE_LIMIT_REPLICAS), so a
        target with another replica count takes its own share of them; the concurrency ceiling
        is per replica, like MAX_WORKERS.
        """
        ceiling = self.rate.ceiling
        updated = self.rate.ceiling_updated_at
        return {
            "version": STATE_DOC_VERSION,
            "account": self.account,
            "variant": self.variant,
            "shared": self.shared is not None,
            "replicas": int(self.share),
            "exported_at": self.wall(),
            "rate": {
                "ceiling": None if ceiling is None else ceiling * self.share,
                "current": self.rate.rate * self.share,
                "learned_seconds_ago": None if updated is None
                else round(self.clock() - updated, 3),
            },
            "concurrency": {"ceiling": self.concurrency.ceiling},
        }

    async def import_state(self, doc: object) -> dict[str, Any]:
        """Adopt ceilings exported by another proxy of the same account (`PUT`).

        Raises InvalidRequest for a malformed document and AccountMismatch for another
        account's; persists what it adopted. Returns what was applied.
        """
        if not isinstance(doc, dict):
            raise InvalidRequest("limiter state must be a JSON object")
        account = doc.get("account")
        if not isinstance(account, str):
            raise InvalidRequest("limiter state has no account", param="account")
        if account != self.account:
            raise AccountMismatch("limiter state belongs to another Z.AI account "
                                  "(another key or upstream base); not adopted")
        rate, conc = (part if isinstance(part := doc.get(key), dict) else {}
                      for key in ("rate", "concurrency"))
        ceiling = _positive_number(rate.get("ceiling"), "rate.ceiling")
        conc_ceiling = _positive_number(conc.get("ceiling"), "concurrency.ceiling")
        applied: dict[str, Any] = {"rate_ceiling": None, "concurrency_ceiling": None}
        if ceiling is not None:
            local = min(self.bounds[1], max(self.bounds[0], ceiling / self.share))
            self._count(self.rate.restore(local))
            applied["rate_ceiling"] = local * self.share
        if conc_ceiling is not None:
            self.concurrency.restore(int(conc_ceiling))
            applied["concurrency_ceiling"] = self.concurrency.ceiling
        self.admission.wake()
        log.warning("limiter state adopted from another proxy of this account",
                    extra={"fields": {"from_variant": doc.get("variant"), **applied}})
        await self.persist()
        return applied

    async def reset(self) -> None:
        """Forget learned ceilings (admin action); persisted at once."""
        self._count(self.rate.reset())
        self.concurrency.reset()
        self.metrics.adjustments.labels("reset", self.metrics.variant).inc()
        self._saved = None
        await self.persist()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.admission.tick()
                if self.coordinator is not None:
                    for adjustment in await self.coordinator.sync():
                        self._count(adjustment)
                await self.persist()
            except Exception:  # the loop must outlive any one bad tick
                log.exception("limiter tick failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.persist()
        await self.admission.close()
        if self.shared is not None:
            await self.shared.close()

    def refresh_gauges(self) -> None:
        snap = self.admission.snapshot()
        m = self.metrics
        m.rate.set(float(snap["rate"] or 0))
        m.ceiling.set(float(snap["ceiling"] or 0))
        m.concurrency_limit.set(float(snap["concurrency_limit"] or 0))
        m.concurrency_ceiling.set(float(snap["concurrency_ceiling"] or 0))
        m.queue_depth.set(float(snap["queue_depth"] or 0))
        m.shared_degraded.set(1.0 if self.shared is not None and self.shared.degraded else 0.0)

    def health(self) -> dict[str, Any]:
        snap = self.admission.snapshot()
        updated = self.rate.ceiling_updated_at
        body: dict[str, Any] = {
            "current_rate": snap["rate"], "ceiling": snap["ceiling"], "hold": snap["hold"],
            "ceiling_updated_seconds_ago": None if updated is None
            else round(self.clock() - updated, 1),
            "concurrency_limit": snap["concurrency_limit"],
            "concurrency_ceiling": snap["concurrency_ceiling"],
            "max_workers": snap["max_workers"], "queue_depth": snap["queue_depth"],
            "in_flight_upstream": snap["in_flight"], "state_file": self.state_file or None,
            "restored_from_state": self.restored_from_state,
        }
        if self.shared is not None:
            body["shared_state"] = self.shared.health()
        return body
