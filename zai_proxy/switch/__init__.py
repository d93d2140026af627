"""`zai-proxy switch`: move Service traffic between deployment variants, and the workers with it.

A Service selector change moves only new connections; SDK workers keep pooled keep-alive
connections to the old pods. So the switch does more than patch (see docs/deployment.md):

- `checks`: the target Deployment and its pods are ready and report the target variant;
- `carry`: the serving pods' learned rate ceilings go to the target pods first (no relearning);
- `runbook`: patch the selector, then `retire` the old variant's pods (they release their
  keep-alive clients); `verify`: the EndpointSlices follow, `/metrics` through the Service shows
  the target, and the request counters (judged by `traffic`) show the old variant receiving
  nothing and the new one the load;
- `status`: what serves, and each pod's retired flag; `cli`: the command line.

The cluster is reached only through `kubectl` (`zai_proxy.switch.kube`): reads and pod/service proxy
GETs, `patch`, `scale`, and `exec ... zai-proxy admin` for the pods' admin API.
"""

from zai_proxy.switch.cli import build_parser, main
from zai_proxy.switch.runbook import Switcher
from zai_proxy.switch.steps import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RESTORE_FAILED,
    EXIT_TRAFFIC,
    EXIT_USAGE,
    PREVIOUS_ANNOTATION,
    SWITCHED_AT_ANNOTATION,
    Options,
    StepFailed,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_RESTORE_FAILED",
    "EXIT_TRAFFIC",
    "EXIT_USAGE",
    "PREVIOUS_ANNOTATION",
    "SWITCHED_AT_ANNOTATION",
    "Options",
    "StepFailed",
    "Switcher",
    "build_parser",
    "main",
]
