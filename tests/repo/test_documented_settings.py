"""Every SIM_* and dashboard variable docs/configuration.md lists is read by its program: set
alone to a valid value, it changes the settings the program starts with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zai_proxy.dashboard.settings import load_settings as dashboard_settings
from zai_proxy.simulator.cli import build_parser as simulate_parser
from zai_proxy.simulator.settings import SimulatorSettings, settings_from_args, settings_from_env

DOC = Path(__file__).parent.parent.parent / "docs" / "configuration.md"

SIM_SAMPLES = {
    "SIM_LATENCY_MS": "7", "SIM_TTFT_MS": "7", "SIM_CHUNKS": "7", "SIM_CHUNK_GAP_MS": "7",
    "SIM_WORDS_PER_CHUNK": "7", "SIM_RATE_CEILING": "7", "SIM_RATE_BURST": "7",
    "SIM_CEILING_SCHEDULE": "0:7", "SIM_CONCURRENCY_CEILING": "7", "SIM_QUOTA_5H_TOKENS": "7",
    "SIM_QUOTA_WEEKLY_TOKENS": "7", "SIM_QUOTA_5H_WINDOW_S": "7",
    "SIM_QUOTA_WEEKLY_WINDOW_S": "7", "SIM_QUOTA_RESET": "fixed", "SIM_QUOTA_LEVEL": "lite",
    "SIM_MONITOR_FAULT": "slow", "SIM_MONITOR_DELAY_MS": "7", "SIM_FAIL_RATE": "0.5",
    "SIM_SEED": "7", "SIM_CACHE_RATIO": "0.5", "SIM_EMBEDDING_DIM": "7", "SIM_EXPECT_KEY": "k",
    "SIM_MODELS": "m", "SIM_ACCOUNT_STATE": "expired", "SIM_KEY_KIND": "coding",
    "SIM_OVERLOADED_PROMPT": "x", "SIM_QUOTA_5H_CREDITS": "7", "SIM_QUOTA_WEEKLY_CREDITS": "7",
    "SIM_CREDITS_PER_REQUEST": "7", "SIM_CREDITS_PER_1K_TOKENS": "7",
    "SIM_MONITOR_TIME_LIMIT": "7", "SIM_MONITOR_UNKNOWN_ENTRY": "yes",
}
DASHBOARD_SAMPLES = {
    "SCRAPE_TARGETS": "http://other:9", "SCRAPE_INTERVAL": "7", "SCRAPE_TIMEOUT": "7",
    "DASHBOARD_DB": "/srv/history.sqlite3", "DASHBOARD_API_KEY": "dashboard-key-7",
    "DASHBOARD_HEARTBEAT": "7", "SCRAPE_KEY": "admin-key-7",
}


def documented(section: str) -> set[str]:
    """The variables of one `## <section>` of the doc (first column of its tables)."""
    text = DOC.read_text()
    body = text.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", body, re.MULTILINE))


def test_the_samples_cover_the_documented_variables() -> None:
    assert documented("Simulator") == set(SIM_SAMPLES)
    assert documented("Dashboard") == set(DASHBOARD_SAMPLES)


@pytest.mark.parametrize("name", sorted(SIM_SAMPLES))
def test_the_simulator_reads_every_documented_variable(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for other in SIM_SAMPLES:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, SIM_SAMPLES[name])
    # Both ways the simulator starts: embedded by `serve`, and `zai-proxy simulate`.
    assert settings_from_env() != SimulatorSettings()
    assert settings_from_args(simulate_parser().parse_args([])) != SimulatorSettings()


@pytest.mark.parametrize("name", sorted(DASHBOARD_SAMPLES))
def test_the_dashboard_reads_every_documented_variable(name: str) -> None:
    base = {"SCRAPE_TARGETS": "http://base:9", "XDG_STATE_HOME": "/state"}
    assert dashboard_settings([], {**base, name: DASHBOARD_SAMPLES[name]}) != (
        dashboard_settings([], base))
