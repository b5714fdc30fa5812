"""What the model servers serve: models and scripted replies, shared by every protocol.

* :class:`ServedModel` describes one model; each server renders it in its own shape
  (Ollama ``/api/tags``, LM Studio ``/api/v0/models``, vLLM ``max_model_len``, …).
* :class:`ScriptedReply` is a protocol-neutral answer: text (split into chunks, one
  chunk = one token), thinking, tool calls, token counts and the stop reason.
* :class:`ModelServer` adds the model list and the reply script queue to
  :class:`~tests.servers.base.LoopbackServer`.

Default reply (nothing scripted): ``"Echo: <text of the last user message>"``,
deterministic. Token counts, unless scripted:

* ``prompt_tokens = Σ over prompt texts (system + each message) of (words + 3)``
  (see :func:`estimate_prompt_tokens`);
* ``completion_tokens = content chunks + thinking chunks + tool calls`` actually emitted.

A request's ``max_tokens`` (OpenAI/Anthropic) or ``options.num_predict`` (Ollama)
truncates the content to that many chunks and sets the "length" stop reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from tests.servers.base import LoopbackServer, dumps, iter_words

__all__ = [
    "ModelServer",
    "ReplyFactory",
    "ScriptedReply",
    "ServedModel",
    "ToolCallSpec",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "fake_embedding",
    "split_chunks",
]


def split_chunks(text: str) -> tuple[str, ...]:
    """Split text into word pieces (word + trailing spaces) that join back to ``text``."""
    return tuple(iter_words(text))


def estimate_tokens(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(text.split())


def estimate_prompt_tokens(texts: Iterable[str]) -> int:
    """The servers' prompt token count: words + 3 per prompt text (system, each message)."""
    return sum(estimate_tokens(t) + 3 for t in texts)


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-length vector for ``text``."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vec = raw[:dimensions]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------

_SIZE_UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


@dataclass(frozen=True)
class ServedModel:
    """One model a server offers.

    ``capabilities`` use Ollama's words: ``completion``, ``tools``, ``vision``,
    ``embedding``, ``thinking``, ``insert``. ``context_length`` is the trained maximum
    (Ollama ``model_info["<arch>.context_length"]``, LM Studio ``max_context_length``,
    vLLM ``max_model_len``); ``num_ctx`` is the configured/loaded window (Ollama
    ``PARAMETER num_ctx`` and ``/api/ps`` ``context_length``; LM Studio
    ``loaded_context_length`` / ``loaded_instances[].config.context_length``).
    ``family`` doubles as the architecture (``general.architecture``, LM Studio ``arch``).
    """

    name: str
    digest: str | None = None
    size: int = 2_019_393_189
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    context_length: int = 131072
    num_ctx: int | None = None
    capabilities: Sequence[str] = ("completion",)
    modified_at: str = "2025-10-01T10:00:00.123456789+02:00"
    loaded: bool = False
    embedding_length: int = 16
    publisher: str | None = None
    format: str = "gguf"
    owned_by: str | None = None
    display_name: str | None = None

    @property
    def digest_hex(self) -> str:
        """64 hex characters: ``digest`` or a deterministic hash of the name."""
        return self.digest or hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def ollama_name(self) -> str:
        """The name with an explicit tag (``llama3.2`` → ``llama3.2:latest``)."""
        last = self.name.rsplit("/", 1)[-1]
        return self.name if ":" in last else f"{self.name}:latest"

    @property
    def parameter_count(self) -> int:
        """``parameter_size`` as a number (``"3.2B"`` → 3_200_000_000)."""
        m = re.fullmatch(r"([\d.]+)\s*([KMBT])", self.parameter_size.strip().upper())
        if m is None:
            return 0
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])

    @property
    def effective_context(self) -> int:
        """The window in use: ``num_ctx`` if set, else ``context_length``."""
        return self.num_ctx or self.context_length

    @property
    def is_embedding(self) -> bool:
        """An embedding-only model (``embedding`` without ``completion``)."""
        return "embedding" in self.capabilities and "completion" not in self.capabilities

    def has(self, capability: str) -> bool:
        """Whether the model has a capability."""
        return capability in self.capabilities


# --------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallSpec:
    """A tool call the model makes. ``arguments`` is a JSON object."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments as a JSON string (OpenAI's wire form)."""
        return dumps(dict(self.arguments))

    def call_id(self, index: int, prefix: str = "call_") -> str:
        """``id`` or a deterministic one."""
        if self.id:
            return self.id
        digest = hashlib.sha256(f"{index}:{self.name}:{self.arguments_json}".encode()).hexdigest()
        return f"{prefix}{digest[:24]}"


ToolCallLike = ToolCallSpec | Mapping[str, Any]


def _tool_call(value: ToolCallLike) -> ToolCallSpec:
    if isinstance(value, ToolCallSpec):
        return value
    if "function" in value:  # OpenAI / Ollama wire shape
        fn = value["function"]
        args = fn.get("arguments", {})
        if isinstance(args, str):
            args = json.loads(args) if args else {}
        return ToolCallSpec(name=fn["name"], arguments=args, id=value.get("id"))
    return ToolCallSpec(
        name=value["name"],
        arguments=value.get("arguments", value.get("input", {})),
        id=value.get("id"),
    )


@dataclass(frozen=True)
class ScriptedReply:
    """A protocol-neutral model answer.

    ``content`` is split into word chunks unless ``chunks`` is given (then
    ``content`` defaults to their concatenation); same for ``thinking`` /
    ``thinking_chunks``. ``done_reason`` is the protocol's own word (Ollama
    ``done_reason``, OpenAI ``finish_reason``, Anthropic ``stop_reason``); ``None``
    derives it (stop / tool calls / length). Token counts ``None`` are estimated.
    ``cached_tokens`` → OpenAI ``prompt_tokens_details.cached_tokens`` and Anthropic
    ``cache_read_input_tokens``; ``cache_creation_tokens`` → Anthropic
    ``cache_creation_input_tokens``; ``reasoning_tokens`` → OpenAI
    ``completion_tokens_details.reasoning_tokens``.
    """

    content: str | None = None
    chunks: Sequence[str] | None = None
    thinking: str | None = None
    thinking_chunks: Sequence[str] | None = None
    tool_calls: Sequence[ToolCallSpec] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    done_reason: str | None = None

    @cached_property
    def content_chunks(self) -> tuple[str, ...]:
        """The content as chunks (one chunk = one token)."""
        if self.chunks is not None:
            return tuple(self.chunks)
        return split_chunks(self.content or "")

    @cached_property
    def thinking_pieces(self) -> tuple[str, ...]:
        """The thinking as chunks."""
        if self.thinking_chunks is not None:
            return tuple(self.thinking_chunks)
        return split_chunks(self.thinking or "")

    @property
    def text(self) -> str:
        """The whole content."""
        return "".join(self.content_chunks) if self.content is None else self.content

    @property
    def thinking_text(self) -> str:
        """The whole thinking."""
        return "".join(self.thinking_pieces) if self.thinking is None else self.thinking

    @property
    def has_thinking(self) -> bool:
        """Whether there is any thinking."""
        return bool(self.thinking_pieces)

    def truncated(self, max_tokens: int | None) -> tuple[ScriptedReply, bool]:
        """This reply cut to ``max_tokens`` content chunks, and whether it was cut."""
        if max_tokens is None or max_tokens < 0 or len(self.content_chunks) <= max_tokens:
            return self, False
        kept = self.content_chunks[:max_tokens]
        return replace(self, content=None, chunks=kept, tool_calls=()), True


ReplyFactory = Callable[[Any], ScriptedReply]
"""A callable receiving the request JSON and returning the reply."""


@dataclass
class _ScriptEntry:
    reply: ScriptedReply | ReplyFactory
    remaining: int | None


def _build_reply(
    reply: ScriptedReply | ReplyFactory | str | None,
    *,
    content: str | None,
    chunks: Sequence[str] | None,
    thinking: str | None,
    thinking_chunks: Sequence[str] | None,
    tool_calls: Sequence[ToolCallLike] | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cached_tokens: int | None,
    cache_creation_tokens: int | None,
    reasoning_tokens: int | None,
    done_reason: str | None,
) -> ScriptedReply | ReplyFactory:
    if reply is not None and not isinstance(reply, str):
        return reply
    if isinstance(reply, str):
        if content is not None:
            raise TypeError("give the content once")
        content = reply
    return ScriptedReply(
        content=content,
        chunks=tuple(chunks) if chunks is not None else None,
        thinking=thinking,
        thinking_chunks=tuple(thinking_chunks) if thinking_chunks is not None else None,
        tool_calls=tuple(_tool_call(t) for t in tool_calls or ()),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        cache_creation_tokens=cache_creation_tokens,
        reasoning_tokens=reasoning_tokens,
        done_reason=done_reason,
    )


class ModelServer(LoopbackServer):
    """A :class:`LoopbackServer` with a model list and a queue of scripted replies."""

    def __init__(self, models: Sequence[ServedModel], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._models: list[ServedModel] = list(models)
        self._script: list[_ScriptEntry] = []
        self._state_lock = threading.Lock()

    # ---- models ------------------------------------------------------------------------

    @property
    def models(self) -> list[ServedModel]:
        """A snapshot of the served models."""
        with self._state_lock:
            return list(self._models)

    def set_models(self, models: Sequence[ServedModel]) -> None:
        """Replace the model list (takes effect on the next request)."""
        with self._state_lock:
            self._models = list(models)

    def add_model(self, model: ServedModel) -> None:
        """Serve one more model."""
        with self._state_lock:
            self._models.append(model)

    def remove_model(self, name: str) -> None:
        """Stop serving a model (by name; Ollama's implicit ``:latest`` is understood)."""
        with self._state_lock:
            self._models = [m for m in self._models if not self._name_matches(m, name)]

    def set_loaded(self, name: str, loaded: bool = True) -> None:
        """Mark a model loaded / not loaded (``/api/ps``, LM Studio ``state``)."""
        with self._state_lock:
            self._models = [
                replace(m, loaded=loaded) if self._name_matches(m, name) else m
                for m in self._models
            ]

    def find_model(self, name: str) -> ServedModel | None:
        """The served model called ``name``, if any."""
        for m in self.models:
            if self._name_matches(m, name):
                return m
        return None

    def _name_matches(self, model: ServedModel, name: str) -> bool:
        return model.name == name

    # ---- scripting ---------------------------------------------------------------------

    def script_reply(
        self,
        reply: ScriptedReply | ReplyFactory | str | None = None,
        *,
        content: str | None = None,
        chunks: Sequence[str] | None = None,
        thinking: str | None = None,
        thinking_chunks: Sequence[str] | None = None,
        tool_calls: Sequence[ToolCallLike] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        done_reason: str | None = None,
        finish_reason: str | None = None,
        stop_reason: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Queue the answer for the next ``times`` generation requests (``None``: all of them).

        Give a :class:`ScriptedReply`, a callable ``(request_json) -> ScriptedReply``,
        a content string, or the fields as keywords. ``done_reason``,
        ``finish_reason`` and ``stop_reason`` are synonyms. Replies are used in FIFO
        order; a ``times=None`` entry stays at the head until :meth:`clear_script`.
        With nothing queued the server answers its deterministic default.
        ``tool_calls`` accepts :class:`ToolCallSpec`, ``{"name", "arguments"}`` dicts or
        wire-shaped ``{"function": {...}}`` dicts.
        """
        reasons = [r for r in (done_reason, finish_reason, stop_reason) if r is not None]
        if len(reasons) > 1:
            raise TypeError("give only one of done_reason / finish_reason / stop_reason")
        if times is not None and times < 1:
            raise ValueError("times must be None or at least 1")
        built = _build_reply(
            reply,
            content=content,
            chunks=chunks,
            thinking=thinking,
            thinking_chunks=thinking_chunks,
            tool_calls=tool_calls,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cache_creation_tokens=cache_creation_tokens,
            reasoning_tokens=reasoning_tokens,
            done_reason=reasons[0] if reasons else None,
        )
        with self._state_lock:
            self._script.append(_ScriptEntry(built, times))

    def clear_script(self) -> None:
        """Forget all scripted replies."""
        with self._state_lock:
            self._script.clear()

    def reset(self) -> None:
        """Forget requests, faults and scripted replies (models are kept)."""
        super().reset()
        self.clear_script()

    def next_reply(self, request_json: Any, default: Callable[[], ScriptedReply]) -> ScriptedReply:
        """Take the next scripted reply (or build the default)."""
        with self._state_lock:
            entry = self._script[0] if self._script else None
            if entry is not None and entry.remaining is not None:
                entry.remaining -= 1
                if entry.remaining <= 0:
                    self._script.pop(0)
        if entry is None:
            return default()
        if isinstance(entry.reply, ScriptedReply):
            return entry.reply
        return entry.reply(request_json)


def default_echo(last_user_text: str | None, *, json_mode: bool = False) -> str:
    """The default reply text."""
    text = last_user_text if last_user_text is not None else ""
    if json_mode:
        return dumps({"echo": text})
    return f"Echo: {text}" if text else "Hello from the loopback server."


def fragments(text: str, size: int = 8) -> list[str]:
    """Cut ``text`` into pieces of ``size`` characters (for argument deltas)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
