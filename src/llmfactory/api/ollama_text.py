"""Ollama's raw text completion: ``POST /api/generate``, streamed as NDJSON.

The request is built as for ``/api/chat`` (:class:`~llmfactory.api.ollama.OllamaLLM`:
``max_tokens`` → ``options.num_predict``, sampling options in ``options``), with
``prompt`` instead of ``messages`` and ``raw: true``, so the prompt is completed
as it is — the same semantics as ``/v1/completions``. ``options={"raw": False}``
lets Ollama apply the model's template (and ``options={"system": ...}`` then
gives it a system prompt). The generate-only fields ``suffix``, ``system``,
``template``, ``context``, ``images`` and ``raw`` go at the top of the request.
Chunks carry the text in ``response`` (and ``thinking``); the last one has
``done: true``, ``done_reason`` and the token counts.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from llmfactory.api.ollama import _finish_reason, _usage
from llmfactory.api.streaming import iter_ndjson
from llmfactory.api.text import prompt_of, system_of
from llmfactory.errors import MalformedResponseError
from llmfactory.messages import ChunkResponse, CompleteResponse

if TYPE_CHECKING:
    from llmfactory.api.ollama import OllamaLLM
    from llmfactory.base_llm import Call

__all__ = ["GENERATE_PATH", "generate", "generate_payload", "generate_stream"]

GENERATE_PATH = "/api/generate"

#: ``/api/generate`` request fields that belong at the top level, not in ``options``.
GENERATE_FIELDS = frozenset({"raw", "suffix", "system", "template", "context", "images"})


def generate_payload(llm: OllamaLLM, call: Call, stream: bool) -> dict[str, Any]:
    """The ``/api/generate`` request for a text-completion call."""
    payload = llm._payload(call, stream)
    payload.pop("messages", None)
    payload.pop("tools", None)
    options = payload.get("options")
    if isinstance(options, dict):
        for key in GENERATE_FIELDS & set(options):
            payload[key] = options.pop(key)
        if not options:
            del payload["options"]
    payload["prompt"] = prompt_of(call)
    payload.setdefault("raw", True)
    system = system_of(call)
    if system is not None and "system" not in payload:
        payload["system"] = system
    user_options = call.config.options or {}
    if payload["raw"] and "think" not in user_options:
        payload.pop("think", None)  # a raw prompt has no template to think in
    return payload


async def generate(llm: OllamaLLM, call: Call) -> CompleteResponse:
    """One unary ``/api/generate`` request."""
    obj = await llm._post_json(call, generate_payload(llm, call, False), path=GENERATE_PATH)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("response"), str):
        raise MalformedResponseError(
            f"{llm.provider} answered {GENERATE_PATH} without a response: {str(obj)[:200]!r} "
            "(is this an Ollama server?)",
            provider=llm.provider,
        )
    call.reported_model = str(obj.get("model") or "")
    return CompleteResponse(
        content=obj["response"],
        reasoning=obj.get("thinking") or None,
        finish_reason=_finish_reason(obj.get("done_reason"), False),
        usage=_usage(obj),
    )


async def generate_stream(llm: OllamaLLM, call: Call) -> AsyncGenerator[ChunkResponse, None]:
    """One streamed ``/api/generate`` request (the contract of ``BaseLLM._stream``)."""
    final: Mapping[str, Any] | None = None
    payload = generate_payload(llm, call, True)
    async with llm._open_stream(call, payload, path=GENERATE_PATH) as response:
        lines = cast(
            "AsyncGenerator[dict[str, Any], None]",
            iter_ndjson(response, provider=llm.provider),
        )
        text_chunk = ChunkResponse.delta
        async with aclosing(lines):
            async for obj in lines:
                text = obj.get("response") or ""
                thinking = obj.get("thinking") or ""
                if obj.get("done"):
                    final = obj
                    if text or thinking:
                        yield text_chunk(text, thinking)
                elif text or thinking:
                    yield text_chunk(text, thinking)
    if final is None:
        return  # the stream ended without its "done" line: BaseLLM reports it
    call.reported_model = str(final.get("model") or "")
    yield ChunkResponse(
        is_complete=True,
        finish_reason=_finish_reason(final.get("done_reason"), False),
        usage=_usage(final),
    )
