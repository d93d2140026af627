"""Plan-quota awareness wired together: state, poller, sharing, pacing, metrics, /health.

The request path calls three cheap, synchronous methods: `check` before admission (a local 429
while a window is spent: one attribute test while nothing is), `observe` after an upstream
answer (a 1308/1310 starts a block), `settled` when usage is known (tokens per client and for
the burn rate). Everything else runs on two `Ticker`s: the poll (every QUOTA_POLL_SECONDS, or
sooner after a quota 429; with Redis only the leader polls) and a one-second tick (token
timeline, sharing, pacing, logging block changes). Both wait with the injected `sleep` and
measure on the injected `clock` (monotonic) and `wall` (epoch), so tests run the whole of it on
virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from zai_proxy.core.errors import QuotaExhausted
from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.core.ticker import Ticker
from zai_proxy.limiter.limiter import Limiter
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.budgets import BudgetGate, no_shares
from zai_proxy.quota.client_budgets import SharesOf
from zai_proxy.quota.config import QuotaConfig
from zai_proxy.quota.pacing import Pacing, even_pacing
from zai_proxy.quota.poller import MonitorClient, PollHealth
from zai_proxy.quota.shared import QuotaShare, report_from_doc, report_to_doc
from zai_proxy.quota.state import LABELS, Block, QuotaState, WindowView, reset_stamp
from zai_proxy.quota.stops import AccountStops
from zai_proxy.wire.exchange import Exchange
from zai_proxy.zai.classify import Throttle
from zai_proxy.zai.codes import refusal_status, window_code
from zai_proxy.zai.monitor_report import (
    PERIODS,
    REASONS,
    UNPARSED_REASONS,
    Invalid,
    QuotaReport,
)

log = logging.getLogger("zai_proxy.quota")
PAUSED_RATE = 1e-3  # paced requests already queued wait (then time out) rather than spend
POLL_MIN_GAP = 5.0  # seconds: polls asked for by quota 429s come no closer than this
_WINDOW_WORDS = {"five_hour": "five-hour", "weekly": "weekly", "daily": "daily call"}


def refusal(block: Block, now: float, *, paced: bool = False) -> QuotaExhausted:
    """The local 429 for a spent window, worded like Z.AI's own 1308/1310 (so clients that read
    "Your limit will reset at ..." find the reset); `paced`: the budget left is reserved."""
    words = _WINDOW_WORDS[block.window]
    why = (f"pacing (QUOTA_PACING=even) reserves the {words} quota left" if paced
           else f"the account's {words} quota is spent")
    message = (f"Usage limit reached for {LABELS[block.window]}. Your limit will reset at "
               f"{reset_stamp(block.until)} (answered by zai-proxy: {why})")
    return QuotaExhausted(message, code="proxy_quota_paced" if paced else "proxy_quota_exhausted",
                          retry_after=block.retry_after(now), zai_code=block.code,
                          status=refusal_status(block.window))


class Quota:
    """One proxy's quota awareness; see the module docstring."""

    def __init__(self, config: QuotaConfig, metrics: Metrics, limiter: Limiter, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 wall: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 link: RedisLink | None = None, lease: LeaderLease | None = None,
                 key_kind: str | None = None, shares_of: SharesOf = no_shares) -> None:
        self.metrics, self.limiter, self.wall = metrics, limiter, wall
        self.state = QuotaState(burn_window=config.quota_burn_window)
        self.local_reject = config.quota_local_reject
        self.pacing_mode = config.quota_pacing
        self.exempt = frozenset(config.quota_pacing_exempt)
        self.interval = config.quota_poll_seconds
        self.monitor_url = config.monitor_url
        self.poll = PollHealth()
        self.monitor = (MonitorClient(self.monitor_url, config.zai_api_key,
                                      timeout=min(config.quota_poll_timeout, self.interval),
                                      transport=transport, sleep=sleep)
                        if self.interval > 0 and config.zai_api_key else None)
        # Shared through the process's Redis link, polling under the account's one lease.
        self.sharing = (QuotaShare(link, config.account, lease)
                      if link is not None and lease is not None else None)
        # Without Redis each replica sees its share of the account's tokens.
        self.replicas = config.rate_limit_replicas
        # Decided once, by the limiter: 1 when Redis shares the account's counts, else
        # RATE_LIMIT_REPLICAS (each token seen here stands for that many of the account's).
        self.scale = limiter.scale
        # The account stopped by Z.AI (plan expired, no balance, ...): refused, probed, shared.
        self.stops = AccountStops(config.account_stop_probe_seconds, metrics, wall=wall,
                                  key_kind=key_kind, sharing=self.sharing)
        # Each client's share of the windows (the roster's `shares_of`), counted account-wide.
        self.budgets = BudgetGate(shares_of, metrics, wall=wall, paced=self.paced)
        self.tick_interval = min(1.0, self.interval) if self.interval > 0 else 1.0
        self.pacing: Pacing | None = None
        self.paused_until: float | None = None
        self._paced_rate: float | None = None
        self.ticker = Ticker(self.tick, interval=self.tick_interval, log=log,
                             failure="quota tick failed", clock=clock, sleep=sleep)
        # Polled at once, then every interval; a quota 429 asks for a poll sooner (poke).
        self.poller = (Ticker(self.poll_once, interval=self.interval, log=log,
                              failure="quota poll failed unexpectedly", immediate=True,
                              min_gap=POLL_MIN_GAP, clock=clock, sleep=sleep)
                       if self.monitor else None)
        self._unflushed = 0.0
        self._to_publish: list[Block] = []
        self._to_lift: list[str] = []
        self._adopted_at = 0.0
        self._logged: Block | None = None
        if self.monitor is not None:
            for reason in REASONS:  # every reason exported from the start: increase() works
                metrics.quota_poll_errors.labels(reason)
            for why in UNPARSED_REASONS:
                metrics.quota_unparsed.labels(why)

    # -- the request path (synchronous, cheap) -------------------------------------------------

    def check(self, client: str) -> QuotaExhausted | None:
        """The local 429 to answer instead of going upstream, or None (the usual case)."""
        if self.state.block is None and self.paused_until is None:
            return None
        now = self.wall()
        block = self.state.blocked(now)
        if block is not None and self.local_reject:
            self.metrics.quota_rejections.inc()
            return refusal(block, now)
        paused = self.paused_until
        if paused is not None and now < paused and self.paced(client):
            window = self.pacing.window if self.pacing and self.pacing.window else "five_hour"
            self.metrics.quota_rejections.inc()
            return refusal(Block(window, window_code(window), paused, now, "poll"), now, paced=True)
        return None

    def recheck(self, ex: Exchange) -> QuotaExhausted | None:
        """After admission, before an attempt: a block that began while the request queued."""
        if self.state.block is None:
            return None
        return self.check(ex.client)

    def paced(self, client: str) -> bool:
        """Whether this client's requests wait for the quota pacer."""
        return self.pacing_mode == "even" and client not in self.exempt

    def observe(self, throttle: Throttle | None) -> None:
        """An upstream answer's 429 class: a quota one starts (or extends) a local block."""
        if throttle is None or throttle.retryable:
            return
        if throttle.row.stop:
            self.stops.observe(throttle)
            return
        code = throttle.row.code
        block = self.state.on_throttle(code, throttle.reset_at, self.wall()) if code else None
        if block is not None:
            if self.sharing is not None:
                self._to_publish.append(block)
            self._log_block()
        if self.poller is not None:
            self.poller.poke()

    def settled(self, client: str, counts: Mapping[str, int]) -> None:
        """A request's final token counts (client = its key's name, or `anonymous`)."""
        total = 0
        for direction, count in counts.items():
            if count:
                total += count
                self.metrics.client_tokens.labels(client, direction).inc(count)
        self.state.settled(total, scale=self.scale)
        self.budgets.settled(client, total, scale=self.scale)
        self._unflushed += total

    # -- background ----------------------------------------------------------------------------

    def start(self) -> None:
        self.ticker.start()
        if self.poller is not None:
            self.poller.start()

    async def stop(self) -> None:
        await self.ticker.stop()
        if self.poller is not None:
            await self.poller.stop()
        if self.pacing_mode == "even":
            self.limiter.set_quota_pacing(None)
        if self.monitor is not None:
            await self.monitor.aclose()
        if self.sharing is not None:
            await self.sharing.aclose()

    async def tick(self) -> None:
        """Share, sample, pace, log: once a second."""
        if self.sharing is not None:
            await self._sync()
        now = self.wall()
        self.state.tick(now)
        self.budgets.observe(self.state)
        self._log_block()
        self.pace(now)

    async def poll_once(self) -> None:
        """One poll of the monitor (by the leader only, when replicas share Redis)."""
        assert self.monitor is not None
        sharing = self.sharing
        if sharing is not None and not await sharing.lead(max(3 * self.interval, 3.0)):
            if not sharing.degraded:
                return  # another replica polls; the tick adopts its report
        result = await self.monitor.fetch()
        at = self.wall()
        self._apply(result, at, self.state.tokens)
        if sharing is not None and sharing.leader:
            doc: dict[str, Any] = {"at": at, "tokens_at": self.state.tokens,
                                   "ok": not isinstance(result, Invalid)}
            if isinstance(result, Invalid):
                doc.update(reason=result.reason, detail=result.detail)
            else:
                doc["report"] = report_to_doc(result)
            await sharing.publish(doc)
            self._adopted_at = at
        self.pace(self.wall())

    def _apply(self, result: QuotaReport | Invalid, at: float, tokens_at: float) -> None:
        change = self.poll.record(result, at)
        if change is not None:
            log.log(change[0], change[1], extra={"fields": {"monitor": self.monitor_url}})
        if isinstance(result, Invalid):
            self.metrics.quota_poll_errors.labels(result.reason).inc()
            return
        # Counted by the replica that polled (one count per poll, not per replica adopting it).
        for why, count in result.unparsed_counts:
            self.metrics.quota_unparsed.labels(why).inc(count)
        before = {b.window for b in self._blocks()}
        self.state.on_report(result, at, tokens_at)
        self.budgets.observe(self.state)
        after = {b.window for b in self._blocks()}
        if self.sharing is not None:
            self._to_lift.extend(before - after)
            self._to_publish.extend(b for b in self._blocks() if b.source == "poll"
                                    and b.window in after - before)
        self._log_block()

    def _blocks(self) -> list[Block]:
        return self.state.blocks()

    async def _sync(self) -> None:
        sharing = self.sharing
        assert sharing is not None
        await self.stops.publish(sharing)
        now = self.wall()
        for block in self._to_publish:
            await sharing.publish_block(block, now)
        for window in self._to_lift:
            await sharing.lift(window)
        self._to_publish, self._to_lift = [], []
        await self.budgets.sync(sharing)  # the clients' counts, per window period
        delta, self._unflushed = self._unflushed, 0.0
        answer = await sharing.sync(delta)
        if answer is None:
            self._unflushed += delta  # counted again at the next sync that works
            return
        total, doc, blocks, stop = answer
        self.stops.adopt(stop)
        self.state.tokens = total + self._unflushed
        for block in blocks:
            self.state.adopt(block, self.wall())
        if doc is not None and not sharing.leader and float(doc.get("at") or 0) > self._adopted_at:
            self._adopted_at = float(doc.get("at") or 0)
            change = self.poll.adopt(doc)
            if change is not None:
                log.log(change[0], change[1] + " (polled by another replica)")
            report = report_from_doc(doc.get("report"))
            if doc.get("ok") and report is not None:
                self.state.on_report(report, self._adopted_at, float(doc.get("tokens_at") or 0))
                self.budgets.observe(self.state)

    def pace(self, now: float) -> None:
        """Recompute the pacing rate (QUOTA_PACING=even) and hand it to the limiter."""
        if self.pacing_mode != "even":
            return
        views = self.state.views(now)
        # Pacing is decided for the account (its tokens, its requests in flight: this replica's
        # times the replicas), in the account's req/s; the limiter gives this replica its share.
        in_flight = self.limiter.admission.in_flight * self.replicas
        pacing = even_pacing(views, now=now, in_flight=in_flight,
                             tokens_per_request=self.state.tokens_per_request)
        if pacing.status == "paced":
            self._paced_rate = pacing.rate
        elif pacing.status == "calibrating" and self._paced_rate is not None:
            # A window just reset and the monitor has not said when the new one does: hold the
            # last rate for that poll rather than release everything queued into it at once.
            pacing = Pacing(self._paced_rate, None, None, "holding")
        if (pacing.status != (self.pacing.status if self.pacing else None)
                or pacing.window != (self.pacing.window if self.pacing else None)):
            log.info("quota pacing %s", pacing.status, extra={"fields": {
                "window": pacing.window, "rate": pacing.rate,
                "paused_until": pacing.paused_until}})
        self.pacing = pacing
        self.paused_until = pacing.paused_until
        self.limiter.set_quota_pacing(
            PAUSED_RATE if pacing.status == "paused" else pacing.rate)

    def _log_block(self) -> None:
        block = self.state.block
        if block == self._logged:
            return
        if block is None:
            log.warning("quota block over: requests go upstream again")
        else:
            now = self.wall()
            log.warning(
                "%s quota spent (%s, seen %s): %s until %s", _WINDOW_WORDS[block.window],
                block.code, "in an upstream 429" if block.source == "upstream" else
                "by the quota monitor" if block.source == "poll" else "by another replica",
                "answering locally" if self.local_reject else "QUOTA_LOCAL_REJECT=false, "
                "still forwarding", reset_stamp(block.until),
                extra={"fields": {"retry_after": math.ceil(block.retry_after(now))}})
        self._logged = block

    # -- /health and /metrics -------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = self.wall()
        windows: dict[str, Any] = {}
        for name in PERIODS:
            views = [v for v in self.state.views(now) if v.name == name]
            if not views:
                continue
            binding = self.state.view(name, now)
            windows[name] = {
                **_view_health(binding),
                # The month's tool calls stop no chat request: shown, never refused on.
                "blocks_requests": binding.window is not None,
                "units": {v.measure: _view_health(v) for v in views},
            }
        block = self.state.blocked(now)
        pacing = self.pacing
        return {
            "polling": {"interval_seconds": self.interval, "monitor": self.monitor_url,
                        **self.poll.as_dict()} if self.monitor else {"state": "off"},
            "shared": self.sharing.health() if self.sharing is not None else None,
            "level": self.state.level,
            "windows": windows,
            "unparsed": {
                "total": sum(n for _, n in self.state.unparsed_counts),
                "by_reason": dict(self.state.unparsed_counts),
                "entries": [{"reason": u.reason, "raw": u.raw, "truncated": u.truncated}
                            for u in self.state.unparsed]},
            "blocked": None if block is None else {
                "window": block.window, "code": block.code, "until": block.until,
                "retry_after": math.ceil(block.retry_after(now)), "source": block.source},
            "local_reject": self.local_reject,
            "pacing": {"mode": self.pacing_mode, "exempt": sorted(self.exempt),
                       **({"status": pacing.status, "rate": _round(pacing.rate),
                           "window": pacing.window, "unit": pacing.measure,
                           "paused_until": pacing.paused_until}
                          if pacing is not None else {})},
            "tokens_per_request": _round(self.state.tokens_per_request),
            "client_budgets": self.budgets.health(),
        }

    def refresh_gauges(self) -> None:
        now = self.wall()
        m = self.metrics
        for name, measure in self.state.windows:  # five series at most: bounded labels
            view = self.state.view(name, now, measure)
            for gauge, value in ((m.quota_used, view.used_ratio),
                                 (m.quota_remaining, view.remaining),
                                 (m.quota_reset, view.reset_at),
                                 (m.quota_eta, view.eta_seconds)):
                if value is None:
                    with contextlib.suppress(KeyError):
                        gauge.remove(name, measure)
                else:
                    gauge.labels(name, measure).set(value)
        if self.monitor is not None:
            m.quota_poll_up.labels().set(1.0 if self.poll.state == "ok" else 0.0)
        pacing = self.pacing
        m.quota_pacing_rate.set(pacing.rate or 0.0 if pacing is not None else 0.0)
        self.budgets.refresh_gauges()


def _view_health(view: WindowView) -> dict[str, Any]:
    """One budget on /health: used (estimated now and as polled), what is left, in `unit`."""
    eta = view.eta_seconds
    return {
        "unit": view.measure, "used_ratio": _round(view.used_ratio),
        "polled_used_ratio": _round(view.polled_used_ratio), "remaining": view.remaining,
        "allowance": view.allowance, "type": view.limit_type, "spent": view.spent,
        "reset_at": view.reset_at, "polled_at": view.polled_at,
        "burn_ratio_per_hour": None if view.burn_per_second is None
        else _round(view.burn_per_second * 3600),
        "exhaustion_eta_seconds": None if eta is None or math.isinf(eta) else round(eta, 1),
        "exhausts_before_reset": view.exhausts_before_reset,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
