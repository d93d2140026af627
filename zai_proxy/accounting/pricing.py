"""Prices per model and direction (USD per million tokens) and an optional peak-hour window.

Defaults ship in ``zai_proxy/data/pricing.json`` (Z.AI's GLM list prices). An override file
has the same shape; by default it is merged over the defaults: a model already known keeps
the directions the file does not name, a new model must name at least ``input`` and
``output`` (cache directions default to 0), and ``fallback_model`` / ``peak`` replace the
default when present (``null`` disables them). ``"mode": "replace"`` discards the defaults.
Invalid prices raise ``ValueError`` naming the file and the key.

Unknown models are priced like ``fallback_model`` (default glm-4.7) or, without one, at 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zai_proxy.accounting.usage import DIRECTIONS, Usage

__all__ = ["DEFAULT_PRICING_FILE", "ModelPrice", "PeakWindow", "PricingTable", "Tier"]

Tier = Literal["standard", "peak"]
DEFAULT_PRICING_FILE = Path(__file__).resolve().parent.parent / "data" / "pricing.json"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TOP_KEYS = {"currency", "unit", "mode", "models", "fallback_model", "peak"}


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens for each direction."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0


@dataclass(frozen=True, slots=True)
class PeakWindow:
    """Wall-clock window ``[start, end)`` in the IANA zone ``tz`` where prices are multiplied.

    ``end <= start`` means the window crosses midnight (``start == end``: the whole day).
    ``weekdays`` (0 = Monday) restricts the days the window STARTS on; None means every day.
    Comparing wall-clock times in the zone makes it DST-correct by construction.
    """

    start: time
    end: time
    tz: str
    multiplier: float = 1.0
    weekdays: frozenset[int] | None = None

    def __post_init__(self) -> None:
        ZoneInfo(self.tz)  # fail at configuration time, not on the request path

    def tier_at(self, dt: datetime) -> Tier:
        """Tier in force at instant ``dt`` (a naive ``dt`` is taken as UTC)."""
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        local = dt.astimezone(ZoneInfo(self.tz))
        wall = local.time().replace(tzinfo=None, fold=0)
        day: date | None = local.date()
        if self.start < self.end:
            day = day if self.start <= wall < self.end else None
        elif self.start > self.end:
            if wall < self.end:
                day = local.date() - timedelta(days=1)  # the window opened yesterday
            elif wall < self.start:
                day = None
        if day is None or (self.weekdays is not None and day.weekday() not in self.weekdays):
            return "standard"
        return "peak"


class PricingTable:
    """Model prices, a fallback for unknown models and an optional peak window."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice],
        *,
        fallback_model: str | None = None,
        peak: PeakWindow | None = None,
    ) -> None:
        if fallback_model is not None and fallback_model not in prices:
            raise ValueError(f"fallback_model {fallback_model!r} has no price")
        self.prices = dict(prices)
        self.fallback_model = fallback_model
        self.peak = peak

    @property
    def models(self) -> tuple[str, ...]:
        """Known model names, in table order."""
        return tuple(self.prices)

    @classmethod
    def default(cls) -> PricingTable:
        """The shipped list prices."""
        return cls.from_dict(_read(DEFAULT_PRICING_FILE), str(DEFAULT_PRICING_FILE))

    @classmethod
    def load(cls, path: str | Path | None = None) -> PricingTable:
        """Defaults, with the file at ``path`` merged over them (or replacing them)."""
        table = cls.default()
        if path is None:
            return table
        return cls.from_dict(_read(Path(path)), str(path), base=table)

    @classmethod
    def from_dict(
        cls, data: object, origin: str, base: PricingTable | None = None
    ) -> PricingTable:
        """Build from parsed JSON; ``origin`` names the source in error messages."""
        if not isinstance(data, dict):
            raise ValueError(f"{origin}: the top level must be a JSON object")
        for key in data:
            if key not in _TOP_KEYS and not key.startswith("_"):
                raise ValueError(f"{origin}: unknown key {key!r}")
        mode = data.get("mode", "merge")
        if mode not in ("merge", "replace"):
            raise ValueError(f"{origin}: mode: must be 'merge' or 'replace', got {mode!r}")
        if data.get("currency", "USD") != "USD":
            raise ValueError(f"{origin}: currency: only USD is supported")
        if base is None or mode == "replace":
            base = cls({})
        models = data.get("models", {})
        if not isinstance(models, dict):
            raise ValueError(f"{origin}: models: must be an object of model -> prices")
        prices = dict(base.prices)
        for model, entry in models.items():
            prices[model] = _model_price(entry, base.prices.get(model), f"{origin}: models.{model}")
        fallback = data.get("fallback_model", base.fallback_model)
        if fallback is not None and fallback not in prices:
            raise ValueError(f"{origin}: fallback_model: {fallback!r} has no price")
        peak = _peak(data["peak"], f"{origin}: peak") if "peak" in data else base.peak
        return cls(prices, fallback_model=fallback, peak=peak)

    def price(self, model: str | None) -> ModelPrice:
        """Prices for ``model``: its own, else the fallback model's, else all zero."""
        found = self.prices.get(model or "")
        if found is None and self.fallback_model is not None:
            found = self.prices[self.fallback_model]
        return found or ModelPrice()

    def tier_at(self, dt: datetime) -> Tier:
        """Pricing tier at ``dt``: always "standard" without a peak window."""
        return self.peak.tier_at(dt) if self.peak is not None else "standard"

    def cost(self, usage: Usage, model: str | None, tier: Tier = "standard") -> dict[str, float]:
        """USD per direction for ``usage`` of ``model`` in ``tier``."""
        price = self.price(model)
        factor = (self.peak.multiplier if tier == "peak" and self.peak else 1.0) / 1_000_000
        counts = usage.by_direction()
        return {d: counts[d] * getattr(price, d) * factor for d in DIRECTIONS}


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read pricing: {exc}") from exc


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _model_price(entry: object, base: ModelPrice | None, where: str) -> ModelPrice:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object of direction -> USD per million")
    for key in entry:
        if key not in DIRECTIONS and key != "note" and not key.startswith("_"):
            raise ValueError(f"{where}: unknown direction {key!r}")
    if base is None:
        missing = [d for d in ("input", "output") if d not in entry]
        if missing:
            raise ValueError(f"{where}: a new model needs {' and '.join(missing)}")
        base = ModelPrice()
    values = {d: _number(entry[d], f"{where}.{d}") for d in DIRECTIONS if d in entry}
    return ModelPrice(**{d: values.get(d, getattr(base, d)) for d in DIRECTIONS})


def _peak(raw: object, where: str) -> PeakWindow | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object or null")
    try:
        start = time.fromisoformat(str(raw["start"]))
        end = time.fromisoformat(str(raw["end"]))
        tz = str(raw["tz"])
        ZoneInfo(tz)
    except KeyError as exc:
        raise ValueError(f"{where}: missing {exc.args[0]}") from exc
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    multiplier = _number(raw.get("multiplier", 1.0), f"{where}.multiplier")
    days = raw.get("weekdays")
    weekdays: frozenset[int] | None = None
    if days is not None:
        if not isinstance(days, list):
            raise ValueError(f"{where}.weekdays: must be a list")
        try:
            weekdays = frozenset(_DAYS.index(d.lower()) if isinstance(d, str) else d for d in days)
        except ValueError as exc:
            raise ValueError(f"{where}.weekdays: unknown day in {days!r}") from exc
        if not all(isinstance(d, int) and 0 <= d <= 6 for d in weekdays):
            raise ValueError(f"{where}.weekdays: days are 0-6 (Monday = 0) or mon..sun")
    return PeakWindow(start, end, tz, multiplier, weekdays)
