"""Key-file reloads: a revocation is never silently ignored, a half-written file never locks a
valid client out, and the file's state is on /health and /metrics (see `zai_proxy.clients.auth`)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from zai_proxy.clients.auth import ClientAuth
from zai_proxy.core.errors import Unauthorized

KEEP = "keep:worker-key-keep-01"
GONE = "gone:worker-key-gone-02"


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + key.encode())]


def key(entry: str) -> str:
    return entry.partition(":")[2]


def refused(auth: ClientAuth, entry: str) -> bool:
    try:
        auth.client_id(bearer(key(entry)))
    except Unauthorized:
        return True
    return False


def looks(auth: ClientAuth, vt: VirtualTime, times: int = 3) -> None:
    """Let the proxy look at the file `times` times, a second apart (a change settles)."""
    for _ in range(times):
        vt.jump(1.0)
        auth.refresh()


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Path, VirtualTime, ClientAuth]:
    path = tmp_path / "keys"
    path.write_text(f"{KEEP}\n{GONE}\n")
    vt = VirtualTime(100.0)
    return path, vt, ClientAuth((), key_file=str(path), clock=vt, wall=vt.wall)


def test_an_edit_that_removes_a_key_and_adds_a_broken_line_still_removes_it(
        keyed: tuple[Path, VirtualTime, ClientAuth], caplog: pytest.LogCaptureFixture) -> None:
    path, vt, auth = keyed
    path.write_text(f"{KEEP}\nnew:short\n")
    with caplog.at_level(logging.WARNING, logger="zai_proxy.auth"):
        looks(auth, vt)
    assert refused(auth, GONE)
    assert auth.client_id(bearer(key(KEEP))) == "keep"
    status = auth.file_status
    assert status is not None and status.count == 1 and status.errors == 1
    assert status.last_error is not None and "line 2" in status.last_error
    assert status.error_since == vt.wall() - 1.0 or status.error_since is not None
    assert "worker-key" not in caplog.text and "short" not in (status.last_error or "")


@pytest.mark.parametrize("change", ["empty", "comments only", "deleted"])
def test_emptying_or_deleting_the_file_revokes_its_keys_and_never_opens_the_proxy(
        keyed: tuple[Path, VirtualTime, ClientAuth], change: str) -> None:
    path, vt, auth = keyed
    if change == "deleted":
        path.unlink()
    else:
        path.write_text("" if change == "empty" else "# all revoked\n")
    looks(auth, vt)
    assert refused(auth, KEEP) and refused(auth, GONE)
    assert not auth.open
    with pytest.raises(Unauthorized):
        auth.client_id([])  # no key at all: refused, not waved through
    assert auth.file_status is not None and auth.file_status.last_error
    path.write_text(f"{KEEP}\n")
    looks(auth, vt)
    assert auth.client_id(bearer(key(KEEP))) == "keep"
    assert auth.file_status.last_error is None and auth.file_status.error_since is None


def test_a_half_written_rewrite_does_not_refuse_a_valid_client(
        keyed: tuple[Path, VirtualTime, ClientAuth]) -> None:
    path, vt, auth = keyed
    # An in-place rewrite seen half-way: the line of `gone` not written yet.
    path.write_text(f"{KEEP}\n")
    vt.jump(1.0)
    assert auth.client_id(bearer(key(GONE))) == "gone"
    path.write_text(f"{KEEP}\n{GONE}\nnew:worker-key-new-03\n")  # the writer finishes
    for _ in range(3):
        vt.jump(1.0)
        assert auth.client_id(bearer(key(GONE))) == "gone"
    assert auth.client_id(bearer("worker-key-new-03")) == "new"


async def test_key_file_state_is_on_health_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEEP}\n{GONE}\n")
    vt = VirtualTime(100.0)

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [], "usage": {}})

    proxy = InProcessProxy(httpx.MockTransport(upstream), {
        "PROXY_API_KEYS_FILE": str(path), "TOKEN_COUNTING_ENABLED": "false"},
        clock=vt, wall=vt.wall)
    async with proxy as client:
        health = (await client.get("/health")).json()
        assert health["auth"] == "keys"
        state = health["auth_key_file"]
        assert state["keys"] == 2 and state["last_error"] is None
        assert state["loaded_at"] == pytest.approx(vt.wall())
        path.write_text(f"{KEEP}\nshort\n")
        for _ in range(3):
            vt.jump(1.0)
            await client.get("/health")
        state = (await client.get("/health")).json()["auth_key_file"]
        metrics = (await client.get("/metrics")).text
    assert state["keys"] == 1 and "line 2" in state["last_error"]
    assert state["error_since"] == pytest.approx(vt.wall() - 1.0, abs=1.0)
    assert proxy.sample("zai_proxy_auth_key_file_errors_total") == 1
    assert proxy.sample("zai_proxy_auth_key_file_error") == 1
    assert proxy.sample("zai_proxy_auth_key_file_keys") == 1
    assert proxy.sample("zai_proxy_auth_key_file_last_load_timestamp_seconds") == \
        pytest.approx(state["loaded_at"])
    assert "worker-key" not in metrics and "short" not in metrics
