"""A small in-memory Redis for the unit tests of the Redis logic, that can also hang or lie.

`FakeRedis` answers the few redis-py calls the proxy makes (`get`, `set` (with NX), `incr`,
`incrbyfloat`, `delete`, `hdel`, `ping`, `pipeline` with `hincrbyfloat`/`hset`/`expire`/
`incrbyfloat`/`get`/`hgetall`, and `register_script` for the proxy's own Lua scripts, run
here as Python on `clock`) the way redis-py returns them (bytes for strings, int for INCR, float for
INCRBYFLOAT). Its `mode` says how it behaves:

- "ok": a working Redis;
- "hang": every call waits forever (a Redis that was SIGSTOPped): only a timeout ends it;
- "lie": every command answers `OK` (a wrong port, a proxy that says `+OK` to anything); as
  with redis-py, a command whose reply it parses as a float (INCRBYFLOAT, HINCRBYFLOAT, in a
  pipeline too) raises ValueError instead;
- "down": every call raises redis-py's ConnectionError.

`virtual_timeout(vt)` is `asyncio.timeout` on a `VirtualTime`, for the code under test's
`timeout=` parameter; `StalledStorage` is a `limits` memory storage that can hang the same way.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

import redis.exceptions
from limits.aio.storage import MemoryStorage

from tests.support.clock import VirtualTime
from zai_proxy.core import lease as leader_lease
from zai_proxy.limiter import shared as shared_state
from zai_proxy.quota import shared as quota_shared

Mode = Literal["ok", "hang", "lie", "down"]


def virtual_timeout(vt: VirtualTime) -> Callable[[float], AbstractAsyncContextManager[None]]:
    """`asyncio.timeout(seconds)` on virtual time: the block is cancelled and TimeoutError
    raised once the test advances `vt` past `seconds`."""

    @asynccontextmanager
    async def timeout(seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        fired = False

        async def alarm() -> None:
            nonlocal fired
            await vt.sleep(seconds)
            fired = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(alarm())
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            watcher.cancel()
        if fired and task.cancelling():  # the alarm went off just as the block ended
            task.uncancel()
            raise TimeoutError

    return timeout


async def _forever() -> Any:
    await asyncio.get_running_loop().create_future()


class FakeRedis:
    """See the module doc. `calls` counts every command tried (a pipeline counts once)."""

    def __init__(self, clock: Callable[[], float] = lambda: 0.0, mode: Mode = "ok") -> None:
        self.clock, self.mode = clock, mode
        self.data: dict[str, Any] = {}
        self.expires: dict[str, float] = {}
        self.calls = 0
        self.closed = False

    # -- behaviour ---------------------------------------------------------------------------

    async def _do(self, run: Callable[[], Any]) -> Any:
        self.calls += 1
        if self.mode == "hang":
            return await _forever()
        if self.mode == "down":
            raise redis.exceptions.ConnectionError("fake Redis is down")
        if self.mode == "lie":
            return b"OK"
        return run()

    def _live(self, key: str) -> Any:
        if key in self.expires and self.expires[key] <= self.clock():
            self.data.pop(key, None)
            self.expires.pop(key, None)
        return self.data.get(key)

    def _put(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.data[key] = value
        if ttl is None:
            self.expires.pop(key, None)
        else:
            self.expires[key] = self.clock() + ttl

    # -- commands ----------------------------------------------------------------------------

    def raw_get(self, key: str) -> Any:
        return self._live(key)

    def raw_set(self, key: str, value: str | bytes) -> None:
        self._put(key, value.encode() if isinstance(value, str) else value)

    async def get(self, key: str) -> Any:
        return await self._do(lambda: self._live(key))

    async def set(self, key: str, value: str | bytes, ex: float | None = None,
                  px: float | None = None, nx: bool = False) -> Any:
        ttl = ex if ex is not None else px / 1000 if px is not None else None

        def run() -> bool | None:
            if nx and self._live(key) is not None:
                return None  # redis-py's answer to SET NX on a key that exists
            self._put(key, value.encode() if isinstance(value, str) else value, ttl)
            return True

        return await self._do(run)

    async def incr(self, key: str) -> Any:
        def run() -> int:
            value = int(self._live(key) or 0) + 1
            self._put(key, str(value).encode(), self._ttl(key))
            return value
        return await self._do(run)

    async def incrbyfloat(self, key: str, amount: float) -> Any:
        answer = await self._do(lambda: self._incrbyfloat(key, amount))
        return _as_float(answer) if self.mode == "lie" else answer

    def _incrbyfloat(self, key: str, amount: float) -> float:
        value = float(self._live(key) or 0) + amount
        self._put(key, repr(value).encode(), self._ttl(key))
        return value

    def _ttl(self, key: str) -> float | None:
        return self.expires[key] - self.clock() if key in self.expires else None

    def _hincrbyfloat(self, key: str, name: str, amount: float) -> float:
        table = self._live(key)
        if table is None:
            table = {}
            self._put(key, table, self._ttl(key))
        table[name.encode()] = float(table.get(name.encode(), 0.0)) + amount
        return float(table[name.encode()])

    def _hset(self, key: str, name: str, value: str | bytes) -> int:
        table = self._live(key)
        if table is None:
            table = {}
            self._put(key, table, self._ttl(key))
        new = name.encode() not in table
        table[name.encode()] = value.encode() if isinstance(value, str) else value
        return int(new)

    async def hdel(self, key: str, *names: str) -> Any:
        def run() -> int:
            table = self._live(key) or {}
            return sum(table.pop(n.encode(), None) is not None for n in names)
        return await self._do(run)

    def _expire(self, key: str, seconds: float) -> bool:
        if self._live(key) is None:
            return False
        self.expires[key] = self.clock() + seconds
        return True

    async def delete(self, *keys: str) -> Any:
        return await self._do(lambda: sum(self.data.pop(k, None) is not None for k in keys))

    async def ping(self) -> Any:
        return await self._do(lambda: True)

    async def aclose(self) -> None:
        self.closed = True

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def register_script(self, source: str) -> Callable[..., Awaitable[Any]]:
        run = self._scripts()[source]

        async def script(keys: list[str], args: list[Any] | None = None) -> Any:
            return await self._do(lambda: run(keys, [str(a) for a in args or ()]))

        return script

    # -- the proxy's Lua scripts, in Python ----------------------------------------------------

    def _scripts(self) -> dict[str, Callable[[list[str], list[str]], Any]]:
        return {shared_state._TAKE: self._take, shared_state._REFUND: self._refund,
                leader_lease._HEARTBEAT: self._heartbeat,
                shared_state._TAKE_COUNTS: self._take_counts, quota_shared._LEAD: self._lead}

    def _take(self, keys: list[str], args: list[str]) -> bytes:
        now, interval, burst = self.clock(), float(args[0]), float(args[1])
        tat = max(float(self._live(keys[0]) or 0), now)
        wait = tat - (burst - 1) * interval - now
        if wait > 1e-9:
            return f"{wait:.6f}".encode()
        self._put(keys[0], f"{tat + interval:.6f}".encode(), int(args[2]) / 1000)
        return b"0"

    def _refund(self, keys: list[str], args: list[str]) -> int:
        now = self.clock()
        tat = max(float(self._live(keys[0]) or 0) - float(args[0]), now)
        self._put(keys[0], f"{tat:.6f}".encode(), int(args[1]) / 1000)
        return 1

    def _heartbeat(self, keys: list[str], args: list[str]) -> list[int]:
        now = math.floor(self.clock() * 1000)
        me, lock_ms, stale_ms = args[0].encode(), int(args[1]), int(args[2])
        members = self._live(keys[0]) or {}
        members[me] = now
        members = {m: t for m, t in members.items() if t > now - stale_ms}
        self._put(keys[0], members, stale_ms / 1000)
        leader = self._live(keys[1])
        if leader is None:
            self._put(keys[1], me, lock_ms / 1000)
            leader = me
        elif leader == me:
            self.expires[keys[1]] = self.clock() + lock_ms / 1000
        return [len(members), 1 if leader == me else 0]

    def _take_counts(self, keys: list[str], args: list[str]) -> list[bytes]:
        table = self._live(keys[0]) or {}
        self.data.pop(keys[0], None)
        return [part for name, value in table.items() for part in (name, repr(value).encode())]

    def _lead(self, keys: list[str], args: list[str]) -> int:
        holder, me = self._live(keys[0]), args[0].encode()
        if args[2] != "1":  # not holding the account's lease: give the lock back
            if holder == me:
                self.data.pop(keys[0], None)
            return 0
        if holder == me:
            self.expires[keys[0]] = self.clock() + int(args[1]) / 1000
            return 1
        if holder is None:
            self._put(keys[0], me, int(args[1]) / 1000)
            return 1
        return 0


def _as_float(answer: Any) -> float:
    return float(answer)  # redis-py's INCRBYFLOAT callback: ValueError on b"OK"


class FakePipeline:
    """Queues commands; `execute` runs them as one round trip (hangs, lies, fails as one)."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.ops: list[Callable[[], Any]] = []
        self.floats = False  # a reply redis-py parses as a float is queued

    def hincrbyfloat(self, key: str, name: str, amount: float) -> FakePipeline:
        self.ops.append(lambda: self.redis._hincrbyfloat(key, name, amount))
        self.floats = True
        return self

    def incrbyfloat(self, key: str, amount: float) -> FakePipeline:
        self.ops.append(lambda: self.redis._incrbyfloat(key, amount))
        self.floats = True
        return self

    def hset(self, key: str, name: str, value: str | bytes) -> FakePipeline:
        self.ops.append(lambda: self.redis._hset(key, name, value))
        return self

    def expire(self, key: str, seconds: float) -> FakePipeline:
        self.ops.append(lambda: self.redis._expire(key, seconds))
        return self

    def get(self, key: str) -> FakePipeline:
        self.ops.append(lambda: self.redis._live(key))
        return self

    def hgetall(self, key: str) -> FakePipeline:
        self.ops.append(lambda: dict(self.redis._live(key) or {}))
        return self

    async def execute(self) -> Any:
        if self.redis.mode == "lie":
            await self.redis._do(lambda: None)
            if self.floats:
                _as_float(b"OK")
            return [b"OK"] * len(self.ops)
        return await self.redis._do(lambda: [op() for op in self.ops])


class StalledStorage(MemoryStorage):
    """`limits`' async memory storage that hangs every call while `hang` is True."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = False
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.hang:
            await _forever()

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        await self._gate()
        return int(await super().incr(key, expiry, amount))

    async def get(self, key: str) -> int:
        await self._gate()
        return int(await super().get(key))

    async def get_expiry(self, key: str) -> float:
        await self._gate()
        return float(await super().get_expiry(key))

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        await self._gate()
        return bool(await super().acquire_entry(key, limit, expiry, amount))

    async def get_moving_window(self, key: str, limit: int,
                                expiry: int) -> tuple[float, int]:
        await self._gate()
        window: tuple[float, int] = await super().get_moving_window(key, limit, expiry)
        return window
