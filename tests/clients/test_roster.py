"""The roster: what the admission queue and budgets learn of a client by its name."""

from __future__ import annotations

from zai_proxy.clients.clients_file import ClientSpec
from zai_proxy.clients.roster import Roster
from zai_proxy.limiter.client_class import DEFAULT, ClientClass

AGENTS = ClientSpec("agents", ("agent-key-secret-01", "agent-key-secret-02"),
                    ClientClass(3.0, "interactive", 8))
CI = ClientSpec("ci", ("ci-key-secret-0002",), DEFAULT, five_hour_share=0.2, weekly_share=0.5)


def test_declared_clients_have_their_class_and_shares_others_the_default() -> None:
    roster = Roster()
    roster.replace((AGENTS, CI), {"worker": 2})
    assert roster.class_of("agents") == ClientClass(3.0, "interactive", 8)
    assert roster.shares_of("ci") == (0.2, 0.5)
    # a PROXY_API_KEYS client is a batch client of weight 1 without shares; so is a stranger
    assert roster.class_of("worker") == DEFAULT and roster.shares_of("worker") == (None, None)
    assert roster.class_of("anonymous") == DEFAULT and roster.shares_of("anonymous") == (None, None)
    assert roster.names() == ["agents", "ci", "worker"]


def test_a_replace_swaps_the_whole_roster() -> None:
    roster = Roster()
    roster.replace((AGENTS, CI), {})
    class_of = roster.class_of  # what create_app hands the admission queue, taken once
    roster.replace((ClientSpec("agents", AGENTS.keys, ClientClass(1.0)),), {})
    assert class_of("agents") == ClientClass(1.0)
    assert roster.shares_of("ci") == (None, None) and roster.names() == ["agents"]


def test_a_key_name_that_is_also_declared_is_the_declared_client() -> None:
    roster = Roster()
    roster.replace((AGENTS,), {"agents": 1})
    assert roster.class_of("agents").weight == 3.0
    [entry] = roster.health()["clients"]  # type: ignore[index]
    assert entry["keys"] == 3 and entry["source"] == "clients_file"


def test_health_lists_each_client_and_marks_budgets_not_enforced_never_a_key() -> None:
    roster = Roster()
    roster.replace((AGENTS, CI), {"worker": 1})
    health = roster.health()
    assert health["budgets"] == "enforced"
    assert health["clients"] == [
        {"name": "agents", "source": "clients_file", "weight": 3.0, "priority": "interactive",
         "max_in_flight": 8, "five_hour_share": None, "weekly_share": None, "keys": 2},
        {"name": "ci", "source": "clients_file", "weight": 1.0, "priority": "batch",
         "max_in_flight": None, "five_hour_share": 0.2, "weekly_share": 0.5, "keys": 1},
        {"name": "worker", "source": "api_keys", "weight": 1.0, "priority": "batch",
         "max_in_flight": None, "five_hour_share": None, "weekly_share": None, "keys": 1},
    ]
    assert "secret" not in repr(health)
