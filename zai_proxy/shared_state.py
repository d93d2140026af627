"""State shared by the replicas of one variant in Redis: the global rate bucket and the ceiling.

- `SharedState` is a `RateGate`: a Lua token bucket (Redis' own clock, so replicas agree) at the
  global rate, shared by every replica. On any Redis failure it falls back to a local bucket at
  rate / `replicas`, sets `degraded` with a reason (for /health and
  `zai_proxy_shared_state_degraded`), logs loudly, and retries Redis every `retry_interval` s.
- `SharedCoordinator` makes the replicas' rate controllers agree: each replica adds its window's
  outcome counts to Redis; one leader (a renewed lock) decides on the global counts and
  publishes rate and ceiling; the others adopt them. While degraded, each replica decides
  alone on its own counts scaled by the replica count.
The concurrency controller stays per replica (MAX_WORKERS is a per-replica cap).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from zai_proxy.rate_controller import (
    Adjustment,
    Direction,
    RateController,
    TokenBucket,
    WindowStats,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, cap = tonumber(ARGV[1]), math.max(1, tonumber(ARGV[1]) * tonumber(ARGV[2]))
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = 1, now end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(wait)
"""
_REFUND = "redis.call('HINCRBYFLOAT', KEYS[1], 'tokens', 1) return 1"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedState:
    """Redis connection with a loud local fallback; implements `RateGate`."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "zai-proxy",
        replicas: int = 1,
        burst: float = 1.0,
        op_timeout: float = 0.5,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout
        )
        self.ns, self.replicas, self.burst = namespace, max(1, replicas), min(1.0, burst)
        self.retry_interval, self.clock = retry_interval, clock
        self.degraded = False
        self.reason: str | None = None
        self._retry_at = 0.0
        self._local: TokenBucket | None = None
        self._take_script = self.redis.register_script(_TAKE)
        self._refund_script = self.redis.register_script(_REFUND)

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    def health(self) -> dict[str, object]:
        """For /health: `degraded` and why."""
        return {"degraded": self.degraded, "reason": self.reason, "replicas": self.replicas}

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T | None:
        """Run a Redis operation; None (and degraded) when Redis fails or is still backing off."""
        if self.degraded and self.clock() < self._retry_at:
            return None
        try:
            result = await op()
        except (TimeoutError, aioredis.RedisError, OSError) as exc:
            if not self.degraded:
                log.error("shared state degraded, local limits / %d apply: %r", self.replicas, exc)
            self.degraded, self.reason = True, f"{type(exc).__name__}: {exc}"[:200]
            self._retry_at = self.clock() + self.retry_interval
            return None
        if self.degraded:
            log.warning("shared state recovered: Redis answers again")
            self.degraded, self.reason = False, None
        return result

    async def ping(self) -> bool:
        """Check Redis now (also ends the back-off); True when reachable."""
        self._retry_at = 0.0
        return bool(await self._call(self.redis.ping))

    async def take(self, rate: float, now: float) -> float:
        """One token from the global bucket, or from the local fallback at rate / replicas."""
        rate = max(rate, 1e-6)
        answer = await self._call(lambda: self._take_script(keys=[self.key("bucket")],
                                                             args=[repr(rate), repr(self.burst)]))
        if answer is not None:
            return float(_text(answer))
        local_rate = rate / self.replicas
        if self._local is None:
            self._local = TokenBucket(local_rate, now, self.burst)
        elif self._local.rate != local_rate:
            self._local.set_rate(local_rate, now)
        return self._local.try_take(now)

    async def refund(self, now: float) -> None:
        if self.degraded and self._local is not None:
            self._local.refund(now)
            return
        await self._call(lambda: self._refund_script(keys=[self.key("bucket")]))

    async def close(self) -> None:
        await self.redis.aclose()


class SharedCoordinator:
    """Keeps one replica's `RateController` in agreement with the others (see module doc).

    Call `sync()` often (at least every `grace` seconds; default grace = min(1 s, window / 5)).
    Windows are aligned on the wall clock so all replicas cut them at the same instants; each
    adds its counts at its first sync after a window ended, and the leader decides on the sum
    at its first sync `grace` seconds after the end, when every replica has added its counts.
    """

    def __init__(
        self,
        shared: SharedState,
        controller: RateController,
        *,
        wall: Callable[[], float] = time.time,
        grace: float | None = None,
    ) -> None:
        self.shared, self.controller, self.wall = shared, controller, wall
        self.window = controller.window
        self.grace = min(1.0, self.window / 5) if grace is None else grace
        self.id = uuid.uuid4().hex
        controller.auto_evaluate = False
        self._pushed = math.floor(wall() / self.window)  # last window whose counts we sent
        self._version = -1
        self._undecided: int | None = None  # window whose global counts await a decision

    async def sync(self) -> list[Adjustment]:
        """Push counts, decide (leader) or adopt (others); returns decisions taken here."""
        now = self.wall()
        current = math.floor(now / self.window)
        if current > self._pushed:
            ended, spanned, self._pushed = current - 1, current - self._pushed, current
            stats = self.controller.drain()
            stats.seconds = self.window * spanned
            key = self.shared.key("win", str(ended))
            if not await self.shared._call(lambda: self._push(key, stats)):
                # Degraded: decide alone; this replica carries 1/replicas of the load.
                stats.seconds /= self.shared.replicas
                return [self.controller.decide(stats)]
            self._undecided = ended
        if self._undecided is None or now < (self._undecided + 1) * self.window + self.grace:
            return [] if self.shared.degraded else await self._adopt()
        ended, self._undecided = self._undecided, None
        if not await self._lead():
            return await self._adopt()
        key = self.shared.key("win", str(ended))
        raw: Any = await self.shared._call(lambda: self.shared.redis.hgetall(key))
        if not raw:
            return []
        total = {_text(k): int(v) for k, v in raw.items()}
        decision = self.controller.decide(WindowStats(
            total.get("ok", 0), total.get("limited", 0), total.get("other", 0),
            bool(total.get("demand", 0)), self.window))
        await self._publish(ended)
        return [decision]

    async def _push(self, key: str, stats: WindowStats) -> bool:
        pipe = self.shared.redis.pipeline()
        pipe.hincrby(key, "ok", stats.ok)
        pipe.hincrby(key, "limited", stats.limited)
        pipe.hincrby(key, "other", stats.other)
        if stats.demand:
            pipe.hset(key, "demand", 1)
        pipe.expire(key, int(self.window * 10) + 10)
        await pipe.execute()
        return True

    async def _lead(self) -> bool:
        """Hold (or take) the leader lock for three windows."""
        r, key, ttl = self.shared.redis, self.shared.key("leader"), int(self.window * 3000)
        taken = await self.shared._call(lambda: r.set(key, self.id, nx=True, px=ttl))
        if taken:
            return True
        holder = await self.shared._call(lambda: r.get(key))
        if holder is not None and _text(holder) == self.id:
            await self.shared._call(lambda: r.pexpire(key, ttl))
            return True
        return False

    async def _publish(self, window: int) -> None:
        c = self.controller
        state = {"rate": c.rate, "ceiling": c.ceiling, "window": window, "by": self.id}
        r = self.shared.redis
        await self.shared._call(lambda: r.set(self.shared.key("state"), json.dumps(state)))

    async def _adopt(self) -> list[Adjustment]:
        r = self.shared.redis
        raw = await self.shared._call(lambda: r.get(self.shared.key("state")))
        if raw is None:
            return []
        state = json.loads(raw)
        if state.get("by") == self.id or state.get("window", -1) <= self._version:
            return []
        self._version = int(state["window"])
        c = self.controller
        if state.get("ceiling") is not None:
            c.ceiling = max(c.minimum, min(c.maximum, float(state["ceiling"])))
        previous, c.rate = c.rate, c._clamp(float(state["rate"]))
        if c.rate == previous:
            return []
        direction: Direction = "increase" if c.rate > previous else "decrease"
        return [Adjustment(direction, "adopted from leader", c.rate, c.ceiling)]
