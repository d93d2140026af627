"""Process lifecycle: starting, serving, draining; in-flight count; uptime.

Readiness is what Kubernetes uses to route traffic: it turns false the moment a drain starts, so
the endpoint leaves the Service while the proxy still serves whatever arrives meanwhile.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Lifecycle:
    """Shared by the request path (in-flight count) and the probes (phase, uptime)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started_at = clock()
        self.phase = Phase.STARTING
        self.in_flight = 0

    @property
    def ready(self) -> bool:
        return self.phase is Phase.SERVING

    @property
    def draining(self) -> bool:
        return self.phase is Phase.DRAINING

    def uptime(self) -> float:
        return self._clock() - self.started_at

    def serving(self) -> None:
        if self.phase is Phase.STARTING:
            self.phase = Phase.SERVING

    def drain(self) -> None:
        """Stop being ready; idempotent."""
        self.phase = Phase.DRAINING
