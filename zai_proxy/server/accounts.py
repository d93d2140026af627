"""One Z.AI account at work: the account, the limiter and the plan quota that learn its limits,
and the upstream pool that carries its key.

Z.AI's rate ceilings and plan quota belong to an account, so each account owns its own limiter
and quota (and learned-state file, and Redis namespace, both named by the account id); nothing
here is shared between two `AccountRuntime`s. The proxy serves one account (`account_of`, from
ZAI_API_KEY and the ZAI_* bases); a second account would be a second instance, built the same way.
`create_app` builds it, starts it with the app and stops it with the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import RedisLink
from zai_proxy.limiter.client_class import ClassOf, default_class
from zai_proxy.limiter.config import LimiterConfig
from zai_proxy.limiter.limiter import Limiter
from zai_proxy.limiter.shared import namespace
from zai_proxy.observe.metrics import Metrics
from zai_proxy.quota.budgets import no_shares
from zai_proxy.quota.client_budgets import SharesOf
from zai_proxy.quota.config import QuotaConfig
from zai_proxy.quota.hook import QuotaHook
from zai_proxy.quota.quota import Quota
from zai_proxy.relay.upstream import Upstream
from zai_proxy.server.config import Settings
from zai_proxy.wire.routing import Router
from zai_proxy.zai.account import Account


def account_of(settings: Settings) -> Account:
    """The account the settings name: ZAI_API_KEY at ZAI_TARGET_URL / ZAI_ANTHROPIC_URL."""
    return Account(key=settings.zai_api_key, openai_base=settings.zai_target_url,
                   anthropic_base=settings.zai_anthropic_url, monitor_url=settings.monitor_url)


class AccountRuntime:
    """An account's limiter, quota (with its request hook), upstream pool and router.

    `clock`, `wall` and `sleep` are injected (tests pass virtual time); `transport` replaces the
    upstream connection pool and the quota monitor's transport (tests pass fakes). `link` is the
    process's Redis link (None without Redis): the account takes its own leader lease on it,
    shared by its limiter and its quota; the link itself belongs to the process, which closes it.
    `shares_of` gives each client's share of the plan's windows (the roster's, read per request).
    `class_of` gives each client's weight, priority and in-flight cap to the admission queue;
    `client_label` names a client in the per-client metrics (see `Limiter`).
    """

    def __init__(self, account: Account, settings: Settings, metrics: Metrics, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 link: RedisLink | None = None, shares_of: SharesOf = no_shares,
                 class_of: ClassOf = default_class,
                 client_label: Callable[[str], str] = str) -> None:
        self.account = account
        lease = LeaderLease(link, namespace(account.id)) if link is not None else None
        self.limiter = Limiter(limiter_config(settings, account), metrics, clock=clock,
                               wall=wall, sleep=sleep, link=link, lease=lease,
                               class_of=class_of, client_label=client_label)
        self.quota = Quota(quota_config(settings, account), metrics, self.limiter,
                           transport=transport, wall=wall, clock=clock, sleep=sleep, link=link,
                           lease=lease, key_kind=account.key_kind, shares_of=shares_of)
        self.quota_hook = QuotaHook(self.quota)
        self.upstream = Upstream(connect_timeout=settings.connect_timeout,
                                 first_byte_timeout=settings.first_byte_timeout,
                                 chunk_timeout=settings.chunk_timeout,
                                 # Every admitted request needs a connection: never fewer than
                                 # the cap.
                                 pool_size=max(settings.upstream_pool_size, settings.max_workers),
                                 transport=transport, api_key=account.key)
        self.router = Router(account.openai_base, account.anthropic_base,
                             passthrough_unknown=settings.passthrough_unknown)

    def __repr__(self) -> str:
        return f"AccountRuntime({self.account!r})"

    async def start(self) -> None:
        """Adopt the learned state, then start the limiter's and the quota's background work."""
        await self.limiter.restore()
        self.limiter.start()
        self.quota.start()

    async def stop(self) -> None:
        """Stop the quota, then the limiter (persisting what it learned), then the pool."""
        await self.quota.stop()
        await self.limiter.stop()
        await self.upstream.aclose()


def limiter_config(settings: Settings, account: Account) -> LimiterConfig:
    """The limiter's section of the settings, for `account`."""
    return LimiterConfig(
        account=account.id, deployment_variant=settings.deployment_variant,
        max_workers=settings.max_workers, rate_limit_initial=settings.rate_limit_initial,
        rate_limit_min=settings.rate_limit_min, rate_limit_max=settings.rate_limit_max,
        rate_limit_window=settings.rate_limit_window, rate_limit_burst=settings.rate_limit_burst,
        rate_limit_upstream_burst=settings.rate_limit_upstream_burst,
        rate_limit_hold_margin=settings.rate_limit_hold_margin,
        rate_limit_probe_interval=settings.rate_limit_probe_interval,
        rate_limit_state_file=settings.rate_limit_state_file,
        rate_limit_state_max_age=settings.rate_limit_state_max_age,
        rate_limit_storage_uri=settings.rate_limit_storage_uri,
        rate_limit_replicas=settings.rate_limit_replicas, queue_max=settings.queue_max,
        queue_timeout_seconds=settings.queue_timeout_seconds,
        admission_batch_floor=settings.admission_batch_floor)


def quota_config(settings: Settings, account: Account) -> QuotaConfig:
    """The quota's section of the settings, for `account`."""
    return QuotaConfig(
        account=account.id, zai_api_key=account.key,
        monitor_url=account.monitor_url, quota_poll_seconds=settings.quota_poll_seconds,
        quota_poll_timeout=settings.quota_poll_timeout,
        quota_local_reject=settings.quota_local_reject, quota_pacing=settings.quota_pacing,
        quota_pacing_exempt=settings.quota_pacing_exempt,
        quota_burn_window=settings.quota_burn_window,
        rate_limit_storage_uri=settings.rate_limit_storage_uri,
        rate_limit_replicas=settings.rate_limit_replicas,
        account_stop_probe_seconds=settings.account_stop_probe_seconds)
