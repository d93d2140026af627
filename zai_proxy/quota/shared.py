"""Quota state shared by every replica of one account through Redis.

Keys live under `zai-proxy:acct:<account>:quota:` (the account, never the deployment variant:
v1 and v2 spend the same plan):

- `leader`: the replica that polls the monitor. Only the holder of the account's leader lease
  (`zai_proxy.core.lease`, the one the limiter's coordinator leads under) takes it, renews it each
  poll (it expires after three poll intervals) and gives it back when it no longer holds the
  lease. The key stays a lock of its own so that a replica of the previous version, which polls
  while it holds this key, and one of this version never poll together: whoever holds it polls,
  the other waits for it to expire or be given back.
- `report`: the leader's last poll as JSON (`at`, `ok`, `reason`, `detail`, `tokens_at`, the
  parsed `report`), which the other replicas adopt instead of polling;
- `tokens`: the tokens every replica counted (each adds its own once a tick), so the cost of a
  token and the burn rate are the account's, not one replica's share;
- `block:<window>`: a spent window one replica learned (an upstream quota code, or a poll),
  until its reset, so the others stop at once; the daily call limit too, which no poll shows;
- `stop`: the account stopped by Z.AI (`quota.stop`), as the replica that met it saw it. It has
  no reset: it stays until a replica's probe is answered OK and deletes it (a replica that saw
  the document and finds it gone lifts its own stop); it expires after a day without a probe
  renewing it;
- `probe`: taken (SET NX, for one probe interval) by the replica whose probe goes, so the
  replicas of both variants together send one probe per interval;
- `clients:<window>:<period>`: a hash of each client's tokens in a window's period (the period
  named by its reset time, to the minute), to which each replica adds its own once a tick
  (HINCRBYFLOAT) and whose totals it reads back, so a client's share of the budget is refused on
  its use through every replica of both variants; it expires an hour after the reset.

Every call goes through the process's one `RedisLink`. Any Redis failure (see
`zai_proxy.core.redis_link`: a timeout, an error, an answer no command gives) makes the link,
so the share, `degraded` (logged once, shown on /health): each replica then polls the monitor
and counts tokens on its own until Redis answers again. Documents read back (the report, the
blocks) are validated field by field: one that is not usable is ignored (logged once).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from typing import Any, TypeVar, get_args

from zai_proxy.core.lease import LeaderLease
from zai_proxy.core.redis_link import BadAnswer, LinkUser, RedisLink, finite, number_reply
from zai_proxy.quota.client_budgets import Flush
from zai_proxy.quota.state import Block
from zai_proxy.quota.stop import Stopped
from zai_proxy.zai.codes import Window, lookup
from zai_proxy.zai.monitor_report import (
    MAX_RAW_CHARS,
    MAX_UNPARSED_KEPT,
    MEASURES,
    UNPARSED_REASONS,
    Limit,
    QuotaReport,
    Unparsed,
    UnparsedReason,
)

log = logging.getLogger("zai_proxy.quota")
T = TypeVar("T")

# ARGV[3] = 1 while this replica holds the account's lease: take or renew the polling lock;
# else give it back if this replica still has it.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if ARGV[3] ~= '1' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_LIMIT_FIELDS = frozenset(f.name for f in fields(Limit))
# Every window a block can name: the monitor's and the daily call limit.
BLOCK_WINDOWS: tuple[Window, ...] = get_args(Window)
STOP_TTL = 86400.0  # seconds a stop document lives without a probe renewing it


def report_to_doc(report: QuotaReport) -> dict[str, Any]:
    return {"level": report.level, "limits": [asdict(limit) for limit in report.limits],
            "unparsed": [asdict(entry) for entry in report.unparsed],
            "unparsed_counts": [[reason, count] for reason, count in report.unparsed_counts]}


def report_from_doc(doc: object) -> QuotaReport | None:
    """The report another replica published, or None when it is not one.

    A limit whose fields are not what a monitor report holds (`type` a string, the numbers
    finite, `measure` a known one or absent: a replica of the previous version sends none, and
    the type then gives it) is dropped; so is an entry not understood that is not one
    (`unparsed`, `unparsed_counts`: absent from the previous version's documents)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("limits"), list):
        return None
    limits = []
    for item in doc["limits"]:
        if isinstance(item, dict) and set(item) <= _LIMIT_FIELDS and _limit_ok(item):
            limits.append(Limit(**item))
    level = doc.get("level")
    unparsed = tuple(
        Unparsed(item["reason"], item["raw"][:MAX_RAW_CHARS], bool(item.get("truncated")))
        for item in _list(doc.get("unparsed"))[:MAX_UNPARSED_KEPT]
        if isinstance(item, dict) and item.get("reason") in UNPARSED_REASONS
        and isinstance(item.get("raw"), str))
    counts: dict[UnparsedReason, int] = {}
    for pair in _list(doc.get("unparsed_counts")):
        if (isinstance(pair, list) and len(pair) == 2 and pair[0] in UNPARSED_REASONS
                and isinstance(pair[1], int) and not isinstance(pair[1], bool) and pair[1] > 0):
            counts[pair[0]] = pair[1]
    return QuotaReport(level if isinstance(level, str) else None, tuple(limits), unparsed,
                       tuple((r, counts[r]) for r in UNPARSED_REASONS if r in counts))


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _limit_ok(item: dict[str, Any]) -> bool:
    for name, value in item.items():
        if value is None:
            continue
        if name == "type":
            if not isinstance(value, str):
                return False
        elif name == "measure":
            if value not in MEASURES:
                return False
        elif name in ("unit", "number"):
            if not isinstance(value, int) or isinstance(value, bool):
                return False
        elif finite(value) is None:
            return False
    return True


def block_from_doc(raw: object) -> Block | None:
    """A block another replica published, or None when it is not one (its `window` not known,
    its `until` and `since` not finite times)."""
    try:
        doc = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("window") not in BLOCK_WINDOWS or "code" not in doc:
        return None
    until, since = finite(doc.get("until")), finite(doc.get("since"))
    if until is None or since is None:
        return None
    return Block(doc["window"], str(doc["code"]), until, since, "shared")


def stop_to_doc(stopped: Stopped) -> str:
    return json.dumps({"code": stopped.code, "message": stopped.message,
                       "since": stopped.since})


def stop_from_doc(raw: object) -> Stopped | None:
    """A stop another replica published, or None when it is not one: its `code` must be a stop
    code of the table (what the client is told comes from this replica's row, never from the
    document), `since` a finite time, `message` a string or null."""
    try:
        doc = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("code"), str):
        return None
    row, since, message = lookup(doc["code"]), finite(doc.get("since")), doc.get("message")
    if not row.stop or row.code is None or since is None or not (
            message is None or isinstance(message, str)):
        return None
    return Stopped(row.code, row.cls.value, row.status, row.cause,
                   message[:300] if message else None, since, "shared")


def report_doc_from(raw: object) -> dict[str, Any] | None:
    """The leader's poll document (`publish`) read back, or None when it is not usable: `at`
    must be a finite time, `tokens_at` (when present) a finite count, `ok` a bool."""
    try:
        doc = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or finite(doc.get("at")) is None \
            or not isinstance(doc.get("ok"), bool):
        return None
    if doc.get("tokens_at") is not None and finite(doc["tokens_at"]) is None:
        return None
    return doc


class QuotaShare(LinkUser):
    """The Redis side of quota sharing over the process's link, polling under the account's
    lease; every method degrades to a harmless default."""

    def __init__(self, link: RedisLink, account: str, lease: LeaderLease) -> None:
        super().__init__(link)
        self.lease = lease
        self.prefix = f"zai-proxy:acct:{account}:quota:"
        self.me = lease.id
        self.leader = False
        self._lead = link.redis.register_script(_LEAD)

    def key(self, name: str) -> str:
        return self.prefix + name

    def on_degraded(self, exc: BaseException) -> None:
        log.error("quota sharing degraded: each replica polls on its own: %r", exc)
        self.leader = False

    def on_recovered(self) -> None:
        log.warning("quota sharing recovered: Redis answers again")

    async def lead(self, ttl: float) -> bool:
        """Beat the account's lease, then take or renew the polling lock (`ttl` s) while this
        replica holds the lease, else give it back; True when this replica is the one to poll."""
        if await self.lease.beat() is None:
            self.leader = False
            return False
        held = 1 if self.lease.held else 0

        async def lead() -> bool:
            won = await self._lead(keys=[self.key("leader")],
                                   args=[self.me, int(ttl * 1000), held])
            if won not in (0, 1) or isinstance(won, bool):  # the script answers 1 or 0
                raise BadAnswer(f"lead: {won!r:.60}")
            return bool(won)

        self.leader = bool(await self.call(lead))
        return self.leader

    async def publish(self, doc: dict[str, Any]) -> None:
        await self.call(lambda: self.redis.set(self.key("report"), json.dumps(doc), ex=86400))

    async def publish_block(self, block: Block, now: float) -> None:
        ttl = int(max(1.0, block.until - now) * 1000)
        doc = {"window": block.window, "code": block.code, "until": block.until,
               "since": block.since}
        await self.call(lambda: self.redis.set(self.key(f"block:{block.window}"),
                                                json.dumps(doc), px=ttl))

    async def lift(self, window: str) -> None:
        await self.call(lambda: self.redis.delete(self.key(f"block:{window}")))

    async def publish_stop(self, stopped: Stopped) -> None:
        """The account is stopped (seen here, or seen again by a probe: renewed)."""
        await self.call(lambda: self.redis.set(self.key("stop"), stop_to_doc(stopped),
                                                px=int(STOP_TTL * 1000)))

    async def lift_stop(self) -> None:
        """A probe here was answered OK: the stop is over for every replica."""
        await self.call(lambda: self.redis.delete(self.key("stop")))

    async def claim_probe(self, seconds: float) -> bool:
        """Take this interval's probe for this replica: False when another replica has it;
        True when Redis does not answer (degraded: each replica probes on its own)."""

        async def claim() -> bool:
            won = await self.redis.set(self.key("probe"), self.me, px=int(seconds * 1000),
                                       nx=True)
            return won is not None and won is not False

        result = await self.call(claim)
        return True if result is None else bool(result)

    async def sync(self, tokens: float) -> tuple[
            float, dict[str, Any] | None, list[Block], Stopped | None] | None:
        """Add this replica's new tokens; read the account's total, the report, the blocks, the
        account's stop."""

        async def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incrbyfloat(self.key("tokens"), tokens)
            pipe.get(self.key("report"))
            for window in BLOCK_WINDOWS:
                pipe.get(self.key(f"block:{window}"))
            pipe.get(self.key("stop"))
            result = await pipe.execute()
            if not isinstance(result, list) or len(result) != 3 + len(BLOCK_WINDOWS) or \
                    not all(r is None or isinstance(r, bytes | str) for r in result[1:]):
                raise BadAnswer(f"sync: {result!r:.60}")
            if number_reply(result[0], "tokens") < 0:
                raise BadAnswer(f"tokens: {result[0]!r:.60}")
            return result

        answer = await self.call(run)
        if answer is None:
            return None
        total, raw_report, *raw_blocks, raw_stop = answer
        report = report_doc_from(raw_report) if raw_report else None
        if raw_report and report is None:
            self.ignored("quota report", raw_report)
        blocks = []
        for window, raw in zip(BLOCK_WINDOWS, raw_blocks, strict=True):
            block = block_from_doc(raw) if raw else None
            if raw and block is None:
                self.ignored(f"quota block:{window}", raw)
            if block is not None:
                blocks.append(block)
        stop = stop_from_doc(raw_stop) if raw_stop else None
        if raw_stop and stop is None:
            self.ignored("quota stop", raw_stop)
        return number_reply(total, "tokens"), report, blocks, stop

    async def sync_clients(self, flushes: list[Flush]) -> list[dict[str, float]] | None:
        """Add this replica's client tokens of each window period (`flushes`) to the account's;
        read back each period's totals by client (a field not a finite count is dropped). None
        when Redis did not answer (the caller keeps its deltas)."""

        async def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for flush in flushes:
                key = self.key(f"clients:{flush.window}:{flush.period}")
                for client, delta in flush.deltas.items():
                    pipe.hincrbyfloat(key, client, delta)
                pipe.expire(key, int(flush.ttl))
                pipe.hgetall(key)
            result = await pipe.execute()
            if not isinstance(result, list) or len(result) != sum(
                    len(f.deltas) + 2 for f in flushes):
                raise BadAnswer(f"sync_clients: {result!r:.60}")
            at = 0
            for flush in flushes:  # each period's HGETALL answers a hash (a dict)
                at += len(flush.deltas) + 2
                if not isinstance(result[at - 1], dict):
                    raise BadAnswer(f"clients:{flush.window}: {result[at - 1]!r:.60}")
            return result

        answer = await self.call(run)
        if answer is None:
            return None
        totals, at = [], 0
        for flush in flushes:
            at += len(flush.deltas) + 1
            table = answer[at]
            at += 1
            counts = {}
            for name, value in table.items():
                client = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                try:
                    count = number_reply(value, "client tokens")
                except BadAnswer:
                    count = -1.0
                if count < 0:
                    self.ignored(f"quota clients:{flush.window}:{client}", value)
                    continue
                counts[client] = count
            totals.append(counts)
        return totals

    def health(self) -> dict[str, Any]:
        return {"degraded": self.degraded, "reason": self.reason, "leader": self.leader}

    async def aclose(self) -> None:
        """Nothing to close: the link is the process's, closed by whoever made it."""
