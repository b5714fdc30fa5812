"""OpenAI-compatible raw text completion: ``POST {base}/completions``, streamed as SSE.

Served by LM Studio, llama.cpp's server, vLLM, Ollama's ``/v1`` layer and, at
OpenAI, by a few legacy models (``gpt-3.5-turbo-instruct``, ``davinci-002``,
``babbage-002``). The request carries ``prompt`` instead of ``messages``;
``max_tokens`` keeps its name (also at OpenAI); ``LLMConfig.options`` entries
are added as they are (``suffix``, ``echo``, ``logprobs``, …). Choices carry
``text``; usage is read as for chat (``prompt_tokens_details.cached_tokens``
included), and estimated when a server sends none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from llmfactory.api.openai import _estimated_usage, _usage
from llmfactory.api.streaming import (
    BODY_EXCERPT_CHARS,
    build_api_error,
    iter_sse_json,
    parse_error_body,
)
from llmfactory.api.text import prompt_of, system_of
from llmfactory.errors import MalformedResponseError
from llmfactory.messages import ChunkResponse, CompleteResponse, Usage, estimate_tokens

if TYPE_CHECKING:
    from llmfactory.api.openai import OpenAILLM
    from llmfactory.base_llm import Call

__all__ = ["COMPLETIONS_PATH", "completion", "completion_payload", "completion_stream"]

COMPLETIONS_PATH = "/completions"
"""Appended to the base URL, which includes the version (``…/v1``)."""


def completion_payload(call: Call, stream: bool) -> dict[str, Any]:
    """The ``/completions`` request for a text-completion call."""
    config = call.config
    prompt = prompt_of(call)
    system = system_of(call)
    payload: dict[str, Any] = {
        "model": call.model_name,
        "prompt": f"{system}\n\n{prompt}" if system else prompt,
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
        payload["max_tokens"] = config.max_tokens
    if config.stop:
        payload["stop"] = list(config.stop)
    if config.seed is not None:
        payload["seed"] = config.seed
    if config.options:
        payload.update(config.options)
    return payload


def _parse(llm: OpenAILLM, call: Call, obj: Any) -> CompleteResponse:
    choices = obj.get("choices") if isinstance(obj, Mapping) else None
    if not choices or not isinstance(choices[0], Mapping):
        raise MalformedResponseError(
            f"{llm.provider} answered {COMPLETIONS_PATH} without choices: {str(obj)[:200]!r} "
            "(does this server offer /v1/completions?)",
            provider=llm.provider,
        )
    choice = choices[0]
    text = choice.get("text")
    content = text if isinstance(text, str) else ""
    call.reported_model = str(obj.get("model") or "")
    usage = _usage(obj.get("usage"))
    if usage is None:
        usage = _estimated_usage(call, estimate_tokens([content]))
    return CompleteResponse(content=content, finish_reason=choice.get("finish_reason"), usage=usage)


async def completion(llm: OpenAILLM, call: Call) -> CompleteResponse:
    """One unary ``/completions`` request."""
    obj = await llm._post_json(call, completion_payload(call, False), path=COMPLETIONS_PATH)
    return _parse(llm, call, obj)


async def completion_stream(llm: OpenAILLM, call: Call) -> AsyncGenerator[ChunkResponse, None]:
    """One streamed ``/completions`` request (the contract of ``BaseLLM._stream``)."""
    finish: str | None = None
    usage: Usage | None = None
    model = ""
    pieces = 0
    payload = completion_payload(call, True)
    async with llm._open_stream(call, payload, path=COMPLETIONS_PATH) as response:
        content_type = response.headers.get("content-type", "")
        if "json" in content_type and "event-stream" not in content_type:
            # An error some servers send with status 200 (LM Studio: an unknown route),
            # or a server that ignored "stream": read it whole.
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
                    provider=llm.provider,
                    url=response.url,
                    mid_stream=False,
                )
            whole = _parse(llm, call, obj)
            yield ChunkResponse(
                content=whole.content,
                is_complete=True,
                finish_reason=whole.finish_reason,
                usage=whole.usage,
            )
            return
        events = cast(
            "AsyncGenerator[tuple[str | None, dict[str, Any]], None]",
            iter_sse_json(response, provider=llm.provider),
        )
        text_chunk = ChunkResponse.delta
        async with aclosing(events):
            async for _, obj in events:
                choices = obj.get("choices")
                if choices:
                    choice = choices[0]
                    text = choice.get("text")
                    if text:
                        pieces += 1
                        yield text_chunk(text)
                    reason = choice.get("finish_reason")
                    if reason:
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
