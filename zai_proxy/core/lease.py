"""The account's one leader lease: which replica decides for the account, and how many share it.

Every replica of every variant spending one account beats the lease (`beat`) through the
process's `RedisLink`: it registers in a member set (`members`, a sorted set scored by Redis'
own clock in ms, members silent for `STALE_SECONDS` dropped) and takes or renews the leader lock
(`leader`, expiring `LOCK_SECONDS` after the holder's last beat, so a dead leader is replaced
that soon). One script does both, atomically, on Redis' clock.

One lease serves every user in the process: the limiter's coordinator beats it each tick and
leads the controller while it holds it; the quota share polls the monitor only while it holds
it. Both read `held`, so a process never leads one and follows the other. A failed beat (Redis
away, a reply the script cannot give) answers None and drops the lease (`held` False): without
Redis every replica decides alone.
"""

from __future__ import annotations

import uuid

from zai_proxy.core.redis_link import BadAnswer, RedisLink

LOCK_SECONDS = 3.0  # a leader silent this long is replaced
STALE_SECONDS = 5.0  # a member silent this long no longer counts

# Register this replica, drop members silent for ARGV[3] ms, take or renew the leader lock.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local leader = redis.call('GET', KEYS[2])
if not leader then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  leader = ARGV[1]
elseif leader == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {redis.call('ZCARD', KEYS[1]), leader == ARGV[1] and 1 or 0}
"""


class LeaderLease:
    """One process's hold on the account's leader lock, under `namespace` (`<ns>:members`,
    `<ns>:leader`); `id` names this process in both (and in what it publishes)."""

    def __init__(self, link: RedisLink, namespace: str) -> None:
        self.link, self.namespace = link, namespace
        self.id = uuid.uuid4().hex
        self.lock_ms = int(LOCK_SECONDS * 1000)
        self.stale_ms = int(STALE_SECONDS * 1000)
        self.held = False
        self.members: int | None = None  # live members seen at the last beat
        self._script = link.redis.register_script(_HEARTBEAT)

    async def beat(self) -> tuple[int, bool] | None:
        """Register and take or renew the lock: (live members, whether this process leads),
        or None when Redis failed (then `held` is False)."""

        async def heartbeat() -> tuple[int, bool]:
            beat = await self._script(
                keys=[f"{self.namespace}:members", f"{self.namespace}:leader"],
                args=[self.id, self.lock_ms, self.stale_ms])
            # The script answers [members, 1 if this replica leads else 0], nothing else.
            if not isinstance(beat, list | tuple) or len(beat) != 2 or \
                    not all(isinstance(v, int) and not isinstance(v, bool) for v in beat) or \
                    beat[0] < 1 or beat[1] not in (0, 1):
                raise BadAnswer(f"heartbeat: {beat!r:.60}")
            return int(beat[0]), bool(beat[1])

        answer = await self.link.call(heartbeat)
        if answer is None:
            self.held = False
            return None
        self.members, self.held = answer
        return answer
