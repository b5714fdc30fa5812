"""Replicas: grouping records into logical models, resolution, and failover between hosts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

import pytest

from llmfactory import (
    AmbiguousModelError,
    CompleteResponse,
    LLMAPIError,
    LLMConnectionError,
    LLMExtension,
    LLMFactory,
    LLMModel,
    ModelNotFoundError,
)
from llmfactory.api.ollama import OllamaLLM
from llmfactory.base_llm import Call
from llmfactory.registry.groups import group_models, replica_groups
from llmfactory.replicas import ATTEMPTS_KEY, ReplicaLLM
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.servers import Fault, OllamaServer, OpenAICompatServer
from tests.servers.base import LoopbackServer
from tests.servers.scripting import ServedModel

S = TypeVar("S", bound=LoopbackServer)
DIGEST = "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"


def _record(name: str, runtime: str = "ollama", host: str | None = "h1:11434",
            digest: str | None = None) -> LLMModel:
    now = datetime.now(timezone.utc)
    ident = name if host is None else f"{name}:{runtime}@{host}"
    return LLMModel(identifier=ident, name=name, runtime=runtime if host else "api", host=host,
                    digest=digest, capabilities=["chat"], first_seen=now, last_seen=now)


# --------------------------------------------------------------------------- grouping


def test_grouping_by_name_and_digest() -> None:
    models = [
        _record("llama3.2:latest", host="a:11434", digest=DIGEST),
        _record("llama3.2:3b", host="b:11434", digest=DIGEST),  # same weights, other tag
        _record("llama3.2:latest", host="c:11434", digest="other"),  # same name: joined too
        _record("qwen3:4b", host="a:11434", digest="q"),
        _record("qwen/qwen3-4b", runtime="lmstudio", host="a:1234"),
        _record("qwen/qwen3-4b", runtime="lmstudio", host="b:1234"),
        _record("qwen/qwen3-4b", runtime="openai_compatible", host="c:8000"),  # other runtime
        _record("gpt-4o", host=None),  # cloud: not a replica of anything
    ]
    groups = {g.identifier: g.identifiers for g in group_models(models)}
    assert groups == {
        "llama3.2:latest:ollama@any": ["llama3.2:3b:ollama@b:11434",
                                       "llama3.2:latest:ollama@a:11434",
                                       "llama3.2:latest:ollama@c:11434"],
        "qwen3:4b:ollama@any": ["qwen3:4b:ollama@a:11434"],
        "qwen/qwen3-4b:lmstudio@any": ["qwen/qwen3-4b:lmstudio@a:1234",
                                       "qwen/qwen3-4b:lmstudio@b:1234"],
        "qwen/qwen3-4b:openai_compatible@any": ["qwen/qwen3-4b:openai_compatible@c:8000"],
    }
    by_id = replica_groups(models)
    assert "gpt-4o" not in by_id
    assert len(by_id["llama3.2:3b:ollama@b:11434"]) == 3


# --------------------------------------------------------------------------- live servers


@pytest.fixture
def pair(start_server: Callable[[S], S]) -> tuple[OllamaServer, OllamaServer]:
    """Two Ollama servers with llama3.2 (same digest); only the second has it loaded."""
    a = start_server(OllamaServer(models=[
        ServedModel("llama3.2:latest", digest=DIGEST, loaded=False),
        ServedModel("qwen3:4b", digest="1" * 64),
    ]))
    b = start_server(OllamaServer(models=[
        ServedModel("llama3.2:latest", digest=DIGEST, loaded=True),
    ]))
    return a, b


@pytest.fixture
def factory_pair(pair: tuple[OllamaServer, OllamaServer]) -> Iterator[LLMFactory]:
    a, b = pair
    factory = LLMFactory(database_url="sqlite://", discover=False)
    report = factory.refresh([f"ollama={a.url}", f"ollama={b.url}"])
    assert len(report.ok) == 2
    yield factory
    factory.close()


def _chats(server: OllamaServer) -> list[Any]:
    return [r.json for r in server.requests_to("/api/chat")]


def _status(factory: LLMFactory, server: OllamaServer) -> str:
    return next(r.status for r in factory.hosts() if r.address == server.host)


def test_resolution(factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]) -> None:
    a, b = pair
    factory = factory_pair
    for text in ("llama3.2:latest:ollama@any", "llama3.2:ollama@any", "llama3.2",
                 "llama3.2:latest"):
        llm = factory.create_llm(text)
        assert isinstance(llm, ReplicaLLM), text
        assert llm.identifier == "llama3.2:latest:ollama@any"
        assert [r.identifier for r in llm.replicas] == sorted(
            [f"llama3.2:latest:ollama@{a.host}", f"llama3.2:latest:ollama@{b.host}"])
        assert all(isinstance(r, OllamaLLM) and not r.extensions for r in llm.replicas)
        assert llm.extensions  # the factory's defaults run once, on the replica set
    # A model only one host serves: a plain conversation; @any works for it too.
    assert isinstance(factory.create_llm("qwen3:4b"), OllamaLLM)
    assert isinstance(factory.create_llm("qwen3:4b:ollama@any"), ReplicaLLM)
    # get_model keeps returning one record.
    assert factory.get_model("qwen3:4b:ollama@any").identifier == f"qwen3:4b:ollama@{a.host}"
    with pytest.raises(AmbiguousModelError):
        factory.get_model("llama3.2")
    with pytest.raises(AmbiguousModelError):
        factory.get_model("llama3.2:ollama@any")
    with pytest.raises(ModelNotFoundError, match="no ollama host"):
        factory.create_llm("nothere:ollama@any")
    # The same name on another runtime is a different model: still ambiguous.
    factory.register_model("llama3.2:latest:lmstudio@box:1234")
    with pytest.raises(AmbiguousModelError):
        factory.create_llm("llama3.2:latest")
    assert isinstance(factory.create_llm("llama3.2:ollama@any"), ReplicaLLM)


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_failover_when_a_replica_dies_mid_conversation(
    factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]
) -> None:
    """The issue's "done when": one replica killed, the conversation continues on the other."""
    a, b = pair
    factory = factory_pair
    llm = factory.create_llm("llama3.2:latest:ollama@any")
    assert isinstance(llm, ReplicaLLM)
    llm.configure_system_prompt("Be brief.")
    b.script_reply("Paris.")
    first = await llm.send_user_message("Capital of France?")
    # The loaded replica answered first (a asked for /api/ps too, but not for the chat).
    assert first.identifier == f"llama3.2:latest:ollama@{b.host}"
    assert len(_chats(b)) == 1 and _chats(a) == []
    assert llm.current is not None and llm.current.identifier == first.identifier

    b.stop_and_keep_port()
    a.script_reply("About 2.1 million.")
    second = await llm.send_user_message("Population?")
    assert second.content == "About 2.1 million."
    assert second.identifier == f"llama3.2:latest:ollama@{a.host}"
    # One history: the other replica got the whole conversation.
    sent = [(m["role"], m["content"]) for m in _chats(a)[0]["messages"]]
    assert sent == [("system", "Be brief."), ("user", "Capital of France?"),
                    ("assistant", "Paris."), ("user", "Population?")]
    assert [m.content for m in llm.messages][1:] == [
        "Capital of France?", "Paris.", "Population?", "About 2.1 million."]
    # The dead host cools down, in memory and in its record.
    assert factory.host_health.is_cooling_down(f"ollama@{b.host}")
    assert _status(factory, b) == "unreachable"
    assert llm.request_count == 2 and llm.last_response == second
    # It sticks to the replica that answered; the dead one is not tried again.
    third = await llm.send_user_message("River?")
    assert third.identifier == second.identifier and len(_chats(a)) == 2

    # Back up: a health check ends the cool-down and the record says ok again.
    b.restart()
    report = await llm.health_check()
    assert report.ok and {m.status for m in report.members} == {"ok"}
    assert not factory.host_health.is_cooling_down(f"ollama@{b.host}")
    assert _status(factory, b) == "ok"


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_failover_on_5xx_and_404_before_the_first_chunk(
    factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]
) -> None:
    a, b = pair
    factory = factory_pair
    llm = factory.create_llm("llama3.2")
    assert isinstance(llm, ReplicaLLM)
    b.push_fault(Fault.http_error(503), path="/api/chat")
    answer = await llm.send_user_message("Hi")
    assert answer.identifier.endswith(a.host)
    assert b.count("/api/chat") == 1  # tried once: the other replica is the retry
    assert _status(factory, b) == "error"
    factory.host_health.clear()

    # Streamed calls fail over too when the failure comes before the first chunk; a 404
    # (that host lost the model) skips the replica without blaming its host.
    attempts: list[Any] = []

    class Spy(LLMExtension):
        def after_invoke(self, call: Call, response: CompleteResponse) -> None:
            attempts.extend(call.metadata.get(ATTEMPTS_KEY, []))

    for fault, cooling in ((Fault.http_error(404), False), (Fault.disconnect_now(), True)):
        attempts.clear()
        llm = factory.create_llm("llama3.2")
        llm.register_extension(Spy())
        b.push_fault(fault, path="/api/chat")
        text, chunks = await collect(llm.stream_user_message("Hello there"))
        assert text and chunks[-1].is_complete
        assert llm.last_response is not None and llm.last_response.identifier.endswith(a.host)
        assert [x["identifier"] for x in attempts] == [f"llama3.2:latest:ollama@{b.host}"]
        assert factory.host_health.is_cooling_down(f"ollama@{b.host}") is cooling
        factory.host_health.clear()


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_a_started_stream_is_never_replayed(
    factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]
) -> None:
    a, b = pair
    llm = factory_pair.create_llm("llama3.2:latest:ollama@any")
    b.script_reply(chunks=["one ", "two ", "three ", "four"])
    b.push_fault(Fault.cut_after(2), path="/api/chat")
    seen: list[str] = []
    with pytest.raises(LLMConnectionError):
        async with llm.stream_user_message("Count") as stream:
            async for chunk in stream:
                seen.append(chunk.content)
    assert seen and _chats(a) == []  # never sent to the other replica
    assert llm.messages == []  # the history is as it was


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_every_replica_failing_raises_the_last_error(
    factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]
) -> None:
    a, b = pair
    llm = factory_pair.create_llm("llama3.2:latest:ollama@any")
    for server in (a, b):
        server.push_fault(Fault.http_error(500), path="/api/chat", times=None)
    with pytest.raises(LLMAPIError) as info:
        await llm.send_user_message("Hi", retries=0)
    assert info.value.status == 500
    assert llm.messages == [] and llm.last_response is None and llm.request_count == 1
    # A 400 is not the host's fault: no failover.
    for server in (a, b):
        server.clear_faults()
    b.push_fault(Fault.http_error(400), path="/api/chat")
    with pytest.raises(LLMAPIError) as info:
        await llm.send_user_message("Hi")
    assert info.value.status == 400
    assert a.count("/api/chat") == 1  # only the 500 above reached a


def test_sync_failover(factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]) -> None:
    a, b = pair
    llm = factory_pair.create_llm("llama3.2:latest:ollama@any")
    try:
        b.stop_and_keep_port()
        answer = llm.send_user_message_sync("Hi")
        assert answer.identifier.endswith(a.host)
        assert llm.health_check_sync().ok  # a answers
    finally:
        llm.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_lm_studio_replicas_prefer_the_loaded_one(
    start_server: Callable[[OpenAICompatServer], OpenAICompatServer],
) -> None:
    """LM Studio's loaded state comes from discovery (no extra request at the first call)."""
    servers = [
        start_server(OpenAICompatServer("lmstudio", models=[
            ServedModel("qwen/qwen3-4b", loaded=loaded, publisher="qwen")]))
        for loaded in (False, True)
    ]
    factory = LLMFactory(database_url="sqlite://", discover=False)
    try:
        await factory.arefresh([f"lmstudio={s.url}" for s in servers])
        llm = factory.create_llm("qwen/qwen3-4b")
        assert isinstance(llm, ReplicaLLM) and len(llm.replicas) == 2
        answer = await llm.send_user_message("Hi")
        assert answer.identifier == f"qwen/qwen3-4b:lmstudio@{servers[1].host}"
        assert servers[0].count("/v1/chat/completions") == 0
        servers[1].stop_and_keep_port()
        answer = await llm.send_user_message("Still there?")
        assert answer.identifier == f"qwen/qwen3-4b:lmstudio@{servers[0].host}"
        sent = servers[0].requests_to("/v1/chat/completions")[0].json["messages"]
        assert [m["content"] for m in sent][:1] == ["Hi"] and len(sent) == 3
    finally:
        factory.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_cooling_hosts_are_tried_last_and_reset_session_starts_afresh(
    factory_pair: LLMFactory, pair: tuple[OllamaServer, OllamaServer]
) -> None:
    a, b = pair
    factory = factory_pair
    factory.host_health.mark_unhealthy(f"ollama@{b.host}", "a test says so")
    llm = factory.create_llm("llama3.2:latest:ollama@any")
    assert isinstance(llm, ReplicaLLM)
    assert (await llm.send_user_message("Hi")).identifier.endswith(a.host)
    assert b.count("/api/ps") == 0 and b.count("/api/chat") == 0  # not even asked
    assert [r.request_count for r in llm.replicas if r.identifier.endswith(a.host)] == [1]

    factory.host_health.clear()
    await llm.reset_session()  # forgets the sticky replica: loaded state decides again
    assert llm.current is None
    assert (await llm.send_user_message("Again")).identifier.endswith(b.host)
    assert b.count("/api/ps") == 1
