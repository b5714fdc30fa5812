"""LLMModel, Capability, Pricing and provider inference."""

from __future__ import annotations

import pytest

from llmfactory import Capability, LLMModel, Pricing, infer_provider


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("llama3.2:latest", "meta"),
        ("llama3:8b", "meta"),
        ("codellama:7b", "meta"),
        ("llava:13b", "meta"),
        ("qwen2.5-coder:7b", "qwen"),
        ("qwen/qwen3-4b", "qwen"),
        ("qwq:32b", "qwen"),
        ("gemma3:4b", "google"),
        ("mistral:7b", "mistral"),
        ("mixtral:8x7b", "mistral"),
        ("mistralai/devstral-small", "mistral"),
        ("phi4:14b", "microsoft"),
        ("deepseek-r1:8b", "deepseek"),
        ("gpt-oss:20b", "openai"),
        ("openai/gpt-oss-20b", "openai"),
        ("nomic-embed-text:latest", "nomic"),
        ("granite3.3:8b", "ibm"),
        ("meta-llama-3.1-8b-instruct", "meta"),
        ("lmstudio-community/gemma-2-9b", "google"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "meta"),
        ("tiny", "unknown"),
        ("my-finetune", "unknown"),
    ],
)
def test_infer_provider(name: str, provider: str) -> None:
    assert infer_provider(name) == provider


def test_capability_parse_accepts_synonyms() -> None:
    assert Capability.parse("thinking") is Capability.REASONING
    assert Capability.parse("tool_use") is Capability.TOOLS
    assert Capability.parse("Vision") is Capability.VISION
    with pytest.raises(ValueError, match="unknown capability 'telepathy'; known: chat"):
        Capability.parse("telepathy")


def test_pricing_cost() -> None:
    pricing = Pricing(
        input_per_million=1.25, output_per_million=10.0, cached_input_per_million=0.125
    )
    assert pricing.cost(1_000_000, 0) == pytest.approx(1.25)
    assert pricing.cost(1000, 500) == pytest.approx(0.00125 + 0.005)
    assert pricing.cost(1000, 0, cached_tokens=1000) == pytest.approx(0.000125)
    assert Pricing().is_free
    assert Pricing(input_per_million=1, output_per_million=2).cost(0, 0, cached_tokens=5) == 0


def test_model_helpers() -> None:
    model = LLMModel(identifier="m:ollama@h:1", name="m", runtime="ollama", host="h:1",
                     capabilities=["chat", "tools"], input_price_per_million=2.0)
    assert model.id == model.identifier
    assert model.is_local
    assert model.has_capability("tool_use")
    assert not model.has_capability("vision")
    assert model.pricing.input_per_million == 2.0
    copy = model.copy_with(context_length=4096)
    assert copy.context_length == 4096 and model.context_length is None
    data = model.to_dict()
    assert data["id"] == "m:ollama@h:1"
    assert data["pricing"] == {"input_per_million": 2.0, "output_per_million": 0.0,
                               "cached_input_per_million": None}
    assert "m:ollama@h:1" in repr(model)


def test_defaults_are_fresh_per_model_and_cheap_to_inspect() -> None:
    import inspect

    a, b = LLMModel(identifier="a", name="a"), LLMModel(identifier="b", name="b")
    a.capabilities.append("chat")
    a.extras["k"] = 1
    assert (b.capabilities, b.extras, b.user_fields) == ([], {}, [])
    assert a.first_seen.tzinfo is not None
    # pydantic inspects each default factory's signature whenever it calls it.
    for name in ("capabilities", "extras", "user_fields", "first_seen", "last_seen"):
        factory = LLMModel.model_fields[name].default_factory
        assert factory is not None and inspect.signature(factory).parameters == {}
