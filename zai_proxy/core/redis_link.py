"""The process's one Redis connection, which degrades instead of failing: the one policy every
Redis user (shared limiter state, quota sharing, client quotas) follows.

`create_app` makes one `RedisLink` (one redis-py client, one connection pool) and passes it to
each user. `RedisLink.call(op)` runs one Redis operation under a bounded timeout (`op_timeout`,
0.5 s by default). A failure turns the link `degraded` (with a short `reason`), told once to
every user that `watch`es it (each logs what its fallback is); while degraded no operation of
any user is tried for `retry_interval` seconds (each answers None at once, so a lost or stalled
Redis never slows a request by more than one timeout); the first success afterwards, whoever
makes it, tells every user it recovered and clears it.

A failure is anything the operation raises: a timeout, a Redis or socket error, and also an
answer that is not what the command returns (`BadAnswer`, or the ValueError/TypeError a client
library raises parsing it): a Redis that answers nonsense (a wrong port, a proxy that says `+OK`
to everything) is as unusable as one that is down, and must never surface as an exception in a
request or at startup. Values that are well-formed but unusable (a stored document holding NaN)
are the caller's to drop; `ignored` logs each kind of those once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")

log = logging.getLogger("zai_proxy.redis_link")

Timeout = Callable[[float], AbstractAsyncContextManager[Any]]
# Operations of one link at once; the others wait their turn within their timeout. redis-py's
# pool fails an operation at once when all its connections (100) are taken: a burst of requests
# on an idle proxy, each taking a send slot, would degrade the link for every user.
MAX_CONNECTIONS = 32


class BadAnswer(ValueError):
    """Redis answered something the command cannot return: treated like a failed call."""


class RedisLink:
    """One Redis client and the degrade-and-retry policy every user of it shares.

    `redis` is the client (redis-py asyncio; tests pass a fake; None for a link with nothing
    behind it, whose calls all run `op` as given). `timeout` makes the context manager that
    bounds each call (`asyncio.timeout`; tests pass one on virtual time). Users subscribe with
    `watch` to say what degrading means for them; the state (`degraded`, `reason`, the back-off)
    is the link's, so a Redis that hangs, lies or is down degrades every user at once, and the
    first call that works recovers them all.
    """

    def __init__(self, redis: Any = None, *, op_timeout: float = 0.5,
                 retry_interval: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 timeout: Timeout = asyncio.timeout) -> None:
        self.redis = redis
        self.op_timeout, self.retry_interval, self.clock = op_timeout, retry_interval, clock
        self._timeout = timeout
        self.degraded = False
        self.reason: str | None = None
        self._retry_at = 0.0
        self._ignored: set[str] = set()
        self._watchers: list[tuple[Callable[[BaseException], None], Callable[[], None]]] = []
        self._closed = False
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    @staticmethod
    def names_redis(uri: str) -> bool:
        """Whether a configured storage URI names Redis (so the process opens its link), rather
        than `limits`' in-process memory storage."""
        return uri.removeprefix("async+").startswith("redis")

    @classmethod
    def connect(cls, url: str, *, op_timeout: float = 0.5, **kw: Any) -> RedisLink:
        """A link with a redis-py client (one connection pool) for `url` (`redis://...`; the
        `async+` prefix of a `limits` URI is accepted). Connecting is lazy: nothing is sent
        before the first call."""
        client = aioredis.Redis.from_url(url.removeprefix("async+"), socket_timeout=op_timeout,
                                         socket_connect_timeout=op_timeout)
        return cls(client, op_timeout=op_timeout, **kw)

    def watch(self, on_degraded: Callable[[BaseException], None],
              on_recovered: Callable[[], None]) -> None:
        """Call `on_degraded(exc)` once when the working link fails (log what the fallback is)
        and `on_recovered()` once when the degraded link answers again."""
        self._watchers.append((on_degraded, on_recovered))

    async def call(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """Run a Redis operation within `op_timeout`; None (and degraded) when it fails (see
        the module doc) or the link is still backing off. `op` should validate what it reads
        and raise `BadAnswer` for a reply the command cannot give."""
        if self.degraded and self.clock() < self._retry_at:
            return None
        try:
            async with self._timeout(self.op_timeout), self._slots:
                result = await op()
        except Exception as exc:  # every failure degrades; cancellation is not an Exception
            if isinstance(exc, TimeoutError) and not str(exc):
                exc = TimeoutError(f"no answer within {self.op_timeout:g} s")
            was_degraded = self.degraded
            self.degraded, self.reason = True, f"{type(exc).__name__}: {exc}"[:200]
            self._retry_at = self.clock() + self.retry_interval
            if not was_degraded:
                for on_degraded, _ in self._watchers:
                    on_degraded(exc)
            return None
        if self.degraded:
            self.degraded, self.reason = False, None
            for _, on_recovered in self._watchers:
                on_recovered()
        return result

    async def ping(self) -> bool:
        """Check Redis now (also ends the back-off); True when reachable."""
        self._retry_at = 0.0
        return bool(await self.call(self.redis.ping))

    def ignored(self, what: str, value: object) -> None:
        """Log (once per `what`) a value read from Redis that is dropped as unusable."""
        if what in self._ignored:
            return
        self._ignored.add(what)
        log.warning("ignored a bad value read from Redis (logged once): %s = %.80r", what, value)

    async def aclose(self) -> None:
        """Close the client (once; a second call does nothing). Closing a broken connection
        never fails: it only happens at shutdown."""
        if self._closed or self.redis is None:
            return
        self._closed = True
        try:
            await self.redis.aclose()
        except Exception:
            log.debug("closing the Redis connection failed", exc_info=True)


class LinkUser:
    """A user of the process's `RedisLink`: its client, its shared degraded state and its
    guarded `call`, with the user's own `on_degraded`/`on_recovered` watching the link."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        link.watch(self.on_degraded, self.on_recovered)

    @property
    def redis(self) -> Any:
        return self.link.redis

    @property
    def degraded(self) -> bool:
        return self.link.degraded

    @property
    def reason(self) -> str | None:
        return self.link.reason

    async def call(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """`RedisLink.call`: None when Redis failed or the link is backing off."""
        return await self.link.call(op)

    def ignored(self, what: str, value: object) -> None:
        self.link.ignored(what, value)

    def on_degraded(self, exc: BaseException) -> None:
        """The link failed: say what this user falls back to."""

    def on_recovered(self) -> None:
        """The link answers again."""


def finite(value: object) -> float | None:
    """`value` as a finite float when it is a number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number - number == 0 else None  # NaN and ±inf fail this


def number_reply(value: object, what: str) -> float:
    """A finite number Redis sent as an integer, float, or its decimal text; else BadAnswer."""
    if isinstance(value, bytes | str):
        try:
            value = float(value)
        except ValueError:
            raise BadAnswer(f"{what}: {value!r:.60}") from None
    number = finite(value)
    if number is None:
        raise BadAnswer(f"{what}: {value!r:.60}")
    return number
