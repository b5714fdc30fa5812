"""Fallback chains: one conversation that moves to the next model when one is unavailable.

::

    llm = create_llm("gpt-4o-mini", fallbacks=["claude-haiku-4-5", "llama3.2:ollama@any"])
    answer = await llm.send_user_message("Hi")
    answer.identifier          # which model answered

A :class:`FallbackLLM` keeps one history and sends each call to its members in
order, moving on when a member fails **before the first chunk** of its answer
with an error that says the model cannot answer now (:func:`should_fall_back`):
no connection or a timeout, a 5xx, a 429 (after the transport's retries), a
404 (the server does not have the model), or a cloud key that is not set.
Errors that another model would meet too — a bad request, a refused key
(401/403), a prompt too long, an extension's refusal, a protocol violation —
reach the caller at once, as does a failure after the first chunk (a stream is
never replayed). When every member fails, the last member's error is raised.

Members whose host is cooling down after a recent failure (see
:mod:`llmfactory.health`) are tried after the others. Members other than the
last are tried once (no transport retries) unless the config sets
``retries``: the next member is the retry. Each member uses its own config
with this call's overrides laid on top. Names that do not resolve are an
error at creation (a typo in a fallback list should not wait for an outage).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING

import anyio

from llmfactory.base_llm import BaseLLM, Call
from llmfactory.config import LLMConfig
from llmfactory.errors import (
    AuthenticationError,
    ConfigError,
    ContextLengthExceededError,
    LLMAPIError,
    LLMConnectionError,
    MissingAPIKeyError,
    RateLimitError,
)
from llmfactory.health import aggregate, health_key, health_of, note_failure, note_success
from llmfactory.replicas import ReplicaLLM, note_attempt, sub_call

if TYPE_CHECKING:
    from llmfactory.api.keys import Endpoint
    from llmfactory.health import HealthReport
    from llmfactory.messages import ChunkResponse, CompleteResponse

__all__ = ["FallbackLLM", "should_fall_back"]

_FALLBACK_STATUSES = frozenset({404, 408, 409, 429})


def should_fall_back(error: BaseException) -> bool:
    """Whether ``error`` sends a fallback chain's call to its next model (see the module doc)."""
    if isinstance(error, (MissingAPIKeyError, LLMConnectionError)):
        return True
    if isinstance(error, (AuthenticationError, ContextLengthExceededError)):
        return False
    if isinstance(error, LLMAPIError):
        return error.status >= 500 or error.status in _FALLBACK_STATUSES
    return False


class FallbackLLM(BaseLLM):
    """One conversation over an ordered list of models (see the module doc).

    Build one with ``create_llm(primary, fallbacks=[...])``, or from
    conversations: ``FallbackLLM([create_llm("a"), create_llm("b")])``. The
    members' own histories and extensions are not used; the chain's pipeline
    runs the extensions registered on it (``create_llm`` registers the
    factory's defaults). ``fall_back_on`` decides which errors move on
    (default: :func:`should_fall_back`).
    """

    def __init__(
        self,
        members: Sequence[BaseLLM],
        *,
        fall_back_on: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if not members:
            raise ValueError("a fallback chain needs at least one model")
        primary = members[0]
        super().__init__(primary.model, primary.config, settings=primary._settings,
                         host_url=primary._host_url, spec=primary._spec)
        self.members: tuple[BaseLLM, ...] = tuple(members)
        """The models, in order of preference."""
        self._factory = primary._factory
        self.fall_back_on = fall_back_on or should_fall_back
        """Whether an error moves a call on to the next member."""
        self.last_answered_by: BaseLLM | None = None
        """The member that answered the last successful call (None before one)."""

    def __repr__(self) -> str:
        return (
            f"FallbackLLM({[m.identifier for m in self.members]!r}, "
            f"messages={len(self._history)}{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------------ members

    def _cooling(self, member: BaseLLM) -> bool:
        if isinstance(member, ReplicaLLM):
            return member.cooling_down()
        return health_of(member._factory or self._factory).is_cooling_down(health_key(member))

    def _order(self) -> list[BaseLLM]:
        members = self.members
        cooling = [self._cooling(m) for m in members]
        return [m for m, c in zip(members, cooling, strict=True) if not c] + [
            m for m, c in zip(members, cooling, strict=True) if c
        ]

    def _config_for(self, member: BaseLLM, call: Call) -> LLMConfig:
        """The member's config with what this call changed from the chain's laid on top."""
        if member.config is self.config:
            return call.config
        base, wanted = self.config, call.config
        changes = {
            f.name: getattr(wanted, f.name)
            for f in fields(LLMConfig)
            if getattr(wanted, f.name) != getattr(base, f.name)
        }
        return replace(member.config, **changes) if changes else member.config

    async def _failed(self, member: BaseLLM, call: Call, error: Exception) -> bool:
        if not isinstance(member, ReplicaLLM):  # a replica set records its own replicas
            if not isinstance(error, ConfigError):  # a missing key: nothing was sent
                member.request_count += 1
            if isinstance(error, RateLimitError):
                health_of(member._factory or self._factory).mark_unhealthy(
                    health_key(member), str(error), cooldown=error.retry_after
                )
            else:
                await note_failure(member, error)
        if not self.fall_back_on(error):
            return False
        note_attempt(call, member, error)
        return True

    async def _answered(self, member: BaseLLM, call: Call, sub: Call) -> None:
        call.answered_by = sub.answered_by or member.model
        self.last_answered_by = member
        if not isinstance(member, ReplicaLLM):
            member.request_count += 1
            await note_success(member)

    # ------------------------------------------------------------------ the wire

    async def _complete(self, call: Call) -> CompleteResponse:
        order = self._order()
        last = len(order) - 1
        for position, member in enumerate(order):
            sub = sub_call(call, member, self._config_for(member, call), last=position == last)
            try:
                response = await member._complete(sub)
            except Exception as exc:
                if not await self._failed(member, call, exc) or position == last:
                    raise
                continue
            call.reported_model = sub.reported_model
            await self._answered(member, call, sub)
            return response
        raise AssertionError("unreachable: a fallback chain is never empty")  # pragma: no cover

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        order = self._order()
        last = len(order) - 1
        for position, member in enumerate(order):
            sub = sub_call(call, member, self._config_for(member, call), last=position == last)
            chunks = member._stream(sub)
            try:
                try:
                    first: ChunkResponse | None = await chunks.__anext__()
                except StopAsyncIteration:
                    first = None
                except Exception as exc:
                    if not await self._failed(member, call, exc) or position == last:
                        raise
                    continue
                # From here on this member answers: nothing is replayed elsewhere.
                await self._answered(member, call, sub)
                if first is not None:
                    if first.is_complete:
                        call.reported_model = sub.reported_model
                    yield first
                    async for chunk in chunks:
                        if chunk.is_complete:
                            call.reported_model = sub.reported_model
                        yield chunk
                return
            finally:
                await chunks.aclose()

    def endpoint(self) -> Endpoint:
        """The endpoint of the member that answered last (the primary before any call)."""
        return (self.last_answered_by or self.members[0]).endpoint()

    # ------------------------------------------------------------------ health, session, close

    async def health_check(
        self, *, timeout: float = 2.0  # noqa: ASYNC109  (per request: a result, not an error)
    ) -> HealthReport:
        """Check every member concurrently; ``ok`` when one is (each is in ``members``)."""
        reports: list[HealthReport | None] = [None] * len(self.members)

        async def one(index: int, member: BaseLLM) -> None:
            reports[index] = await member.health_check(timeout=timeout)

        async with anyio.create_task_group() as tg:
            for index, member in enumerate(self.members):
                tg.start_soon(one, index, member)
        return aggregate(self.identifier, [r for r in reports if r is not None])

    async def reset_session(self) -> None:
        """Drop every member's pooled connections."""
        for member in self.members:
            await member.reset_session()

    async def aclose(self) -> None:
        """Close the chain and its members."""
        await super().aclose()
        for member in self.members:
            await member.aclose()

    def close(self) -> None:
        """Close the chain and its members from synchronous code."""
        super().close()
        for member in self.members:
            member.close()
