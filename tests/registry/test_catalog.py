"""The built-in cloud catalogue."""

from __future__ import annotations

from llmfactory import LLMFactory
from llmfactory.registry.catalog import CATALOG, CATALOG_CHECKED, catalog_models, catalog_version


def test_catalogue_covers_the_vendors() -> None:
    services = {entry["service"] for entry in CATALOG}
    assert {"openai", "anthropic", "gemini", "mistral", "deepseek", "groq"} <= services


def test_catalogue_entries_are_complete() -> None:
    names = [entry["name"] for entry in CATALOG]
    assert len(names) == len(set(names)), "duplicate catalogue names"
    for model in catalog_models():
        assert model.source == "builtin"
        assert model.host is None and model.runtime == "api"
        assert model.context_length and model.context_length > 1000
        assert model.input_price_per_million >= 0 and model.output_price_per_million >= 0
        assert model.capabilities == sorted(model.capabilities)
        assert model.extras["catalog_checked"] == CATALOG_CHECKED


def test_catalogue_version_is_stable() -> None:
    assert catalog_version() == catalog_version()


def test_seed_runs_once_per_catalogue_version(factory: LLMFactory) -> None:
    assert factory.store.get_meta("catalog_version") == catalog_version()
    gpt = factory.get_model("gpt-4o")
    assert gpt.context_length == 128_000
    assert gpt.pricing.input_per_million == 2.5
    assert gpt.pricing.output_per_million == 10.0
