"""A test double for your own tests: the ``mock`` runtime, :class:`MockLLM` and its scripts.

``create_llm("echo:mock@local")`` (or ``MockLLM()``) gives a conversation that
answers from a script instead of a server, through the very same pipeline as a
real model: history transaction, extensions, usage tracking, streaming, the
sync facade. Nothing touches the network.

* With nothing scripted, the mock **echoes** the last user message (the prompt,
  for :meth:`~llmfactory.base_llm.BaseLLM.complete_text`).
* :meth:`MockScript.queue_reply` queues answers — text, streamed chunks,
  reasoning, tool calls, usage, finish reason, delays — used first in, first out;
  :meth:`MockScript.queue_error` queues an exception (any instance, e.g.
  :class:`~llmfactory.errors.RateLimitError`), raised before the answer or
  after some streamed chunks.
* :attr:`MockScript.calls` records every call as it reached "the wire"
  (:class:`MockCall`: messages, config and options, tools, stream or not), so
  tests can assert on what the code under test sent.

A :class:`MockLLM` has its own :class:`MockScript` (``llm.script``; the
``queue_*``/``calls`` methods of the LLM delegate to it) unless a script was
registered for its model name with :func:`mock_script`: then every mock
conversation with that model shares it, including those the code under test
creates itself with ``create_llm("<name>:mock@local")``. The ``mock`` runtime
"serves" ``echo`` and every model name that has a registered script.

See ``docs/testing.md``.
"""

from __future__ import annotations

import importlib
import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmfactory.config import LLMConfig
from llmfactory.messages import Message, Role, Tool, ToolCall, Usage, estimate_tokens

if TYPE_CHECKING:
    from llmfactory.api.mock import MockLLM
    from llmfactory.registry.models import LLMModel
    from llmfactory.runtimes.mock import MockRuntime

__all__ = [
    "MOCK_CAPABILITIES",
    "MOCK_HOST",
    "MOCK_PORT",
    "MOCK_RUNTIME",
    "MockCall",
    "MockLLM",
    "MockReply",
    "MockRuntime",
    "MockScript",
    "Responder",
    "clear_mock_scripts",
    "mock_model",
    "mock_model_names",
    "mock_script",
]

MOCK_RUNTIME = "mock"
"""The runtime name in identifiers: ``model:mock@local``."""

MOCK_HOST = "local"
"""The host the mock runtime "serves" at (any host works; nothing listens anywhere)."""

MOCK_PORT = 1
"""The mock runtime's nominal default port: identifiers need one (``echo:mock@local:1``)."""

MOCK_CAPABILITIES: tuple[str, ...] = (
    "chat",
    "completion",
    "json_output",
    "reasoning",
    "streaming",
    "tools",
    "vision",
)
"""What a mock model can do: everything a test may want to exercise."""

_LAZY = {
    "MockLLM": "llmfactory.api.mock",
    "MockRuntime": "llmfactory.runtimes.mock",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmfactory.mock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


# --------------------------------------------------------------------------- values

_PIECES = re.compile(r"\s*\S+\s*|\s+")


def _pieces(text: str) -> tuple[str, ...]:
    """``text`` as word pieces (leading and trailing spaces kept) that join back to it."""
    return tuple(_PIECES.findall(text)) if text else ()


ToolCallInput = ToolCall | Mapping[str, Any]
"""A scripted tool call: a :class:`ToolCall` or ``{"name", "arguments", "id"?}``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MockReply:
    """One scripted answer.

    ``content`` is the answer's text; when streamed it arrives as ``chunks`` if
    given (``content`` then defaults to their concatenation), else word by
    word. ``reasoning`` streams before the content, ``tool_calls`` after it
    (one chunk per call). ``usage`` is what the mock "server" reports: None
    computes it (about 4 characters a token, of the messages sent and of the
    answer; not flagged as estimated), ``report_usage=False`` reports none (the
    usage tracker then estimates it, as for a real server that sends none).
    ``finish_reason`` None is ``tool_calls`` when there are tool calls, else
    ``stop``; ``model`` is the model name reported (default: the mock's).
    ``delay`` waits that many seconds before answering, ``chunk_delay`` before
    each streamed chunk. ``error`` is raised instead of the answer — in a
    stream, after ``error_after`` chunks of it.
    """

    content: str | None = None
    chunks: Sequence[str] | None = None
    reasoning: str | None = None
    tool_calls: Sequence[ToolCallInput] = ()
    usage: Usage | Mapping[str, int] | None = None
    report_usage: bool = True
    finish_reason: str | None = None
    model: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    error: Exception | None = None
    error_after: int = 0

    @property
    def text(self) -> str:
        """The whole answer text."""
        if self.content is not None:
            return self.content
        return "".join(self.chunks or ())

    @property
    def content_pieces(self) -> tuple[str, ...]:
        """The text as streamed chunks."""
        if self.chunks is not None:
            return tuple(self.chunks)
        return _pieces(self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class MockCall:
    """A call as the mock received it, after every extension's ``before_invoke``.

    ``operation`` is ``chat`` or ``text_completion``; ``messages`` are all the
    messages sent (system prompt first); ``config`` is the merged
    :class:`~llmfactory.config.LLMConfig` of the call (its ``options`` are
    :attr:`options`); ``identifier`` names the conversation's model.
    """

    identifier: str
    model: str
    operation: str
    messages: tuple[Message, ...]
    config: LLMConfig
    tools: tuple[Tool, ...] = ()
    stream: bool = False

    @property
    def options(self) -> Mapping[str, Any]:
        """The provider options of the call (``LLMConfig.options``; empty when none)."""
        return self.config.options or {}

    @property
    def system(self) -> str | None:
        """The system prompt sent, if any."""
        for message in self.messages:
            if message.role is Role.SYSTEM:
                return message.content
        return None

    @property
    def prompt(self) -> str:
        """The last user message (the prompt of a text completion); ``""`` when none."""
        for message in reversed(self.messages):
            if message.role is Role.USER:
                return message.content
        return ""


Responder = Callable[[MockCall], MockReply | str]
"""Answers a call when nothing is queued: returns a :class:`MockReply` or text."""


def echo(call: MockCall) -> MockReply:
    """The default responder: the last user message, as it was sent."""
    return MockReply(content=call.prompt)


@dataclass(slots=True)
class _Entry:
    reply: MockReply | Responder
    remaining: int


class MockScript:
    """What mock conversations answer, and the calls they received. Thread-safe.

    ``replies`` are queued at once (text, :class:`MockReply` or exceptions);
    ``responder`` answers when the queue is empty (default: echo the last
    user message).
    """

    def __init__(
        self,
        replies: Iterable[MockReply | str | Exception] = (),
        *,
        responder: Responder | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Entry] = deque()
        self._calls: list[MockCall] = []
        self._responder: Responder = responder or echo
        self._ids = itertools.count(1)
        for reply in replies:
            if isinstance(reply, Exception):
                self.queue_error(reply)
            else:
                self.queue_reply(reply)

    # -- scripting -----------------------------------------------------------------

    def queue_reply(
        self,
        reply: MockReply | Responder | str | None = None,
        /,
        *,
        times: int = 1,
        **fields: Any,
    ) -> MockScript:
        """Queue an answer for the next ``times`` calls; return the script (to chain).

        Give the text (``queue_reply("Paris.")``), a :class:`MockReply`, a
        responder ``(MockCall) -> MockReply | str``, or :class:`MockReply` fields
        as keywords (``queue_reply(tool_calls=[{"name": "get_weather",
        "arguments": {"city": "Paris"}}])``).
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        entry: MockReply | Responder
        if isinstance(reply, MockReply) or callable(reply):
            if fields:
                raise TypeError("give either a MockReply (or a responder) or its fields")
            entry = reply
        else:
            if reply is not None:
                if "content" in fields:
                    raise TypeError("give the content once")
                fields["content"] = reply
            entry = MockReply(**fields)
        with self._lock:
            self._queue.append(_Entry(entry, times))
        return self

    def queue_error(
        self,
        error: Exception,
        /,
        *,
        after_chunks: int = 0,
        times: int = 1,
        **fields: Any,
    ) -> MockScript:
        """Queue an exception for the next ``times`` calls; return the script.

        It is raised as the transport would raise it (no retries): before any
        answer, or in a stream after ``after_chunks`` chunks of the answer given
        by the other :class:`MockReply` fields (``content=``, ``chunks=``, …).
        The history stays as it was, and extensions see it in ``on_error``.
        """
        if not isinstance(error, Exception):
            raise TypeError(f"error must be an exception instance, not {error!r}")
        return self.queue_reply(
            MockReply(error=error, error_after=after_chunks, **fields), times=times
        )

    def respond_with(self, responder: Responder | None) -> None:
        """Answer with ``responder`` whenever the queue is empty (None: echo again)."""
        with self._lock:
            self._responder = responder or echo

    def reset(self) -> None:
        """Forget the queued answers and the recorded calls; echo again."""
        with self._lock:
            self._queue.clear()
            self._calls.clear()
            self._responder = echo

    # -- reading -------------------------------------------------------------------

    @property
    def calls(self) -> list[MockCall]:
        """Every call received so far, oldest first."""
        with self._lock:
            return list(self._calls)

    @property
    def last_call(self) -> MockCall | None:
        """The most recent call (None before the first)."""
        with self._lock:
            return self._calls[-1] if self._calls else None

    @property
    def pending(self) -> int:
        """How many queued answers are left (an entry queued ``times=n`` counts n)."""
        with self._lock:
            return sum(entry.remaining for entry in self._queue)

    def __repr__(self) -> str:
        return f"MockScript(pending={self.pending}, calls={len(self._calls)})"

    # -- used by MockLLM -------------------------------------------------------------

    def take(self, call: MockCall) -> MockReply:
        """Record ``call`` and return its answer (the next queued one, else the responder's)."""
        with self._lock:
            self._calls.append(call)
            entry = self._queue[0] if self._queue else None
            if entry is not None:
                entry.remaining -= 1
                if entry.remaining <= 0:
                    self._queue.popleft()
            responder = self._responder
        reply = entry.reply if entry is not None else responder
        if not isinstance(reply, MockReply):
            answered = reply(call)
            reply = answered if isinstance(answered, MockReply) else MockReply(content=answered)
        return reply

    def tool_calls(self, reply: MockReply) -> tuple[ToolCall, ...]:
        """The reply's tool calls as :class:`ToolCall` objects (ids made up when missing)."""
        calls: list[ToolCall] = []
        for raw in reply.tool_calls:
            if isinstance(raw, ToolCall):
                calls.append(raw)
                continue
            if not isinstance(raw, Mapping) or not raw.get("name"):
                raise ValueError(f"a scripted tool call needs a 'name': {raw!r}")
            arguments = raw.get("arguments", {})
            call_id = str(raw.get("id") or f"call_mock_{next(self._ids)}")
            if isinstance(arguments, str):
                calls.append(
                    ToolCall.from_json_arguments(id=call_id, name=raw["name"], arguments=arguments)
                )
            else:
                calls.append(ToolCall(id=call_id, name=str(raw["name"]), arguments=dict(arguments)))
        return tuple(calls)


def reported_usage(
    reply: MockReply, messages: Sequence[Message], tool_calls: Sequence[ToolCall]
) -> Usage | None:
    """The usage the mock reports for ``reply`` (see :class:`MockReply`)."""
    if not reply.report_usage:
        return None
    given = reply.usage
    if isinstance(given, Usage):
        return given
    if given is not None:
        values: dict[str, Any] = dict(given)
        values.setdefault(
            "total_tokens", values.get("prompt_tokens", 0) + values.get("completion_tokens", 0)
        )
        return Usage(**values)
    prompt_texts = [m.content for m in messages if m.content]
    for message in messages:
        prompt_texts.extend(c.arguments_json for c in message.tool_calls)
    reasoning = estimate_tokens([reply.reasoning]) if reply.reasoning else 0
    completion = estimate_tokens([reply.text, *(c.arguments_json for c in tool_calls)])
    completion += reasoning
    prompt = estimate_tokens(prompt_texts)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        reasoning_tokens=reasoning,
    )


def reasoning_pieces(reply: MockReply) -> tuple[str, ...]:
    """The reply's reasoning as streamed chunks."""
    return _pieces(reply.reasoning or "")


# --------------------------------------------------------------------------- shared scripts

_scripts_lock = threading.Lock()
_scripts: dict[str, MockScript] = {}


def mock_script(name: str = "echo") -> MockScript:
    """The script every mock conversation with the model ``name`` shares (made on first use).

    Script replies here for conversations your code creates itself::

        script = mock_script("weather-bot")
        script.queue_reply("Sunny.")
        # code under test: create_llm("weather-bot:mock@local").send_user_message(...)
        assert script.last_call.prompt == "Weather in Paris?"

    Shared scripts live for the process: call :func:`clear_mock_scripts` between
    tests (a fixture does it best).
    """
    with _scripts_lock:
        script = _scripts.get(name)
        if script is None:
            script = _scripts[name] = MockScript()
        return script


def shared_script(name: str) -> MockScript | None:
    """The script registered for ``name`` with :func:`mock_script`, if any."""
    with _scripts_lock:
        return _scripts.get(name)


def clear_mock_scripts() -> None:
    """Forget every script registered with :func:`mock_script`."""
    with _scripts_lock:
        _scripts.clear()


def mock_model_names() -> list[str]:
    """The models the mock runtime serves: ``echo`` and every name with a shared script."""
    with _scripts_lock:
        names = set(_scripts)
    names.add("echo")
    return sorted(names)


def mock_model(name: str = "echo", *, host: str | None = None, **fields: Any) -> LLMModel:
    """The :class:`~llmfactory.registry.models.LLMModel` of a mock model (not registered).

    ``fields`` are other ``LLMModel`` fields (``context_length``,
    ``input_price_per_million``, ``capabilities``, …).
    """
    from datetime import datetime, timezone

    from llmfactory.identifiers import normalize_host
    from llmfactory.registry.models import LLMModel, infer_provider

    address = normalize_host(host or MOCK_HOST, runtime=MOCK_RUNTIME)
    now = datetime.now(timezone.utc)
    values: dict[str, Any] = {
        "identifier": f"{name}:{MOCK_RUNTIME}@{address}",
        "name": name,
        "provider": infer_provider(name),
        "runtime": MOCK_RUNTIME,
        "host": address,
        "capabilities": list(MOCK_CAPABILITIES),
        "source": "user",
        "available": True,
        "first_seen": now,
        "last_seen": now,
    }
    values.update(fields)
    return LLMModel(**values)

