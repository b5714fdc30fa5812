"""BaseLLM: a stateful conversation with one model, wherever it runs.

A :class:`BaseLLM` holds the model's metadata, its :class:`~llmfactory.config.LLMConfig`,
a system prompt and the message history, and sends them:

* ``await llm.send_user_message(text)`` → :class:`~llmfactory.messages.CompleteResponse`;
* ``llm.stream_user_message(text)`` → :class:`ChunkStream`, an async iterator of
  :class:`~llmfactory.messages.ChunkResponse` (use it with ``async with``);
* ``await llm.complete(messages)`` / ``llm.stream(messages)`` for agents that keep
  their own history (stateless);
* ``await llm.complete_text(prompt)`` / ``llm.stream_text(prompt)``: raw text
  completion, stateless (protocols that have it); ``llm.estimate_cost(text)`` before
  sending (:mod:`llmfactory.cost`);
* ``*_sync`` twins of each for synchronous code, run on one shared blocking portal.

**History is transactional**: a call's user message and the assistant's reply
are appended to :attr:`BaseLLM.messages` only when the call succeeds. A call that
raises, times out or is cancelled, and a stream abandoned before its last chunk,
leave the history exactly as it was.

Subclasses speak one wire protocol each (``llmfactory.api.ollama``,
``llmfactory.api.openai``, ``llmfactory.api.anthropic``) and implement two
methods: :meth:`BaseLLM._complete` (one unary request) and :meth:`BaseLLM._stream`
(one streamed request, yielding deltas and then one ``is_complete`` chunk).

Every call, unary or streamed, goes through one pipeline on a :class:`Call`:
``_before_invoke`` (may rewrite the call or refuse it before any network traffic)
→ the wire → ``_on_chunk`` for each streamed chunk → ``_after_invoke`` with the
final response (usage, cost, latency) → history committed; ``_on_error`` sees
failures. These four methods are the extension seams; they do nothing while
:attr:`BaseLLM.extensions` is empty.
"""

from __future__ import annotations

import functools
import json
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from llmfactory.api import text as _text
from llmfactory.api.keys import Endpoint, resolve_endpoint
from llmfactory.api.registry import ServiceSpec, spec_for_model
from llmfactory.api.transport import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUTS,
    RetryPolicy,
    StreamResponse,
    Timeouts,
    close_client,
    open_stream,
    request_json,
)
from llmfactory.config import LLMConfig, Settings
from llmfactory.errors import (
    ConversationBusyError,
    LLMConnectionError,
    LLMFactoryError,
    redact_secrets,
)
from llmfactory.extensions import base as _ext
from llmfactory.messages import (
    ChunkResponse,
    CompleteResponse,
    ImageInput,
    Message,
    Role,
    Tool,
    ToolCall,
    ToolInput,
    Usage,
)
from llmfactory.streams import ChunkStream, StreamState, ToolCallAssembler
from llmfactory.sync import SHARED_PORTAL, PortalTask, SyncChunkStream

if TYPE_CHECKING:
    from llmfactory.cost import CostEstimate, Tokenizer
    from llmfactory.extensions.base import ExtensionLike
    from llmfactory.extensions.token_usage import UsageTotals
    from llmfactory.factory import LLMFactory
    from llmfactory.health import HealthReport
    from llmfactory.registry.models import LLMModel

__all__ = ["BaseLLM", "Call", "ChunkStream", "SyncChunkStream"]

T = TypeVar("T")

_CONFIG_FIELDS = frozenset(f.name for f in fields(LLMConfig))


# --------------------------------------------------------------------------- the call


@dataclass(slots=True, kw_only=True, eq=False)
class Call:
    """One request to a model as it goes through the pipeline.

    Extensions may change ``messages``, ``config`` and ``tools`` in
    ``before_invoke`` (what is sent, not what the history keeps); ``metadata``
    is theirs to share state across hooks.
    ``new_messages`` is what the call adds to the history, with the reply,
    when it succeeds (empty for stateless calls); ``system_override`` a
    system prompt given for this call only. The wire code sets
    ``reported_model`` to the model name the server reported. ``response``
    is set once the call has succeeded. ``answered_by`` is the model that
    answered when a replica set or fallback chain chose one (see
    ``docs/replicas.md``); :attr:`model` is then that model. ``operation``
    is ``chat``, or ``text_completion`` for :meth:`BaseLLM.complete_text` /
    :meth:`BaseLLM.stream_text` (the prompt is the user message of ``messages``).
    """

    llm: BaseLLM
    messages: list[Message]
    config: LLMConfig
    tools: tuple[Tool, ...] = ()
    stream: bool = False
    conversational: bool = True
    new_messages: tuple[Message, ...] = ()
    system_override: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    reported_model: str = ""
    response: CompleteResponse | None = None
    answered_by: LLMModel | None = None
    operation: str = "chat"

    @property
    def model(self) -> LLMModel:
        """The model's metadata: the one that answered, once a replica set or fallback
        chain has picked it, else the conversation's."""
        return self.answered_by or self.llm.model

    @property
    def model_name(self) -> str:
        """The model's name as the server knows it."""
        return self.llm.model.name

# --------------------------------------------------------------------------- BaseLLM


class BaseLLM:
    """A stateful conversation with one model. Build one with :func:`llmfactory.create_llm`.

    ``model`` is the model's :class:`~llmfactory.registry.models.LLMModel`;
    ``config`` the merged :class:`~llmfactory.config.LLMConfig` (its
    ``system_message`` becomes the initial system prompt); ``settings``
    supplies API keys and base URLs from the config file; ``host_url``
    overrides the base URL derived from the model's host.
    """

    #: Path of the chat endpoint, appended to the base URL (set by subclasses).
    chat_path: ClassVar[str] = ""

    #: Whether the wire protocol has raw text completion (:meth:`complete_text`).
    supports_text_completion: ClassVar[bool] = False

    def __init__(
        self,
        model: LLMModel,
        config: LLMConfig | None = None,
        *,
        settings: Settings | None = None,
        host_url: str | None = None,
        spec: ServiceSpec | None = None,
    ) -> None:
        self.model = model
        self.config = config or LLMConfig()
        self.extensions: list[Any] = []
        """Extensions hooked into every call, in registration order (empty = no-op); change it
        with :meth:`register_extension` / :meth:`unregister_extension`."""
        self._extension_state: Any = None  # llmfactory.extensions.base: dispatch plan
        self._spec = spec or spec_for_model(model)
        self._settings = settings
        self._host_url = host_url or (f"http://{model.host}" if model.host else None)
        self._endpoint: Endpoint | None = None
        self._system: str | None = self.config.system_message
        self._history: list[Message] = []
        self._active: Call | None = None
        self._closed = False
        self._portal: BlockingPortal | None = None
        self._portal_release: weakref.finalize[Any, Any] | None = None
        self._transport_for: tuple[LLMConfig, Timeouts, RetryPolicy] | None = None
        self._factory: LLMFactory | None = None  # set by the factory that created it
        self.request_count = 0
        """Calls this conversation has sent (past the extensions), failed ones included."""
        self.last_response: CompleteResponse | None = None
        """The last successful answer (None before the first)."""

    # ------------------------------------------------------------------ state

    @property
    def identifier(self) -> str:
        """The model's identifier."""
        return self.model.identifier

    @property
    def provider(self) -> str:
        """The runtime or cloud service this conversation talks to (``ollama``, ``openai``, …)."""
        return self._spec.name

    @property
    def system_prompt(self) -> str | None:
        """The current system prompt (None when there is none)."""
        return self._system

    def configure_system_prompt(self, prompt: str | None) -> None:
        """Set, replace or (with None or ``""``) remove the system prompt; it applies to the
        next call and is kept as the first of :attr:`messages`."""
        self._system = prompt or None

    @property
    def messages(self) -> list[Message]:
        """A copy of the conversation: the system prompt first (if any), then the history."""
        if self._system is None:
            return list(self._history)
        return [Message(role=Role.SYSTEM, content=self._system), *self._history]

    def add_user_message(self, content: str, *, images: Sequence[ImageInput] | None = None) -> None:
        """Append a user message to the history without sending anything."""
        self._history.append(Message.user(content, images))

    def add_assistant_message(
        self, content: str, *, tool_calls: Iterable[ToolCall] = ()
    ) -> None:
        """Append an assistant message (e.g. a few-shot example) to the history."""
        self._history.append(Message.assistant(content, tool_calls=tool_calls))

    def add_tool_result(self, tool_call_id: str, content: Any, *, name: str | None = None) -> None:
        """Append the result of the tool call ``tool_call_id`` for the next turn.

        ``content`` that is not a string is sent as JSON. Then send the
        conversation on with ``send_user_message()`` (no text: just the
        history, as most agents do after tool results) or with a new question.

        Raises:
            ValueError: no assistant message in the history made that tool call.
        """
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        if name is None:
            known: list[str] = []
            for message in reversed(self._history):
                for call in message.tool_calls:
                    if call.id == tool_call_id:
                        name = call.name
                        break
                    known.append(call.id)
                if name is not None:
                    break
            if name is None:
                raise ValueError(
                    f"no tool call with id {tool_call_id!r} in this conversation"
                    + (f"; known ids: {', '.join(known)}" if known else "")
                )
        self._history.append(Message.tool(tool_call_id, text, name=name))

    def clear_history(self) -> None:
        """Forget every message except the system prompt."""
        self._history.clear()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.identifier!r}, messages={len(self._history)}"
            f"{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------------ building calls

    def _call_config(self, overrides: Mapping[str, Any]) -> LLMConfig:
        if not overrides:
            return self.config
        unknown = sorted(set(overrides) - _CONFIG_FIELDS)
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(unknown)}; per-call options are LLMConfig "
                f"fields ({', '.join(sorted(_CONFIG_FIELDS))}); pass provider-specific "
                "parameters as options={...}"
            )
        values = dict(overrides)
        stop = values.get("stop")
        if isinstance(stop, str):
            values["stop"] = (stop,)
        elif stop is not None:
            values["stop"] = tuple(stop)
        return self.config.merged(LLMConfig(**values))

    def _new_call(
        self,
        *,
        new_messages: tuple[Message, ...],
        messages: list[Message] | None,
        tools: Iterable[ToolInput] | None,
        overrides: Mapping[str, Any],
        stream: bool,
    ) -> Call:
        return Call(
            llm=self,
            messages=messages if messages is not None else [],
            config=self._call_config(overrides),
            tools=tuple(Tool.coerce(t) for t in tools) if tools else (),
            stream=stream,
            conversational=messages is None,
            new_messages=new_messages,
            system_override=overrides.get("system_message") or None,
        )

    def _user_turn(
        self, content: str | None, images: Sequence[ImageInput] | None
    ) -> tuple[Message, ...]:
        if content is None and not images:
            return ()
        return (Message.user(content or "", images),)

    def _stateless_messages(
        self, messages: Iterable[Message | Mapping[str, Any]], overrides: Mapping[str, Any]
    ) -> list[Message]:
        result = [Message.coerce(m) for m in messages]
        system = overrides.get("system_message") or self._system
        if system and not any(m.role is Role.SYSTEM for m in result):
            result.insert(0, Message(role=Role.SYSTEM, content=system))
        return result

    # ------------------------------------------------------------------ the pipeline

    def _enter(self, call: Call) -> None:
        if self._closed:
            raise LLMFactoryError(
                f"this conversation with {self.identifier} is closed; create a new one "
                "with create_llm()"
            )
        if call.conversational:
            if self._active is not None:
                raise ConversationBusyError(
                    f"the conversation with {self.identifier} is still answering another "
                    "message; await it (or close its stream) first, or use complete() for "
                    "independent concurrent calls"
                )
            self._active = call
            system = call.system_override or self._system
            head = [Message(role=Role.SYSTEM, content=system)] if system else []
            call.messages = [*head, *self._history, *call.new_messages]

    def _leave(self, call: Call) -> None:
        if self._active is call:
            self._active = None

    def _commit(self, call: Call, response: CompleteResponse) -> None:
        call.response = response
        self.last_response = response
        if call.conversational:
            self._history.extend(call.new_messages)
            self._history.append(response.message)

    async def _invoke(self, call: Call) -> CompleteResponse:
        """Run a unary call through the pipeline; commit on success."""
        self._enter(call)
        try:
            await self._before_invoke(call)
            self.request_count += 1
            call.started = time.perf_counter()
            wire = self._complete if call.operation == "chat" else self._complete_text
            response = self._finish(call, await wire(call), None)
            response = await self._after_invoke(call, response) or response
            self._commit(call, response)
            return response
        except Exception as exc:
            self._redact(call, exc)
            await self._on_error(call, exc)
            raise
        finally:
            self._leave(call)

    async def _invoke_stream(
        self, call: Call, state: StreamState
    ) -> AsyncGenerator[ChunkResponse, None]:
        """Run a streamed call through the pipeline; commit before the last chunk."""
        state.started = True
        try:
            self._enter(call)
            await self._before_invoke(call)
            self.request_count += 1
            call.started = time.perf_counter()
            content: list[str] = []
            add_content = content.append
            reasoning: list[str] = []
            tools = ToolCallAssembler()
            first: float | None = None
            final: ChunkResponse | None = None
            hooks = self._wants_chunks()
            # The hot loop: one pass per token, so every attribute lookup counts.
            chunks_of = self._stream if call.operation == "chat" else self._stream_text
            async with aclosing(chunks_of(call)) as chunks:
                async for chunk in chunks:
                    if first is None:
                        first = time.perf_counter()
                    text = chunk.content
                    if text:
                        add_content(text)
                    if chunk.reasoning:
                        reasoning.append(chunk.reasoning)
                    if chunk.tool_calls or chunk.is_complete:
                        if chunk.tool_calls:
                            tools.add(chunk.tool_calls)
                        if chunk.is_complete:
                            final = chunk
                            break
                    if hooks:
                        chunk = await self._on_chunk(call, chunk)
                    yield chunk
            if final is None:
                if first is None:
                    context = self.model.context_length
                    raise LLMConnectionError(
                        f"the stream from {self.provider} ended before the answer was complete: "
                        "the server sent nothing at all. Some servers answer a prompt longer "
                        "than the model's context this way"
                        + (f" (context: {context} tokens)" if context else "")
                        + "; shorten the conversation or retry the call",
                        provider=self.provider,
                    )
                raise LLMConnectionError(
                    f"the stream from {self.provider} ended before the answer was complete; "
                    "the server may have stopped or been interrupted (retry the call)",
                    provider=self.provider,
                )
            response = CompleteResponse(
                content="".join(content),
                reasoning="".join(reasoning) or None,
                tool_calls=tools.result(),
                finish_reason=final.finish_reason,
                usage=final.usage,
            )
            response = self._finish(call, response, first)
            response = await self._after_invoke(call, response) or response
            state.response = response
            if state.defer_commit:
                call.response = response
                state.pending_commit = True
            else:
                self._commit(call, response)
            last = ChunkResponse(
                content=final.content,
                reasoning=final.reasoning,
                tool_calls=final.tool_calls,
                is_complete=True,
                finish_reason=response.finish_reason,
                usage=response.usage,
                response=response,
            )
            if hooks:
                last = await self._on_chunk(call, last)
            yield last
        except Exception as exc:
            self._redact(call, exc)
            await self._on_error(call, exc)
            raise
        finally:
            state.finished = True
            self._leave(call)

    def _finish(
        self, call: Call, response: CompleteResponse, first: float | None
    ) -> CompleteResponse:
        now = time.perf_counter()
        usage = response.usage
        if usage is not None and usage.cost_usd is None:
            cost = self._cost(call.config, usage, call.model)
            if cost is not None:
                usage = replace(usage, cost_usd=cost)
        return replace(
            response,
            usage=usage,
            latency_ms=(now - call.started) * 1000.0,
            time_to_first_token_ms=None if first is None else (first - call.started) * 1000.0,
            model=response.model or call.reported_model or call.model.name,
            identifier=response.identifier or call.model.identifier,
        )

    def _cost(
        self, config: LLMConfig, usage: Usage, model: LLMModel | None = None
    ) -> float | None:
        model = model or self.model
        pricing = model.pricing
        override = config.pricing
        if override is not None:
            pricing = replace(
                pricing,
                input_per_million=pricing.input_per_million
                if override.input is None
                else override.input,
                output_per_million=pricing.output_per_million
                if override.output is None
                else override.output,
                cached_input_per_million=pricing.cached_input_per_million
                if override.cached_input is None
                else override.cached_input,
            )
        elif pricing.is_free and not model.is_local:
            return None  # a cloud model without known prices
        return pricing.cost(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.cache_creation_tokens,
        )

    # ------------------------------------------------------------------ extensions

    def register_extension(self, extension: ExtensionLike) -> Any:
        """Hook an extension into every call of this conversation; return the instance.

        ``extension`` is an instance, a class (instantiated without arguments)
        or a name (built-in or from the ``llmfactory.extensions`` entry points).
        Extensions run in registration order; registering the same instance
        twice does nothing, and a second instance of a ``unique`` class (such as
        :class:`~llmfactory.extensions.TokenUsageTrackingExtension`) replaces the
        first. See :mod:`llmfactory.extensions.base` for the hook semantics.

        Raises:
            ExtensionError: the extension's ``on_register`` failed (it is not added).
            ConfigError: no extension has that name.
        """
        return _ext.register_extension(self, extension)

    def unregister_extension(self, extension: ExtensionLike) -> bool:
        """Remove an extension (the instance, every instance of a class, or by name);
        True when one was removed."""
        return _ext.unregister_extension(self, extension)

    def get_extension(self, extension: type[T] | str) -> T | None:
        """The first extension that is an instance of the class (or has the name); None
        when there is none."""
        return _ext.get_extension(self, extension)

    @property
    def usage(self) -> UsageTotals:
        """Tokens, cost and errors of this conversation's calls so far (from its
        :class:`~llmfactory.extensions.TokenUsageTrackingExtension`; zeros without one)."""
        return _ext.usage_of(self)

    def _wants_chunks(self) -> bool:
        """Whether streamed chunks go through :meth:`_on_chunk`: only when an extension (or a
        subclass overriding the seam) hooks them, so that other extensions cost nothing per
        chunk."""
        if not self.extensions:
            return False
        return type(self)._on_chunk is not BaseLLM._on_chunk or _ext.wants_chunks(self)

    # ------------------------------------------------------------------ extension seams

    async def _before_invoke(self, call: Call) -> None:
        """Seam: extensions may rewrite ``call`` or refuse it (raise) before any network I/O."""
        if self.extensions:
            await _ext.run_before_invoke(self, call)

    async def _on_chunk(self, call: Call, chunk: ChunkResponse) -> ChunkResponse:
        """Seam: extensions observe (or replace) each streamed chunk; only called when
        :meth:`_wants_chunks` says so."""
        return await _ext.run_on_chunk(self, call, chunk)

    async def _after_invoke(
        self, call: Call, response: CompleteResponse
    ) -> CompleteResponse | None:
        """Seam: extensions see the final response (usage, cost, latency) before the commit,
        and may return a replacement (None keeps it)."""
        if self.extensions:
            return await _ext.run_after_invoke(self, call, response)
        return None

    def _redact(self, call: Call, error: Exception) -> None:
        """Take this call's API key out of ``error`` (a server may quote what it was sent)."""
        endpoint = self._endpoint
        redact_secrets(error, (call.config.api_key, endpoint.api_key if endpoint else None))

    async def _on_error(self, call: Call, error: Exception) -> None:
        """Seam: extensions see a call's failure (cancellation is not reported)."""
        if self.extensions:
            await _ext.run_on_error(self, call, error)

    # ------------------------------------------------------------------ the wire (subclasses)

    async def _complete(self, call: Call) -> CompleteResponse:
        """Send ``call`` as one unary request and return the whole answer."""
        raise NotImplementedError

    def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        """Send ``call`` as a streamed request: yield delta chunks, then exactly one chunk
        with ``is_complete=True`` (``finish_reason``, ``usage``) once the response has been
        read to its end. Close every async generator you iterate (``aclosing``)."""
        raise NotImplementedError

    async def _complete_text(self, call: Call) -> CompleteResponse:
        """Send a text completion (``call.operation == "text_completion"``) as one request;
        classes that set :attr:`supports_text_completion` implement it."""
        raise _text.unsupported(self)

    def _stream_text(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        """:meth:`_complete_text`, streamed (the contract of :meth:`_stream`)."""
        raise _text.unsupported(self)

    # ------------------------------------------------------------------ transport helpers

    def endpoint(self) -> Endpoint:
        """The resolved base URL and key (resolved at the first send, then cached).

        Raises:
            MissingAPIKeyError: the service needs a key that is not configured.
        """
        endpoint = self._endpoint
        if endpoint is None:
            endpoint = self._endpoint = resolve_endpoint(
                self._spec, config=self.config, settings=self._settings, host_url=self._host_url
            )
        return endpoint

    def _auth_headers(self, endpoint: Endpoint) -> dict[str, str]:
        """Headers for a request (subclasses add authentication)."""
        return {}

    def _transport(self, config: LLMConfig) -> tuple[Timeouts, RetryPolicy]:
        cached = self._transport_for
        if cached is not None and cached[0] is config:
            return cached[1], cached[2]
        timeouts = Timeouts(
            connect=DEFAULT_TIMEOUTS.connect
            if config.connect_timeout is None
            else config.connect_timeout,
            read=DEFAULT_TIMEOUTS.read if config.timeout is None else config.timeout,
            write=DEFAULT_TIMEOUTS.write,
            pool=DEFAULT_TIMEOUTS.pool,
        )
        retry = DEFAULT_RETRY if config.retries is None else RetryPolicy(max_retries=config.retries)
        self._transport_for = (config, timeouts, retry)
        return timeouts, retry

    async def _post_json(
        self, call: Call, payload: Mapping[str, Any], *, path: str | None = None
    ) -> Any:
        """POST ``payload`` to the chat endpoint (or ``path``) and return the JSON answer."""
        endpoint = self.endpoint()
        timeouts, retry = self._transport(call.config)
        return await request_json(
            "POST",
            endpoint.url(self.chat_path if path is None else path),
            json=payload,
            headers=self._auth_headers(endpoint),
            timeouts=timeouts,
            retry=retry,
            provider=self.provider,
        )

    def _open_stream(
        self, call: Call, payload: Mapping[str, Any], *, path: str | None = None
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """POST ``payload`` to the chat endpoint (or ``path``) and open the streamed answer."""
        endpoint = self.endpoint()
        timeouts, retry = self._transport(call.config)
        return open_stream(
            "POST",
            endpoint.url(self.chat_path if path is None else path),
            json=payload,
            headers=self._auth_headers(endpoint),
            timeouts=timeouts,
            retry=retry,
            provider=self.provider,
        )

    # ------------------------------------------------------------------ async API

    async def send_user_message(
        self,
        content: str | None = None,
        *,
        images: Sequence[ImageInput] | None = None,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> CompleteResponse:
        """Send a user message with the whole conversation and return the answer.

        ``images`` go with the message (paths, bytes, data URLs, base64 or
        :class:`~llmfactory.messages.Image`); ``tools`` are the functions the
        model may call (answer its ``tool_calls`` with :meth:`add_tool_result`);
        ``overrides`` are :class:`~llmfactory.config.LLMConfig` fields for this
        call only (``temperature=0``, ``max_tokens=100``, ``options={...}``).
        With no ``content`` (and no images) the history is sent as it is, e.g.
        after tool results.

        The message and the answer are added to :attr:`messages` only if the
        call succeeds.

        Raises:
            LLMConnectionError: the server could not be reached or the connection broke
                (``LLMTimeoutError`` for timeouts).
            LLMAPIError: the server answered with an error (subclasses for
                authentication, rate limits, context length).
            MissingAPIKeyError: a cloud service's key is not configured.
            ConversationBusyError: another call of this conversation is running.
        """
        call = self._new_call(
            new_messages=self._user_turn(content, images),
            messages=None,
            tools=tools,
            overrides=overrides,
            stream=False,
        )
        return await self._invoke(call)

    def stream_user_message(
        self,
        content: str | None = None,
        *,
        images: Sequence[ImageInput] | None = None,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> ChunkStream:
        """Like :meth:`send_user_message`, streamed: returns a :class:`ChunkStream`.

        Nothing is sent until the stream is iterated. The message and the answer
        are added to :attr:`messages` just before the last chunk
        (``is_complete=True``) is delivered; a stream that fails, is cancelled
        or is abandoned earlier leaves the history as it was.
        """
        call = self._new_call(
            new_messages=self._user_turn(content, images),
            messages=None,
            tools=tools,
            overrides=overrides,
            stream=True,
        )
        state = StreamState(call)
        return ChunkStream(self._invoke_stream(call, state), state)

    async def complete(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> CompleteResponse:
        """Send ``messages`` as they are (stateless: the history is neither used nor changed).

        Messages may be :class:`~llmfactory.messages.Message` objects or dicts
        (``{"role": "user", "content": "Hi"}``). The system prompt is put first
        unless ``messages`` has a system message of its own. Safe to run
        concurrently.
        """
        call = self._new_call(
            new_messages=(),
            messages=self._stateless_messages(messages, overrides),
            tools=tools,
            overrides=overrides,
            stream=False,
        )
        return await self._invoke(call)

    def stream(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> ChunkStream:
        """:meth:`complete`, streamed."""
        call = self._new_call(
            new_messages=(),
            messages=self._stateless_messages(messages, overrides),
            tools=tools,
            overrides=overrides,
            stream=True,
        )
        state = StreamState(call)
        return ChunkStream(self._invoke_stream(call, state), state)

    def _text_call(self, prompt: str, overrides: Mapping[str, Any], stream: bool) -> Call:
        _text.ensure_supported(self)
        if not isinstance(prompt, str):
            raise TypeError(f"the prompt must be a string, not {type(prompt).__name__}")
        if overrides.get("system_message") is not None:
            raise TypeError(
                "system_message does not apply to text completion (the prompt is sent as it "
                "is); put the instructions in the prompt, or use complete() for chat"
            )
        call = self._new_call(
            new_messages=(),
            messages=[Message.user(prompt)],
            tools=None,
            overrides=overrides,
            stream=stream,
        )
        call.operation = _text.OPERATION
        return call

    async def complete_text(self, prompt: str, **overrides: Any) -> CompleteResponse:
        """Complete ``prompt`` as raw text (no chat template, no system prompt, no history).

        Stateless, like :meth:`complete`, and through the same pipeline
        (extensions, usage tracking). Ollama's ``/api/generate`` (sent with
        ``raw: true``; ``options={"raw": False}`` applies the model's template)
        and OpenAI-compatible servers' ``/v1/completions`` offer it;
        ``overrides`` are :class:`~llmfactory.config.LLMConfig` fields for this
        call (``max_tokens``, ``stop``, ``temperature``, ``options={"suffix": ...}``).

        Raises:
            NotSupportedError: the protocol (Anthropic) or the cloud model has no text
                completion; raised before anything is sent.
        """
        return await self._invoke(self._text_call(prompt, overrides, stream=False))

    def stream_text(self, prompt: str, **overrides: Any) -> ChunkStream:
        """:meth:`complete_text`, streamed: a :class:`ChunkStream` of text deltas."""
        call = self._text_call(prompt, overrides, stream=True)
        state = StreamState(call)
        return ChunkStream(self._invoke_stream(call, state), state)

    def estimate_cost(
        self,
        text_or_messages: str | Iterable[Message | Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        tools: Iterable[ToolInput] | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> CostEstimate:
        """What a call would cost, before sending it: a :class:`~llmfactory.cost.CostEstimate`.

        A string is estimated as ``send_user_message(text)`` would send it (the
        system prompt, the history and the new message); messages as
        ``complete(messages)`` would. ``max_tokens`` bounds the answer (default:
        the config's, else the model's output limit). Prompt tokens are counted
        exactly with ``tiktoken`` for OpenAI models when it is installed (or with
        your ``tokenizer``), else approximated (about 4 characters a token); the
        estimate says which in ``method``. Nothing is sent.
        """
        from llmfactory.cost import estimate_cost

        return estimate_cost(
            self, text_or_messages, max_tokens=max_tokens, tools=tools, tokenizer=tokenizer
        )

    async def health_check(
        self, *, timeout: float = 2.0  # noqa: ASYNC109  (per request: a result, not an error)
    ) -> HealthReport:
        """Probe the model's server cheaply (a listing, no generation) and say if it is usable.

        Ollama is asked ``/api/tags`` and ``/api/ps`` (is the model there, is it
        loaded), other servers and cloud APIs their ``/models`` listing, each
        request bounded by ``timeout``. The answer updates the host's status (its
        record in the registry, and its cool-down: see ``docs/replicas.md``).
        Never raises for an unreachable or failing server: the report says so.
        """
        from llmfactory.health import check_llm

        return await check_llm(self, timeout=timeout)

    async def reset_session(self) -> None:
        """Drop this conversation's pooled HTTP connections (the running event loop's
        client for its host) and resolve its key and base URL again at the next call.

        Other conversations talking to the same host reconnect too: the pool is
        shared. The history, the system prompt and the counters are kept
        (:meth:`clear_history` forgets the messages).
        """
        urls = self._session_urls()
        self._endpoint = None
        self._transport_for = None
        for url in urls:
            await close_client(url)

    def _session_urls(self) -> list[str]:
        """The base URLs whose pooled connections :meth:`reset_session` drops."""
        try:
            return [self.endpoint().base_url]
        except LLMFactoryError:  # no key, no valid URL: no connection was ever made
            return []

    async def aclose(self) -> None:
        """Close the conversation: later sends fail; a sync portal lease is released.

        Pooled HTTP connections are shared with other conversations and stay
        open; ``await llmfactory.api.transport.close_clients()`` closes them at
        the end of an event loop.
        """
        await _ext.aclose_extensions(self)
        self._closed = True
        release = self._portal_release
        if release is not None and release.alive:
            self._portal_release = None
            self._portal = None
            await anyio.to_thread.run_sync(release)

    async def __aenter__(self) -> BaseLLM:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ sync API

    def _sync_portal(self) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            portal = self._portal = SHARED_PORTAL.acquire()
            release = weakref.finalize(self, SHARED_PORTAL.release)
            release.atexit = False  # at exit the daemon thread just ends
            self._portal_release = release
        return portal

    def _run_sync(self, func: Callable[[], Awaitable[T]]) -> T:
        task = PortalTask(self._sync_portal(), func)
        try:
            task.start()
            result: T = task.result()
            return result
        except BaseException:
            # Ctrl-C (or another interruption) in this thread: cancel the call and wait
            # until it has let go, so that the history is consistent when we return.
            task.cancel()
            raise

    def send_user_message_sync(
        self,
        content: str | None = None,
        *,
        images: Sequence[ImageInput] | None = None,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> CompleteResponse:
        """:meth:`send_user_message` for synchronous code (Ctrl-C cancels the call)."""
        return self._run_sync(
            functools.partial(
                self.send_user_message, content, images=images, tools=tools, **overrides
            )
        )

    def stream_user_message_sync(
        self,
        content: str | None = None,
        *,
        images: Sequence[ImageInput] | None = None,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> SyncChunkStream:
        """:meth:`stream_user_message` for synchronous code: a :class:`SyncChunkStream`.

        The request starts at once; use the stream in a ``with`` block so that
        stopping early or Ctrl-C cancels it and leaves the history unchanged.
        """
        stream = self.stream_user_message(
            content, images=images, tools=tools, **overrides
        )
        return SyncChunkStream(self._sync_portal(), stream)

    def complete_sync(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> CompleteResponse:
        """:meth:`complete` for synchronous code."""
        message_list = list(messages)
        return self._run_sync(
            functools.partial(self.complete, message_list, tools=tools, **overrides)
        )

    def stream_sync(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        tools: Iterable[ToolInput] | None = None,
        **overrides: Any,
    ) -> SyncChunkStream:
        """:meth:`stream` for synchronous code."""
        return SyncChunkStream(self._sync_portal(), self.stream(messages, tools=tools, **overrides))

    def complete_text_sync(self, prompt: str, **overrides: Any) -> CompleteResponse:
        """:meth:`complete_text` for synchronous code."""
        return self._run_sync(functools.partial(self.complete_text, prompt, **overrides))

    def stream_text_sync(self, prompt: str, **overrides: Any) -> SyncChunkStream:
        """:meth:`stream_text` for synchronous code."""
        return SyncChunkStream(self._sync_portal(), self.stream_text(prompt, **overrides))

    def health_check_sync(self, *, timeout: float = 2.0) -> HealthReport:
        """:meth:`health_check` for synchronous code."""
        return self._run_sync(functools.partial(self.health_check, timeout=timeout))

    def reset_session_sync(self) -> None:
        """:meth:`reset_session` for synchronous code: drops the connections the ``*_sync``
        methods use (those of the shared portal's event loop)."""
        self._run_sync(self.reset_session)

    def close(self) -> None:
        """Close the conversation from synchronous code (see :meth:`aclose`)."""
        _ext.close_extensions(self)
        self._closed = True
        release = self._portal_release
        self._portal_release = None
        self._portal = None
        if release is not None:
            release()

    def __enter__(self) -> BaseLLM:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
