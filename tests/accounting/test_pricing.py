"""Pricing table: shipped defaults, override files, validation, peak window across DST."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from zai_proxy.accounting.pricing import PeakWindow, PricingTable
from zai_proxy.accounting.usage import Usage

MILLION = Usage(input=1_000_000, output=1_000_000, cache_read=1_000_000, cache_write=1_000_000)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    return path


def test_defaults_ship_glm_list_prices() -> None:
    table = PricingTable.default()
    for model in ("glm-4.7", "glm-4.6", "glm-4.5", "glm-4.5-air", "glm-4-flash", "glm-4",
                  "glm-5.3-flash", "embedding-3"):
        assert model in table.models
    cost = table.cost(MILLION, "glm-4.7")
    assert cost == pytest.approx({"input": 0.60, "output": 2.20, "cache_read": 0.11,
                                  "cache_write": 0.0})
    assert sum(table.cost(MILLION, "glm-4-flash").values()) == 0


def test_peak_multiplier_and_fallback() -> None:
    table = PricingTable.default()
    assert table.cost(MILLION, "glm-4.7", "peak")["output"] == pytest.approx(4.40)
    assert table.cost(Usage(input=500_000), "mystery-model") == pytest.approx(
        {"input": 0.30, "output": 0.0, "cache_read": 0.0, "cache_write": 0.0})
    assert table.tier_at(datetime(2026, 1, 5, 7, 0, tzinfo=UTC)) == "peak"  # 15:00 Beijing
    assert table.tier_at(datetime(2026, 1, 5, 10, 0, tzinfo=UTC)) == "standard"  # 18:00


def test_override_merges_per_direction(tmp_path: Path) -> None:
    path = write(tmp_path, {"models": {"glm-4.7": {"output": 3},
                                       "my-model": {"input": 1, "output": 2, "note": "x"}},
                            "fallback_model": None, "peak": None})
    table = PricingTable.load(path)
    assert table.price("glm-4.7").input == 0.60 and table.price("glm-4.7").output == 3
    assert table.price("my-model").cache_read == 0 and "glm-4.5" in table.models
    assert sum(table.cost(MILLION, "unknown").values()) == 0  # no fallback: free, not guessed
    assert table.tier_at(datetime(2026, 1, 5, 7, 0, tzinfo=UTC)) == "standard"


def test_override_replace(tmp_path: Path) -> None:
    path = write(tmp_path, {"mode": "replace", "models": {"a": {"input": 1, "output": 1}}})
    table = PricingTable.load(path)
    assert table.models == ("a",) and table.fallback_model is None and table.peak is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"models": {"glm-4.7": {"input": -1}}}, "models.glm-4.7.input"),
        ({"models": {"glm-4.7": {"output": "2.2"}}}, "models.glm-4.7.output"),
        ({"models": {"glm-4.7": {"cache_read": True}}}, "models.glm-4.7.cache_read"),
        ({"models": {"glm-4.7": {"input": float("nan")}}}, "models.glm-4.7.input"),
        ({"models": {"new": {"input": 1}}}, "models.new"),
        ({"models": {"glm-4.7": {"cached_read": 1}}}, "cached_read"),
        ({"models": []}, "models"),
        ({"fallback_model": "nope"}, "fallback_model"),
        ({"peak": {"start": "14:00", "end": "18:00", "tz": "Mars/Olympus"}}, "peak"),
        ({"peak": {"start": "14:00", "tz": "UTC"}}, "peak"),
        ({"peak": {"start": "1", "end": "2", "tz": "UTC", "multiplier": -2}}, "peak"),
        ({"prices": {}}, "prices"),
        ({"mode": "append"}, "mode"),
    ],
)
def test_invalid_files_name_file_and_key(tmp_path: Path, data: object, fragment: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as err:
        PricingTable.load(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        PricingTable.load(tmp_path / "bad.json")


NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("utc", "tier"),
    [
        (datetime(2026, 1, 15, 13, 30, tzinfo=UTC), "standard"),  # 08:30 EST
        (datetime(2026, 1, 15, 14, 30, tzinfo=UTC), "peak"),  # 09:30 EST
        (datetime(2026, 7, 15, 13, 30, tzinfo=UTC), "peak"),  # 09:30 EDT: same UTC, other tier
        (datetime(2026, 7, 15, 21, 30, tzinfo=UTC), "standard"),  # 17:30 EDT
        (datetime(2026, 3, 8, 13, 30, tzinfo=UTC), "peak"),  # DST began 07:00 UTC: 09:30 EDT
        (datetime(2026, 11, 1, 13, 30, tzinfo=UTC), "standard"),  # DST ended: 08:30 EST
    ],
)
def test_window_is_wall_clock_across_dst(utc: datetime, tier: str) -> None:
    window = PeakWindow(time(9), time(17), "America/New_York", 1.5)
    assert window.tier_at(utc) == tier
    assert window.tier_at(utc.astimezone(NY)) == tier  # any aware datetime, same instant


def test_window_crossing_midnight_on_dst_night() -> None:
    window = PeakWindow(time(22), time(2), "America/New_York", 2.0, frozenset({5}))  # Saturday
    # Sat 2026-03-07 23:30 EST, Sun 01:30 EST (still Saturday's window), Sun 03:30 EDT.
    assert window.tier_at(datetime(2026, 3, 8, 4, 30, tzinfo=UTC)) == "peak"
    assert window.tier_at(datetime(2026, 3, 8, 6, 30, tzinfo=UTC)) == "peak"
    assert window.tier_at(datetime(2026, 3, 8, 7, 30, tzinfo=UTC)) == "standard"
    assert window.tier_at(datetime(2026, 3, 7, 4, 30, tzinfo=UTC)) == "standard"  # Friday night
    # Fall back: 01:30 happens twice (EDT then EST); both are inside the window.
    fold = PeakWindow(time(22), time(2), "America/New_York")
    assert fold.tier_at(datetime(2026, 11, 1, 5, 30, tzinfo=UTC)) == "peak"
    assert fold.tier_at(datetime(2026, 11, 1, 6, 30, tzinfo=UTC)) == "peak"
    assert fold.tier_at(datetime(2026, 11, 1, 7, 30, tzinfo=UTC)) == "standard"  # 02:30 EST


def test_naive_is_utc_and_whole_day_window() -> None:
    window = PeakWindow(time(0), time(0), "Asia/Shanghai", weekdays=frozenset({0}))
    assert window.tier_at(datetime(2026, 1, 5, 12, 0)) == "peak"  # Monday in Shanghai
    assert window.tier_at(datetime(2026, 1, 4, 16, 30)) == "peak"  # 00:30 Monday in Shanghai
    assert window.tier_at(datetime(2026, 1, 4, 15, 30)) == "standard"  # 23:30 Sunday


def test_weekday_names_in_file(tmp_path: Path) -> None:
    peak = {"start": "14:00", "end": "18:00", "tz": "Asia/Shanghai", "multiplier": 2,
            "weekdays": ["mon", "Tue", 4]}
    table = PricingTable.load(write(tmp_path, {"peak": peak}))
    assert table.peak is not None and table.peak.weekdays == frozenset({0, 1, 4})
