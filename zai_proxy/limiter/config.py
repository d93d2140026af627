"""The limiter's settings: the part of the proxy's configuration `Limiter` reads.

Each field carries the name of the proxy setting it comes from (`rate_limit_min` is
RATE_LIMIT_MIN; `account` is the account hash of ZAI_API_KEY and ZAI_TARGET_URL); the values
arrive validated, built once where the proxy is wired (`create_app`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LimiterConfig:
    """What `Limiter` needs to know, and nothing else."""

    account: str
    deployment_variant: str
    max_workers: int
    rate_limit_initial: float
    rate_limit_min: float
    rate_limit_max: float
    rate_limit_window: float
    rate_limit_burst: float
    rate_limit_upstream_burst: float
    rate_limit_hold_margin: float
    rate_limit_probe_interval: int
    rate_limit_state_file: str
    rate_limit_state_max_age: float
    rate_limit_storage_uri: str
    rate_limit_replicas: int
    queue_max: int
    queue_timeout_seconds: float
    admission_batch_floor: float = 0.1
