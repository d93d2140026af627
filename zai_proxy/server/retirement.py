"""Retirement: this pod has been told to release its clients (`POST /admin/retire`).

After a blue-green switch the old variant's pods still hold the workers' pooled keep-alive
connections (a Service selector change moves only *new* connections). A retired pod asks every
client to go: each response carries `Connection: close`, idle connections are closed, requests
and streams in flight finish untouched (`client_connections.ClientConnections` does the
closing). `DELETE /admin/retire` undoes it (a rollback returning to this variant).

A process that restarts comes back *not* retired, on purpose: a new process holds no
connection, and new connections reach it only through a Service that selects it (the main
Service when its variant is live, the canary and metrics Services always), so staying
unretired costs nothing when its variant is unselected, while a retire flag that outlived the
decision (a pod restarted after a rollback) would make every worker reconnect on every request.
The switch re-asserts retirement on every run. Nothing is persisted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Listener = Callable[[bool], None]


class Retirement:
    """The retired flag, when it changed, and who to tell (the connection registry, a gauge)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.retired = False
        self.changed_at: float | None = None
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """`listener(retired)` on every change (and never for a repeat of the same state)."""
        self._listeners.append(listener)

    def set(self, retired: bool) -> bool:
        """Retire (True) or un-retire (False); returns whether the state changed."""
        if retired == self.retired:
            return False
        self.retired = retired
        self.changed_at = self._clock()
        for listener in self._listeners:
            listener(retired)
        return True
