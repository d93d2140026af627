"""Model catalog: bounded labels and the /v1/models payload from one list."""

from __future__ import annotations

from zai_proxy.accounting.catalog import OTHER, ModelCatalog, parse_model_list
from zai_proxy.accounting.pricing import PricingTable


def test_from_pricing_with_extra_models() -> None:
    catalog = ModelCatalog.from_pricing(PricingTable.default(), extra=("my-glm", "GLM-4.7", " "))
    assert catalog.models[0] == "my-glm" and "glm-4.5-air" in catalog.models
    assert catalog.models.count("GLM-4.7") == 1 and "glm-4.7" not in catalog.models
    assert len(catalog) == len(PricingTable.default().models) + 1


def test_labels_are_bounded() -> None:
    catalog = ModelCatalog(("glm-4.7", "glm-4-flash"))
    assert catalog.label("glm-4.7") == "glm-4.7"
    assert catalog.label(" GLM-4.7 ") == "glm-4.7"  # configured spelling wins
    assert catalog.label("gpt-4o") == OTHER == "other"
    assert catalog.label(None) == catalog.label("") == OTHER
    assert "glm-4-flash" in catalog and "x" not in catalog and 3 not in catalog
    assert catalog.canonical("nope") is None


def test_openai_models_payload() -> None:
    payload = ModelCatalog(("glm-4.7", "embedding-3"), created=1700000000).openai_models_payload()
    assert payload == {
        "object": "list",
        "data": [
            {"id": "glm-4.7", "object": "model", "created": 1700000000, "owned_by": "z-ai"},
            {"id": "embedding-3", "object": "model", "created": 1700000000, "owned_by": "z-ai"},
        ],
    }


def test_models_config_string() -> None:
    assert parse_model_list(" glm-4.7, my-glm  other-glm,,") == ("glm-4.7", "my-glm", "other-glm")
    assert parse_model_list(None) == parse_model_list("") == ()
    catalog = ModelCatalog.from_pricing(PricingTable.default(), "my-glm,glm-4.7", created=5)
    assert catalog.models[:2] == ("my-glm", "glm-4.7") and catalog.created == 5
