"""OpenAILLM against loopback OpenAI-compatible servers (OpenAI, LM Studio, llama.cpp,
vLLM flavours): SSE streams, usage, tools with streamed arguments, images, reasoning,
authentication and faults."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

import llmfactory
from llmfactory import (
    AuthenticationError,
    ContextLengthExceededError,
    LLMAPIError,
    LLMConfig,
    LLMConnectionError,
    LLMFactory,
    RateLimitError,
)
from llmfactory.api.openai import OpenAILLM
from llmfactory.errors import MalformedResponseError
from tests.api.chat_support import (  # noqa: F401  (clients: a fixture)
    busy_connections,
    clients,
    collect,
    wire_messages,
)
from tests.servers import Fault, OpenAICompatServer
from tests.servers.fixtures import OPENAI_TEST_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clients")]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
LOOKUP = {
    "name": "lookup",
    "description": "Look a word up",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
}


def _llm(factory: LLMFactory, server: OpenAICompatServer, model: str | None = None,
         runtime: str = "lmstudio", config: LLMConfig | None = None) -> OpenAILLM:
    name = model or server.models[0].name
    llm = factory.create_llm(f"{name}:{runtime}@{server.host}", config)
    assert isinstance(llm, OpenAILLM)
    return llm


def _chats(server: OpenAICompatServer) -> list[Any]:
    return [r.json for r in server.requests_to("/v1/chat/completions")]


async def test_two_turns_then_a_stream_with_lm_studio(lmstudio_server: OpenAICompatServer) -> None:
    """The issue's "done when" against an LM Studio server."""
    lmstudio_server.script_reply("Paris.", prompt_tokens=21, completion_tokens=2)
    server = lmstudio_server
    server.script_reply("About 2.1 million people.", prompt_tokens=30, completion_tokens=4)
    server.script_reply("The Seine runs through it.", prompt_tokens=41, completion_tokens=5)
    llm = llmfactory.create_llm(f"qwen/qwen3-4b:lmstudio@{lmstudio_server.host}")
    llm.configure_system_prompt("You are terse.")

    first = await llm.send_user_message("Capital of France?")
    second = await llm.send_user_message("Population?")
    text, chunks = await collect(llm.stream_user_message("River?"))

    assert (first.content, second.content, text) == (
        "Paris.", "About 2.1 million people.", "The Seine runs through it."
    )
    assert wire_messages(llm) == [
        ("system", "You are terse."),
        ("user", "Capital of France?"), ("assistant", "Paris."),
        ("user", "Population?"), ("assistant", "About 2.1 million people."),
        ("user", "River?"), ("assistant", "The Seine runs through it."),
    ]
    requests = _chats(lmstudio_server)
    assert [len(r["messages"]) for r in requests] == [2, 4, 6]
    assert requests[2]["messages"] == [
        {"role": m.role.value, "content": m.content} for m in llm.messages[:-1]
    ]
    assert requests[2]["stream"] is True
    assert requests[2]["stream_options"] == {"include_usage": True}
    assert "stream" not in requests[0]
    usages = [first.usage, second.usage, chunks[-1].usage]
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usages if u] == [
        (21, 2, 23), (30, 4, 34), (41, 5, 46)
    ]
    assert not any(u is None or u.estimated for u in usages)
    assert chunks[-1].finish_reason == "stop" and chunks[-1].response is not None
    assert chunks[-1].response.model == "qwen/qwen3-4b"
    assert lmstudio_server.requests[0].header("authorization") is None


async def test_openai_cloud_with_key_and_base_url_from_the_environment(
    openai_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch, factory: LLMFactory
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_server.url}/v1")
    openai_server.script_reply("Hi!", prompt_tokens=1_000_000, completion_tokens=100_000,
                               cached_tokens=500_000, reasoning_tokens=7)
    llm = factory.create_llm("gpt-4o-mini", LLMConfig(max_tokens=50, temperature=0.5, seed=3))
    response = await llm.send_user_message("Hello")
    request = openai_server.requests_to("/v1/chat/completions")[0]
    assert request.header("authorization") == f"Bearer {OPENAI_TEST_KEY}"
    assert request.json["max_completion_tokens"] == 50 and "max_tokens" not in request.json
    assert (request.json["temperature"], request.json["seed"]) == (0.5, 3)
    usage = response.usage
    assert usage is not None
    assert (usage.cached_tokens, usage.reasoning_tokens) == (500_000, 7)
    prices = llm.model.pricing  # USD per million tokens, from the catalogue
    assert prices.cached_input_per_million is not None
    assert usage.cost_usd == pytest.approx(
        0.5 * prices.input_per_million + 0.5 * prices.cached_input_per_million
        + 0.1 * prices.output_per_million
    )
    assert usage.cost_usd > 0
    text, chunks = await collect(llm.stream_user_message("Again"))
    assert text == "Echo: Again" and chunks[-1].usage is not None


async def test_wrong_key_is_an_authentication_error(
    openai_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    config = LLMConfig(api_key="sk-wrong", base_url=f"{openai_server.url}/v1")
    llm = factory.create_llm("gpt-4o-mini", config)
    with pytest.raises(AuthenticationError) as info:
        await llm.send_user_message("Hello")
    assert info.value.status == 401 and "sk-wrong" not in str(info.value)
    assert llm.messages == []


async def test_llama_cpp_streams_without_usage_get_an_estimate(
    llamacpp_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, llamacpp_server, runtime="openai_compatible",
               config=LLMConfig(max_tokens=32))
    response = await llm.send_user_message("one two three")
    assert response.usage is not None and not response.usage.estimated
    text, chunks = await collect(llm.stream_user_message("four five"))
    usage = chunks[-1].usage
    assert text == "Echo: four five"
    assert usage is not None and usage.estimated and usage.completion_tokens == 3
    assert usage.prompt_tokens > 0
    assert _chats(llamacpp_server)[0]["max_tokens"] == 32


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_calls_with_streamed_arguments_round_trip(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory, streamed: bool
) -> None:
    arguments = {"word": "serendipity", "language": "en", "examples": 3}
    lmstudio_server.script_reply(tool_calls=[
        {"name": "lookup", "arguments": arguments, "id": "call_abc"},
        {"name": "lookup", "arguments": {"word": "x"}},
    ])
    lmstudio_server.script_reply("Found it.")
    llm = _llm(factory, lmstudio_server)
    if streamed:
        _, chunks = await collect(llm.stream_user_message("Define serendipity", tools=[LOOKUP]))
        deltas = [d for c in chunks for d in c.tool_calls]
        assert len([d for d in deltas if d.index == 0]) > 2  # arguments came in fragments
        assert deltas[0].id == "call_abc" and deltas[0].name == "lookup"
        response = chunks[-1].response
        assert response is not None
    else:
        response = await llm.send_user_message("Define serendipity", tools=[LOOKUP])
    assert response.finish_reason == "tool_calls"
    first, second = response.tool_calls
    assert (first.id, first.name, dict(first.arguments)) == ("call_abc", "lookup", arguments)
    assert dict(second.arguments) == {"word": "x"}
    llm.add_tool_result(first.id, "a happy accident")
    llm.add_tool_result(second.id, "unknown")
    assert (await llm.send_user_message(tools=[LOOKUP])).content == "Found it."
    request = _chats(lmstudio_server)[1]
    assert request["tools"] == [{"type": "function", "function": LOOKUP}]
    assistant, tool_a, tool_b = request["messages"][1:]
    assert assistant["content"] is None and assistant["tool_calls"][0] == {
        "id": "call_abc", "type": "function",
        "function": {"name": "lookup", "arguments": first.arguments_json},
    }
    assert tool_a == {"role": "tool", "content": "a happy accident", "tool_call_id": "call_abc"}
    assert tool_b["tool_call_id"] == second.id


async def test_images_are_data_url_parts(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, lmstudio_server, model="google/gemma-3-4b")
    await llm.send_user_message("What is this?", images=[PNG, "https://example.com/cat.png"])
    content = _chats(lmstudio_server)[0]["messages"][-1]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url",
         "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_in_either_field(
    start_server: Any, factory: LLMFactory, field: str
) -> None:
    server = start_server(OpenAICompatServer("lmstudio", reasoning_field=field))
    server.script_reply("42.", thinking="Deep thought.", times=2)
    llm = _llm(factory, server)
    response = await llm.send_user_message("Meaning?")
    assert (response.content, response.reasoning) == ("42.", "Deep thought.")
    _, chunks = await collect(llm.stream_user_message("Again?"))
    assert "".join(c.reasoning for c in chunks) == "Deep thought."


async def test_crlf_and_keep_alive_comments(start_server: Any, factory: LLMFactory) -> None:
    server = start_server(OpenAICompatServer("generic", sse_line_ending="\r\n",
                                             sse_comment_every=2))
    server.script_reply("one two three four")
    llm = _llm(factory, server, runtime="openai_compatible")
    text, chunks = await collect(llm.stream_user_message("x"))
    assert text == "one two three four" and chunks[-1].usage is not None


async def test_options_are_sent_as_they_are(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, lmstudio_server, config=LLMConfig(
        top_p=0.9, top_k=20, stop=("END",),
        options={"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    ))
    await llm.send_user_message("x")
    request = _chats(lmstudio_server)[0]
    assert (request["top_p"], request["top_k"], request["stop"]) == (0.9, 20, ["END"])
    assert request["response_format"]["type"] == "json_schema"


async def test_context_length_exceeded(
    llamacpp_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, llamacpp_server, runtime="openai_compatible")
    with pytest.raises(ContextLengthExceededError, match="context"):
        await llm.send_user_message("word " * 600)
    assert llm.messages == []


async def test_error_object_mid_stream(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, lmstudio_server)
    lmstudio_server.push_fault(Fault.error_mid_stream(after_n_chunks=2))
    with pytest.raises(LLMAPIError, match="had an error") as info:
        await collect(llm.stream_user_message("x"))
    assert info.value.status == 200 and len(_chats(lmstudio_server)) == 1
    assert llm.messages == []


async def test_a_json_error_with_status_200(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, lmstudio_server)
    body = {"error": "Unexpected endpoint or method. (POST /v1/chat/completions)"}
    lmstudio_server.push_fault(Fault.http_error(200, body), times=2)
    with pytest.raises(LLMAPIError, match="Unexpected endpoint"):
        await llm.send_user_message("x")
    with pytest.raises(LLMAPIError, match="Unexpected endpoint"):
        await collect(llm.stream_user_message("x"))
    assert llm.messages == []


async def test_a_server_that_ignores_stream(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, lmstudio_server)
    whole = {
        "id": "x", "object": "chat.completion", "model": "qwen/qwen3-4b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    }
    lmstudio_server.push_fault(Fault.http_error(200, whole))
    text, chunks = await collect(llm.stream_user_message("x"))
    assert text == "All at once." and chunks[-1].usage is not None
    assert llm.messages[-1].content == "All at once."


async def test_connection_cut_and_malformed_event(
    lmstudio_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = _llm(factory, lmstudio_server)
    lmstudio_server.script_reply("a b c d e f")
    lmstudio_server.push_fault(Fault.cut_after(3))
    with pytest.raises(LLMConnectionError):
        await collect(llm.stream_user_message("x"))
    lmstudio_server.push_fault(Fault.malformed_line(after_n_chunks=2))
    with pytest.raises(MalformedResponseError):
        await collect(llm.stream_user_message("y"))
    assert llm.messages == [] and busy_connections(lmstudio_server.url) == 0


async def test_rate_limited_then_success(
    openai_server: OpenAICompatServer, factory: LLMFactory
) -> None:
    llm = factory.create_llm(
        "gpt-4o-mini", LLMConfig(api_key=OPENAI_TEST_KEY, base_url=f"{openai_server.url}/v1")
    )
    openai_server.push_fault(Fault.rate_limited(retry_after=0.3))
    started = time.monotonic()
    assert (await llm.send_user_message("hi")).content == "Echo: hi"
    assert time.monotonic() - started >= 0.28 and len(_chats(openai_server)) == 2
    openai_server.push_fault(Fault.rate_limited(retry_after=120))  # too long to wait
    with pytest.raises(RateLimitError) as info:
        await llm.send_user_message("again")
    assert info.value.retry_after == 120 and len(llm.messages) == 2
