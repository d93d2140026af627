"""The clients file's format: what a valid file declares, and that every invalid one is refused
with a message naming the line, the client and the field, never a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from zai_proxy.clients.clients_file import load_clients_file, scan_clients
from zai_proxy.limiter.client_class import DEFAULT, ClientClass

AGENT_KEY = "agent-key-secret-01"
CI_KEY = "ci-key-secret-0002"

EXAMPLE = f"""\
# the fleet
[[client]]
name = "agents"
keys = ["{AGENT_KEY}"]
weight = 3
priority = "interactive"
max_in_flight = 8

[[client]]  # the CI bots
name = "ci"
keys_file = "ci.keys"
five_hour_share = 0.2
weekly_share = 1

[[client]]
name = "nightly"
keys = ["nightly-key-secret-3", "nightly-key-secret-3"]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "clients.toml"
    path.write_text(text)
    (tmp_path / "ci.keys").write_text(f"# rotated monthly\n\n  {CI_KEY}  \n")
    return str(path)


def test_a_valid_file_declares_each_client_with_its_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    scan = load_clients_file(path)
    agents, ci, nightly = scan.value
    assert (agents.name, agents.keys, agents.line) == ("agents", (AGENT_KEY,), 2)
    assert agents.client_class == ClientClass(3.0, "interactive", 8)
    assert (agents.five_hour_share, agents.weekly_share) == (None, None)
    # keys_file is read beside the clients file; blank lines, comments and blanks around skipped
    assert ci.keys == (CI_KEY,) and ci.client_class == DEFAULT and ci.line == 9
    assert (ci.five_hour_share, ci.weekly_share) == (0.2, 1.0)
    assert nightly.keys == ("nightly-key-secret-3",) and nightly.client_class == DEFAULT
    assert scan.also == (str(tmp_path / "ci.keys"),)  # its changes are the file's changes
    assert AGENT_KEY not in repr(scan.value)


AGENTS = '[[client]]\nname = "agents"\nkeys = ["agent-key-secret-01"]\n'

# (text, what the message must name); every message also names the line its table starts on.
INVALID = [
    ('[[client]]\nkeys = ["agent-key-secret-01"]\n', "needs `name`"),
    ('[[client]]\nname = "-bad name"\nkeys = ["agent-key-secret-01"]\n', "needs `name`"),
    (AGENTS + "colour = 'blue'\n", "'agents' (line 1): unknown field `colour`"),
    (AGENTS + "keys_file = 'ci.keys'\n", "exactly one of `keys` and `keys_file`"),
    ('[[client]]\nname = "agents"\n', "exactly one of `keys` and `keys_file`"),
    ('[[client]]\nname = "agents"\nkeys = "agent-key-secret-01"\n', "`keys` must be a list"),
    ('[[client]]\nname = "agents"\nkeys = []\n', "`keys` holds no key"),
    ('[[client]]\nname = "agents"\nkeys = ["ok-key-secret-1", "agent-k"]\n',
     "keys[1]: every key needs 8+ characters"),
    ('[[client]]\nname = "agents"\nkeys = ["agent key secret 01"]\n',
     "keys[0]: a key must not contain whitespace"),
    ('[[client]]\nname = "agents"\nkeys_file = "missing.keys"\n',
     "keys_file {dir}/missing.keys cannot be read (No such file or directory)"),
    ('[[client]]\nname = "agents"\nkeys_file = "short.keys"\n',
     "keys_file {dir}/short.keys line 2: every key needs 8+ characters"),
    ('[[client]]\nname = "agents"\nkeys_file = "empty.keys"\n', "empty.keys holds no key"),
    (AGENTS + "weight = 0\n", "`weight` must be a number > 0"),
    (AGENTS + "weight = -2.5\n", "`weight` must be a number > 0"),
    (AGENTS + "weight = true\n", "`weight` must be a number > 0"),
    (AGENTS + "weight = inf\n", "`weight` must be a number > 0"),
    (AGENTS + "weight = '3'\n", "`weight` must be a number > 0"),
    (AGENTS + "priority = 'urgent'\n", "`priority` must be 'interactive' or 'batch'"),
    (AGENTS + "max_in_flight = 0\n", "`max_in_flight` must be a whole number >= 1"),
    (AGENTS + "max_in_flight = 2.5\n", "`max_in_flight` must be a whole number >= 1"),
    (AGENTS + "five_hour_share = 0\n", "`five_hour_share` must be a number in (0, 1]"),
    (AGENTS + "five_hour_share = 1.5\n", "`five_hour_share` must be a number in (0, 1]"),
    (AGENTS + "weekly_share = 'half'\n", "`weekly_share` must be a number in (0, 1]"),
    (AGENTS + "\n" + AGENTS, "client 'agents' is declared more than once (lines 1, 5)"),
    (AGENTS + '[[client]]\nname = "ci"\nkeys = ["agent-key-secret-01"]\n',
     "a key is listed under clients 'agents' (line 1) and 'ci' (line 4)"),
    (AGENTS + '\n[[client]]\nname = "ci"\nweight = \n', "line 5: not valid TOML: Invalid value"),
    (AGENTS + '[[client]]\nname = "ci"\nkeys = ["ci-key-secret-0002"\nweight = 2\n',
     "(at line 7, column 1)"),
    ('version = 2\n' + AGENTS, "line 1: only [[client]] tables are read, not 'version'"),
    (AGENTS + "[limits]\nx = 1\n", "only [[client]] tables are read, not 'limits'"),
]


@pytest.mark.parametrize(("text", "named"), INVALID)
def test_every_invalid_file_is_refused_naming_the_problem_never_a_key(
        tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "short.keys").write_text("ok-key-secret-1\nshort\n")
    (tmp_path / "empty.keys").write_text("# none yet\n")
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        load_clients_file(path)
    message = str(info.value)
    assert named.format(dir=tmp_path) in message
    assert "line" in message
    for secret in ("agent-key", "agent key", "agent-k\"", "ci-key", "ok-key", "short"):
        assert secret not in message.replace("short.keys", "")


def test_a_file_without_clients_or_unreadable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="declares no client"):
        load_clients_file(write(tmp_path, "# nobody yet\n"))
    with pytest.raises(OSError):
        load_clients_file(str(tmp_path / "missing.toml"))


def test_a_scan_keeps_every_valid_client_and_reports_the_others(tmp_path: Path) -> None:
    """A changed file is read table by table: a broken table, a duplicated name, a shared key
    take out only the clients they concern."""
    text = (EXAMPLE + '[[client]]\nname = "broken"\nkeys = ["broken-key-01"\n'
            '[[client]]\nname = "twice"\nkeys = ["twice-key-0001"]\n'
            '[[client]]\nname = "twice"\nkeys = ["twice-key-0002"]\n'
            '[[client]]\nname = "thief"\nkeys = ["thief-key-0001", "nightly-key-secret-3"]\n')
    path = write(tmp_path, text)
    scan = scan_clients(path, text)
    kept = {spec.name: spec for spec in scan.value}
    assert sorted(kept) == ["agents", "ci", "nightly", "thief"]
    assert kept["nightly"].keys == () and kept["thief"].keys == ("thief-key-0001",)
    assert len(scan.problems) == 3
    broken, twice, shared = scan.problems
    assert broken.startswith("line 18: not valid TOML")
    assert "'twice' is declared more than once (lines 21, 24)" in twice
    assert "'nightly' (line 15) and 'thief' (line 27)" in shared
    assert "key-0" not in " ".join(scan.problems)
