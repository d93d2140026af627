"""Concurrency controller: learns Z.AI's in-flight ceiling from 1302 answers.

Pure, injected clock. A 1302 on a request that was admitted as the k-th in flight says the
upstream allows about k - 1: the limit is set there at once (not halved). Answers from requests
admitted before the latest decrease (an older `generation`) are ignored, so one burst of 1302s
does not ratchet the limit down several times. While requests wait for a slot (unmet demand) and
windows are clean, the limit probes +1 after `probe_interval` windows; a clean probe in which the
in-flight count really reached the limit raises the learned ceiling. Bounded by `max_workers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from zai_proxy.limiter.evidence import Adjustment


class ConcurrencyController:
    """The in-flight limit; `limit` is what the admission enforces."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_workers: int = 10,
        window: float = 30.0,
        probe_interval: int = 3,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.clock = clock
        self.max_workers, self.window, self.probe_interval = max_workers, window, probe_interval
        self.limit = max_workers
        self.ceiling: int | None = None
        self.generation = 0
        self._clean = 0
        # The limit a probe started from (where an inconclusive probe returns); None: no probe.
        self._probe_from: int | None = None
        self._throttled = False
        self._demand = False
        self._peak = 0
        self._window_start = clock()

    def admitted(self, in_flight: int) -> int:
        """Note an admission that made `in_flight` requests; returns the permit's generation."""
        self.tick()
        self._peak = max(self._peak, in_flight)
        return self.generation

    def note_demand(self, waiting: int) -> list[Adjustment]:
        """Requests are waiting for a slot (not for a rate token)."""
        out = self.tick()
        if waiting > 0:
            self._demand = True
        return out

    def record_limited(self, in_flight_at_admission: int, generation: int) -> list[Adjustment]:
        """A 1302 for a request admitted as number `in_flight_at_admission` in `generation`."""
        out = self.tick()
        if generation != self.generation:
            # Sent under an older, larger limit: already accounted for. It says nothing about
            # this window (a probe's verdict must not be hidden by it).
            return out
        self._throttled = True
        learned = max(1, min(self.limit, in_flight_at_admission) - 1)
        self.ceiling = learned
        self.generation += 1
        self._clean, self._probe_from = 0, None
        self.limit = learned
        out.append(Adjustment("decrease", "1302 concurrency limit", float(learned), float(learned)))
        return out

    def tick(self) -> list[Adjustment]:
        """Evaluate the windows that ended; skipped idle windows count as one idle window."""
        now = self.clock()
        if now < self._window_start + self.window:
            return []
        skipped = math.floor((now - self._window_start) / self.window)
        self._window_start += skipped * self.window
        throttled, demand, peak = self._throttled, self._demand, self._peak
        self._throttled = self._demand = False
        self._peak = 0
        probe_from, self._probe_from = self._probe_from, None
        if throttled:
            return []  # a decrease was already decided when the 1302 arrived
        if probe_from is not None and peak >= self.limit:
            self.ceiling = self.limit  # the probe filled the new limit without a 1302
        if not demand or peak < self.limit or self.limit >= self.max_workers:
            if probe_from is not None and peak < self.limit:
                self.limit = probe_from  # inconclusive probe: back to what is known
            return []
        self._clean += 1
        if self._clean < self.probe_interval and probe_from is None:
            return []
        self._clean, self._probe_from = 0, self.limit
        self.limit += 1
        return [Adjustment("probe", "slots full, clean window", float(self.limit), self._ceil())]

    def _ceil(self) -> float | None:
        return None if self.ceiling is None else float(self.ceiling)

    def restore(self, ceiling: int | None) -> Adjustment | None:
        """Adopt a persisted ceiling, clamped to [1, max_workers]."""
        if ceiling is None or ceiling < 1:
            return None
        self.ceiling = self.limit = min(self.max_workers, int(ceiling))
        self.generation += 1
        return Adjustment("restore", "restored ceiling", float(self.limit), self._ceil())

    def reset(self) -> Adjustment:
        """Forget the learned ceiling (admin reset)."""
        self.ceiling, self.limit = None, self.max_workers
        self.generation += 1
        self._clean, self._probe_from = 0, None
        return Adjustment("reset", "reset", float(self.limit), None)
