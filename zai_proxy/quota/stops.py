"""The account stop wired to the request path, the replicas, the log, /health and /metrics.

`AccountStops` owns one account's `quota.stop.AccountStop` and does what the pure state cannot:

- the request path: `check` (the local refusal, or this request is the probe: with Redis the
  replica first claims the interval's probe there, so all replicas together send one),
  `recheck` (a stop that began while the request queued refuses it, the probe excepted),
  `observe` (an upstream answer with a stop code), `answered` (every upstream answer about to be
  relayed: the probe's result, a first success, and Z.AI's stop answer replaced by the proxy's
  own error with the row's status and cause);
- a probe whose request ended with no upstream answer (refused by a later hook or admission,
  the upstream unreachable, the client gone) is noticed by its record having a status
  (`Exchange.status`, set on every path) without `answered`: the stop stays, the timer runs;
- sharing (`publish` before and `adopt` after the quota's Redis sync): a stop seen here is
  published, a lift deletes it; a stop read there is adopted; a stop this replica read there
  and then finds gone was lifted by another replica's probe;
- the log (the stop once when it begins, the key/base mismatch hint once, the lift), `health`
  and the `zai_proxy_account_stopped{code}` gauge (1 while stopped; 0 after: the series stays).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from zai_proxy.core.errors import AccountStopped
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.shared import QuotaShare
from zai_proxy.quota.stop import PROBE, AccountStop, Stopped
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.classify import Throttle

log = logging.getLogger("zai_proxy.quota")


class AccountStops:
    """One account's stop as the proxy acts on it; see the module docstring."""

    def __init__(self, probe_seconds: float, metrics: Metrics, *, wall: Callable[[], float],
                 key_kind: str | None = None, sharing: QuotaShare | None = None) -> None:
        self.state = AccountStop(probe_seconds, key_kind=key_kind)
        self.metrics, self.wall, self.sharing = metrics, wall, sharing
        self._probe: Exchange | None = None
        self._publish = self._lift = False
        self._seen_shared = False  # the shared document was read while this stop held
        self._codes: set[str] = set()
        self._hinted = False

    # -- the request path ----------------------------------------------------------------------

    async def check(self, ex: Exchange) -> AccountStopped | None:
        """The local refusal while the account is stopped; None when it is not, or when this
        request is the probe."""
        state = self.state
        if state.stopped is None:
            return None
        now = self.wall()
        self._abandoned(now)
        decision = state.check(now)
        if decision is None:
            return None
        if decision == PROBE:
            # `check` marked the probe in flight already: a request arriving while the claim
            # below waits for Redis is refused, not a second probe.
            if self.sharing is not None and not await self.sharing.claim_probe(
                    state.probe_seconds):
                state.probe_elsewhere(now)
                return self._refusal(now)
            self._probe = ex
            log.info("account stopped: a probe goes upstream", extra={"fields": {
                "request_id": ex.request_id}})
            return None
        return self._refusal(now)

    def recheck(self, ex: Exchange) -> AccountStopped | None:
        """Before an attempt: the stop refuses every request but the probe."""
        if self.state.stopped is None or ex is self._probe:
            return None
        return self._refusal(self.wall())

    def observe(self, throttle: Throttle) -> None:
        """An upstream answer with a stop code: the stop begins, or goes on."""
        row = throttle.row
        now = self.wall()
        began = self.state.on_stop(row, throttle.message, now)
        self._publish = True
        stopped = self.state.stopped
        assert stopped is not None
        if began:
            log.error("account stopped by Z.AI (%s: %s): requests are answered locally; one "
                      "probe every %g s", stopped.code, stopped.cause,
                      self.state.probe_seconds, extra={"fields": {"message": stopped.message}})
        if self.state.hint is not None and not self._hinted:
            self._hinted = True
            log.error("Z.AI answered %s before any request of this account succeeded: %s",
                      stopped.code, self.state.hint)
        self._gauge()

    def answered(self, ex: Exchange, status: int, throttle: Throttle | None) -> \
            AccountStopped | None:
        """An upstream answer about to be relayed: the probe's result, a success; for Z.AI's
        own stop answer the error to relay in its place."""
        ok = 200 <= status < 300 and throttle is None
        if ok:
            self.state.answered_ok()
        now = self.wall()
        if ex is self._probe:
            self._probe = None
            if self.state.probe_ended(now, ok=ok):
                self._lifted("a probe was answered OK")
        if throttle is not None and throttle.row.stop and self.state.stopped is not None:
            return self._refusal(now, upstream=True)
        return None

    def _abandoned(self, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.status:  # ended, and `answered` never came
            self._probe = None
            self.state.probe_ended(now, ok=False)

    def _refusal(self, now: float, *, upstream: bool = False) -> AccountStopped:
        stopped = self.state.stopped
        assert stopped is not None
        said = f"Z.AI code {stopped.code}" + (f": {stopped.message}" if stopped.message else "")
        then = (f"Further requests are answered by zai-proxy; one goes to Z.AI every "
                f"{self.state.probe_seconds:g} s" if upstream else
                f"Answered by zai-proxy without asking Z.AI; one request goes every "
                f"{self.state.probe_seconds:g} s")
        hint = f" Hint: {self.state.hint}" if self.state.hint else ""
        message = (f"The Z.AI account is stopped: {stopped.cause} ({said}). An operator has to "
                   f"act on the account. {then} to notice when the stop is lifted.{hint}")
        return AccountStopped(message,
                              code="upstream_account_stopped" if upstream
                              else "proxy_account_stopped",
                              retry_after=self.state.retry_after(now), zai_code=stopped.code,
                              zai_class=stopped.cls, status=stopped.status)

    def _lifted(self, how: str, *, share: bool = True) -> None:
        self._lift = share
        self._publish = self._seen_shared = False
        log.warning("account stop lifted (%s): requests go upstream again", how)
        self._gauge()

    # -- sharing -------------------------------------------------------------------------------

    async def publish(self, sharing: QuotaShare) -> None:
        """Before the sync: the stop this replica saw (or saw again), or its lift."""
        stopped = self.state.stopped
        if self._publish and stopped is not None:
            await sharing.publish_stop(stopped)
        elif self._lift:
            await sharing.lift_stop()
        self._publish = self._lift = False

    def adopt(self, shared: Stopped | None) -> None:
        """After the sync: the account's stop as Redis holds it (None: none)."""
        now = self.wall()
        self._abandoned(now)
        if shared is None:
            if self.state.stopped is not None and self._seen_shared:
                self.state.lift(now)
                self._probe = None
                self._lifted("by another replica's probe", share=False)
            return
        self._seen_shared = True
        if self.state.adopt(shared, now):
            log.error("account stopped by Z.AI (%s: %s, seen by another replica): requests are "
                      "answered locally", shared.code, shared.cause)
            self._gauge()

    # -- /health and /metrics ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`account` ("ok" or "stopped") and, while stopped, what and since when."""
        now = self.wall()
        self._abandoned(now)
        state = self.state
        stopped = state.stopped
        if stopped is None:
            return {"account": "ok", "account_stop": None}
        return {"account": "stopped", "account_stop": {
            "code": stopped.code, "class": stopped.cls, "status": stopped.status,
            "cause": stopped.cause, "message": stopped.message, "since": stopped.since,
            "source": stopped.source, "next_probe_at": state.next_probe,
            "retry_after": math.ceil(state.retry_after(now)), "probe_in_flight": state.probing,
            "hint": state.hint}}

    def _gauge(self) -> None:
        stopped = self.state.stopped
        if stopped is not None:
            self._codes.add(stopped.code)
        for code in self._codes:
            self.metrics.account_stopped.labels(code).set(
                1.0 if stopped is not None and stopped.code == code else 0.0)
