"""AnthropicLLM against a loopback Anthropic Messages server: named SSE events, the
system field, required max_tokens, tool_use blocks, images, thinking and faults."""

from __future__ import annotations

import base64
from typing import Any

import pytest

import llmfactory
from llmfactory import (
    LLMAPIError,
    LLMConfig,
    LLMConnectionError,
    LLMFactory,
    MissingAPIKeyError,
)
from llmfactory.api.anthropic import AnthropicLLM
from tests.api.chat_support import (  # noqa: F401  (clients: a fixture)
    clients,
    collect,
    wire_messages,
)
from tests.servers import AnthropicServer, Fault
from tests.servers.fixtures import ANTHROPIC_TEST_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clients")]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def env(anthropic_server: AnthropicServer, monkeypatch: pytest.MonkeyPatch) -> AnthropicServer:
    """The key and base URL of the loopback server, in the environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url)
    return anthropic_server


def _llm(factory: LLMFactory, config: LLMConfig | None = None,
         model: str = "claude-sonnet-4-5") -> AnthropicLLM:
    llm = factory.create_llm(model, config)
    assert isinstance(llm, AnthropicLLM)
    return llm


def _requests(server: AnthropicServer) -> list[Any]:
    return [r.json for r in server.requests_to("/v1/messages")]


async def test_two_turns_then_a_stream(env: AnthropicServer) -> None:
    """The issue's "done when" against an Anthropic-protocol server."""
    env.script_reply("Paris.", prompt_tokens=20, completion_tokens=2, cached_tokens=100)
    env.script_reply("About 2.1 million.", prompt_tokens=31, completion_tokens=4)
    env.script_reply("The Seine.", prompt_tokens=42, completion_tokens=3)
    llm = llmfactory.create_llm("claude-sonnet-4-5")
    llm.configure_system_prompt("You are terse.")

    first = await llm.send_user_message("Capital of France?")
    second = await llm.send_user_message("Population?")
    text, chunks = await collect(llm.stream_user_message("River?"))

    assert (first.content, second.content, text) == ("Paris.", "About 2.1 million.", "The Seine.")
    assert wire_messages(llm) == [
        ("system", "You are terse."),
        ("user", "Capital of France?"), ("assistant", "Paris."),
        ("user", "Population?"), ("assistant", "About 2.1 million."),
        ("user", "River?"), ("assistant", "The Seine."),
    ]
    requests = env.requests_to("/v1/messages")
    assert all(r.header("x-api-key") == ANTHROPIC_TEST_KEY for r in requests)
    assert all(r.header("anthropic-version") == "2023-06-01" for r in requests)
    bodies = [r.json for r in requests]
    assert all(b["system"] == "You are terse." and b["max_tokens"] == 4096 for b in bodies)
    assert bodies[2]["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Population?"},
        {"role": "assistant", "content": "About 2.1 million."},
        {"role": "user", "content": "River?"},
    ]
    assert bodies[2]["stream"] is True and "stream" not in bodies[0]
    usages = [first.usage, second.usage, chunks[-1].usage]
    assert [(u.prompt_tokens, u.completion_tokens, u.cached_tokens) for u in usages if u] == [
        (120, 2, 100), (31, 4, 0), (42, 3, 0)
    ]
    prices = llm.model.pricing  # USD per million tokens, from the catalogue
    assert first.usage is not None and prices.cached_input_per_million is not None
    assert first.usage.cost_usd == pytest.approx(
        (20 * prices.input_per_million + 100 * prices.cached_input_per_million
         + 2 * prices.output_per_million) / 1e6
    )
    assert first.usage.cost_usd > 0
    assert chunks[-1].finish_reason == "stop" and chunks[-1].response is not None
    assert chunks[-1].response.model == "claude-sonnet-4-5"


async def test_missing_key_fails_at_the_first_send_naming_the_variable(
    anthropic_server: AnthropicServer, monkeypatch: pytest.MonkeyPatch, factory: LLMFactory
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url)
    llm = _llm(factory)  # creating it is fine
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY") as info:
        await llm.send_user_message("hi")
    assert info.value.env_var == "ANTHROPIC_API_KEY"
    assert anthropic_server.requests == [] and llm.messages == []


async def test_config_maps_to_the_request(env: AnthropicServer, factory: LLMFactory) -> None:
    llm = _llm(factory, LLMConfig(max_tokens=100, temperature=0.3, top_p=0.9, top_k=5,
                                  stop=("END",), options={"metadata": {"user_id": "u1"}}))
    await llm.send_user_message("hi")
    body = _requests(env)[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (
        100, 0.3, 0.9, 5
    )
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u1"}
    assert "system" not in body


async def test_max_tokens_stop_is_length(env: AnthropicServer, factory: LLMFactory) -> None:
    env.script_reply("one two three four", times=2)
    llm = _llm(factory, LLMConfig(max_tokens=2))
    response = await llm.send_user_message("count")
    assert (response.content, response.finish_reason) == ("one two ", "length")
    _, chunks = await collect(llm.stream_user_message("again"))
    assert chunks[-1].finish_reason == "length"


@pytest.mark.parametrize("streamed", [False, True])
async def test_tool_use_round_trip(env: AnthropicServer, factory: LLMFactory,
                                   streamed: bool) -> None:
    env.script_reply("Let me check.", tool_calls=[
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
        {"name": "get_weather", "arguments": {"city": "Lyon"}},
    ])
    env.script_reply("11 and 13 degrees.")
    llm = _llm(factory)
    if streamed:
        text, chunks = await collect(llm.stream_user_message("Weather?", tools=[WEATHER]))
        assert text == "Let me check."
        fragments = [d for c in chunks for d in c.tool_calls if d.index == 0]
        assert len(fragments) > 2 and fragments[0].name == "get_weather"
        response = chunks[-1].response
        assert response is not None
    else:
        response = await llm.send_user_message("Weather?", tools=[WEATHER])
    assert response.finish_reason == "tool_calls"
    paris, lyon = response.tool_calls
    assert dict(paris.arguments) == {"city": "Paris", "unit": "celsius"}
    assert dict(lyon.arguments) == {"city": "Lyon"} and paris.id.startswith("toolu_")
    llm.add_tool_result(paris.id, "11")
    llm.add_tool_result(lyon.id, "13")
    assert (await llm.send_user_message("And tomorrow?", tools=[WEATHER])).content == (
        "11 and 13 degrees."
    )
    first, second = _requests(env)
    assert first["tools"] == [WEATHER]
    assert second["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": paris.id, "name": "get_weather",
             "input": {"city": "Paris", "unit": "celsius"}},
            {"type": "tool_use", "id": lyon.id, "name": "get_weather", "input": {"city": "Lyon"}},
        ]},
        {"role": "user", "content": [  # tool results and the question: one user turn
            {"type": "tool_result", "tool_use_id": paris.id, "content": "11"},
            {"type": "tool_result", "tool_use_id": lyon.id, "content": "13"},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]


async def test_images_are_image_blocks(env: AnthropicServer, factory: LLMFactory) -> None:
    llm = _llm(factory)
    await llm.send_user_message("What is this?", images=[PNG, "https://example.com/c.png"])
    content = _requests(env)[0]["messages"][0]["content"]
    assert content == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(PNG).decode()}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/c.png"}},
        {"type": "text", "text": "What is this?"},
    ]


async def test_thinking_blocks_are_reasoning(env: AnthropicServer, factory: LLMFactory) -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    env.script_reply("42.", thinking="Deep thought.", times=2)
    llm = _llm(factory, LLMConfig(options=thinking))
    response = await llm.send_user_message("Meaning?")
    assert (response.content, response.reasoning) == ("42.", "Deep thought.")
    text, chunks = await collect(llm.stream_user_message("Again?"))
    assert text == "42." and "".join(c.reasoning for c in chunks) == "Deep thought."
    assert _requests(env)[0]["thinking"] == thinking["thinking"]


async def test_overloaded_error_event_mid_stream(
    env: AnthropicServer, factory: LLMFactory
) -> None:
    llm = _llm(factory)
    env.push_fault(Fault.error_mid_stream(after_n_chunks=3))
    with pytest.raises(LLMAPIError, match="Overloaded") as info:
        await collect(llm.stream_user_message("x"))
    assert info.value.status == 200 and info.value.error_type == "overloaded_error"
    assert len(_requests(env)) == 1 and llm.messages == []


async def test_overloaded_529_is_retried(env: AnthropicServer, factory: LLMFactory) -> None:
    llm = _llm(factory, LLMConfig(retries=1))
    env.push_fault(Fault.http_error(529, retry_after=0.1), path="/v1/messages")
    assert (await llm.send_user_message("hi")).content == "Echo: hi"
    assert len(_requests(env)) == 2


async def test_stream_cut_short(env: AnthropicServer, factory: LLMFactory) -> None:
    llm = _llm(factory)
    env.push_fault(Fault.cut_after(4))
    with pytest.raises(LLMConnectionError):
        await collect(llm.stream_user_message("x"))
    env.push_fault(Fault.cut_after(4, reset=False))
    with pytest.raises(LLMConnectionError):
        await collect(llm.stream_user_message("y"))
    assert llm.messages == []


async def test_local_clone_without_a_key(start_server: Any, factory: LLMFactory) -> None:
    server = start_server(AnthropicServer())
    llm = _llm(factory, LLMConfig(base_url=server.url, api_key="unused-by-the-clone"))
    assert (await llm.send_user_message("hi")).content == "Echo: hi"
