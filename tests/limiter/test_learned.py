"""One learned-state document (zai_proxy/limiter/learned.py) on every path it travels.

Each encoding round-trips through JSON text to the same `LearnedState`; then a state learned by
one proxy arrives identical in another through the state file, the shared Redis document and
the admin API (GET then PUT), all in-process on virtual time with a fake Redis. Last, the same
bad values (a negative ceiling, NaN, another account, too old) are refused on each path:
nothing of them is adopted, and each path says why.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from tests.support.redis import FakeRedis
from zai_proxy.limiter.learned import (
    ForeignState,
    InvalidState,
    LearnedState,
    StaleState,
    clean_state,
)
from zai_proxy.limiter.shared import namespace

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ACCOUNT = "a" * 16
MAX_AGE = 3600.0


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"id": "x", "choices": []})


class Proxy(InProcessProxy):
    """A proxy on the test's one virtual time (both sides of a round trip share it)."""

    def __init__(self, vt: VirtualTime, **env: str) -> None:
        super().__init__(httpx.MockTransport(ok), {
            "TOKEN_COUNTING_ENABLED": "false", "RATE_LIMIT_INITIAL": "10",
            "RATE_LIMIT_MAX": "100", "MAX_WORKERS": "10", "ADMIN_API_KEY": ADMIN_KEY,
            "RATE_LIMIT_STATE_MAX_AGE": str(int(MAX_AGE)), **env},
            clock=vt, sleep=vt.sleep, wall=vt.wall)

    def learn(self) -> None:
        """What a proxy learns from 429s: a rate ceiling, a floor, a concurrency ceiling."""
        self.limiter.rate.restore(20.0, 19.2)
        self.limiter.concurrency.restore(3)

    def learned(self) -> tuple[Any, ...]:
        """What the limiter holds, account-level (`export_state`, without who and when)."""
        doc = self.limiter.export_state()
        rate = doc["rate"]
        return (rate["ceiling"], rate["floor"], rate["upper"], rate["current"],
                doc["concurrency"]["ceiling"])


class SharedRedis:
    """Every Redis client the apps make talks to one FakeRedis on the test's virtual time."""

    def __init__(self, vt: VirtualTime) -> None:
        self.server = FakeRedis(vt)

    def __call__(self, url: str, **kwargs: object) -> FakeRedis:
        return self.server


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def redis(monkeypatch: pytest.MonkeyPatch, vt: VirtualTime) -> Iterator[SharedRedis]:
    factory = SharedRedis(vt)
    monkeypatch.setattr(aioredis.Redis, "from_url", factory)
    yield factory


# -- each encoding round-trips ---------------------------------------------------------------

FULL = LearnedState(20.0, 19.2, 3, 1.8e9, ACCOUNT, 20.5, rate_floor=19.0, rate_current=19.2,
                    seq=7, by="replica-1", variant="v1", shared=False, replicas=2,
                    learned_seconds_ago=12.5)


def never(bad: InvalidState, value: object) -> None:
    pytest.fail(f"a good value was dropped: {bad} ({value!r})")


def through_json(doc: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(doc))
    return loaded


def test_the_file_encoding_round_trips() -> None:
    state = LearnedState(20.0, 19.2, 3, 1.8e9, ACCOUNT, 20.5)
    assert LearnedState.from_file(through_json(state.to_file()), ignored=never) == state


def test_the_redis_encoding_round_trips() -> None:
    state = LearnedState(20.5, 19.2, None, 1.8e9, rate_upper=20.5, rate_floor=19.0,
                         rate_current=19.2, seq=7, by="replica-1")
    assert LearnedState.from_redis(through_json(state.to_redis()), ignored=never) == state


def test_the_admin_encoding_round_trips() -> None:
    state = LearnedState(20.0, 19.2, 3, 1.8e9, ACCOUNT, 20.5, rate_current=19.2,
                         variant="v1", shared=False, replicas=2, learned_seconds_ago=12.5)
    assert LearnedState.from_admin(through_json(state.to_admin())) == state


def test_a_state_is_valid_when_built_or_not_at_all() -> None:
    for bad in (-1.0, 0.0, math.nan, math.inf, True):
        with pytest.raises(InvalidState, match="rate_ceiling must be a finite positive number"):
            LearnedState(bad, None, None, 1.0)
    with pytest.raises(InvalidState, match="seq must be a whole number"):
        LearnedState(None, None, None, 1.0, seq=-1)
    with pytest.raises(InvalidState, match="ts must be a finite time"):
        LearnedState(None, None, None, math.nan)
    assert FULL.validate(account=ACCOUNT, now=1.8e9 + MAX_AGE, max_age=MAX_AGE) is FULL
    with pytest.raises(ForeignState, match=r"another Z\.AI account"):
        FULL.validate(account="b" * 16)
    with pytest.raises(StaleState, match="ts is 3601 s old"):
        FULL.validate(account=ACCOUNT, now=1.8e9 + MAX_AGE + 1, max_age=MAX_AGE)


# -- a learned state arrives identical on the other side, on every path -------------------------

async def test_through_the_state_file(vt: VirtualTime, tmp_path: Path) -> None:
    path = str(tmp_path / "limiter-{account}.json")
    source = Proxy(vt, RATE_LIMIT_STATE_FILE=path, DEPLOYMENT_VARIANT="v1")
    async with source:
        source.learn()
        sent = source.learned()
    vt.jump(60.0)
    target = Proxy(vt, RATE_LIMIT_STATE_FILE=path, DEPLOYMENT_VARIANT="v2")
    async with target:
        assert target.limiter.restored_from == "file"
        assert target.learned() == sent == (20.0, 19.2, 20.0, 19.2, 3)


async def test_through_the_shared_redis_document(vt: VirtualTime, redis: SharedRedis) -> None:
    env = {"RATE_LIMIT_STORAGE_URI": "redis://redis:6379/0", "RATE_LIMIT_STATE_FILE": ""}
    source = Proxy(vt, DEPLOYMENT_VARIANT="v1", **env)
    async with source:
        source.limiter.rate.restore(20.0, 19.2)  # the concurrency ceiling is per replica
        await source.limiter.coordinator.publish()
        sent = source.learned()
        published = await source.limiter.coordinator.read()
    vt.jump(60.0)
    target = Proxy(vt, DEPLOYMENT_VARIANT="v2", **env)
    async with target:
        assert target.limiter.restored_from == "redis"
        assert target.learned() == sent == (20.0, 19.2, 20.0, 19.2, None)
        assert await target.limiter.coordinator.read() == published


async def test_through_the_admin_api(vt: VirtualTime) -> None:
    source = Proxy(vt, DEPLOYMENT_VARIANT="v1")
    async with source as client:
        source.learn()
        doc = (await client.get("/admin/limiter-state", headers=ADMIN)).json()
    target = Proxy(vt, DEPLOYMENT_VARIANT="v2")
    async with target as client:
        put = await client.put("/admin/limiter-state", headers=ADMIN, json=doc)
        back = (await client.get("/admin/limiter-state", headers=ADMIN)).json()
    assert put.status_code == 200, put.text
    assert target.learned() == source.learned() == (20.0, 19.2, 20.0, 19.2, 3)
    assert {**back, "variant": "v1"} == doc  # the same document, but for who exports it


# -- the same bad values are refused on every path -------------------------------------------

BAD = {
    "a negative ceiling": {"ceiling": -3.0},
    "NaN": {"ceiling": math.nan},
    "another account": {"account": "b" * 16},
    "too old": {"age": MAX_AGE + 60},
}


def offered(vt: VirtualTime, target: Proxy, bad: dict[str, Any]) -> LearnedState:
    """A state with one rate ceiling learned, with `bad` in it, as another proxy wrote it."""
    return LearnedState(bad.get("ceiling", 20.0), None, None, vt.wall() - bad.get("age", 5.0),
                        bad.get("account", target.settings.account), rate_upper=bad.get(
                            "ceiling", 20.0), rate_current=10.0, seq=1, by="other")


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc)  # NaN as JSON's NaN, which json.loads (and so every reader) accepts


def unchecked(vt: VirtualTime, target: Proxy, bad: dict[str, Any]) -> LearnedState:
    """`offered` with a bad ceiling set past the checks a LearnedState makes when built: what a
    writer that does not check would put in the document."""
    state = offered(vt, target, {k: v for k, v in bad.items() if k != "ceiling"})
    if "ceiling" in bad:
        object.__setattr__(state, "rate_ceiling", bad["ceiling"])
        object.__setattr__(state, "rate_upper", bad["ceiling"])
    return state


def not_adopted(target: Proxy) -> None:
    health = target.limiter.health()
    assert health["ceiling"] is None and health["restored_from"] is None
    assert target.limiter.rate.rate == 10.0  # still RATE_LIMIT_INITIAL


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
async def test_the_state_file_refuses(vt: VirtualTime, tmp_path: Path, bad: dict[str, Any],
                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    target = Proxy(vt, RATE_LIMIT_STATE_FILE=str(path))
    path.write_text(dumps(unchecked(vt, target, bad).to_file()))
    with caplog.at_level(logging.INFO):
        async with target:
            not_adopted(target)
    reason = {"ceiling": "must be a finite positive number", "account": "another Z.AI account",
              "age": "ts is 3660 s old"}[next(iter(bad))]
    assert reason in caplog.text


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
async def test_the_redis_document_refuses(vt: VirtualTime, redis: SharedRedis,
                                          bad: dict[str, Any],
                                          caplog: pytest.LogCaptureFixture) -> None:
    target = Proxy(vt, RATE_LIMIT_STORAGE_URI="redis://redis:6379/0", RATE_LIMIT_STATE_FILE="")
    state = unchecked(vt, target, bad)
    # The account is the key's namespace: another account's state is under its own key.
    redis.server.raw_set(f"{namespace(state.account or '')}:state", dumps(state.to_redis()))
    with caplog.at_level(logging.INFO):
        async with target:
            not_adopted(target)
    reason = {"ceiling": "state.ceiling = ", "account": None,
              "age": "not restored: at is 3660 s old"}[next(iter(bad))]
    if reason is not None:
        assert reason in caplog.text


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
async def test_the_admin_api_refuses(vt: VirtualTime, bad: dict[str, Any]) -> None:
    target = Proxy(vt)
    async with target as client:
        put = await client.put("/admin/limiter-state", headers=ADMIN,
                               content=dumps(unchecked(vt, target, bad).to_admin()))
        not_adopted(target)
    error = put.json()["error"]
    status, param, reason = {
        "ceiling": (400, "rate.ceiling", "must be a finite positive number"),
        "account": (409, None, "another Z.AI account"),
        "age": (400, "exported_at", "exported_at is 3660 s old"),
    }[next(iter(bad))]
    assert put.status_code == status and reason in error["message"], put.text
    if param is not None:
        assert error["param"] == param


def test_clean_state_reports_the_key_as_published() -> None:
    seen: list[str] = []
    assert clean_state({"seq": 1, "rate": math.nan, "at": 5.0}, lambda k, v: seen.append(k)) \
        == {"seq": 1, "at": 5.0}
    assert seen == ["state.rate"]
