"""Tests of llmfactory.extensions: one module per extension module, plus helpers here."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from llmfactory import ChunkResponse, CompleteResponse, LLMConfig, LLMModel, Usage
from llmfactory.api.registry import ServiceSpec
from llmfactory.base_llm import BaseLLM, Call

__all__ = ["ScriptedLLM", "fake_model"]


def fake_model(**fields: object) -> LLMModel:
    """An LLMModel for a BaseLLM built without a factory."""
    values: dict[str, object] = {
        "identifier": "fake-model:fake@localhost:1",
        "name": "fake-model",
        "runtime": "fake",
        "host": "localhost:1",
        "capabilities": ["chat", "streaming"],
    }
    values.update(fields)
    return LLMModel(**values)


class ScriptedLLM(BaseLLM):
    """A BaseLLM whose wire answers ``reply`` (split on spaces when streamed) with ``usage``
    (None: the runtime reports none); ``sent`` records what reached "the wire"."""

    def __init__(self, config: LLMConfig | None = None, *, model: LLMModel | None = None,
                 reply: str = "the answer", usage: Usage | None = None) -> None:
        super().__init__(model or fake_model(), config,
                         spec=ServiceSpec(name="fake", llm_class="tests:ScriptedLLM"))
        self.reply = reply
        self.reply_usage = usage
        self.sent: list[Call] = []

    async def _complete(self, call: Call) -> CompleteResponse:
        self.sent.append(call)
        return CompleteResponse(content=self.reply, finish_reason="stop", usage=self.reply_usage)

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        self.sent.append(call)
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            yield ChunkResponse.delta(word + (" " if i < len(words) - 1 else ""))
        yield ChunkResponse(is_complete=True, finish_reason="stop", usage=self.reply_usage)
