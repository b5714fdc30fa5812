"""Fallback chains: one history across models, which errors move on, and which do not."""

from __future__ import annotations

from typing import Any

import pytest

from llmfactory import (
    AuthenticationError,
    CompleteResponse,
    FallbackLLM,
    LLMAPIError,
    LLMConfig,
    LLMConnectionError,
    LLMExtension,
    LLMFactory,
    ModelNotFoundError,
)
from llmfactory.base_llm import Call
from llmfactory.fallback import should_fall_back
from llmfactory.replicas import ATTEMPTS_KEY, ReplicaLLM
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.servers import Fault, OllamaServer, OpenAICompatServer, refused_port
from tests.servers.fixtures import OPENAI_TEST_KEY


class Spy(LLMExtension):
    """Remembers the failed attempts of each successful call."""

    def __init__(self) -> None:
        self.attempts: list[list[str]] = []

    def after_invoke(self, call: Call, response: CompleteResponse) -> None:
        self.attempts.append([a["identifier"] for a in call.metadata.get(ATTEMPTS_KEY, [])])


def _local(server: OllamaServer) -> str:
    return f"llama3.2:latest:ollama@{server.host}"


def _messages(server: OllamaServer | OpenAICompatServer, path: str) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in server.requests_to(path)[-1].json["messages"]]


@pytest.fixture
def cloud(openai_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The catalogue's gpt-4o-mini, pointed at the loopback OpenAI server."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_server.url}/v1")
    return "gpt-4o-mini"


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_a_dead_primary_falls_back_and_cools_down(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    port = refused_port()
    dead = f"llama3.2:latest:ollama@127.0.0.1:{port}"
    llm = factory.create_llm(dead, fallbacks=[_local(ollama_server)])
    assert isinstance(llm, FallbackLLM)
    assert [m.identifier for m in llm.members] == [dead, _local(ollama_server)]
    spy = llm.register_extension(Spy())
    first = await llm.send_user_message("Hi")
    assert first.identifier == _local(ollama_server)
    assert llm.last_answered_by is llm.members[1]
    assert spy.attempts == [[dead]]
    assert factory.host_health.is_cooling_down(f"ollama@127.0.0.1:{port}")
    # While the primary cools down it is tried last: the next call goes straight on.
    await llm.send_user_message("Again")
    assert spy.attempts[-1] == []
    assert [m.content for m in llm.messages] == ["Hi", first.content, "Again",
                                                 llm.messages[-1].content]
    assert llm.request_count == 2 and llm.members[0].request_count == 1


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_one_history_across_protocols_and_the_answering_model_prices_it(
    factory: LLMFactory, ollama_server: OllamaServer, openai_server: OpenAICompatServer,
    cloud: str,
) -> None:
    llm = factory.create_llm(cloud, fallbacks=[_local(ollama_server)])
    openai_server.push_fault(Fault.http_error(503), path="/v1/chat/completions", times=None)
    ollama_server.script_reply("Local answer.", prompt_tokens=10, completion_tokens=3)
    local = await llm.send_user_message("Question one")
    assert local.identifier == _local(ollama_server) and local.model == "llama3.2:latest"
    assert local.usage is not None and local.usage.cost_usd == 0.0
    assert openai_server.count("/v1/chat/completions") == 1  # tried once, no retries

    openai_server.clear_faults()
    factory.host_health.clear()
    openai_server.script_reply("Cloud answer.", prompt_tokens=1000, completion_tokens=1000)
    remote = await llm.send_user_message("Question two")
    assert remote.identifier == "gpt-4o-mini"
    assert remote.usage is not None and remote.usage.cost_usd == pytest.approx(
        (1000 * 0.15 + 1000 * 0.60) / 1e6)
    # The cloud model got the whole conversation, the local model's answer included.
    assert _messages(openai_server, "/v1/chat/completions") == [
        ("user", "Question one"), ("assistant", "Local answer."), ("user", "Question two")]


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_a_missing_key_falls_back(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    factory.add_host("ollama", ollama_server.url)
    llm = factory.create_llm("gpt-4o-mini", fallbacks=["llama3.2:ollama@any"])
    assert isinstance(llm, FallbackLLM) and isinstance(llm.members[1], ReplicaLLM)
    answer = await llm.send_user_message("Hi")
    assert answer.identifier == _local(ollama_server)  # the replica that answered
    assert llm.members[0].request_count == 0  # nothing was sent without a key


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_errors_another_model_would_meet_too_do_not_fall_back(
    factory: LLMFactory, ollama_server: OllamaServer, openai_server: OpenAICompatServer,
    cloud: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    llm = factory.create_llm(cloud, fallbacks=[_local(ollama_server)])
    openai_server.push_fault(Fault.http_error(400), path="/v1/chat/completions")
    with pytest.raises(LLMAPIError) as info:
        await llm.send_user_message("Hi")
    assert info.value.status == 400
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with pytest.raises(AuthenticationError):
        await factory.create_llm(cloud, fallbacks=[_local(ollama_server)]).send_user_message("x")
    assert ollama_server.count("/api/chat") == 0
    assert llm.messages == [] and llm.last_response is None
    assert should_fall_back(LLMAPIError("x", status=429))
    assert not should_fall_back(ValueError("x"))


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_every_model_failing_raises_the_last_error(factory: LLMFactory) -> None:
    dead = [f"m{i}:ollama@127.0.0.1:{refused_port()}" for i in range(2)]
    llm = factory.create_llm(dead[0], LLMConfig(retries=0), fallbacks=dead[1:])
    with pytest.raises(LLMConnectionError) as info:
        await llm.send_user_message("Hi")
    assert dead[1].split("@")[1] in str(info.value)
    assert llm.messages == [] and llm.request_count == 1


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_streams_fall_back_only_before_the_first_chunk(
    factory: LLMFactory, ollama_server: OllamaServer, openai_server: OpenAICompatServer,
    cloud: str,
) -> None:
    llm = factory.create_llm(cloud, fallbacks=[_local(ollama_server)])
    openai_server.push_fault(Fault.disconnect_now(), path="/v1/chat/completions")
    text, chunks = await collect(llm.stream_user_message("Hi"))
    assert text and chunks[-1].response is not None
    assert chunks[-1].response.identifier == _local(ollama_server)

    factory.host_health.clear()
    openai_server.script_reply(chunks=["a ", "b ", "c ", "d"])
    openai_server.push_fault(Fault.cut_after(2), path="/v1/chat/completions")
    calls = ollama_server.count("/api/chat")
    with pytest.raises(LLMConnectionError):
        await collect(llm.stream_user_message("Again"))
    assert ollama_server.count("/api/chat") == calls  # a started stream is not replayed
    assert len(llm.messages) == 2


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_members_keep_their_config_under_the_calls_overrides(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    dead = factory.create_llm(f"llama3.2:ollama@127.0.0.1:{refused_port()}",
                              LLMConfig(max_tokens=5))
    alive = factory.create_llm(_local(ollama_server), LLMConfig(max_tokens=50, seed=7))
    llm = FallbackLLM([dead, alive])
    await llm.send_user_message("Hi", temperature=0.25)
    options = ollama_server.requests_to("/api/chat")[-1].json["options"]
    assert options["num_predict"] == 50 and options["seed"] == 7
    assert options["temperature"] == 0.25
    await llm.aclose()
    assert dead._closed and alive._closed


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_unknown_fallback_names_fail_at_creation(factory: LLMFactory) -> None:
    with pytest.raises(ModelNotFoundError):
        factory.create_llm("gpt-4o-mini", fallbacks=["no-such-model-anywhere"])


def test_sync(factory: LLMFactory, ollama_server: OllamaServer) -> None:
    llm = factory.create_llm(f"x:ollama@127.0.0.1:{refused_port()}",
                             fallbacks=[_local(ollama_server)])
    try:
        assert llm.send_user_message_sync("Hi").identifier == _local(ollama_server)
        report = llm.health_check_sync()
        assert report.ok and [m.status for m in report.members] == ["unreachable", "ok"]
    finally:
        llm.close()
