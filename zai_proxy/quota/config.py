"""The quota's settings: the part of the proxy's configuration `Quota` reads.

Each field carries the name of the proxy setting it comes from (`quota_poll_seconds` is
QUOTA_POLL_SECONDS; `monitor_url` is ZAI_MONITOR_URL or its default from ZAI_TARGET_URL;
`account` is the account hash); the values arrive validated, built once where the proxy is
wired (`create_app`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QuotaConfig:
    """What `Quota` needs to know, and nothing else."""

    account: str
    zai_api_key: str = field(repr=False)  # polls the monitor; never printed
    monitor_url: str
    quota_poll_seconds: float
    quota_poll_timeout: float
    quota_local_reject: bool
    quota_pacing: str
    quota_pacing_exempt: tuple[str, ...]
    quota_burn_window: float
    rate_limit_storage_uri: str
    rate_limit_replicas: int
    account_stop_probe_seconds: float = 60.0
