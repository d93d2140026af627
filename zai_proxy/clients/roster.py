"""The roster: every client the proxy knows by name, and what is declared for each.

A client is declared in the clients file (`PROXY_CLIENTS_FILE`: its weight, priority, in-flight
cap and budget shares) or stands for keys of `PROXY_API_KEYS` / `PROXY_API_KEYS_FILE` (a batch
client of weight 1, `DEFAULT`). `class_of` is what the admission queue asks of a client's name;
`shares_of` is what the quota's client budgets ask. A name the roster does not know
(`anonymous` on an open proxy, a client whose keys were all revoked while its request was on
the way) is `DEFAULT` with no shares. `replace` swaps the whole table at once: a reader sees
the old roster or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zai_proxy.clients.clients_file import ClientSpec
from zai_proxy.limiter.client_class import DEFAULT, ClientClass

# Budget shares are enforced by the plan quota (`quota.budgets`): a client past its share of a
# window is refused until the window resets; /health `quota.client_budgets` shows each one's use.
BUDGETS = "enforced"


@dataclass(frozen=True, slots=True)
class Member:
    """One client on the roster: its class, its budget shares, how many keys stand for it,
    and where it is declared (`clients_file` or `api_keys`)."""

    client_class: ClientClass
    five_hour_share: float | None
    weekly_share: float | None
    keys: int
    source: str


class Roster:
    """Client name -> `Member`, replaced whole on every reload of a file it comes from."""

    def __init__(self) -> None:
        self._members: Mapping[str, Member] = {}

    def replace(self, declared: Iterable[ClientSpec], keyed: Mapping[str, int]) -> None:
        """Install a new roster: the `declared` clients (clients file) and the clients of
        `keyed` (name -> keys from PROXY_API_KEYS and its file). A name in both is the
        declared client, its keys counted together."""
        members = {name: Member(DEFAULT, None, None, keys, "api_keys")
                   for name, keys in keyed.items()}
        for spec in declared:
            members[spec.name] = Member(spec.client_class, spec.five_hour_share,
                                        spec.weekly_share, len(spec.keys) + keyed.get(spec.name, 0),
                                        "clients_file")
        self._members = members  # one assignment: the swap is atomic

    def class_of(self, name: str) -> ClientClass:
        """The admission class of the client `name` (`DEFAULT` for a name not on the roster)."""
        member = self._members.get(name)
        return member.client_class if member is not None else DEFAULT

    def shares_of(self, name: str) -> tuple[float | None, float | None]:
        """The client's (five_hour_share, weekly_share) of the account's budgets; None: no cap."""
        member = self._members.get(name)
        return (member.five_hour_share, member.weekly_share) if member else (None, None)

    def names(self) -> list[str]:
        """Every client on the roster, sorted."""
        return sorted(self._members)

    def health(self) -> dict[str, object]:
        """The roster for /health: each client's class, shares and key count, never a key."""
        members = self._members
        return {"budgets": BUDGETS, "clients": [
            {"name": name, "source": m.source, "weight": m.client_class.weight,
             "priority": m.client_class.priority, "max_in_flight": m.client_class.max_in_flight,
             "five_hour_share": m.five_hour_share, "weekly_share": m.weekly_share,
             "keys": m.keys}
            for name, m in sorted(members.items())]}
