"""Limiter state shared in Redis by every replica of every variant spending one Z.AI account.

Keys live under `zai-proxy:acct:<account>:limiter:` (never under the deployment variant: the
ceiling belongs to the account). Pieces:
- `RedisGate`: the GCRA pacer as a Lua script on Redis' own clock, so all replicas' sends are
  spaced evenly at the account's rate (`gate`), and the quota pacer (`pacer`). On any Redis
  failure it falls back to a local `Gcra` at rate / replicas (the live replica count seen last,
  at least RATE_LIMIT_REPLICAS), loudly, and retries Redis every `retry_interval` s.
- `SharedCoordinator`: one controller decides for the account: the one of the replica holding
  the account's leader lease (`zai_proxy.core.lease`, beaten every sync; the quota share polls
  under the same lease). Followers push their outcome counts and saturated time every
  sync (a second or less) and adopt the published state; the leader merges their counts into
  its own controller, which runs its windows on its own clock (no wall-clock alignment, no
  partial windows), and publishes rate, ceiling and floor after every change. The published
  state outlives the processes (it expires after RATE_LIMIT_STATE_MAX_AGE), so a new pod of
  either variant starts from it. While Redis is unreachable each replica decides alone.
Every Redis call goes through the process's one `RedisLink` (shared with the quota share and
the client quotas) and follows its policy (0.5 s timeout; a timeout, an error or a reply
the command cannot give degrades; skipped while backing off). What is read back is validated
where it is read: the script replies (a bad one degrades), the counts field by field, and the
state document by `LearnedState.from_redis` (zai_proxy/limiter/learned.py, which also writes
it): a value that is not finite and positive, a `seq` that is not a whole number, is dropped
and logged once, so a state holding "rate": NaN is not adopted.
The concurrency controller stays per replica (MAX_WORKERS is a per-replica cap).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import BadAnswer, LinkUser, RedisLink, number_reply
from zai_proxy.limiter.evidence import Adjustment, WindowStats
from zai_proxy.limiter.gcra import Gcra
from zai_proxy.limiter.learned import LearnedState
from zai_proxy.limiter.rate_controller import RateController

log = logging.getLogger("zai_proxy.shared_state")
T = TypeVar("T")

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - (tonumber(ARGV[2]) - 1) * interval - now
if wait > 1e-9 then return string.format('%.6f', math.max(wait, 0.000001)) end
redis.call('SET', KEYS[1], string.format('%.6f', tat + interval), 'PX', ARGV[3])
return '0'
"""
_REFUND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[1])
if tat < now then tat = now end
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', ARGV[2])
return 1
"""
_TAKE_COUNTS = """
local counts = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return counts
"""
MIN_WAIT = 1e-6  # the shortest wait the script answers (its replies have six decimals)
REPUBLISH_SECONDS = 60.0  # the leader rewrites an unchanged state this often (its TTL)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def namespace(account: str) -> str:
    """The Redis key prefix of an account's limiter state."""
    return f"zai-proxy:acct:{account}:limiter"


class SharedState(LinkUser):
    """The limiter's view of the process's Redis link: its namespace, its loud local fallback
    (logged when the link degrades), and the live replica count."""

    def __init__(self, link: RedisLink, *, namespace: str = "zai-proxy:limiter",
                 replicas: int = 1) -> None:
        super().__init__(link)
        self.ns, self.configured_replicas = namespace, max(1, replicas)
        self.live_replicas: int | None = None  # members seen at the last heartbeat

    @property
    def replicas(self) -> int:
        """How many replicas share the account: the live count, never below the configured.

        While Redis is away this divides the fallback share: during a variant switch more pods
        than RATE_LIMIT_REPLICAS are live, and dividing by the configured count alone would
        let them together exceed the account's rate.
        """
        return max(self.configured_replicas, self.live_replicas or 0)

    def key(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    def gate(self, name: str, burst: float = 1.0) -> RedisGate:
        """A GCRA pacer shared by every replica under `name` (`gate`, `pacer`)."""
        return RedisGate(self, self.key(name), burst)

    def health(self) -> dict[str, object]:
        """For /health: `degraded` and why, and how many replicas share the account."""
        return {"degraded": self.degraded, "reason": self.reason, "replicas": self.replicas,
                "live_replicas": self.live_replicas, "namespace": self.ns}

    def on_degraded(self, exc: BaseException) -> None:
        log.error("shared limiter state degraded, local limits / %d apply: %r",
                  self.replicas, exc)

    def on_recovered(self) -> None:
        log.warning("shared limiter state recovered: Redis answers again")

    async def ping(self) -> bool:
        """Check Redis now (also ends the back-off); True when reachable."""
        return await self.link.ping()


class RedisGate:
    """A `Gate` (see `zai_proxy.limiter.gcra`) shared through Redis, local while Redis is away."""

    def __init__(self, shared: SharedState, key: str, burst: float = 1.0) -> None:
        self.shared, self.key, self.burst = shared, key, max(1.0, burst)
        self._take = shared.redis.register_script(_TAKE)
        self._refund = shared.redis.register_script(_REFUND)
        self._local: Gcra | None = None

    def _fallback(self, now: float) -> Gcra:
        if self._local is None:
            self._local = Gcra(now, self.burst)
        return self._local

    async def take(self, rate: float, now: float) -> float:
        """One slot at the account's `rate`, or the local fallback at rate / replicas."""
        interval = 1.0 / max(rate, 1e-6)

        async def take() -> float:
            reply = await self._take(
                keys=[self.key], args=[repr(interval), repr(self.burst), 60_000])
            wait = number_reply(reply, "take")
            if wait < 0:
                raise BadAnswer(f"take: negative wait {wait}")
            # Only the exact answer 0 took the slot: a wait below the reply's precision
            # ("0.000000", from a script of an older version) is still a wait.
            return 0.0 if reply in (b"0", "0", 0) else max(wait, MIN_WAIT)

        answer = await self.shared.call(take)
        if answer is not None:
            return answer
        return self._fallback(now).try_take(rate / self.shared.replicas, now)

    async def refund(self, rate: float, now: float) -> None:
        if self.shared.degraded:
            self._fallback(now).give_back(rate / self.shared.replicas, now)
            return
        interval = 1.0 / max(rate, 1e-6)
        await self.shared.call(lambda: self._refund(keys=[self.key],
                                                    args=[repr(interval), 60_000]))


class SharedCoordinator:
    """Keeps one replica's `RateController` in agreement with the account (see module doc).

    Call `sync()` on the limiter's tick (at most a second apart: the lease expires after
    `LOCK_SECONDS`). `lease` is the account's one lease (`create_app` passes the
    one the quota share uses too); by default one of its own under the state's namespace.
    """

    def __init__(
        self,
        shared: SharedState,
        controller: RateController,
        *,
        wall: Callable[[], float] = time.time,
        state_ttl: float = 6 * 3600.0,
        lease: LeaderLease | None = None,
    ) -> None:
        self.shared, self.controller, self.wall = shared, controller, wall
        self.lease = lease if lease is not None else LeaderLease(shared.link, shared.ns)
        self.id = self.lease.id
        self.state_ttl = int(state_ttl)
        self.leader = False
        self._take_counts = shared.redis.register_script(_TAKE_COUNTS)
        self._seen = -1  # sequence number of the last state adopted or published
        self._published: tuple[Any, ...] | None = None
        self._published_at = 0.0
        controller.auto_evaluate = False  # until this replica knows it leads

    def _learned(self) -> tuple[Any, ...]:
        c = self.controller
        return (round(c.rate, 6), c.upper, c.floor)

    async def read(self) -> LearnedState | None:
        """The account's published state (for a starting replica), None if none or unusable.

        Only valid values are kept (`LearnedState.from_redis`): a rate that is not finite and
        positive, a `seq` that is not a whole number, an `at` that is not a finite time is
        dropped (logged once), so nothing else has to doubt them.
        """

        async def get() -> bytes | str | None:
            raw = await self.shared.redis.get(self.shared.key("state"))
            if raw is not None and not isinstance(raw, bytes | str):
                raise BadAnswer(f"GET state: {raw!r:.60}")
            return raw

        raw = await self.shared.call(get)
        if raw is None:
            return None
        try:
            state = json.loads(raw)
        except ValueError:  # UnicodeDecodeError is one too
            self.shared.ignored("state (not JSON)", raw)
            return None
        if not isinstance(state, dict):
            self.shared.ignored("state (not an object)", state)
            return None
        return LearnedState.from_redis(
            state, ignored=lambda bad, value: self.shared.ignored(str(bad.field), value))

    async def load(self) -> dict[str, Any] | None:
        """`read()` as the published document's usable keys."""
        state = await self.read()
        return None if state is None else state.to_redis(known_only=True)

    async def sync(self) -> list[Adjustment]:
        """Heartbeat, then lead (merge counts, publish) or follow (push counts, adopt)."""
        c = self.controller
        beat = await self.lease.beat()
        if beat is None:  # Redis away: decide alone on this replica's own counts
            c.auto_evaluate, self.leader = True, False
            return []
        self.shared.live_replicas, leading = beat
        if leading != self.leader or leading != c.auto_evaluate:
            log.info("shared limiter: %s", "leading" if leading else "following")
            self.leader = leading
            c.auto_evaluate = leading  # a follower pushes its counts below instead
        if leading:
            return await self._lead()
        return await self._follow()

    async def _take_counts_now(self) -> dict[str, float]:
        """The counts the followers pushed (and clear them); bad entries dropped, logged once."""
        raw = await self._take_counts(keys=[self.shared.key("counts")])
        if not isinstance(raw, list | tuple) or len(raw) % 2:
            raise BadAnswer(f"counts: {raw!r:.60}")
        values: dict[str, float] = {}
        for i in range(0, len(raw), 2):
            name, value = _text(raw[i]), raw[i + 1]
            try:
                number: float | None = number_reply(value, name)
            except BadAnswer:
                number = None
            if name not in _COUNTS or number is None or number < 0:
                self.shared.ignored(f"counts.{name[:40]}", value)
                continue
            values[name] = number
        return values

    async def _lead(self) -> list[Adjustment]:
        c = self.controller
        values = await self.shared.call(self._take_counts_now)
        # A state another replica wrote (an admin PUT on a follower): adopted before deciding,
        # else this leader would overwrite it with its own at the next publish.
        out = await self._adopt()
        if values:
            out += c.merge(WindowStats(
                ok=int(values.get("ok", 0)), limited=int(values.get("limited", 0)),
                congested=int(values.get("congested", 0)), other=int(values.get("other", 0)),
                saturated=values.get("saturated", 0.0),
                rate_seconds=values.get("rate_seconds", 0.0), sent=int(values.get("sent", 0))))
        if self._learned() != self._published or \
                self.wall() - self._published_at > REPUBLISH_SECONDS:
            await self.publish()
        return out

    async def publish(self) -> None:
        """Write this controller's decisions as the account's state."""
        c, r, key = self.controller, self.shared.redis, self.shared.key

        async def incr() -> int:
            seq = await r.incr(key("seq"))
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                raise BadAnswer(f"INCR seq: {seq!r:.60}")
            return seq

        seq = await self.shared.call(incr)
        if seq is None:
            return
        state = LearnedState(c.ceiling, c.hold, None, self.wall(), rate_upper=c.upper,
                             rate_floor=c.floor, rate_current=c.rate, seq=int(seq), by=self.id)
        document = json.dumps(state.to_redis())
        if await self.shared.call(lambda: r.set(key("state"), document,
                                                ex=self.state_ttl)) is not None:
            self._published, self._seen = self._learned(), int(seq)
            self._published_at = self.wall()

    async def _follow(self) -> list[Adjustment]:
        stats = self.controller.drain()
        fields = {"ok": stats.ok, "limited": stats.limited, "congested": stats.congested,
                  "other": stats.other, "saturated": stats.saturated,
                  "rate_seconds": stats.rate_seconds, "sent": stats.sent}
        if any(fields.values()):
            key = self.shared.key("counts")

            async def push() -> bool:
                pipe = self.shared.redis.pipeline()
                for name, value in fields.items():
                    if value:
                        pipe.hincrbyfloat(key, name, float(value))
                pipe.expire(key, 60)
                await pipe.execute()
                return True

            await self.shared.call(push)
        return await self._adopt()

    async def _adopt(self) -> list[Adjustment]:
        state = await self.read()
        # Without a sequence number or a rate there is nothing to order or adopt.
        if state is None or state.seq is None or state.rate_current is None \
                or state.seq <= self._seen:
            return []
        self._seen = state.seq
        if state.by == self.id:
            return []
        adopted = self.controller.adopt(state.rate_current, state.rate_upper, state.rate_floor)
        return [] if adopted is None else [adopted]


_COUNTS = frozenset({"ok", "limited", "congested", "other", "saturated", "rate_seconds", "sent"})
