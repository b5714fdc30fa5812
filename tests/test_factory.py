"""LLMFactory: the shared instance, resolution, registration and aliases."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import llmfactory
from llmfactory import (
    AmbiguousModelError,
    InvalidIdentifierError,
    LLMFactory,
    LLMModel,
    ModelNotFoundError,
)


def _served(identifier: str) -> LLMModel:
    parsed = llmfactory.parse_identifier(identifier)
    return LLMModel(identifier=identifier, name=parsed.model, runtime=parsed.runtime or "api",
                    host=parsed.host, source="discovered", capabilities=["chat"])


def test_module_functions_use_one_lazily_initialised_instance(home: Path) -> None:
    assert LLMFactory.instance() is LLMFactory.instance()
    assert not LLMFactory.instance().initialized
    factory = llmfactory.ensure_initialized()
    assert factory is LLMFactory.instance() and factory.initialized
    assert (home / "registry.db").exists()
    assert llmfactory.get_model("gpt-4o").provider == "openai"
    assert any(m.identifier == "gpt-4o" for m in llmfactory.list_models(provider="openai"))


def test_initialisation_is_thread_safe(home: Path) -> None:
    factory = LLMFactory()
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(len(factory.list_models()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(set(results)) == 1 and results[0] > 0
    factory.close()


def test_list_models_filters(factory: LLMFactory) -> None:
    factory.add_models([_served("llama3.2:latest:ollama@127.0.0.1:11434"),
                        _served("qwen3:8b:ollama@gpu:11434")])
    assert {m.identifier for m in factory.list_models(runtime="ollama")} == {
        "llama3.2:latest:ollama@127.0.0.1:11434", "qwen3:8b:ollama@gpu:11434"}
    assert [m.identifier for m in factory.list_models(host="gpu")] == [
        "qwen3:8b:ollama@gpu:11434"]
    assert [m.identifier for m in factory.list_models(host="gpu:11434")] == [
        "qwen3:8b:ollama@gpu:11434"]
    assert all(m.provider == "anthropic" for m in factory.list_models(provider="Anthropic"))
    vision = factory.list_models(capability="vision")
    assert vision and all("vision" in m.capabilities for m in vision)
    both = factory.list_models(capability=["vision", "reasoning"])
    assert both and all({"vision", "reasoning"} <= set(m.capabilities) for m in both)
    assert [m.identifier for m in factory.list_models(search="QWEN3:8")] == [
        "qwen3:8b:ollama@gpu:11434"]
    assert factory.list_models(available=False) == []
    assert {m.source for m in factory.list_models(source="builtin")} == {"builtin"}


def test_resolution_order(factory: LLMFactory) -> None:
    ident = "llama3.2:latest:ollama@127.0.0.1:11434"
    factory.add_models([_served(ident)])
    assert factory.get_model(ident).identifier == ident
    # normalised forms of the same identifier
    assert factory.get_model("llama3.2:latest:ollama@http://127.0.0.1:11434/").identifier == ident
    # Ollama's implicit :latest
    assert factory.get_model("llama3.2:ollama@127.0.0.1").identifier == ident
    # a unique bare name
    assert factory.get_model("llama3.2:latest").identifier == ident
    assert factory.get_model("llama3.2").identifier == ident
    # an alias wins over everything
    factory.set_alias("fast", "gpt-4o-mini")
    assert factory.get_model("fast").identifier == "gpt-4o-mini"
    # a model object passes straight through
    assert factory.get_model(factory.get_model("gpt-4o")).identifier == "gpt-4o"


def test_ambiguous_name_lists_candidates(factory: LLMFactory) -> None:
    factory.add_models([_served("llama3.2:latest:ollama@a:11434"),
                        _served("llama3.2:latest:ollama@b:11434")])
    with pytest.raises(AmbiguousModelError) as info:
        factory.get_model("llama3.2:latest")
    assert info.value.candidates == ["llama3.2:latest:ollama@a:11434",
                                     "llama3.2:latest:ollama@b:11434"]
    assert "llama3.2:latest:ollama@a:11434" in str(info.value)
    assert isinstance(info.value, ModelNotFoundError)


def test_not_found_suggests_the_closest(factory: LLMFactory) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        factory.get_model("gpt-4-o")
    assert "gpt-4o" in info.value.suggestions
    assert "did you mean" in str(info.value)
    with pytest.raises(InvalidIdentifierError):
        factory.get_model("x:ollama@")
    assert factory.find_model("nothing-like-it") is None


def test_register_update_and_unregister(factory: LLMFactory) -> None:
    model = factory.register_model("mine:ollama@gpu", context_length=8192,
                                   capabilities=["chat", "thinking"],
                                   input_price_per_million=0.5)
    assert model.identifier == "mine:ollama@gpu:11434"
    assert model.source == "user"
    assert model.capabilities == ["chat", "reasoning"]
    assert set(model.user_fields) == {"context_length", "capabilities", "input_price_per_million"}
    # discovery later refreshes it, but what the user set stays
    factory.add_models([_served("mine:ollama@gpu:11434").copy_with(context_length=131072,
                                                                   family="llama")])
    refreshed = factory.get_model("mine:ollama@gpu:11434")
    assert refreshed.context_length == 8192 and refreshed.family == "llama"
    # the user can change a field of a catalogue model
    gpt = factory.register_model("gpt-4o", input_price_per_million=3.0)
    assert gpt.input_price_per_million == 3.0 and gpt.source == "builtin"
    assert factory.unregister_model("mine:ollama@gpu:11434")
    assert factory.find_model("mine:ollama@gpu:11434") is None
    assert not factory.unregister_model("mine:ollama@gpu:11434")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"context_length": -1}, "context_length must be a positive integer"),
        ({"input_price_per_million": -2}, "must be a number >= 0"),
        ({"capabilities": ["telepathy"]}, "unknown capability"),
    ],
)
def test_register_rejects_bad_values_and_keeps_the_old_record(
    factory: LLMFactory, fields: dict[str, object], message: str
) -> None:
    before = factory.get_model("gpt-4o")
    with pytest.raises(ValueError, match=message):
        factory.register_model("gpt-4o", **fields)
    assert factory.get_model("gpt-4o") == before
    with pytest.raises(TypeError, match="unknown field"):
        factory.register_model("gpt-4o", colour="blue")


def test_alias_to_a_removed_model_says_so(factory: LLMFactory) -> None:
    factory.register_model("x:ollama@h", context_length=10)
    factory.set_alias("xx", "x:ollama@h:11434")
    factory.store.delete_model("x:ollama@h:11434")
    factory.reload()
    assert factory.aliases == {}  # deleting a model deletes its aliases
    with pytest.raises(ValueError, match="non-empty word"):
        factory.set_alias("two words", "gpt-4o")
    assert not factory.remove_alias("nope")


def test_config_file_prices_override_the_catalogue(home: Path) -> None:
    (home / "config.toml").write_text('[pricing."gpt-4o"]\ninput = 1.0\noutput = 4.0\n')
    factory = LLMFactory(discover=False)
    model = factory.get_model("gpt-4o")
    assert (model.input_price_per_million, model.output_price_per_million) == (1.0, 4.0)
    assert model.cached_input_price_per_million == 1.25
    factory.close()


def test_a_model_registered_in_one_process_is_seen_by_another(home: Path) -> None:
    code = (
        "import llmfactory; llmfactory.LLMFactory.instance().discover = False; "
        "llmfactory.register_model('shared:ollama@box:11434', context_length=1234)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    factory = LLMFactory(discover=False)
    assert factory.get_model("shared:ollama@box:11434").context_length == 1234
    factory.close()


def test_isolated_instances_do_not_share_state() -> None:
    a = LLMFactory(database_url="sqlite://", discover=False)
    b = LLMFactory(database_url="sqlite://", discover=False)
    a.register_model("only-a:ollama@h", context_length=1)
    assert a.find_model("only-a:ollama@h:11434") is not None
    assert b.find_model("only-a:ollama@h:11434") is None
    a.close()
    b.close()


def test_set_instance_restores(factory: LLMFactory) -> None:
    previous = LLMFactory.set_instance(factory)
    try:
        assert llmfactory.get_model("gpt-4o") is factory.get_model("gpt-4o")
    finally:
        LLMFactory.set_instance(previous)
