"""The conversation values: messages, images, tools, tool calls, usage, responses, chunks."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from llmfactory.messages import (
    ChunkResponse,
    CompleteResponse,
    Image,
    Message,
    Role,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    estimate_tokens,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16


def test_role_compares_with_its_wire_name() -> None:
    assert Role.USER == "user" and str(Role.ASSISTANT) == "assistant"
    assert Role("tool") is Role.TOOL


def test_values_are_frozen_and_keyword_only() -> None:
    message = Message.user("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.content = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Message(Role.USER, "hi")  # type: ignore[misc]
    chunk = ChunkResponse.delta("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        chunk.content = "y"  # type: ignore[misc]


def test_fast_delta_chunk_equals_the_regular_one() -> None:
    fast = ChunkResponse.delta("Hel", "thinking")
    assert fast == ChunkResponse(content="Hel", reasoning="thinking")
    assert fast.tool_calls == () and not fast.is_complete and fast.usage is None
    assert "content='Hel'" in repr(fast)


def test_message_constructors() -> None:
    assert Message.system("s").role is Role.SYSTEM
    tool = Message.tool("call_1", "11C", name="get_weather")
    assert (tool.role, tool.tool_call_id, tool.name) == (Role.TOOL, "call_1", "get_weather")
    call = ToolCall(id="c", name="f", arguments={"x": 1})
    assistant = Message.assistant("", tool_calls=[call], reasoning="hmm")
    assert assistant.tool_calls == (call,) and assistant.reasoning == "hmm"


def test_message_dict_round_trip() -> None:
    original = Message(
        role=Role.ASSISTANT,
        content="ok",
        tool_calls=(ToolCall(id="call_1", name="f", arguments={"a": [1, 2]}),),
        reasoning="because",
    )
    assert Message.coerce(original.to_dict()) == original
    user = Message.user("look", images=[PNG])
    again = Message.coerce(user.to_dict())
    assert again.images[0].data == PNG and again.images[0].media_type == "image/png"


def test_message_coerce_reads_openai_shapes() -> None:
    message = Message.coerce(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_9", "type": "function",
                 "function": {"name": "f", "arguments": '{"city":"Paris"}'}}
            ],
        }
    )
    assert message.content == ""
    assert message.tool_calls[0] == ToolCall(id="call_9", name="f", arguments={"city": "Paris"})
    with pytest.raises(ValueError, match="unknown message role"):
        Message.coerce({"role": "robot", "content": "x"})
    with pytest.raises(ValueError):
        Message.coerce("hello")  # type: ignore[arg-type]


def test_image_coerce_accepts_every_form(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(JPEG)
    from_path = Image.coerce(path)
    from_str_path = Image.coerce(str(path))
    from_bytes = Image.coerce(JPEG)
    b64 = base64.b64encode(JPEG).decode()
    from_b64 = Image.coerce(b64)
    from_data_url = Image.coerce(f"data:image/jpeg;base64,{b64}")
    for image in (from_path, from_str_path, from_bytes, from_b64, from_data_url):
        assert image.data == JPEG and image.media_type == "image/jpeg"
        assert image.data_url == f"data:image/jpeg;base64,{b64}"
    url = Image.coerce("https://example.com/cat.png")
    assert url.url == "https://example.com/cat.png" and url.data == b""
    assert Image.coerce(from_bytes) is from_bytes
    assert "bytes" in repr(from_bytes) and b64 not in repr(from_bytes)


def test_image_coerce_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="cannot read image"):
        Image.coerce("not an image, not a file")
    with pytest.raises(ValueError, match="base64"):
        Image.coerce("data:image/png,rawtext")
    with pytest.raises(ValueError):
        Image.coerce(12)  # type: ignore[arg-type]


def test_tool_coerce_accepts_the_common_shapes() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    openai_style = {"type": "function",
                    "function": {"name": "w", "description": "d", "parameters": schema}}
    plain = {"name": "w", "description": "d", "parameters": schema}
    anthropic_style = {"name": "w", "description": "d", "input_schema": schema}
    tools = [Tool.coerce(t) for t in (openai_style, plain, anthropic_style)]
    assert tools[0] == tools[1] == tools[2] == Tool(name="w", description="d", parameters=schema)
    assert tools[0].to_openai() == openai_style
    assert Tool.coerce({"name": "bare"}).parameters == {"type": "object", "properties": {}}
    with pytest.raises(ValueError, match="name"):
        Tool.coerce({"description": "no name"})


def test_tool_call_arguments() -> None:
    call = ToolCall.from_json_arguments(id="1", name="f", arguments='{"x": 1}')
    assert call.arguments == {"x": 1} and call.raw_arguments is None
    assert call.arguments_json == '{"x":1}'
    broken = ToolCall.from_json_arguments(id="2", name="f", arguments='{"x": ')
    assert broken.arguments == {} and broken.raw_arguments == '{"x": '
    assert broken.arguments_json == '{"x": '
    assert ToolCall.from_json_arguments(id="3", name="f", arguments="  ").arguments == {}
    assert broken.to_dict()["raw_arguments"] == '{"x": '


def test_usage_adds_up() -> None:
    a = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_usd=0.5)
    b = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3, estimated=True)
    total = a + b
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (11, 7, 18)
    assert total.cost_usd == 0.5 and total.estimated
    assert (Usage() + Usage()).cost_usd is None
    assert total.to_dict()["total_tokens"] == 18


def test_complete_response_message_and_dict() -> None:
    call = ToolCall(id="c", name="f", arguments={})
    response = CompleteResponse(
        content="hi", reasoning="", tool_calls=(call,), finish_reason="tool_calls",
        usage=Usage(prompt_tokens=1), latency_ms=12.3456, model="m",
    )
    assert response.message == Message(role=Role.ASSISTANT, content="hi", tool_calls=(call,))
    data = response.to_dict()
    assert data["latency_ms"] == 12.346 and data["tool_calls"][0]["name"] == "f"
    assert data["usage"]["prompt_tokens"] == 1


def test_tool_call_delta_defaults() -> None:
    delta = ToolCallDelta(index=0, arguments='{"a"')
    assert delta.id is None and delta.name is None


def test_estimate_tokens() -> None:
    assert estimate_tokens([]) == 0
    assert estimate_tokens(["abcd", "efgh"]) == 2
    assert estimate_tokens(["a"]) == 1
