"""Anthropic's Messages API: ``POST {base}/v1/messages``, streamed as named SSE events.

The system prompt is the request's ``system`` field, not a message;
``max_tokens`` is required (``LLMConfig.max_tokens``, else
:attr:`AnthropicLLM.default_max_tokens` capped by the model's output limit);
``stop`` becomes ``stop_sequences``. Consecutive user-side messages (tool
results, then a question) are merged into one user turn of content blocks, as
the API requires. Tool calls are ``tool_use`` blocks whose arguments stream as
``input_json_delta`` fragments; thinking arrives as ``thinking`` blocks.
``LLMConfig.options`` entries are added to the request as they are
(``thinking``, ``tool_choice``, ``metadata``, …). The key goes in ``x-api-key``.
``LLMConfig.prompt_caching`` marks ``cache_control`` breakpoints
(:mod:`llmfactory.api.prompt_caching`); cache reads and writes come back in
``Usage.cached_tokens`` and ``Usage.cache_creation_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any, cast

from llmfactory.api.keys import Endpoint
from llmfactory.api.prompt_caching import mark_anthropic_cache
from llmfactory.api.streaming import iter_sse_json
from llmfactory.base_llm import BaseLLM, Call
from llmfactory.errors import MalformedResponseError
from llmfactory.messages import (
    ChunkResponse,
    CompleteResponse,
    Image,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["ANTHROPIC_VERSION", "AnthropicLLM"]

ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` header sent with every request."""

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _image_block(image: Image) -> dict[str, Any]:
    if image.url is not None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": image.media_type, "data": image.base64},
    }


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role is Role.TOOL:
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
            }
        ]
    blocks: list[dict[str, Any]] = [_image_block(image) for image in message.images]
    if message.content or not (message.images or message.tool_calls):
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}
        for call in message.tool_calls
    )
    return blocks


def _messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role is Role.SYSTEM:
            system.append(message.content)
            continue
        role = "assistant" if message.role is Role.ASSISTANT else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # a lone text block is sent as a plain string
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return ("\n\n".join(system) if system else None), turns


def _usage(raw: Mapping[str, Any], output_tokens: int | None = None) -> Usage:
    cache_read = raw.get("cache_read_input_tokens") or 0
    cache_creation = raw.get("cache_creation_input_tokens") or 0
    prompt = (raw.get("input_tokens") or 0) + cache_read + cache_creation
    completion = (raw.get("output_tokens") or 0) if output_tokens is None else output_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cache_read,
        cache_creation_tokens=cache_creation,
    )


def _stop_reason(reason: Any) -> str | None:
    if reason is None:
        return None
    return _STOP_REASONS.get(str(reason), str(reason))


class AnthropicLLM(BaseLLM):
    """A conversation over Anthropic's Messages API (and servers that clone it)."""

    chat_path = "/v1/messages"

    #: ``max_tokens`` when the config sets none (capped by the model's output limit).
    default_max_tokens = 4096

    def _auth_headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if endpoint.api_key:
            headers["x-api-key"] = endpoint.api_key
        return headers

    def _payload(self, call: Call, stream: bool) -> dict[str, Any]:
        config = call.config
        system, turns = _messages(call.messages)
        max_tokens = config.max_tokens
        if max_tokens is None:
            limit = self.model.max_output_tokens
            max_tokens = min(self.default_max_tokens, limit) if limit else self.default_max_tokens
        payload: dict[str, Any] = {
            "model": call.model_name,
            "max_tokens": max_tokens,
            "messages": turns,
        }
        if system is not None:
            payload["system"] = system
        if stream:
            payload["stream"] = True
        if config.temperature is not None:
            payload["temperature"] = config.temperature
        if config.top_p is not None:
            payload["top_p"] = config.top_p
        if config.top_k is not None:
            payload["top_k"] = config.top_k
        if config.stop:
            payload["stop_sequences"] = list(config.stop)
        if call.tools:
            payload["tools"] = [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": dict(tool.parameters),
                }
                for tool in call.tools
            ]
        if config.options:
            payload.update(config.options)
        if config.prompt_caching:
            mark_anthropic_cache(payload)  # cache_control breakpoints: see api/prompt_caching.py
        return payload

    async def _complete(self, call: Call) -> CompleteResponse:
        obj = await self._post_json(call, self._payload(call, False))
        if not isinstance(obj, Mapping) or not isinstance(obj.get("content"), list):
            raise MalformedResponseError(
                f"{self.provider} answered {self.chat_path} without content blocks: "
                f"{str(obj)[:200]!r} (is this an Anthropic-compatible server?)",
                provider=self.provider,
            )
        text: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        for block in obj["content"]:
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            if kind == "text":
                text.append(str(block.get("text") or ""))
            elif kind == "thinking":
                thinking.append(str(block.get("thinking") or ""))
            elif kind == "tool_use":
                arguments = block.get("input")
                calls.append(
                    ToolCall(
                        id=str(block.get("id") or f"toolu_{len(calls)}"),
                        name=str(block.get("name") or ""),
                        arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
                    )
                )
        call.reported_model = str(obj.get("model") or "")
        usage = obj.get("usage")
        return CompleteResponse(
            content="".join(text),
            reasoning="".join(thinking) or None,
            tool_calls=tuple(calls),
            finish_reason=_stop_reason(obj.get("stop_reason")),
            usage=_usage(usage) if isinstance(usage, Mapping) else None,
        )

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        start_usage: Mapping[str, Any] = {}
        output_tokens = 0
        stop_reason: Any = None
        done = False
        tool_index: dict[int, int] = {}  # content block index -> tool call ordinal
        async with self._open_stream(call, self._payload(call, True)) as response:
            events = cast(
                "AsyncGenerator[tuple[str | None, dict[str, Any]], None]",
                iter_sse_json(response, provider=self.provider),
            )
            text_chunk = ChunkResponse.delta
            async with aclosing(events):
                async for _, obj in events:
                    kind = obj.get("type")
                    if kind == "content_block_delta":
                        delta = obj.get("delta") or {}
                        delta_type = delta.get("type")
                        if delta_type == "text_delta":
                            text = delta.get("text")
                            if text:
                                yield text_chunk(text)
                        elif delta_type == "input_json_delta":
                            ordinal = tool_index.get(obj.get("index", -1))
                            fragment = delta.get("partial_json") or ""
                            if ordinal is not None and fragment:
                                yield ChunkResponse(
                                    tool_calls=(ToolCallDelta(index=ordinal, arguments=fragment),)
                                )
                        elif delta_type == "thinking_delta":
                            thought = delta.get("thinking")
                            if thought:
                                yield text_chunk("", thought)
                    elif kind == "content_block_start":
                        block = obj.get("content_block") or {}
                        block_type = block.get("type")
                        if block_type == "tool_use":
                            ordinal = tool_index[obj.get("index", -1)] = len(tool_index)
                            initial = block.get("input")
                            yield ChunkResponse(
                                tool_calls=(
                                    ToolCallDelta(
                                        index=ordinal,
                                        id=block.get("id"),
                                        name=block.get("name"),
                                        arguments=json.dumps(initial) if initial else "",
                                    ),
                                )
                            )
                        elif block_type == "text" and block.get("text"):
                            yield ChunkResponse(content=block["text"])
                        elif block_type == "thinking" and block.get("thinking"):
                            yield ChunkResponse(reasoning=block["thinking"])
                    elif kind == "message_start":
                        message = obj.get("message") or {}
                        start_usage = message.get("usage") or {}
                        call.reported_model = str(message.get("model") or "")
                    elif kind == "message_delta":
                        delta = obj.get("delta") or {}
                        if delta.get("stop_reason") is not None:
                            stop_reason = delta["stop_reason"]
                        usage = obj.get("usage") or {}
                        if usage.get("output_tokens") is not None:
                            output_tokens = usage["output_tokens"]
                        if usage.get("input_tokens") is not None:
                            start_usage = {**start_usage, **usage}
                    elif kind == "message_stop":
                        done = True
        if not done:
            return  # no message_stop: BaseLLM reports the stream as cut short
        yield ChunkResponse(
            is_complete=True,
            finish_reason=_stop_reason(stop_reason),
            usage=_usage(start_usage, output_tokens),
        )
