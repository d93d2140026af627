"""The known-model list: bounded metric labels and the ``/v1/models`` answer come from here.

Built from the pricing table's models plus the operator's extra list (config ``MODELS``), so
a model that can be priced is always listed and labelled. Labels: a known model keeps its
configured spelling (matched case-insensitively, surrounding spaces ignored); anything else,
including a missing or empty model, is ``"other"``, the single catch-all value that
docs/contracts.md allows, which keeps the label's cardinality bounded by configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zai_proxy.accounting.pricing import PricingTable

__all__ = ["OTHER", "ModelCatalog", "parse_model_list"]

OTHER = "other"


def parse_model_list(value: str | None) -> tuple[str, ...]:
    """Model names from a config value such as ``MODELS="glm-4.7, my-glm"``.

    Commas and/or whitespace separate names; empty items are dropped, order is kept.
    """
    if not value:
        return ()
    return tuple(name for name in value.replace(",", " ").split() if name)


class ModelCatalog:
    """An ordered, de-duplicated set of model names."""

    __slots__ = ("_by_key", "created", "models", "owned_by")

    def __init__(
        self, models: Iterable[str], *, owned_by: str = "z-ai", created: int = 0
    ) -> None:
        by_key: dict[str, str] = {}
        for model in models:
            name = model.strip()
            if name and name.lower() not in by_key:
                by_key[name.lower()] = name
        self._by_key = by_key
        self.models: tuple[str, ...] = tuple(by_key.values())
        self.owned_by = owned_by
        self.created = created  # /v1/models needs an int; a fixed one keeps answers stable

    @classmethod
    def from_pricing(
        cls, table: PricingTable, extra: Iterable[str] | str = (), **kwargs: Any
    ) -> ModelCatalog:
        """Extra (configured) models first, then the priced ones, duplicates dropped.

        ``extra`` may be the raw ``MODELS`` string; ``kwargs`` go to the constructor.
        """
        names = parse_model_list(extra) if isinstance(extra, str) else tuple(extra)
        return cls((*names, *table.models), **kwargs)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and model.strip().lower() in self._by_key

    def __len__(self) -> int:
        return len(self.models)

    def canonical(self, model: str | None) -> str | None:
        """The configured spelling of ``model``, or None when it is not known."""
        if not model:
            return None
        return self._by_key.get(model.strip().lower())

    def label(self, model: str | None) -> str:
        """Metric label for ``model``: its configured name, else ``"other"``."""
        return self.canonical(model) or OTHER

    def openai_models_payload(self) -> dict[str, Any]:
        """Body of ``GET /v1/models`` in OpenAI's list shape."""
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": self.created, "owned_by": self.owned_by}
                for m in self.models
            ],
        }
