"""Quota windows as the pacing reads them: `view` builds one `WindowView` observed at `NOW`.

The defaults describe a five-hour window half used, whose reset is 1000 s away and where one
token moves the used ratio by 1e-4 (a 10,000-token budget); each argument overrides one of them.
"""

from __future__ import annotations

from zai_proxy.quota.state import WindowView

NOW = 1_767_000_000.0


def view(name: str = "five_hour", *, used: float | None = 0.5, k: float | None = 1e-4,
         reset: float | None = NOW + 1000) -> WindowView:
    """A window named `name`, `used` of it spent, `k` used ratio per token, resetting at
    `reset`; the poll and the view are both at `NOW`."""
    return WindowView(name=name, at=NOW, used_ratio=used, polled_used_ratio=used,  # type: ignore[arg-type]
                      remaining=None, allowance=None, reset_at=reset, polled_at=NOW,
                      burn_per_second=None, eta_seconds=None, ratio_per_token=k,
                      limit_type="TOKENS_LIMIT")
