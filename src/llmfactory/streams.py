"""Streamed answers: :class:`ChunkStream` and the bookkeeping behind it.

A :class:`ChunkStream` wraps the async generator that runs a streamed call
(``BaseLLM._invoke_stream``). Leaving its ``async with`` block closes the
generator, and with it the HTTP response, at once; a stream dropped without
being closed is closed by a task of the running event loop (asyncio or trio)
instead of waiting for the garbage collector, and releases its conversation
straight away. :class:`ToolCallAssembler` joins streamed tool-call fragments.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncGenerator, Coroutine, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmfactory.messages import ChunkResponse, CompleteResponse, ToolCall, ToolCallDelta

if TYPE_CHECKING:
    from llmfactory.base_llm import Call

__all__ = ["ChunkStream", "StreamState", "ToolCallAssembler"]

logger = logging.getLogger("llmfactory.llm")


class StreamState:
    """What a ChunkStream and its generator share (no reference cycle between them)."""

    __slots__ = ("call", "defer_commit", "finished", "pending_commit", "response", "started")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.started = False
        self.finished = False
        self.response: CompleteResponse | None = None
        # The sync facade reads ahead of its consumer: it commits when the consumer
        # takes the last chunk, not when the portal's task reaches it.
        self.defer_commit = False
        self.pending_commit = False

    def commit_deferred(self) -> None:
        """Commit a completed call whose commit was deferred (see ``defer_commit``)."""
        if self.pending_commit and self.response is not None:
            self.pending_commit = False
            self.call.llm._commit(self.call, self.response)


_pending_closes: set[asyncio.Task[None]] = set()


async def _aclose_quietly(agen: AsyncGenerator[Any, None]) -> None:
    try:
        await agen.aclose()
    except Exception:  # pragma: no cover - the stream already failed; nothing to tell
        logger.debug("closing an abandoned stream failed", exc_info=True)


def _schedule_aclose(agen: AsyncGenerator[Any, None]) -> bool:
    """Close an abandoned stream's generator soon, on the running event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        task = loop.create_task(_aclose_quietly(agen))
        _pending_closes.add(task)
        task.add_done_callback(_pending_closes.discard)
        return True
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.spawn_system_task(_aclose_quietly, agen)
        except RuntimeError:
            return False
        return True
    return False


class ChunkStream:
    """The answer to a streamed call: an async iterator of :class:`ChunkResponse`.

    Use it as an async context manager so that the connection is released as
    soon as you stop reading, even on ``break``::

        async with llm.stream_user_message("Hi") as stream:
            async for chunk in stream:
                print(chunk.content, end="")
        print(stream.response.usage)

    A plain ``async for`` works too; a stream dropped before its end is then
    closed on the next turn of the event loop. :attr:`response` holds the
    assembled :class:`CompleteResponse` once the last chunk has arrived.
    """

    __slots__ = ("_agen", "_state")

    def __init__(self, agen: AsyncGenerator[ChunkResponse, None], state: StreamState) -> None:
        self._agen = agen
        self._state = state

    @property
    def response(self) -> CompleteResponse | None:
        """The whole answer, once the stream is complete; None before."""
        return self._state.response

    @property
    def call(self) -> Call:
        """The call this stream answers."""
        return self._state.call

    def __aiter__(self) -> ChunkStream:
        return self

    def __anext__(self) -> Coroutine[Any, Any, ChunkResponse]:
        return self._agen.__anext__()

    async def aclose(self) -> None:
        """Stop the stream and release its connection; the history is left as it was
        unless the stream had completed."""
        await self._agen.aclose()

    async def __aenter__(self) -> ChunkStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._agen.aclose()

    def __del__(self) -> None:
        state = self._state
        if state.started and not state.finished:
            state.call.llm._leave(state.call)
            _schedule_aclose(self._agen)


class ToolCallAssembler:
    """Joins streamed tool-call fragments by index into whole calls."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, list[Any]] = {}

    def add(self, deltas: Iterable[ToolCallDelta]) -> None:
        """Take a chunk's fragments."""
        calls = self._calls
        for delta in deltas:
            entry = calls.get(delta.index)
            if entry is None:
                entry = calls[delta.index] = [delta.id, delta.name, []]
            else:
                if delta.id and not entry[0]:
                    entry[0] = delta.id
                if delta.name and not entry[1]:
                    entry[1] = delta.name
            if delta.arguments:
                entry[2].append(delta.arguments)

    def result(self) -> tuple[ToolCall, ...]:
        """The whole calls, in index order, their arguments parsed."""
        return tuple(
            ToolCall.from_json_arguments(
                id=call_id or f"call_{index}", name=name or "", arguments="".join(parts)
            )
            for index, (call_id, name, parts) in sorted(self._calls.items())
        )
