"""Optional per-client limits (requests and tokens per period) with the `limits` library.

`CLIENT_RATE_LIMITS` syntax: items separated by `;` or `,`, each in `limits` notation; an item
prefixed `tokens:` limits tokens, any other (optionally prefixed `requests:`) limits requests.
Every client key gets its own counters. Examples:

    600/minute                              600 requests per minute per client
    600/minute; 10/second                   both must hold
    600/minute; tokens:100000/minute        plus 100k tokens per minute per client

Requests use a moving window (exact); tokens a fixed window (one counter, whatever the cost).
Storage from `RATE_LIMIT_STORAGE_URI`: `memory://` (default) or `redis://host:port/0`.

With Redis, the counters live in `limits`' async Redis storage on its redis-py implementation
(`implementation="redispy"`), built on the connection pool of the process's one `RedisLink`
(`create_app` passes it): the same client library and the same connections as the shared
limiter state and the quota share, no second client. Every storage call goes through that
link, so it follows the one policy: bounded by `op_timeout` (0.5 s), a failure (timeout, error,
nonsense answer) marks the link, so the quotas, `degraded` (logged once, `health()`), storage is
then skipped for `retry_interval` seconds, and the first call that works afterwards logs the
recovery. While degraded, and for the
request whose storage call failed, the request is allowed and its tokens go uncounted: a client
quota is fairness between workers, the account itself stays protected by the limiter, and a
stalled Redis must cost a request at most one timeout, never the client's own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter
from limits.storage import storage_from_string

from zai_proxy.core.redis_link import BadAnswer, RedisLink, Timeout, finite

log = logging.getLogger("zai_proxy.client_quotas")
T = TypeVar("T")


@dataclass(frozen=True)
class QuotaDecision:
    """`allowed`, else which limit (`limit`, e.g. "tokens 100000/1 minute") and `retry_after` s."""

    allowed: bool
    limit: str | None = None
    retry_after: float = 0.0


ALLOWED = QuotaDecision(True)


def parse_client_limits(spec: str) -> tuple[list[RateLimitItem], list[RateLimitItem]]:
    """(request limits, token limits) from `CLIENT_RATE_LIMITS`; ValueError when malformed."""
    requests: list[RateLimitItem] = []
    tokens: list[RateLimitItem] = []
    for raw in re.split(r"[;,]", spec):
        item = raw.strip()
        if not item:
            continue
        kind, sep, rest = item.partition(":")
        target = requests
        if sep and kind.strip().lower() in ("tokens", "requests"):
            target = tokens if kind.strip().lower() == "tokens" else requests
            item = rest.strip()
        try:
            target.append(parse(item))
        except ValueError as exc:
            raise ValueError(f"CLIENT_RATE_LIMITS: cannot parse {raw.strip()!r}") from exc
    return requests, tokens


def async_storage_uri(uri: str) -> str:
    """`limits`' async scheme for a configured storage URI."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def _degraded(exc: BaseException) -> None:
    log.error("client quota storage degraded: requests allowed without client quotas "
              "until it answers again: %r", exc)


def _recovered() -> None:
    log.warning("client quota storage recovered: client quotas apply again")


def redis_storage(link: RedisLink) -> RedisStorage:
    """`limits`' async Redis storage on the link's redis-py connection pool."""
    pool = link.redis.connection_pool
    return RedisStorage("async+redis://", implementation="redispy", connection_pool=pool)


class ClientLimits:
    """Per-client request and token limits; `enabled` is False when no limit is configured.

    `link` is the process's Redis link (with a `redis://` `storage_uri`; without one, a link
    of its own is made for that URI); `storage` replaces the one `storage_uri` names (tests pass
    a fake); `op_timeout`, `retry_interval`, `clock` and `timeout` are those of the link made
    here when none is passed (see the module doc).
    """

    def __init__(
        self,
        spec: str = "",
        storage_uri: str = "memory://",
        *,
        prefix: str = "zai-proxy",
        wall_clock: Callable[[], float] = time.time,
        storage: Any = None,
        op_timeout: float = 0.5,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: Timeout = asyncio.timeout,
        link: RedisLink | None = None,
    ) -> None:
        self.request_limits, self.token_limits = parse_client_limits(spec)
        redis = storage is None and RedisLink.names_redis(storage_uri)
        if link is None:
            settings: dict[str, Any] = {"op_timeout": op_timeout, "retry_interval": retry_interval,
                                        "clock": clock, "timeout": timeout}
            link = (RedisLink.connect(storage_uri, **settings) if redis
                    else RedisLink(None, **settings))
        if storage is None:
            storage = (redis_storage(link) if redis
                       else storage_from_string(async_storage_uri(storage_uri)))
        self._requests: RateLimiter = MovingWindowRateLimiter(storage)
        self._tokens: RateLimiter = FixedWindowRateLimiter(storage)
        self.prefix, self._wall = prefix, wall_clock
        self.link = link
        link.watch(_degraded, _recovered)

    @property
    def enabled(self) -> bool:
        return bool(self.request_limits or self.token_limits)

    def health(self) -> dict[str, Any]:
        """For /health: whether the storage is degraded (quotas not applied) and why."""
        return {"degraded": self.link.degraded, "reason": self.link.reason}

    async def _call(self, op: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T | None:
        return await self.link.call(functools.partial(op, *args, **kw))

    async def _allowed(self, limiter: RateLimiter, item: RateLimitItem, *ids: str,
                       cost: int = 1) -> bool | None:
        """`limiter.test`: None when the storage failed; a non-bool answer is a failure."""

        async def test() -> bool:
            answer = await limiter.test(item, *ids, cost=cost)
            if not isinstance(answer, bool):
                raise BadAnswer(f"limits test: {answer!r:.60}")
            return answer

        return await self.link.call(test)

    async def _retry_after(self, limiter: RateLimiter, item: RateLimitItem,
                           *ids: str) -> float | None:
        """Seconds until `item` has room again; None when the storage failed. A reset time
        that is not within a period of now (either way: clocks differ a little) is nonsense
        (a storage answering garbage reads as "exhausted"): a failure, so allowed."""

        async def stats() -> float:
            window = await limiter.get_window_stats(item, *ids)
            reset = finite(getattr(window, "reset_time", None))
            period = float(item.get_expiry())
            after = None if reset is None else reset - self._wall()
            if after is None or not -period <= after <= 2 * period:
                raise BadAnswer(f"limits window reset: {window!r:.80}")
            return min(max(1.0, after), period)

        return await self.link.call(stats)

    async def check(self, client_id: str, tokens: int = 0) -> QuotaDecision:
        """Count one request (and `tokens` expected input tokens) unless a limit is exhausted;
        allowed whenever the storage fails or is degraded (see the module doc)."""
        if not self.enabled:
            return ALLOWED
        req_ids, tok_ids = (self.prefix, "req", client_id), (self.prefix, "tok", client_id)
        checks = [(self._requests, item, req_ids, "requests", 1) for item in self.request_limits]
        checks += [(self._tokens, item, tok_ids, "tokens", max(1, tokens))
                   for item in self.token_limits]
        for limiter, item, ids, kind, cost in checks:
            allowed = await self._allowed(limiter, item, *ids, cost=cost)
            if allowed is None:
                return ALLOWED
            if not allowed:
                after = await self._retry_after(limiter, item, *ids)
                if after is None:
                    return ALLOWED
                return QuotaDecision(False, f"{kind} {item}", after)
        for item in self.request_limits:
            if await self._call(self._requests.hit, item, *req_ids) is None:
                return ALLOWED
        if tokens > 0:
            await self._hit_tokens(client_id, tokens)
        return ALLOWED

    async def _hit_tokens(self, client_id: str, tokens: int) -> None:
        for item in self.token_limits:
            # Counted even past the limit: usage is what it was; the next request is refused.
            if await self._call(self._tokens.hit, item, self.prefix, "tok", client_id,
                                cost=tokens) is None:
                return

    async def record_tokens(self, client_id: str, tokens: int) -> None:
        """Add tokens known after the response (output, or input not counted in `check`);
        not counted while the storage fails."""
        if tokens <= 0 or not self.token_limits:
            return
        await self._hit_tokens(client_id, tokens)
