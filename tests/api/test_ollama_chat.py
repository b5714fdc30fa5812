"""OllamaLLM against a loopback Ollama server: /api/chat, NDJSON streams, tools, images,
thinking, usage, and the faults a network and a runtime produce."""

from __future__ import annotations

import base64
import time

import anyio
import pytest

import llmfactory
from llmfactory import (
    LLMAPIError,
    LLMConfig,
    LLMConnectionError,
    LLMFactory,
    LLMTimeoutError,
)
from llmfactory.api.ollama import OllamaLLM
from llmfactory.errors import MalformedResponseError
from tests.api.chat_support import (  # noqa: F401  (clients: a fixture)
    busy_connections,
    clients,
    collect,
    eventually,
    pool_connections,
    wire_messages,
)
from tests.servers import Fault, OllamaServer, refused_port

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clients")]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _llm(factory: LLMFactory, server: OllamaServer, model: str = "llama3.2:latest",
         config: LLMConfig | None = None) -> OllamaLLM:
    llm = factory.create_llm(f"{model}:ollama@{server.host}", config)
    assert isinstance(llm, OllamaLLM)
    return llm


def _chats(server: OllamaServer) -> list[dict]:  # type: ignore[type-arg]
    return [r.json for r in server.requests_to("/api/chat")]


async def test_two_turns_then_a_stream(ollama_server: OllamaServer) -> None:
    """The issue's "done when": history sent whole each time, usage as reported."""
    ollama_server.script_reply("Paris is the capital.", prompt_tokens=26, completion_tokens=5)
    ollama_server.script_reply("About 2.1 million.", prompt_tokens=40, completion_tokens=4)
    ollama_server.script_reply("It is on the Seine.", prompt_tokens=52, completion_tokens=5)
    llm = llmfactory.create_llm(f"llama3.2:latest:ollama@{ollama_server.host}")
    llm.configure_system_prompt("You are terse.")

    first = await llm.send_user_message("Capital of France?")
    second = await llm.send_user_message("Population?")
    text, chunks = await collect(llm.stream_user_message("River?"))

    assert (first.content, second.content, text) == (
        "Paris is the capital.", "About 2.1 million.", "It is on the Seine."
    )
    assert len(chunks) > 2 and chunks[-1].is_complete and not chunks[0].is_complete
    assert wire_messages(llm) == [
        ("system", "You are terse."),
        ("user", "Capital of France?"), ("assistant", "Paris is the capital."),
        ("user", "Population?"), ("assistant", "About 2.1 million."),
        ("user", "River?"), ("assistant", "It is on the Seine."),
    ]
    requests = _chats(ollama_server)
    assert [r["stream"] for r in requests] == [False, False, True]
    assert [len(r["messages"]) for r in requests] == [2, 4, 6]
    assert requests[2]["messages"] == [m.to_dict() for m in llm.messages[:-1]]
    assert all(r["model"] == "llama3.2:latest" for r in requests)
    usages = [first.usage, second.usage, chunks[-1].usage]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usages if u] == [
        (26, 5, 31), (40, 4, 44), (52, 5, 57)
    ]
    assert chunks[-1].response is not None and chunks[-1].response.usage == chunks[-1].usage
    assert all(u is not None and u.cost_usd == 0.0 and not u.estimated for u in usages)
    assert first.finish_reason == "stop" and first.model == "llama3.2:latest"


async def test_short_name_means_latest_and_nothing_is_sent_before_the_first_message(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    assert llm.model.name == "llama3.2:latest" and ollama_server.requests == []
    await llm.send_user_message("hi")
    assert _chats(ollama_server)[0]["model"] == "llama3.2:latest"


async def test_config_maps_to_ollama_options(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    config = LLMConfig(
        temperature=0.2, top_p=0.9, top_k=40, seed=7, max_tokens=64, stop=("END",),
        options={"num_ctx": 8192, "repeat_penalty": 1.1, "keep_alive": "10m", "format": "json"},
    )
    llm = _llm(factory, ollama_server, config=config)
    await llm.send_user_message("hi", temperature=0.0)
    request = _chats(ollama_server)[0]
    assert request["options"] == {
        "temperature": 0.0, "top_p": 0.9, "top_k": 40, "seed": 7, "num_predict": 64,
        "stop": ["END"], "num_ctx": 8192, "repeat_penalty": 1.1,
    }
    assert (request["keep_alive"], request["format"]) == ("10m", "json")
    assert "think" not in request  # not a thinking model


async def test_num_predict_truncation_is_length(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    ollama_server.script_reply("one two three four five", times=2)
    llm = _llm(factory, ollama_server, config=LLMConfig(max_tokens=2))
    response = await llm.send_user_message("count")
    assert (response.content, response.finish_reason) == ("one two ", "length")
    text, chunks = await collect(llm.stream_user_message("again"))
    assert (text, chunks[-1].finish_reason) == ("one two ", "length")


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_call_and_result_round_trip(
    factory: LLMFactory, ollama_server: OllamaServer, streamed: bool
) -> None:
    ollama_server.script_reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    ollama_server.script_reply("It is 11 degrees in Paris.")
    llm = _llm(factory, ollama_server)
    if streamed:
        _, chunks = await collect(llm.stream_user_message("Weather in Paris?", tools=[WEATHER]))
        deltas = [d for c in chunks for d in c.tool_calls]
        assert len(deltas) == 1 and deltas[0].name == "get_weather"
        response = chunks[-1].response
        assert response is not None
    else:
        response = await llm.send_user_message("Weather in Paris?", tools=[WEATHER])
    assert response.finish_reason == "tool_calls"
    (call,) = response.tool_calls
    assert (call.name, dict(call.arguments)) == ("get_weather", {"city": "Paris"})
    llm.add_tool_result(call.id, {"celsius": 11})
    final = await llm.send_user_message(tools=[WEATHER])
    assert final.content == "It is 11 degrees in Paris."
    first, second = _chats(ollama_server)
    assert first["tools"] == [WEATHER]
    assert second["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": call.id,
                         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": '{"celsius": 11}', "tool_name": "get_weather",
         "tool_call_id": call.id},
    ]
    assert [m.role.value for m in llm.messages] == ["user", "assistant", "tool", "assistant"]


async def test_images_are_sent_as_raw_base64(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server)
    await llm.send_user_message("What is this?", images=[PNG])
    message = _chats(ollama_server)[0]["messages"][-1]
    assert message["images"] == [base64.b64encode(PNG).decode()]
    with pytest.raises(ValueError, match="Ollama needs image data"):
        await llm.send_user_message("and this?", images=["https://example.com/cat.png"])
    assert len(llm.messages) == 2


async def test_thinking_models_get_think_and_report_reasoning(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    factory.register_model(f"qwen3:4b:ollama@{ollama_server.host}",
                           capabilities=["chat", "tools", "reasoning"])
    ollama_server.script_reply("42.", thinking="Let me think it over.", times=2)
    llm = _llm(factory, ollama_server, model="qwen3:4b")
    response = await llm.send_user_message("Meaning of life?")
    assert (response.content, response.reasoning) == ("42.", "Let me think it over.")
    _, chunks = await collect(llm.stream_user_message("Again?"))
    assert "".join(c.reasoning for c in chunks) == "Let me think it over."
    assert chunks[-1].response is not None and chunks[-1].response.reasoning is not None
    assert [r["think"] for r in _chats(ollama_server)] == [True, True]
    assert llm.messages[1].reasoning == "Let me think it over."


async def test_unknown_model_is_a_clear_api_error(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server, model="nope:1b")
    with pytest.raises(LLMAPIError, match="not found") as info:
        await llm.send_user_message("hi")
    assert info.value.status == 404 and info.value.provider == "ollama"
    assert llm.messages == []


async def test_connection_refused(factory: LLMFactory) -> None:
    llm = factory.create_llm(
        f"llama3.2:ollama@127.0.0.1:{refused_port()}", LLMConfig(retries=0)
    )
    with pytest.raises(LLMConnectionError, match="cannot connect"):
        await llm.send_user_message("hi")
    assert llm.messages == []


# --------------------------------------------------------------------------- faults


async def test_connection_cut_mid_stream(factory: LLMFactory, ollama_server: OllamaServer) -> None:
    llm = _llm(factory, ollama_server)
    await llm.send_user_message("first")
    before = llm.messages
    ollama_server.script_reply("a b c d e f g h")
    ollama_server.push_fault(Fault.cut_after(3))
    received: list[str] = []
    with pytest.raises(LLMConnectionError, match="mid-response") as info:
        async with llm.stream_user_message("second") as stream:
            async for chunk in stream:
                received.append(chunk.content)
    assert received == ["a ", "b ", "c "] and not isinstance(info.value, LLMTimeoutError)
    assert llm.messages == before
    assert busy_connections(ollama_server.url) == 0
    assert len(_chats(ollama_server)) == 2  # a started stream is never replayed


async def test_clean_end_without_done_is_an_error(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server)
    ollama_server.push_fault(Fault.cut_after(2, reset=False))
    with pytest.raises(LLMConnectionError):
        await collect(llm.stream_user_message("x"))
    assert llm.messages == []


async def test_rate_limited_then_success_waits_once(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server)
    ollama_server.push_fault(Fault.rate_limited(retry_after=0.3), path="/api/chat")
    started = time.monotonic()
    response = await llm.send_user_message("hi")
    assert time.monotonic() - started >= 0.28
    assert response.content == "Echo: hi" and len(_chats(ollama_server)) == 2
    ollama_server.push_fault(Fault.rate_limited(retry_after=0.3), path="/api/chat")
    text, _ = await collect(llm.stream_user_message("again"))
    assert text == "Echo: again" and len(_chats(ollama_server)) == 4


async def test_server_error_before_the_first_byte_is_retried(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server, config=LLMConfig(retries=1))
    ollama_server.push_fault(Fault.http_error(500), path="/api/chat")
    assert (await llm.send_user_message("hi")).content == "Echo: hi"
    ollama_server.push_fault(Fault.http_error(503), path="/api/chat", times=2)
    with pytest.raises(LLMAPIError) as info:
        await llm.send_user_message("again")
    assert info.value.status == 503 and len(_chats(ollama_server)) == 4
    assert len(llm.messages) == 2


async def test_error_after_the_first_byte_is_not_retried(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server)
    ollama_server.script_reply("one two three")
    ollama_server.push_fault(Fault.error_mid_stream(after_n_chunks=1))
    with pytest.raises(LLMAPIError, match="error was encountered") as info:
        await collect(llm.stream_user_message("x"))
    assert info.value.status == 200 and len(_chats(ollama_server)) == 1
    assert llm.messages == []


async def test_malformed_line(factory: LLMFactory, ollama_server: OllamaServer) -> None:
    llm = _llm(factory, ollama_server)
    ollama_server.push_fault(Fault.malformed_line(after_n_chunks=1))
    with pytest.raises(MalformedResponseError):
        await collect(llm.stream_user_message("x"))
    assert llm.messages == []


async def test_slow_drip_within_the_read_timeout(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server, config=LLMConfig(timeout=2.0))
    ollama_server.script_reply("a b c")
    ollama_server.push_fault(Fault.drip_bytes(0.002, piece_bytes=7))
    text, _ = await collect(llm.stream_user_message("x"))
    assert text == "a b c"


async def test_silence_beyond_the_read_timeout(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server, config=LLMConfig(timeout=0.2, retries=0))
    ollama_server.script_reply("a b c")
    ollama_server.push_fault(Fault.drip(1.0))
    with pytest.raises(LLMTimeoutError, match="sent nothing"):
        await collect(llm.stream_user_message("x"))
    ollama_server.push_fault(Fault.stall_before_headers(1.0))
    with pytest.raises(LLMTimeoutError, match="did not answer"):
        await llm.send_user_message("y")
    assert llm.messages == []


async def test_cancel_scope_releases_the_connection(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server)
    await llm.send_user_message("warm up")
    before = llm.messages
    baseline = len([c for c in pool_connections(ollama_server.url) if not c.is_closed()])
    ollama_server.script_reply("a b c d e f g h i j")
    ollama_server.push_fault(Fault.drip(0.2))
    with anyio.move_on_after(0.5) as scope:
        await collect(llm.stream_user_message("slow"))
    assert scope.cancelled_caught and llm.messages == before
    assert busy_connections(ollama_server.url) == 0
    assert len([c for c in pool_connections(ollama_server.url) if not c.is_closed()]) <= baseline
    ollama_server.push_fault(Fault.stall_before_headers(1.0))
    with anyio.move_on_after(0.2):
        await llm.send_user_message("slow again")
    assert llm.messages == before and busy_connections(ollama_server.url) == 0
    assert (await llm.send_user_message("fast")).content == "Echo: fast"


async def test_break_releases_the_connection(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    llm = _llm(factory, ollama_server)
    ollama_server.script_reply("a b c d e f g h i j", times=2)
    ollama_server.push_fault(Fault.drip(0.05), times=2)
    async with llm.stream_user_message("x") as stream:
        async for _ in stream:
            break
    assert busy_connections(ollama_server.url) == 0 and llm.messages == []
    async for _ in llm.stream_user_message("y"):  # no async with: closed by the loop
        break
    await eventually(lambda: busy_connections(ollama_server.url) == 0)
    assert llm.messages == []


def _pool(server: OllamaServer) -> list:  # type: ignore[type-arg]
    from tests.api.chat_support import pool_connections

    return pool_connections(server.url)
