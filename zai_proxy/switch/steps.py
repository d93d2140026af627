"""What every part of the switch shares: its options, its numbered output, a failed step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

PREVIOUS_ANNOTATION = "zai-proxy/previous-version"
SWITCHED_AT_ANNOTATION = "zai-proxy/switched-at"

EXIT_OK = 0
EXIT_FAILED = 1  # a check failed; the Service selects what it selected before
EXIT_USAGE = 2
EXIT_RESTORE_FAILED = 3  # a check failed after the patch and putting the selector back failed
EXIT_TRAFFIC = 4  # the selector is switched (and correct) but the old variant still gets requests


class StepFailed(Exception):
    """A switchover check did not pass; `step` names it, the message says what was seen."""

    def __init__(self, step: str, detail: str) -> None:
        self.step = step
        self.detail = detail
        super().__init__(f"{step}: {detail}")


@dataclass
class Options:
    """What `zai-proxy switch` was asked to do."""

    namespace: str = "default"
    service: str = "zai-proxy"
    version_label: str = "version"
    port_name: str = "http"
    container: str = "zai-proxy"
    dry_run: bool = False
    timeout: float = 180.0
    poll_interval: float = 1.0
    samples: int = 5
    replicas: int | None = None
    scale_down_previous: bool = False
    carry_limits: bool = True
    retire: bool = True
    traffic_timeout: float = 60.0
    traffic_quiet: float = 3.0


@dataclass
class Steps:
    """Numbered output: `[n] what is checked`, `    ok: what was seen`, warnings, free text."""

    out: Callable[[str], None] = print
    _count: int = field(default=0, init=False)

    def say(self, text: str) -> None:
        self.out(text)

    def step(self, text: str) -> None:
        self._count += 1
        self.out(f"[{self._count}] {text}")

    def ok(self, text: str) -> None:
        self.out(f"    ok: {text}")

    def note(self, text: str) -> None:
        self.out(f"    {text}")

    def warn(self, text: str) -> None:
        self.out(f"    WARNING: {text}")
