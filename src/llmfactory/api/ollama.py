"""Ollama's native chat API: ``POST /api/chat``, streamed as NDJSON.

Mapping from :class:`~llmfactory.config.LLMConfig`: ``temperature``, ``top_p``,
``top_k``, ``seed`` and ``stop`` go to ``options`` under their own names,
``max_tokens`` becomes ``options.num_predict``. ``LLMConfig.options`` entries
that Ollama reads at the top level of the request (``format``, ``keep_alive``,
``think``, ``truncate``, ``shift``, ``logprobs``, ``top_logprobs``) stay there;
every other entry (``num_ctx``, ``repeat_penalty``, …) goes into ``options``.
``think`` is set for models known to reason. Images are sent as raw base64;
tool calls come back whole, with arguments as a JSON object; usage is
``prompt_eval_count`` / ``eval_count``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any, cast

from llmfactory.api.streaming import iter_ndjson
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
)

__all__ = ["OllamaLLM"]

#: Request fields Ollama reads at the top level rather than inside ``options``.
TOP_LEVEL_FIELDS = frozenset(
    {"format", "keep_alive", "think", "truncate", "shift", "logprobs", "top_logprobs"}
)


def _message(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.images:
        if any(image.url is not None for image in message.images):
            raise ValueError(
                "Ollama needs image data, not URLs: download the image and pass its bytes "
                "or path"
            )
        data["images"] = [image.base64 for image in message.images]
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": call.id, "function": {"name": call.name, "arguments": dict(call.arguments)}}
            for call in message.tool_calls
        ]
    if message.role is Role.TOOL:
        if message.name is not None:
            data["tool_name"] = message.name
        if message.tool_call_id is not None:
            data["tool_call_id"] = message.tool_call_id
    return data


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for item in raw or ():
        if not isinstance(item, Mapping):
            continue
        function = item.get("function") or {}
        arguments = function.get("arguments")
        call_id = str(item.get("id") or f"call_{secrets.token_hex(6)}")
        name = str(function.get("name") or "")
        if isinstance(arguments, str):
            calls.append(ToolCall.from_json_arguments(id=call_id, name=name, arguments=arguments))
        else:
            calls.append(
                ToolCall(
                    id=call_id,
                    name=name,
                    arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
                )
            )
    return tuple(calls)


def _usage(obj: Mapping[str, Any]) -> Usage:
    prompt = obj.get("prompt_eval_count") or 0
    completion = obj.get("eval_count") or 0
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _finish_reason(reason: Any, has_tool_calls: bool) -> str | None:
    if has_tool_calls and reason in (None, "stop"):
        return "tool_calls"
    return str(reason) if reason is not None else None


class OllamaLLM(BaseLLM):
    """A conversation with a model served by Ollama, over its native ``/api/chat``
    (and ``/api/generate`` for text completion: :mod:`llmfactory.api.ollama_text`)."""

    chat_path = "/api/chat"
    supports_text_completion = True

    async def _complete_text(self, call: Call) -> CompleteResponse:
        from llmfactory.api.ollama_text import generate

        return await generate(self, call)

    def _stream_text(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        from llmfactory.api.ollama_text import generate_stream

        return generate_stream(self, call)

    def _payload(self, call: Call, stream: bool) -> dict[str, Any]:
        config = call.config
        options: dict[str, Any] = {}
        if config.temperature is not None:
            options["temperature"] = config.temperature
        if config.top_p is not None:
            options["top_p"] = config.top_p
        if config.top_k is not None:
            options["top_k"] = config.top_k
        if config.seed is not None:
            options["seed"] = config.seed
        if config.max_tokens is not None:
            options["num_predict"] = config.max_tokens
        if config.stop:
            options["stop"] = list(config.stop)
        payload: dict[str, Any] = {
            "model": call.model_name,
            "messages": [_message(m) for m in call.messages],
            "stream": stream,
        }
        if call.tools:
            payload["tools"] = [tool.to_openai() for tool in call.tools]
        for key, value in (config.options or {}).items():
            if key in TOP_LEVEL_FIELDS:
                payload[key] = value
            elif key == "options" and isinstance(value, Mapping):
                options.update(value)
            else:
                options[key] = value
        if "think" not in payload and "reasoning" in self.model.capabilities:
            payload["think"] = True
        if options:
            payload["options"] = options
        return payload

    async def _complete(self, call: Call) -> CompleteResponse:
        obj = await self._post_json(call, self._payload(call, False))
        if not isinstance(obj, Mapping) or not isinstance(obj.get("message"), Mapping):
            raise MalformedResponseError(
                f"{self.provider} answered /api/chat without a message: {str(obj)[:200]!r} "
                "(is this an Ollama server?)",
                provider=self.provider,
            )
        message = obj["message"]
        tool_calls = _tool_calls(message.get("tool_calls"))
        call.reported_model = str(obj.get("model") or "")
        return CompleteResponse(
            content=str(message.get("content") or ""),
            reasoning=message.get("thinking") or None,
            tool_calls=tool_calls,
            finish_reason=_finish_reason(obj.get("done_reason"), bool(tool_calls)),
            usage=_usage(obj),
        )

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        final: Mapping[str, Any] | None = None
        final_chunk = ChunkResponse()
        n_tools = 0
        async with self._open_stream(call, self._payload(call, True)) as response:
            # iter_ndjson is an async generator: close it explicitly (see BaseLLM._stream).
            lines = cast(
                "AsyncGenerator[dict[str, Any], None]",
                iter_ndjson(response, provider=self.provider),
            )
            text_chunk = ChunkResponse.delta
            async with aclosing(lines):
                async for obj in lines:
                    message = obj.get("message")
                    if message is not None:
                        content = message.get("content") or ""
                        thinking = message.get("thinking") or ""
                        raw_calls = message.get("tool_calls")
                    else:
                        content = thinking = ""
                        raw_calls = None
                    deltas: tuple[ToolCallDelta, ...] = ()
                    if raw_calls:
                        calls = _tool_calls(raw_calls)
                        deltas = tuple(
                            ToolCallDelta(
                                index=n_tools + i,
                                id=c.id,
                                name=c.name,
                                arguments=c.arguments_json,
                            )
                            for i, c in enumerate(calls)
                        )
                        n_tools += len(calls)
                    if obj.get("done"):
                        final = obj
                        final_chunk = ChunkResponse(
                            content=content, reasoning=thinking, tool_calls=deltas
                        )
                    elif deltas:
                        yield ChunkResponse(content=content, reasoning=thinking, tool_calls=deltas)
                    elif content or thinking:
                        yield text_chunk(content, thinking)
        if final is None:
            return  # the stream ended without its "done" line: BaseLLM reports it
        call.reported_model = str(final.get("model") or "")
        yield ChunkResponse(
            content=final_chunk.content,
            reasoning=final_chunk.reasoning,
            tool_calls=final_chunk.tool_calls,
            is_complete=True,
            finish_reason=_finish_reason(final.get("done_reason"), n_tools > 0),
            usage=_usage(final),
        )
