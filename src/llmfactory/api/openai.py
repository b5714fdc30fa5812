"""OpenAI-compatible chat: ``POST {base}/chat/completions``, streamed as SSE.

One class serves OpenAI, LM Studio, llama.cpp's server, vLLM, DeepSeek, Groq,
Mistral, Gemini's OpenAI endpoint and any other server of this dialect. The
base URL includes the version (``https://api.openai.com/v1``,
``http://localhost:1234/v1``); the key goes in ``Authorization: Bearer``.

Streams ask for usage (``stream_options.include_usage``); a server that sends
none (llama.cpp's Python server) gets its usage estimated and flagged
``Usage.estimated``. Tool calls stream as argument fragments per ``index``;
reasoning arrives as ``reasoning_content`` or ``reasoning``. Images go as
``image_url`` parts with data URLs. ``LLMConfig.options`` entries are added to
the request as they are (``response_format``, ``tool_choice``,
``reasoning_effort``, …).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any, cast

from llmfactory.api.keys import Endpoint
from llmfactory.api.streaming import (
    BODY_EXCERPT_CHARS,
    build_api_error,
    iter_sse_json,
    parse_error_body,
)
from llmfactory.base_llm import BaseLLM, Call
from llmfactory.errors import MalformedResponseError
from llmfactory.messages import (
    ChunkResponse,
    CompleteResponse,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    Usage,
    estimate_tokens,
)

__all__ = ["OpenAILLM"]


def _message(message: Message) -> dict[str, Any]:
    role = message.role
    data: dict[str, Any] = {"role": role.value}
    if message.images:
        parts: list[dict[str, Any]] = []
        if message.content:
            parts.append({"type": "text", "text": message.content})
        parts.extend(
            {"type": "image_url", "image_url": {"url": image.data_url}} for image in message.images
        )
        data["content"] = parts
    else:
        data["content"] = message.content
    if message.tool_calls:
        data["content"] = message.content or None
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in message.tool_calls
        ]
    if role is Role.TOOL:
        data["tool_call_id"] = message.tool_call_id
    return data


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt = raw.get("prompt_tokens") or 0
    completion = raw.get("completion_tokens") or 0
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=raw.get("total_tokens") or prompt + completion,
        cached_tokens=(prompt_details or {}).get("cached_tokens") or 0
        if isinstance(prompt_details, Mapping)
        else raw.get("prompt_cache_hit_tokens") or 0,  # DeepSeek's older field
        reasoning_tokens=(completion_details or {}).get("reasoning_tokens") or 0
        if isinstance(completion_details, Mapping)
        else 0,
    )


def _estimated_usage(call: Call, completion_tokens: int) -> Usage:
    prompt = estimate_tokens([m.content for m in call.messages])
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=prompt + completion_tokens,
        estimated=True,
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content given as parts
        return "".join(
            str(part.get("text") or "") for part in value if isinstance(part, Mapping)
        )
    return ""


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for i, item in enumerate(raw or ()):
        if not isinstance(item, Mapping):
            continue
        function = item.get("function") or {}
        call_id = str(item.get("id") or f"call_{i}")
        name = str(function.get("name") or "")
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            calls.append(ToolCall(id=call_id, name=name, arguments=dict(arguments)))
        else:
            calls.append(
                ToolCall.from_json_arguments(id=call_id, name=name, arguments=str(arguments or ""))
            )
    return tuple(calls)


def _tool_deltas(raw: Any) -> tuple[ToolCallDelta, ...]:
    deltas: list[ToolCallDelta] = []
    for position, item in enumerate(raw):
        if not isinstance(item, Mapping):
            continue
        function = item.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # some servers send whole objects
            arguments = json.dumps(arguments, ensure_ascii=False)
        index = item.get("index")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=item.get("id") or None,
                name=function.get("name") or None,
                arguments=arguments or "",
            )
        )
    return tuple(deltas)


class OpenAILLM(BaseLLM):
    """A conversation over the OpenAI-compatible ``/chat/completions`` API (and
    ``/completions`` for text completion: :mod:`llmfactory.api.openai_text`)."""

    chat_path = "/chat/completions"
    supports_text_completion = True

    async def _complete_text(self, call: Call) -> CompleteResponse:
        from llmfactory.api.openai_text import completion

        return await completion(self, call)

    def _stream_text(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        from llmfactory.api.openai_text import completion_stream

        return completion_stream(self, call)

    def _auth_headers(self, endpoint: Endpoint) -> dict[str, str]:
        if endpoint.api_key:
            return {"Authorization": f"Bearer {endpoint.api_key}"}
        return {}

    @property
    def _max_tokens_field(self) -> str:
        # OpenAI's own API wants max_completion_tokens (its reasoning models refuse
        # max_tokens); every other server of the dialect reads max_tokens.
        return "max_completion_tokens" if self.provider == "openai" else "max_tokens"

    def _payload(self, call: Call, stream: bool) -> dict[str, Any]:
        config = call.config
        payload: dict[str, Any] = {
            "model": call.model_name,
            "messages": [_message(m) for m in call.messages],
        }
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        if config.temperature is not None:
            payload["temperature"] = config.temperature
        if config.top_p is not None:
            payload["top_p"] = config.top_p
        if config.top_k is not None:
            payload["top_k"] = config.top_k
        if config.max_tokens is not None:
            payload[self._max_tokens_field] = config.max_tokens
        if config.stop:
            payload["stop"] = list(config.stop)
        if config.seed is not None:
            payload["seed"] = config.seed
        if call.tools:
            payload["tools"] = [tool.to_openai() for tool in call.tools]
        if config.options:
            payload.update(config.options)
        return payload

    def _parse_completion(self, call: Call, obj: Any) -> CompleteResponse:
        choices = obj.get("choices") if isinstance(obj, Mapping) else None
        if not choices or not isinstance(choices[0], Mapping):
            raise MalformedResponseError(
                f"{self.provider} answered {self.chat_path} without choices: "
                f"{str(obj)[:200]!r} (is this an OpenAI-compatible server?)",
                provider=self.provider,
            )
        choice = choices[0]
        message = choice.get("message") or {}
        content = _text(message.get("content"))
        call.reported_model = str(obj.get("model") or "")
        usage = _usage(obj.get("usage"))
        if usage is None:
            usage = _estimated_usage(call, estimate_tokens([content]))
        return CompleteResponse(
            content=content,
            reasoning=message.get("reasoning_content") or message.get("reasoning") or None,
            tool_calls=_tool_calls(message.get("tool_calls")),
            finish_reason=choice.get("finish_reason"),
            usage=usage,
        )

    async def _complete(self, call: Call) -> CompleteResponse:
        return self._parse_completion(call, await self._post_json(call, self._payload(call, False)))

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        finish: str | None = None
        usage: Usage | None = None
        model = ""
        pieces = 0
        async with self._open_stream(call, self._payload(call, True)) as response:
            content_type = response.headers.get("content-type", "")
            if "json" in content_type and "event-stream" not in content_type:
                # Not a stream: an error some servers send with status 200, or a
                # server that ignored "stream". Read it whole.
                body = await response.read()
                try:
                    obj = json.loads(body)
                except ValueError:
                    obj = None
                if isinstance(obj, Mapping) and obj.get("error") is not None:
                    raise build_api_error(
                        response.status_code,
                        parse_error_body(obj),
                        body=body[:BODY_EXCERPT_CHARS].decode("utf-8", "replace"),
                        provider=self.provider,
                        url=response.url,
                        mid_stream=False,
                    )
                whole = self._parse_completion(call, obj)
                yield ChunkResponse(
                    content=whole.content,
                    reasoning=whole.reasoning or "",
                    tool_calls=tuple(
                        ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments_json)
                        for i, c in enumerate(whole.tool_calls)
                    ),
                    is_complete=True,
                    finish_reason=whole.finish_reason,
                    usage=whole.usage,
                )
                return
            events = cast(
                "AsyncGenerator[tuple[str | None, dict[str, Any]], None]",
                iter_sse_json(response, provider=self.provider),
            )
            text_chunk = ChunkResponse.delta
            async with aclosing(events):
                async for _, obj in events:
                    choices = obj.get("choices")
                    if choices:
                        choice = choices[0]
                        delta = choice.get("delta")
                        reason = choice.get("finish_reason")
                        if delta:
                            content = delta.get("content")
                            if content and len(delta) == 1:  # the common case: text only
                                pieces += 1
                                yield text_chunk(content)
                            else:
                                content = content or ""
                                reasoning = (
                                    delta.get("reasoning_content") or delta.get("reasoning") or ""
                                )
                                raw_tools = delta.get("tool_calls")
                                if raw_tools:
                                    pieces += 1
                                    yield ChunkResponse(
                                        content=content,
                                        reasoning=reasoning,
                                        tool_calls=_tool_deltas(raw_tools),
                                    )
                                elif content or reasoning:
                                    pieces += 1
                                    yield text_chunk(content, reasoning)
                        if not reason:
                            continue  # usage comes with the finish or in a chunk of its own
                        finish = reason
                    raw_usage = obj.get("usage")
                    if raw_usage:
                        usage = _usage(raw_usage)
                    if not model:
                        model = obj.get("model") or ""
        if finish is None:
            return  # the stream ended before a finish_reason: BaseLLM reports it
        call.reported_model = model
        yield ChunkResponse(
            is_complete=True,
            finish_reason=finish,
            usage=usage if usage is not None else _estimated_usage(call, pieces),
        )
