"""MockLLM: the BaseLLM of the ``mock`` runtime; it answers from a :class:`MockScript`.

It implements only the wire seams (``_complete``, ``_stream`` and their text
twins), like every protocol class, so a mock conversation goes through the
same pipeline as a real one: the history transaction, extensions (usage
tracking included), streaming, the sync facade. See :mod:`llmfactory.mock`
and ``docs/testing.md``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from llmfactory.base_llm import BaseLLM, Call
from llmfactory.messages import ChunkResponse, CompleteResponse, ToolCall, ToolCallDelta
from llmfactory.mock import (
    MockCall,
    MockReply,
    MockScript,
    Responder,
    mock_model,
    reasoning_pieces,
    reported_usage,
    shared_script,
)

if TYPE_CHECKING:
    from llmfactory.api.registry import ServiceSpec
    from llmfactory.config import LLMConfig, Settings
    from llmfactory.registry.models import LLMModel

__all__ = ["MockLLM"]


class MockLLM(BaseLLM):
    """A conversation with a scripted model: a test double for code that uses llmfactory.

    ``model`` is a model name (``"echo"``: identifier ``echo:mock@local:1``) or
    an :class:`~llmfactory.registry.models.LLMModel` (see
    :func:`llmfactory.mock.mock_model` for one with prices or limits).
    ``script`` is where answers come from and calls are recorded: by default
    the script shared under the model's name (:func:`llmfactory.mock.mock_script`)
    if there is one, else a new one. ``replies`` are queued on it (text,
    :class:`~llmfactory.mock.MockReply` or exceptions). Like the conversations
    ``create_llm`` builds, it tracks usage (in memory) unless ``track_usage``
    is false.

    Built by ``create_llm("<name>:mock@local")`` it is the same class, with the
    factory's config, default extensions and usage ledger.
    """

    supports_text_completion = True

    def __init__(
        self,
        model: LLMModel | str = "echo",
        config: LLMConfig | None = None,
        *,
        settings: Settings | None = None,
        host_url: str | None = None,
        spec: ServiceSpec | None = None,
        script: MockScript | None = None,
        replies: Iterable[MockReply | str | Exception] = (),
        track_usage: bool = True,
    ) -> None:
        if isinstance(model, str):
            model = mock_model(model)
        super().__init__(model, config, settings=settings, host_url=host_url, spec=spec)
        self.script: MockScript = script or shared_script(model.name) or MockScript()
        """Where this conversation's answers come from and its calls are recorded."""
        for reply in replies:
            if isinstance(reply, Exception):
                self.script.queue_error(reply)
            else:
                self.script.queue_reply(reply)
        if track_usage:
            from llmfactory.extensions.token_usage import TokenUsageTrackingExtension

            # A factory registering its own tracker replaces this one (it is unique).
            self.register_extension(TokenUsageTrackingExtension())

    # ------------------------------------------------------------------ scripting shortcuts

    def queue_reply(
        self,
        reply: MockReply | Responder | str | None = None,
        /,
        *,
        times: int = 1,
        **fields: Any,
    ) -> MockLLM:
        """:meth:`MockScript.queue_reply <llmfactory.mock.MockScript.queue_reply>` on this
        conversation's script; returns the conversation (to chain)."""
        self.script.queue_reply(reply, times=times, **fields)
        return self

    def queue_error(
        self, error: Exception, /, *, after_chunks: int = 0, times: int = 1, **fields: Any
    ) -> MockLLM:
        """:meth:`MockScript.queue_error <llmfactory.mock.MockScript.queue_error>` on this
        conversation's script; returns the conversation."""
        self.script.queue_error(error, after_chunks=after_chunks, times=times, **fields)
        return self

    def respond_with(self, responder: Responder | None) -> None:
        """Answer with ``responder`` whenever nothing is queued (None: echo)."""
        self.script.respond_with(responder)

    @property
    def calls(self) -> list[MockCall]:
        """The calls the script received (every conversation sharing it), oldest first."""
        return self.script.calls

    @property
    def last_call(self) -> MockCall | None:
        """The most recent call the script received."""
        return self.script.last_call

    # ------------------------------------------------------------------ the "wire"

    def _receive(self, call: Call) -> MockReply:
        received = MockCall(
            identifier=self.identifier,
            model=call.model_name,
            operation=call.operation,
            messages=tuple(call.messages),
            config=call.config,
            tools=call.tools,
            stream=call.stream,
        )
        return self.script.take(received)

    async def _complete(self, call: Call) -> CompleteResponse:
        reply = self._receive(call)
        if reply.delay > 0:
            await anyio.sleep(reply.delay)
        if reply.error is not None:
            raise reply.error
        tool_calls = self.script.tool_calls(reply)
        call.reported_model = reply.model or self.model.name
        return CompleteResponse(
            content=reply.text,
            reasoning=reply.reasoning or None,
            tool_calls=tool_calls,
            finish_reason=_finish_reason(reply, tool_calls),
            usage=reported_usage(reply, call.messages, tool_calls),
        )

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        reply = self._receive(call)
        if reply.delay > 0:
            await anyio.sleep(reply.delay)
        tool_calls = self.script.tool_calls(reply)
        pieces: list[ChunkResponse] = [ChunkResponse.delta("", p) for p in reasoning_pieces(reply)]
        pieces.extend(ChunkResponse.delta(p) for p in reply.content_pieces)
        pieces.extend(
            ChunkResponse(
                tool_calls=(
                    ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments_json),
                )
            )
            for i, c in enumerate(tool_calls)
        )
        error = reply.error
        for sent, chunk in enumerate(pieces):
            if error is not None and sent >= reply.error_after:
                raise error
            if reply.chunk_delay > 0:
                await anyio.sleep(reply.chunk_delay)
            yield chunk
        if error is not None:
            raise error
        call.reported_model = reply.model or self.model.name
        yield ChunkResponse(
            is_complete=True,
            finish_reason=_finish_reason(reply, tool_calls),
            usage=reported_usage(reply, call.messages, tool_calls),
        )

    async def _complete_text(self, call: Call) -> CompleteResponse:
        return await self._complete(call)

    def _stream_text(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        return self._stream(call)


def _finish_reason(reply: MockReply, tool_calls: tuple[ToolCall, ...]) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_calls" if tool_calls else "stop"
