"""create_llm: resolution, the class for each runtime and service, config layers, keys and
base URLs, and no network before the first message."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmfactory
from llmfactory import (
    ConfigError,
    LLMConfig,
    LLMFactory,
    LLMModel,
    MissingAPIKeyError,
    ModelNotFoundError,
)
from llmfactory.api import registry
from llmfactory.api.anthropic import AnthropicLLM
from llmfactory.api.ollama import OllamaLLM
from llmfactory.api.openai import OpenAILLM
from llmfactory.api.registry import ServiceSpec, register_service_spec
from tests.servers import OllamaServer

SERVICES = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", OpenAILLM),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", AnthropicLLM),
    "gemini": ("GEMINI_API_KEY", "GEMINI_BASE_URL", OpenAILLM),
    "mistral": ("MISTRAL_API_KEY", "MISTRAL_BASE_URL", OpenAILLM),
    "deepseek": ("DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL", OpenAILLM),
    "groq": ("GROQ_API_KEY", "GROQ_BASE_URL", OpenAILLM),
}


def _cloud_model(factory: LLMFactory, service: str) -> LLMModel:
    models = [m for m in factory.list_models(runtime="api") if m.service == service
              and "chat" in m.capabilities]
    assert models, f"the catalogue has no chat model served by {service}"
    return models[0]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_cloud_service_has_a_class_and_names_its_key(
    factory: LLMFactory, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_env, url_env, cls = SERVICES[service]
    model = _cloud_model(factory, service)
    llm = factory.create_llm(model.identifier)
    assert type(llm) is cls and llm.provider == service
    with pytest.raises(MissingAPIKeyError, match=key_env) as info:
        llm.endpoint()
    assert info.value.env_var == key_env and info.value.provider == service
    monkeypatch.setenv(key_env, "secret-key-123")
    monkeypatch.setenv(url_env, "https://proxy.example/v9/")
    endpoint = factory.create_llm(model.identifier).endpoint()
    assert endpoint.base_url == "https://proxy.example/v9" and endpoint.api_key == "secret-key-123"
    assert "secret-key-123" not in repr(endpoint)


def test_default_base_urls(factory: LLMFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
        "groq": "https://api.groq.com/openai/v1",
    }
    for service, url in expected.items():
        monkeypatch.setenv(SERVICES[service][0], "k")
        llm = factory.create_llm(_cloud_model(factory, service))
        assert llm.endpoint().base_url == url


def test_runtime_classes_and_base_urls(factory: LLMFactory) -> None:
    ollama = factory.create_llm("llama3:ollama@gpu-box:11434")
    assert isinstance(ollama, OllamaLLM) and ollama.model.name == "llama3:latest"
    assert ollama.identifier == "llama3:latest:ollama@gpu-box:11434"
    assert ollama.endpoint().base_url == "http://gpu-box:11434"
    assert ollama.endpoint().api_key is None
    lmstudio = factory.create_llm("qwen/qwen3-4b:lmstudio@localhost")
    assert isinstance(lmstudio, OpenAILLM)
    assert lmstudio.endpoint().base_url == "http://localhost:1234/v1"
    vllm = factory.create_llm("Qwen/Qwen2.5-7B:openai_compatible@[::1]:8000")
    assert isinstance(vllm, OpenAILLM) and vllm.endpoint().base_url == "http://[::1]:8000/v1"
    tagged = factory.create_llm("user/model:q4:ollama@h:1")
    assert tagged.model.name == "user/model:q4"  # a tag is kept


def test_lm_studio_token_is_optional(factory: LLMFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = factory.create_llm("qwen/qwen3-4b:lmstudio@localhost:1234")
    assert llm.endpoint().api_key is None
    monkeypatch.setenv("LMSTUDIO_API_TOKEN", "sk-lm-abc:def")
    llm = factory.create_llm("qwen/qwen3-4b:lmstudio@localhost:1234")
    assert isinstance(llm, OpenAILLM)
    assert llm._auth_headers(llm.endpoint()) == {"Authorization": "Bearer sk-lm-abc:def"}


def test_list_models_results_can_be_passed_straight(factory: LLMFactory) -> None:
    model = factory.list_models(provider="anthropic")[0]
    llm = factory.create_llm(model)
    assert isinstance(llm, AnthropicLLM) and llm.model is model


def test_unknown_things_are_clear_errors(factory: LLMFactory) -> None:
    with pytest.raises(ModelNotFoundError, match="did you mean"):
        factory.create_llm("gpt-4o-mnii")
    with pytest.raises(ConfigError, match="known runtimes"):
        factory.create_llm("m:nosuchruntime@host:1")
    factory.register_model("homegrown", provider="acme")
    with pytest.raises(ConfigError, match="names no service"):
        factory.create_llm("homegrown")


def test_a_plugin_service(factory: LLMFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_SERVICES", dict(registry._SERVICES))  # restored after
    register_service_spec(ServiceSpec(name="acme", llm_class="llmfactory.api.openai:OpenAILLM",
                                 base_url="https://acme.example/v1", key_env="ACME_KEY",
                                 key_required=True))
    factory.register_model("acme-1", provider="acme", service="acme")
    llm = factory.create_llm("acme-1")
    assert isinstance(llm, OpenAILLM)
    with pytest.raises(MissingAPIKeyError, match="ACME_KEY"):
        llm.endpoint()
    monkeypatch.setenv("ACME_KEY", "k")
    assert factory.create_llm("acme-1").endpoint().base_url == "https://acme.example/v1"


def test_config_layers(home: Path) -> None:
    (home / "config.toml").write_text(
        "[defaults]\ntemperature = 0.1\nmax_tokens = 100\ntop_p = 0.3\n"
        "[api_keys]\nopenai = \"from-file\"\n"
        "[base_urls]\nopenai = \"https://file.example/v1\"\n"
    )
    factory = LLMFactory(database_url="sqlite://", discover=False,
                         config=LLMConfig(max_tokens=200, seed=1))
    model = factory.register_model("layered", provider="openai", service="openai",
                                   extras={"llm_config": {"top_k": 5, "temperature": 0.9}})
    llm = factory.create_llm(model, LLMConfig(seed=2, options={"x": 1}))
    config = llm.config
    assert (config.top_k, config.temperature, config.top_p) == (5, 0.1, 0.3)
    assert (config.max_tokens, config.seed, config.options) == (200, 2, {"x": 1})
    endpoint = llm.endpoint()
    assert (endpoint.base_url, endpoint.api_key) == ("https://file.example/v1", "from-file")
    factory.close()


def test_key_and_url_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "config.toml").write_text("[api_keys]\nopenai = \"from-file\"\n")
    factory = LLMFactory(database_url="sqlite://", discover=False)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert factory.create_llm("gpt-4o").endpoint().api_key == "from-env"
    explicit = factory.create_llm("gpt-4o", LLMConfig(api_key="explicit",
                                                      base_url="http://127.0.0.1:9/v1"))
    assert explicit.endpoint().api_key == "explicit"
    assert explicit.endpoint().base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="http"):
        factory.create_llm("gpt-4o", LLMConfig(base_url="ftp://x")).endpoint()
    factory.close()


def test_nothing_is_sent_before_the_first_message(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = factory.create_llm(f"llama3.2:latest:ollama@{ollama_server.host}")
    factory.register_model(f"known:latest:ollama@{ollama_server.host}")
    shared = llmfactory.create_llm  # the shared factory, with discovery on
    llmfactory.register_model(f"known:latest:ollama@{ollama_server.host}")
    shared(f"known:ollama@{ollama_server.host}")
    assert isinstance(llm, OllamaLLM) and ollama_server.requests == []
    assert llm.send_user_message_sync("hi").content == "Echo: hi"
    llm.close()
    assert [r.path for r in ollama_server.requests] == ["/api/chat"]


def test_an_unknown_host_is_probed_once_when_discovery_is_on(
    ollama_server: OllamaServer,
) -> None:
    llm = llmfactory.create_llm(f"qwen3:4b:ollama@{ollama_server.host}")
    assert llm.model.source == "discovered" and "reasoning" in llm.model.capabilities
    assert all(r.path != "/api/chat" for r in ollama_server.requests)


def test_module_level_create_llm_uses_the_shared_factory(home: Path) -> None:
    llm = llmfactory.create_llm("gpt-4o")
    assert isinstance(llm, OpenAILLM) and llm.model.provider == "openai"
    assert LLMFactory.instance().initialized


def test_a_full_identifier_the_registry_does_not_know_skips_suggestions(
    factory: LLMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Did you mean" compares the name with every known model: a conversation with a
    # model named in full must not pay for suggestions nobody will see.
    def no_suggestions(text: str, limit: int = 5) -> list[str]:
        raise AssertionError(f"suggestions computed for {text!r}")

    monkeypatch.setattr(factory, "suggest", no_suggestions)
    llm = factory.create_llm("not-registered:ollama@127.0.0.1:9")
    assert llm.identifier == "not-registered:latest:ollama@127.0.0.1:9"
    monkeypatch.undo()
    with pytest.raises(ModelNotFoundError) as info:
        factory.create_llm("gpt-4o-minii")  # a bare name: suggestions are the help
    assert "gpt-4o-mini" in info.value.suggestions


def test_host_records_are_read_once_and_followed_when_they_change(
    factory: LLMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    identifier = "m:openai_compatible@127.0.0.1:9"
    assert factory.create_llm(identifier).endpoint().base_url == "http://127.0.0.1:9/v1"
    reads = []
    load_hosts = factory.store.load_hosts
    monkeypatch.setattr(factory.store, "load_hosts", lambda: reads.append(1) or load_hosts())
    for _ in range(3):
        factory.create_llm(identifier)
    assert reads == []  # cached
    factory.add_host("openai_compatible", "https://127.0.0.1:9/proxy", probe=False)
    base = factory.create_llm(identifier).endpoint().base_url
    assert base == "https://127.0.0.1:9/proxy/v1" and len(reads) >= 1
    factory.remove_host("openai_compatible", "https://127.0.0.1:9/proxy")
    assert factory.create_llm(identifier).endpoint().base_url == "http://127.0.0.1:9/v1"
