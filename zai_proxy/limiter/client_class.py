"""What the admission queue knows of a client: its weight, its priority class, its in-flight cap.

The fleet's clients are declared elsewhere (`clients.roster`, from `PROXY_CLIENTS_FILE`, and
`PROXY_API_KEYS`); the limiter sees only this small value per client name, looked up through the
function `create_app` hands it, so the queue's fairness never depends on how clients are
configured. A client nobody declared is `DEFAULT`: a batch client of weight 1 with no cap, which
is what every `PROXY_API_KEYS` key is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")


@dataclass(frozen=True, slots=True)
class ClientClass:
    """`weight`: the client's share of the account's rate and concurrency when others want it
    too (> 0); `priority`: interactive requests are admitted before batch ones (batch keeps a
    floor); `max_in_flight`: at most this many of its upstream requests at once (None: no cap)."""

    weight: float = 1.0
    priority: Priority = "batch"
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        if not self.weight > 0 or self.weight != self.weight or self.weight == float("inf"):
            raise ValueError(f"a client's weight must be a positive number, not {self.weight!r}")
        if self.priority not in PRIORITIES:
            raise ValueError(f"a client's priority is one of {', '.join(PRIORITIES)}, "
                             f"not {self.priority!r}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be 1 or more, not {self.max_in_flight!r}")


DEFAULT = ClientClass()
ClassOf = Callable[[str], ClientClass]


def default_class(client: str) -> ClientClass:
    """The class of every client when no clients file declares any."""
    return DEFAULT
