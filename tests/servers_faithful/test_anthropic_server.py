"""The Anthropic loopback server, checked with the official ``anthropic`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.servers import AnthropicServer, Fault, ToolCallSpec
from tests.servers.fixtures import ANTHROPIC_TEST_KEY

MODEL = "claude-sonnet-4-6"  # not in the SDK's DEPRECATED_MODELS (warnings are errors)
USER = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HEADERS = {"x-api-key": ANTHROPIC_TEST_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def client(anthropic_server: AnthropicServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=anthropic_server.url, api_key=ANTHROPIC_TEST_KEY, max_retries=0
    ) as c:
        yield c


def parse_sse(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_create_non_stream(client: anthropic.Anthropic, anthropic_server: AnthropicServer) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be terse.",
        messages=USER,  # type: ignore[arg-type]
    )
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Echo: hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 10  # "Be terse." (2+3) + "hello there" (2+3)
    assert message.usage.output_tokens == 3
    assert message.usage.cache_read_input_tokens == 0
    sent = anthropic_server.last_request
    assert sent.json["system"] == "Be terse."
    assert sent.header("anthropic-version")  # this SDK sends 2026-10-21; any value is accepted


def test_create_with_thinking_and_tools(
    client: anthropic.Anthropic, anthropic_server: AnthropicServer
) -> None:
    anthropic_server.script_reply(
        content="Checking.",
        thinking="Need the weather.",
        tool_calls=[ToolCallSpec("get_weather", {"city": "Tokyo"}, id="toolu_01")],
        cached_tokens=7,
        cache_creation_tokens=2,
    )
    message = client.messages.create(
        model=MODEL,
        max_tokens=1000,
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 500},
    )
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "Need the weather."  # type: ignore[union-attr]
    assert message.content[0].signature  # type: ignore[union-attr]
    tool = message.content[2]
    assert (tool.id, tool.name, tool.input) == ("toolu_01", "get_weather", {"city": "Tokyo"})  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert message.usage.cache_read_input_tokens == 7
    assert message.usage.cache_creation_input_tokens == 2


def test_stream_final_message(
    client: anthropic.Anthropic, anthropic_server: AnthropicServer
) -> None:
    anthropic_server.script_reply(
        content="Let me look that up.",
        tool_calls=[{"name": "get_weather", "arguments": {"city": "Tokyo", "days": 3}}],
    )
    with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Let me look that up."
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Let me look that up."  # type: ignore[union-attr]
    assert final.content[1].input == {"city": "Tokyo", "days": 3}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 5
    assert final.usage.output_tokens == 6  # 5 text chunks + 1 tool call


def test_stream_thinking_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=USER,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 50},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking == "Thinking about: hello there"
    assert final.content[0].signature


def test_event_order_raw(anthropic_server: AnthropicServer) -> None:
    anthropic_server.script_reply(content="Hi you", tool_calls=[ToolCallSpec("f", {"a": 1})])
    response = httpx.post(
        anthropic_server.url + "/v1/messages",
        headers=HEADERS,
        json={"model": MODEL, "max_tokens": 50, "messages": USER, "stream": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[7][1]["delta"] == {"type": "input_json_delta", "partial_json": ""}
    assert events[-2][1]["usage"] == {"output_tokens": 3}
    assert "[DONE]" not in response.text


def test_request_validation(anthropic_server: AnthropicServer) -> None:
    url = anthropic_server.url + "/v1/messages"
    no_max = httpx.post(url, headers=HEADERS, json={"model": MODEL, "messages": USER})
    assert no_max.status_code == 400
    body = no_max.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "max_tokens: Field required"
    assert body["request_id"].startswith("req_")
    no_version = httpx.post(
        url,
        headers={"x-api-key": ANTHROPIC_TEST_KEY},
        json={"model": MODEL, "max_tokens": 5, "messages": USER},
    )
    assert no_version.status_code == 400
    assert httpx.get(anthropic_server.url + "/v2/nothing").status_code == 404


def test_errors(anthropic_server: AnthropicServer, client: anthropic.Anthropic) -> None:
    with (
        anthropic.Anthropic(
            base_url=anthropic_server.url, api_key="sk-ant-wrong", max_retries=0
        ) as bad,
        pytest.raises(anthropic.AuthenticationError) as auth,
    ):
        bad.messages.create(model=MODEL, max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]

    anthropic_server.push_fault(Fault.rate_limited(retry_after=5))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "5"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]

    anthropic_server.push_fault(Fault.http_error(529))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value, anthropic.OverloadedError)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_mid_stream_error_event(
    client: anthropic.Anthropic, anthropic_server: AnthropicServer
) -> None:
    anthropic_server.push_fault(Fault.error_mid_stream(after_n_chunks=4))
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=USER,  # type: ignore[arg-type]
        ) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == ["Echo: "]
    assert "overloaded_error" in str(info.value)


def test_models_and_count_tokens(
    client: anthropic.Anthropic, anthropic_server: AnthropicServer
) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    counted = client.messages.count_tokens(model=MODEL, messages=USER)  # type: ignore[arg-type]
    assert counted.input_tokens == 5


def test_x_api_key_header_accepted(anthropic_server: AnthropicServer) -> None:
    ok = httpx.post(
        anthropic_server.url + "/v1/messages",
        headers=HEADERS,
        json={"model": MODEL, "max_tokens": 5, "messages": USER},
    )
    assert ok.status_code == 200
    strict = AnthropicServer(api_key="k", accept_bearer=False, strict_models=True)
    with strict:
        bearer = httpx.post(
            strict.url + "/v1/messages",
            headers={"Authorization": "Bearer k", "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "max_tokens": 5, "messages": USER},
        )
        assert bearer.status_code == 401
        unknown = httpx.post(
            strict.url + "/v1/messages",
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
            json={"model": "claude-nope", "max_tokens": 5, "messages": USER},
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["type"] == "not_found_error"


@pytest.mark.anyio
async def test_async_client(anthropic_server: AnthropicServer) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=anthropic_server.url, api_key=ANTHROPIC_TEST_KEY, max_retries=0
    ) as c:
        message = await c.messages.create(model=MODEL, max_tokens=50, messages=USER)  # type: ignore[arg-type]
    assert message.content[0].text == "Echo: hello there"  # type: ignore[union-attr]
