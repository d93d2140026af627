"""The clients file re-read by the running proxy, as the key file is: a change is applied once
settled, a revocation is never ignored, a key that is both there and in PROXY_API_KEYS(_FILE) is
in force in neither, and the file's state and the roster are on /health and /metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.support.clock import VirtualTime
from tests.support.inprocess import InProcessProxy
from zai_proxy.clients.auth import ClientAuth
from zai_proxy.core.errors import Unauthorized
from zai_proxy.limiter.client_class import DEFAULT, ClientClass

AGENT = "agent-key-secret-01"
CI = "ci-key-secret-0002"
NEW = "new-key-secret-0003"


def client(name: str, key: str, extra: str = "") -> str:
    return f'[[client]]\nname = "{name}"\nkeys = ["{key}"]\n{extra}\n'


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + key.encode())]


def who(auth: ClientAuth, key: str) -> str | None:
    """The client `key` is taken for, or None when it is refused."""
    try:
        return auth.client_id(bearer(key))
    except Unauthorized:
        return None


def looks(auth: ClientAuth, vt: VirtualTime, times: int = 3) -> None:
    """Let the proxy look at its files `times` times, a second apart (a change settles)."""
    for _ in range(times):
        vt.jump(1.0)
        auth.refresh()


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, VirtualTime, ClientAuth]:
    path = tmp_path / "clients.toml"
    path.write_text(client("agents", AGENT, 'weight = 3\npriority = "interactive"')
                    + client("ci", CI, "five_hour_share = 0.2"))
    vt = VirtualTime(100.0)
    return path, vt, ClientAuth((), clients_file=str(path), clock=vt, wall=vt.wall)


def test_clients_file_keys_authenticate_as_their_client(
        fleet: tuple[Path, VirtualTime, ClientAuth]) -> None:
    _, _, auth = fleet
    assert not auth.open
    assert who(auth, AGENT) == "agents" and who(auth, CI) == "ci" and who(auth, NEW) is None
    assert auth.roster.class_of("agents") == ClientClass(3.0, "interactive")
    assert auth.roster.shares_of("ci") == (0.2, None)
    assert auth.clients_status is not None and auth.clients_status.count == 2


def test_a_weight_changed_takes_effect_once_the_file_has_settled(
        fleet: tuple[Path, VirtualTime, ClientAuth]) -> None:
    path, vt, auth = fleet
    class_of = auth.roster.class_of  # taken once, as create_app hands it on
    path.write_text(client("agents", AGENT, "weight = 1") + client("ci", CI))
    vt.jump(1.0)
    auth.refresh()  # seen changed: not applied until it stays the same for a second
    assert class_of("agents").weight == 3.0
    looks(auth, vt)
    assert class_of("agents") == DEFAULT
    assert auth.roster.shares_of("ci") == (None, None)


def test_a_half_written_rewrite_does_not_refuse_a_client_not_written_yet(
        fleet: tuple[Path, VirtualTime, ClientAuth]) -> None:
    path, vt, auth = fleet
    path.write_text(client("agents", AGENT))  # ci's table not written yet
    vt.jump(1.0)
    assert who(auth, CI) == "ci"
    path.write_text(client("agents", AGENT) + client("ci", CI) + client("new", NEW))
    for _ in range(3):
        vt.jump(1.0)
        assert who(auth, CI) == "ci"
    assert who(auth, NEW) == "new"


def test_a_removed_client_is_refused_even_when_the_same_edit_breaks_another_table(
        fleet: tuple[Path, VirtualTime, ClientAuth], caplog: pytest.LogCaptureFixture) -> None:
    path, vt, auth = fleet
    path.write_text(client("agents", AGENT) + '[[client]]\nname = "new"\nkeys = ["' + NEW)
    with caplog.at_level(logging.WARNING, logger="zai_proxy.auth"):
        looks(auth, vt)
    assert who(auth, CI) is None and who(auth, NEW) is None
    assert who(auth, AGENT) == "agents"
    status = auth.clients_status
    assert status is not None and status.count == 1 and status.errors == 1
    assert status.last_error is not None and status.last_error.startswith("line 5: not valid")
    assert auth.roster.names() == ["agents"]
    removed = [r for r in caplog.records if r.getMessage() == "PROXY_CLIENTS_FILE reloaded"]
    assert getattr(removed[0], "fields", {})["clients_removed"] == ["ci"]
    assert "key-secret" not in caplog.text


@pytest.mark.parametrize("change", ["empty", "deleted", "invalid"])
def test_emptying_or_deleting_the_file_revokes_its_clients_and_never_opens_the_proxy(
        fleet: tuple[Path, VirtualTime, ClientAuth], change: str) -> None:
    path, vt, auth = fleet
    if change == "deleted":
        path.unlink()
    else:
        path.write_text("# nobody\n" if change == "empty" else client("agents", AGENT, "w = 1"))
    looks(auth, vt)
    assert who(auth, AGENT) is None and who(auth, CI) is None and not auth.open
    with pytest.raises(Unauthorized):
        auth.client_id([])
    assert auth.clients_status is not None and auth.clients_status.last_error
    assert auth.roster.class_of("agents") == DEFAULT
    path.write_text(client("agents", AGENT))
    looks(auth, vt)
    assert who(auth, AGENT) == "agents" and auth.clients_status.last_error is None


def test_a_rotated_keys_file_is_a_change_of_the_clients_file(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text('[[client]]\nname = "ci"\nkeys_file = "ci.keys"\n')
    keys = tmp_path / "ci.keys"
    keys.write_text(CI + "\n")
    vt = VirtualTime(100.0)
    auth = ClientAuth((), clients_file=str(path), clock=vt, wall=vt.wall)
    keys.write_text(NEW + "\n")  # the Secret rotates; the clients file is untouched
    looks(auth, vt)
    assert who(auth, NEW) == "ci" and who(auth, CI) is None


def test_a_key_that_a_reload_puts_in_both_files_is_in_force_in_neither(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(client("agents", AGENT) + client("ci", CI))
    keys = tmp_path / "keys"
    keys.write_text(f"worker:{NEW}\n")
    vt = VirtualTime(100.0)
    auth = ClientAuth((), key_file=str(keys), clients_file=str(path), clock=vt, wall=vt.wall)
    assert who(auth, NEW) == "worker"
    keys.write_text(f"worker:{NEW}\nbot:{CI}\n")  # ci's key given to another name
    with caplog.at_level(logging.ERROR, logger="zai_proxy.auth"):
        looks(auth, vt)
    assert who(auth, CI) is None  # ambiguous identity: in force in neither
    assert who(auth, AGENT) == "agents" and who(auth, NEW) == "worker"
    status = auth.clients_status
    assert status is not None and status.last_error is not None
    assert "client 'ci': a key is also in PROXY_API_KEYS or PROXY_API_KEYS_FILE" in \
        status.last_error
    assert auth.file_status is not None and auth.file_status.count == 1
    assert [h["keys"] for h in auth.roster.health()["clients"]  # type: ignore[index]
            if h["name"] == "ci"] == [0]
    assert CI not in caplog.text and "PROXY_CLIENTS_FILE" in caplog.text
    keys.write_text(f"worker:{NEW}\n")  # resolved: ci's key is ci's again
    looks(auth, vt)
    assert who(auth, CI) == "ci" and status.last_error is None


async def test_clients_file_state_and_roster_are_on_health_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(client("agents", AGENT, "weight = 3\nmax_in_flight = 4")
                    + client("ci", CI, "weekly_share = 0.5"))
    vt = VirtualTime(100.0)

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [], "usage": {}})

    proxy = InProcessProxy(httpx.MockTransport(upstream), {
        "PROXY_CLIENTS_FILE": str(path), "PROXY_API_KEYS": f"worker:{NEW}",
        "TOKEN_COUNTING_ENABLED": "false", "ADMIN_API_KEY": "admin-key-0123456789"},
        clock=vt, wall=vt.wall)
    started = vt.wall()
    assert proxy.admission.class_of("agents") == ClientClass(3.0, "batch", 4)
    async with proxy as http:
        full = (await http.get("/health", headers={"x-api-key": "admin-key-0123456789"})).json()
        public = (await http.get("/health")).json()
        path.write_text(client("agents", AGENT) + client("ci", "short"))
        for _ in range(3):
            vt.jump(1.0)
            await http.get("/health")
        state = (await http.get("/health")).json()["clients_file"]
        metrics = (await http.get("/metrics")).text
    assert full["clients_file"] == {"path": str(path), "loaded_at": started,
                                    "clients": 2, "last_error": None, "error_since": None}
    roster = full["clients"]
    assert roster["budgets"] == "enforced"
    assert [(c["name"], c["weight"], c["max_in_flight"], c["weekly_share"], c["keys"])
            for c in roster["clients"]] == [("agents", 3.0, 4, None, 1), ("ci", 1.0, None, 0.5, 1),
                                            ("worker", 1.0, None, None, 1)]
    assert "clients" not in public and public["clients_file"]["clients"] == 2
    assert state["clients"] == 1 and "'ci' (line 5): keys[0]" in state["last_error"]
    assert proxy.sample("zai_proxy_clients_file_errors_total") == 1
    assert proxy.sample("zai_proxy_clients_file_error") == 1
    assert proxy.sample("zai_proxy_clients_file_clients") == 1
    assert state["loaded_at"] == started + 2  # seen changed at +1, settled at +2
    assert proxy.sample("zai_proxy_clients_file_last_load_timestamp_seconds") == \
        state["loaded_at"]
    assert "key-secret" not in metrics and "short" not in state["last_error"]


async def test_a_request_with_a_clients_file_key_is_served_and_counted_as_its_client(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(client("agents", AGENT, 'priority = "interactive"') + client("ci", CI))
    vt = VirtualTime(100.0)
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "model": "glm-4.7", "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})

    proxy = InProcessProxy(httpx.MockTransport(upstream), {"PROXY_CLIENTS_FILE": str(path)},
                           clock=vt, sleep=vt.sleep, wall=vt.wall)
    body = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.INFO, logger="zai_proxy.access"):
        async with proxy as http:
            served = await http.post("/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {AGENT}"})
            refused = await http.post("/v1/chat/completions", json=body,
                                      headers={"authorization": f"Bearer {NEW}"})
    assert served.status_code == 200 and refused.status_code == 401
    assert len(seen) == 1 and AGENT not in seen[0]  # the upstream sees its own key only
    assert proxy.sample("zai_proxy_client_tokens_total", client="agents", direction="input") == 7
    assert proxy.sample("zai_proxy_client_tokens_total", client="agents", direction="output") == 3
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert [(line["client"], line["status"]) for line in lines] == [("agents", 200), ("", 401)]
    assert AGENT not in caplog.text
