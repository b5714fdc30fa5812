"""Replicas: one logical model served by several hosts, and a conversation that fails over.

Two registry records are **replicas** of one logical model when the same
runtime serves them and they have the same name, or the same digest (Ollama
reports one for every model: the same weights under another tag or on
another box). :mod:`llmfactory.registry.groups` groups the records
accordingly; a group is named ``name:runtime@any`` (its most common name),
which is also how you ask for it::

    llm = create_llm("llama3.2:latest:ollama@any")

A bare name whose matches are all replicas of one model (``create_llm(
"llama3.2")`` when two Ollama hosts serve it) gives the same. Genuinely
different models that share a name (served by different runtimes, or a cloud
model and a local one) still raise :class:`~llmfactory.errors.AmbiguousModelError`.
``get_model`` keeps returning one record (``x:runtime@any`` finds it when only
one host serves it, and is ambiguous otherwise).

:class:`ReplicaLLM` is the conversation: one history, sent to one replica at a
time. Each call orders the replicas: hosts cooling down after a failure last
(see :mod:`llmfactory.health`), then registry-unavailable ones; among the
rest, the replica that answered last first (the conversation sticks to it),
then those with the model already loaded (Ollama's ``/api/ps``, asked once at
the first call with a one-second bound; LM Studio's loaded state as discovery
recorded it). When a replica fails **before the first chunk** of its answer — no
connection, a timeout, a 5xx, or a 404 (it no longer has the model) — its host
is marked unhealthy for a cool-down (404: only that replica) and the same call
goes to the next replica. A stream that has started is never replayed
elsewhere: a failure after the first chunk reaches the caller, as it would
without replicas.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio

from llmfactory.base_llm import BaseLLM, Call
from llmfactory.errors import LLMAPIError, LLMConnectionError, LLMFactoryError
from llmfactory.health import (
    aggregate,
    health_key,
    health_of,
    is_host_failure,
    note_failure,
    note_success,
    ollama_loaded_names,
)
from llmfactory.registry.groups import (
    ANY_HOST,
    ReplicaGroup,
    group_models,
    group_name,
    is_any_host,
    name_key,
    replica_groups,
)

if TYPE_CHECKING:
    from llmfactory.api.keys import Endpoint
    from llmfactory.config import LLMConfig
    from llmfactory.factory import LLMFactory
    from llmfactory.health import HealthReport
    from llmfactory.messages import ChunkResponse, CompleteResponse

__all__ = [
    "ANY_HOST",
    "ATTEMPTS_KEY",
    "ReplicaGroup",
    "ReplicaLLM",
    "fails_over",
    "group_models",
    "is_any_host",
    "replica_groups",
    "replica_llm",
]

logger = logging.getLogger("llmfactory.replicas")

ATTEMPTS_KEY = "llmfactory.failover"
"""``Call.metadata`` key: the attempts that failed before one answered (identifier, error)."""


# --------------------------------------------------------------------------- failing over


def fails_over(error: BaseException) -> bool:
    """Whether a replica's failure sends the call to the next replica: no connection, a
    timeout, a 5xx, or a 404 (that host no longer has the model)."""
    if is_host_failure(error):
        return True
    return isinstance(error, LLMAPIError) and error.status == 404


def sub_call(call: Call, llm: BaseLLM, config: LLMConfig, *, last: bool) -> Call:
    """``call`` as sent by one member; a member other than the last is tried once
    (no transport retries: the next member is the retry) unless ``retries`` is set."""
    if not last and config.retries is None:
        config = replace(config, retries=0)
    return replace(call, llm=llm, config=config, answered_by=None)


def note_attempt(call: Call, llm: BaseLLM, error: BaseException) -> None:
    """Record a failed attempt in ``call.metadata`` (for extensions and tests) and the log."""
    attempts = call.metadata.setdefault(ATTEMPTS_KEY, [])
    attempts.append({"identifier": llm.identifier, "error": f"{type(error).__name__}: {error}"})
    logger.warning("%s failed (%s: %s); trying the next one", llm.identifier,
                   type(error).__name__, error)


class ReplicaLLM(BaseLLM):
    """One conversation with a model served by several hosts (see the module doc).

    Build one with ``create_llm("name:runtime@any")`` (or a bare name that only
    replicas share), or from conversations with :meth:`from_llms`.
    ``replicas`` are the per-host conversations that speak the wire protocol
    (their own history and extensions are not used); :attr:`current` is the
    one the conversation sticks to. ``cooldown`` (seconds; None: the factory's
    ``host_health.cooldown``, 30 s) is how long a failed host is tried last.
    """

    loaded_probe_timeout: float = 1.0
    """Seconds the first call waits at most to learn where the model is loaded."""

    def __init__(
        self,
        replicas: Sequence[BaseLLM],
        *,
        identifier: str | None = None,
        factory: LLMFactory | None = None,
        cooldown: float | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one replica")
        primary = replicas[0]
        if identifier is None:
            name = group_name(Counter(name_key(r.model) for r in replicas))
            identifier = f"{name}:{primary.model.runtime}@{ANY_HOST}"
        name = identifier.rsplit("@", 1)[0].rsplit(":", 1)[0]
        model = primary.model.copy_with(
            identifier=identifier,
            name=name,
            host=ANY_HOST,
            extras={**primary.model.extras, "replicas": [r.identifier for r in replicas]},
        )
        super().__init__(model, primary.config, settings=primary._settings,
                         host_url=primary._host_url, spec=primary._spec)
        self.replicas: tuple[BaseLLM, ...] = tuple(replicas)
        """The per-host conversations, in registry order."""
        self._factory = factory if factory is not None else primary._factory
        self.cooldown = cooldown
        self._sticky: BaseLLM | None = None
        self._loaded: dict[int, bool | None] | None = None
        self._missing: dict[int, float] = {}  # replica index -> monotonic time a 404 expires

    @classmethod
    def from_llms(
        cls, llms: Sequence[BaseLLM], *, identifier: str | None = None
    ) -> ReplicaLLM:
        """A replica set over existing conversations (one per host, same model)."""
        return cls(llms, identifier=identifier)

    @property
    def current(self) -> BaseLLM | None:
        """The replica the conversation sticks to: the last one that answered."""
        return self._sticky

    def __repr__(self) -> str:
        return (
            f"ReplicaLLM({self.identifier!r}, replicas={len(self.replicas)}, "
            f"messages={len(self._history)}{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------------ ordering

    def _health_key_cooling(self, replica: BaseLLM) -> bool:
        return health_of(replica._factory or self._factory).is_cooling_down(health_key(replica))

    def cooling_down(self) -> bool:
        """Whether every replica is cooling down (a fallback chain then tries this last)."""
        now = time.monotonic()
        return all(
            self._health_key_cooling(r) or self._missing.get(i, 0.0) > now
            for i, r in enumerate(self.replicas)
        )

    async def _order(self) -> list[tuple[int, BaseLLM]]:
        if len(self.replicas) > 1 and self._loaded is None:
            await self._learn_loaded()
        loaded = self._loaded or {}
        now = time.monotonic()

        def rank(item: tuple[int, BaseLLM]) -> tuple[bool, bool, bool, bool, int]:
            index, replica = item
            cooling = self._health_key_cooling(replica) or self._missing.get(index, 0.0) > now
            return (cooling, not replica.model.available, replica is not self._sticky,
                    loaded.get(index) is not True, index)

        return sorted(enumerate(self.replicas), key=rank)

    async def _learn_loaded(self) -> None:
        """Ask each replica's host, concurrently and briefly, whether the model is loaded."""
        from llmfactory.api.transport import Timeouts

        bound = self.loaded_probe_timeout
        timeouts = Timeouts(connect=bound, read=bound, write=bound, pool=bound)
        found: dict[int, bool | None] = {}

        async def one(index: int, replica: BaseLLM) -> None:
            found[index] = await self._loaded_state(replica, timeouts)

        with anyio.move_on_after(bound):
            async with anyio.create_task_group() as tg:
                for index, replica in enumerate(self.replicas):
                    if not self._health_key_cooling(replica):
                        tg.start_soon(one, index, replica)
        self._loaded = found

    async def _loaded_state(self, replica: BaseLLM, timeouts: Any) -> bool | None:
        model = replica.model
        if model.runtime == "ollama":
            try:
                names = await ollama_loaded_names(replica, timeouts)
            except LLMConnectionError as exc:
                await note_failure(replica, exc, cooldown=self.cooldown)
                return None
            except LLMFactoryError:
                return None
            if names is None:
                return None
            return model.name in names or (model.digest is not None and model.digest in names)
        loaded = model.extras.get("loaded")
        if isinstance(loaded, bool):
            return loaded
        state = model.extras.get("state")
        return state == "loaded" if isinstance(state, str) else None

    # ------------------------------------------------------------------ outcomes

    async def _failed(self, index: int, replica: BaseLLM, call: Call, error: Exception) -> bool:
        """Record a replica's failure; True when the call may go to the next replica."""
        replica.request_count += 1
        if not fails_over(error):
            return False
        if self._sticky is replica:
            self._sticky = None
        if is_host_failure(error):
            await note_failure(replica, error, cooldown=self.cooldown)
        else:  # 404: this host lost the model; the host itself is fine
            cooldown = self.cooldown
            if cooldown is None:
                cooldown = health_of(self._factory).cooldown
            self._missing[index] = time.monotonic() + cooldown
        note_attempt(call, replica, error)
        return True

    async def _answered(self, index: int, replica: BaseLLM, call: Call, sub: Call) -> None:
        replica.request_count += 1
        call.answered_by = sub.answered_by or replica.model
        self._sticky = replica
        self._missing.pop(index, None)
        await note_success(replica)

    # ------------------------------------------------------------------ the wire

    async def _complete(self, call: Call) -> CompleteResponse:
        order = await self._order()
        last = len(order) - 1
        for position, (index, replica) in enumerate(order):
            sub = sub_call(call, replica, call.config, last=position == last)
            try:
                response = await replica._complete(sub)
            except Exception as exc:
                if not await self._failed(index, replica, call, exc) or position == last:
                    raise
                continue
            call.reported_model = sub.reported_model
            await self._answered(index, replica, call, sub)
            return response
        raise AssertionError("unreachable: a replica set is never empty")  # pragma: no cover

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        order = await self._order()
        last = len(order) - 1
        for position, (index, replica) in enumerate(order):
            sub = sub_call(call, replica, call.config, last=position == last)
            chunks = replica._stream(sub)
            try:
                try:
                    first: ChunkResponse | None = await chunks.__anext__()
                except StopAsyncIteration:
                    first = None
                except Exception as exc:
                    if not await self._failed(index, replica, call, exc) or position == last:
                        raise
                    continue
                # From here on this replica answers: nothing is replayed elsewhere.
                await self._answered(index, replica, call, sub)
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
        """The endpoint of the current replica (the first one before any call)."""
        return (self._sticky or self.replicas[0]).endpoint()

    # ------------------------------------------------------------------ health, session, close

    async def health_check(
        self, *, timeout: float = 2.0  # noqa: ASYNC109  (per request: a result, not an error)
    ) -> HealthReport:
        """Check every replica concurrently; ``ok`` when one is (each is in ``members``).

        What it learns (reachable, loaded) also orders the next call's replicas.
        """
        reports: list[HealthReport | None] = [None] * len(self.replicas)

        async def one(index: int, replica: BaseLLM) -> None:
            reports[index] = await replica.health_check(timeout=timeout)

        async with anyio.create_task_group() as tg:
            for index, replica in enumerate(self.replicas):
                tg.start_soon(one, index, replica)
        done = [r for r in reports if r is not None]
        self._loaded = {i: r.loaded for i, r in enumerate(reports) if r is not None}
        return aggregate(self.identifier, done)

    async def reset_session(self) -> None:
        """Drop every replica's pooled connections; the next call orders the replicas afresh
        (asking again where the model is loaded)."""
        for replica in self.replicas:
            await replica.reset_session()
        self._sticky = None
        self._loaded = None
        self._missing.clear()

    async def aclose(self) -> None:
        """Close the conversation and its replicas."""
        await super().aclose()
        for replica in self.replicas:
            await replica.aclose()

    def close(self) -> None:
        """Close the conversation and its replicas from synchronous code."""
        super().close()
        for replica in self.replicas:
            replica.close()


def replica_llm(
    factory: LLMFactory, group: ReplicaGroup, config: LLMConfig | None
) -> ReplicaLLM:
    """The :class:`ReplicaLLM` for a group, its replicas built by ``factory`` (no extensions:
    the replica set's own pipeline runs them)."""
    replicas = [factory._new_llm(model, config) for model in group.models]
    return ReplicaLLM(replicas, identifier=group.identifier, factory=factory)
