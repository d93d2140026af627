"""What the controllers see and decide: outcomes, a window's counts, evidence, adjustments.

Plain values shared by the rate controller, the concurrency controller, admission and the
shared coordinator. `Evidence` is what an operator sees in /health behind every rate decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Direction = Literal["increase", "decrease", "probe", "hold", "restore", "reset"]
EPS = 1e-9
CONGESTED_SHARE = 0.1  # above this share of 1312s a window is congested: nothing is learned
FRESH_WINDOWS = 3  # 429s at a floor this many windows after a probe raised it overturn it


class Outcome(StrEnum):
    """One upstream attempt as the controllers see it."""

    ACCEPTED = "accepted"  # reached the upstream and was not throttled
    RATE_LIMITED = "rate_limited"  # 429 of class frequency or unknown
    CONCURRENCY_LIMITED = "concurrency_limited"  # 429 code 1302
    CONGESTED = "congested"  # 429 code 1312: passed the rate limiter; the model was busy
    OTHER = "other"  # errors, quota: no rate evidence


@dataclass(frozen=True)
class Evidence:
    """What one decision saw: the window, its saturated part, outcomes, the measurement."""

    seconds: float
    saturated: float
    ok: int
    limited: int
    congested: int
    other: int
    gate_rate: float  # the gate's rate over the saturated time (its time-weighted mean)
    measured: float | None  # gate_rate x (1 - throttled share) (None: nothing saturated)
    sent: int = 0  # attempts that left while saturated

    @property
    def send_rate(self) -> float | None:
        """Attempts per saturated second (per replica when several share the gate): below
        the gate rate by what late wake-ups of the dispatcher cost."""
        return self.sent / self.saturated if self.saturated > 0 and self.sent else None

    @property
    def throttled(self) -> float:
        return self.limited / max(1, self.ok + self.limited)

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_seconds": round(self.seconds, 3),
            "saturated_seconds": round(self.saturated, 3),
            "saturated_ratio": round(self.saturated / self.seconds, 3) if self.seconds else 0.0,
            "accepted": self.ok, "throttled": self.limited, "congested": self.congested,
            "other": self.other, "throttled_ratio": round(self.throttled, 4),
            "gate_rate": round(self.gate_rate, 3),
            "send_rate": None if self.send_rate is None else round(self.send_rate, 3),
            "measured_rate": None if self.measured is None else round(self.measured, 3),
        }


@dataclass(frozen=True)
class Adjustment:
    """A controller decision; count non-`hold` ones in `..._adjustments_total{direction}`."""

    direction: Direction
    reason: str
    rate: float
    ceiling: float | None
    floor: float | None = None
    evidence: Evidence | None = field(default=None, compare=False)


@dataclass
class WindowStats:
    """Outcomes over `seconds` of evaluation time, `saturated` of them gate-bound."""

    ok: int = 0  # accepted, congested included
    limited: int = 0
    congested: int = 0
    other: int = 0
    seconds: float = 0.0
    saturated: float = 0.0
    rate_seconds: float = 0.0  # integral of the gate rate over the saturated time
    sent: int = 0  # attempts granted while saturated

    @property
    def decisive(self) -> int:
        return self.ok + self.limited

    def add(self, other: WindowStats) -> None:
        """Add another replica's (or window's) counts."""
        self.ok += other.ok
        self.limited += other.limited
        self.congested += other.congested
        self.other += other.other
        self.saturated += other.saturated
        self.rate_seconds += other.rate_seconds
        self.sent += other.sent
