"""Raw text completion: complete_text / stream_text over Ollama's /api/generate and the
OpenAI-compatible /v1/completions, through the same pipeline as chat; a clear error where
the protocol (Anthropic) or the cloud model has none."""

from __future__ import annotations

from typing import Any

import pytest

import llmfactory
from llmfactory import (
    LLMAPIError,
    LLMConfig,
    LLMFactory,
    NotSupportedError,
)
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.servers import AnthropicServer, Fault, OllamaServer, OpenAICompatServer
from tests.servers.fixtures import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

# Async tests close their event loop's pooled clients; the sync test's portal closes its own.
asynchronous = pytest.mark.usefixtures("clients")


def _bodies(server: Any, path: str) -> list[Any]:
    return [r.json for r in server.requests_to(path)]


# --------------------------------------------------------------------------- Ollama


@pytest.mark.anyio
@asynchronous
async def test_ollama_generate_unary_and_streamed(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    ollama_server.script_reply(" there lived a fox.", prompt_tokens=7, completion_tokens=5)
    ollama_server.script_reply(chunks=[" and", " it", " ran."], prompt_tokens=9,
                               completion_tokens=3)
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}",
                             LLMConfig(system_message="Never used here."))
    answer = await llm.complete_text("Once upon a time", max_tokens=40, temperature=0.5)
    text, chunks = await collect(llm.stream_text("The fox", stop=["."]))

    assert answer.content == " there lived a fox." and answer.finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 5)
    assert answer.model == "llama3.2:latest"
    assert text == " and it ran." and len(chunks) == 4 and chunks[-1].is_complete
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert llm.messages == [llm.messages[0]]  # only the system prompt: nothing committed
    first, second = _bodies(ollama_server, "/api/generate")
    assert first["prompt"] == "Once upon a time" and first["raw"] is True
    assert first["stream"] is False and "system" not in first and "messages" not in first
    assert first["options"] == {"num_predict": 40, "temperature": 0.5}
    assert second["stream"] is True and second["options"] == {"stop": ["."]}
    assert ollama_server.requests_to("/api/chat") == []
    assert llm.usage.calls == 2  # the usage tracker saw both


@pytest.mark.anyio
@asynchronous
async def test_ollama_generate_options_reach_the_top_of_the_request(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    answer = await llm.complete_text(
        "def add(a, b):",
        options={"raw": False, "system": "You write Python.", "suffix": "\n", "num_ctx": 2048},
    )
    assert answer.content == "Echo: def add(a, b):"  # the loopback server's default answer
    body = _bodies(ollama_server, "/api/generate")[0]
    assert (body["raw"], body["system"], body["suffix"]) == (False, "You write Python.", "\n")
    assert body["options"] == {"num_ctx": 2048}


@pytest.mark.anyio
@asynchronous
async def test_ollama_generate_error_mid_stream(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    ollama_server.script_reply("one two three four five")
    ollama_server.push_fault(Fault.error_mid_stream(after_n_chunks=2))
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    with pytest.raises(LLMAPIError) as info:
        await collect(llm.stream_text("count"))
    assert info.value.status == 200
    assert llm.usage.errors == 1


def test_sync_text_completion_over_ollama(ollama_server: OllamaServer) -> None:
    with llmfactory.create_llm(f"llama3.2:ollama@{ollama_server.host}") as llm:
        assert llm.complete_text_sync("hello").content == "Echo: hello"
        with llm.stream_text_sync("streamed") as stream:
            assert "".join(c.content for c in stream) == "Echo: streamed"


# --------------------------------------------------------------------------- OpenAI-compatible


@pytest.mark.anyio
@asynchronous
@pytest.mark.parametrize("flavor", ["lmstudio", "vllm"])
async def test_v1_completions_unary_and_streamed(
    factory: LLMFactory, start_server: Any, flavor: str
) -> None:
    server = start_server(OpenAICompatServer(flavor))
    runtime = "lmstudio" if flavor == "lmstudio" else "openai_compatible"
    model = server.models[0].name
    server.script_reply(" fox jumped.", prompt_tokens=4, completion_tokens=3, cached_tokens=2)
    llm = factory.create_llm(f"{model}:{runtime}@{server.host}")
    answer = await llm.complete_text("The quick brown", max_tokens=16, seed=7)
    text, chunks = await collect(llm.stream_text("Again", top_p=0.5))

    assert answer.content == " fox jumped." and answer.finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 3)
    assert answer.usage.cached_tokens == 2
    assert text == "Echo: Again" and chunks[-1].usage is not None
    assert not chunks[-1].usage.estimated  # include_usage was asked for and sent
    first, second = _bodies(server, "/v1/completions")
    assert first["prompt"] == "The quick brown" and "messages" not in first
    assert (first["max_tokens"], first["seed"]) == (16, 7) and "stream" not in first
    assert second["stream"] is True and second["stream_options"] == {"include_usage": True}
    assert second["top_p"] == 0.5
    assert server.requests_to("/v1/chat/completions") == []


@pytest.mark.anyio
@asynchronous
async def test_v1_completions_without_usage_in_the_stream_is_estimated(
    factory: LLMFactory, llamacpp_server: OpenAICompatServer
) -> None:
    model = llamacpp_server.models[0].name
    llm = factory.create_llm(f"{model}:openai_compatible@{llamacpp_server.host}")
    _, chunks = await collect(llm.stream_text("Tell me"))
    usage = chunks[-1].usage
    assert usage is not None and usage.estimated and usage.completion_tokens > 0


@pytest.mark.anyio
@asynchronous
async def test_v1_completions_errors_are_api_errors(
    factory: LLMFactory, lmstudio_server: OpenAICompatServer
) -> None:
    model = lmstudio_server.models[0].name
    llm = factory.create_llm(f"{model}:lmstudio@{lmstudio_server.host}")
    lmstudio_server.push_fault(Fault.http_error(400, {"error": {"message": "bad prompt"}}))
    with pytest.raises(LLMAPIError, match="bad prompt"):
        await llm.complete_text("x", retries=0)
    lmstudio_server.push_fault(Fault.error_mid_stream(after_n_chunks=1))
    lmstudio_server.script_reply("one two three")
    with pytest.raises(LLMAPIError):
        await collect(llm.stream_text("y"))


@pytest.mark.anyio
@asynchronous
async def test_openai_legacy_model_with_the_completion_capability(
    factory: LLMFactory, openai_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_server.url}/v1")
    name = openai_server.models[0].name
    factory.register_model(name, service="openai", capabilities=["completion"],
                           input_price_per_million=1.5, output_price_per_million=2.0)
    llm = factory.create_llm(name)
    openai_server.script_reply("Hello.", prompt_tokens=1000, completion_tokens=500)
    answer = await llm.complete_text("Say hello", max_tokens=5)
    assert answer.content == "Hello."
    assert answer.usage is not None and answer.usage.cost_usd == pytest.approx(0.0025)
    body = _bodies(openai_server, "/v1/completions")[0]
    assert body["max_tokens"] == 5  # the legacy endpoint keeps max_tokens
    assert openai_server.requests_to("/v1/completions")[0].header("authorization") == (
        f"Bearer {OPENAI_TEST_KEY}"
    )


# --------------------------------------------------------------------------- not supported


@pytest.mark.anyio
@asynchronous
async def test_anthropic_has_no_text_completion(
    factory: LLMFactory, anthropic_server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url)
    llm = factory.create_llm("claude-sonnet-4-5")
    with pytest.raises(NotSupportedError, match="no raw text completion") as info:
        await llm.complete_text("Once upon a time")
    assert isinstance(info.value, NotImplementedError)
    assert (info.value.operation, info.value.provider) == ("text_completion", "anthropic")
    with pytest.raises(NotSupportedError):
        llm.stream_text("Once upon a time")
    assert anthropic_server.requests == [] and llm.usage.calls == 0


@pytest.mark.anyio
@asynchronous
async def test_an_openai_chat_model_is_refused_before_sending(factory: LLMFactory) -> None:
    llm = factory.create_llm("gpt-4o")
    with pytest.raises(NotSupportedError, match="not known to offer text completion"):
        await llm.complete_text("hi")


@pytest.mark.anyio
@asynchronous
async def test_system_message_does_not_apply(factory: LLMFactory,
                                             ollama_server: OllamaServer) -> None:
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    with pytest.raises(TypeError, match="system_message"):
        await llm.complete_text("hi", system_message="Be brief.")
    with pytest.raises(TypeError, match="string"):
        await llm.complete_text(["hi"])  # type: ignore[arg-type]
    assert ollama_server.requests_to("/api/generate") == []
