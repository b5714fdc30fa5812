"""The values a conversation is made of: messages, tool calls, usage, responses and chunks.

All are frozen keyword-only dataclasses: cheap to build (the streaming hot path
creates one :class:`ChunkResponse` per token) and safe to share. Field names
follow the wire protocols where they agree (``prompt_tokens``,
``finish_reason``, ``tool_call_id``).

* :class:`Message` — one entry of a conversation (``role``, ``content``,
  ``images``, ``tool_calls``, ``tool_call_id``, ``name``, ``reasoning``).
* :class:`Image` — an image given to a vision model (base64 data and media type, or a URL).
* :class:`Tool` — a function the model may call (name, description, JSON schema).
* :class:`ToolCall` / :class:`ToolCallDelta` — a call the model made, whole or as
  a streamed fragment.
* :class:`Usage` — tokens and, where known, cost of one call.
* :class:`CompleteResponse` — the whole answer of a call;
  :class:`ChunkResponse` — one piece of a streamed answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias

__all__ = [
    "ChunkResponse",
    "CompleteResponse",
    "Image",
    "ImageInput",
    "Message",
    "Role",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolInput",
    "Usage",
    "estimate_tokens",
]


class Role(str, Enum):
    """Who speaks in a message. Compares equal to its wire name (``Role.USER == "user"``)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------- images

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_SUFFIX_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


def _sniff_media_type(data: bytes) -> str | None:
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """An image for a vision model: base64 data with its media type, or a URL.

    Build one with :meth:`from_bytes`, :meth:`from_path` or :meth:`coerce`
    (which also takes data URLs, base64 text and ``http(s)`` URLs). The data
    is kept base64-encoded, as every wire protocol sends it.
    """

    base64: str = ""
    media_type: str = "image/png"
    url: str | None = None

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Image:
        """An image from raw bytes; the media type is sniffed when not given."""
        return cls(
            base64=base64.b64encode(data).decode("ascii"),
            media_type=media_type or _sniff_media_type(data) or "image/png",
        )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Image:
        """An image read from a file (PNG, JPEG, GIF or WebP)."""
        p = Path(path)
        data = p.read_bytes()
        return cls.from_bytes(data, _sniff_media_type(data) or _SUFFIX_TYPES.get(p.suffix.lower()))

    @classmethod
    def coerce(cls, value: ImageInput) -> Image:
        """An :class:`Image` from what users pass as ``images=``.

        Accepts an :class:`Image`; ``bytes``; a path (``str`` or ``PathLike``);
        a ``data:image/...;base64,...`` URL; an ``http(s)://`` URL (kept as a URL,
        for servers that fetch images themselves); or base64 text.

        Raises:
            ValueError: the value is none of these.
        """
        if isinstance(value, Image):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value))
        if isinstance(value, os.PathLike):
            return cls.from_path(value)
        if not isinstance(value, str):
            raise ValueError(
                f"an image must be bytes, a path, a data URL or base64 text, not "
                f"{type(value).__name__}"
            )
        text = value.strip()
        if text.startswith("data:"):
            header, sep, payload = text.partition(",")
            if not sep or ";base64" not in header:
                raise ValueError("a data URL image must be base64-encoded: data:<type>;base64,...")
            media_type = header[5:].split(";", 1)[0] or "image/png"
            return cls(base64=payload, media_type=media_type)
        if text.startswith(("http://", "https://")):
            return cls(url=text, media_type="")
        if len(text) < 4096 and os.path.exists(text):
            return cls.from_path(text)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"cannot read image {text[:60]!r}: not an existing file, a data URL, "
                "an http(s) URL or base64 text"
            ) from None
        return cls(base64=text, media_type=_sniff_media_type(data) or "image/png")

    @property
    def data(self) -> bytes:
        """The raw image bytes (empty for a URL image)."""
        return base64.b64decode(self.base64) if self.base64 else b""

    @property
    def data_url(self) -> str:
        """The image as a ``data:`` URL (or its URL when it is one)."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.base64}"

    def __repr__(self) -> str:
        if self.url is not None:
            return f"Image(url={self.url!r})"
        return f"Image({self.media_type}, {len(self.base64) * 3 // 4} bytes)"


ImageInput: TypeAlias = "Image | bytes | str | os.PathLike[str]"
"""What ``images=`` accepts: see :meth:`Image.coerce`."""


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function the model may call: its name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    @classmethod
    def coerce(cls, value: ToolInput) -> Tool:
        """A :class:`Tool` from a Tool, an OpenAI-style tool dict or a plain one.

        Accepted dicts: ``{"type": "function", "function": {"name", "description",
        "parameters"}}``, ``{"name", "description", "parameters"}`` and Anthropic's
        ``{"name", "description", "input_schema"}``.

        Raises:
            ValueError: the value has no ``name``.
        """
        if isinstance(value, Tool):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"a tool must be a Tool or a dict, not {type(value).__name__}")
        spec = value.get("function", value) if value.get("type") == "function" else value
        if not isinstance(spec, Mapping):
            raise ValueError("a tool's 'function' entry must be a dict")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tool needs a non-empty 'name': {dict(value)!r:.200}")
        parameters = spec.get("parameters", spec.get("input_schema"))
        return cls(
            name=name,
            description=str(spec.get("description") or ""),
            parameters=parameters
            if isinstance(parameters, Mapping)
            else {"type": "object", "properties": {}},
        )

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI / Ollama wire form."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


ToolInput: TypeAlias = "Tool | Mapping[str, Any]"
"""What ``tools=`` accepts: see :meth:`Tool.coerce`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A call the model asked for: ``id`` (answer it with ``add_tool_result(id, ...)``),
    the function ``name`` and its parsed ``arguments``.

    ``raw_arguments`` keeps the text the server sent when it was not a JSON
    object (``arguments`` is then empty).
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments as JSON text (what OpenAI-compatible servers expect back)."""
        if self.raw_arguments is not None:
            return self.raw_arguments
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json_arguments(cls, *, id: str, name: str, arguments: str) -> ToolCall:
        """A call whose arguments arrived as JSON text (OpenAI, Anthropic streams)."""
        text = arguments.strip()
        if not text:
            return cls(id=id, name=name)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return cls(id=id, name=name, arguments=parsed)
        return cls(id=id, name=name, raw_arguments=arguments)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        data: dict[str, Any] = {"id": self.id, "name": self.name, "arguments": dict(self.arguments)}
        if self.raw_arguments is not None:
            data["raw_arguments"] = self.raw_arguments
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A fragment of a tool call in a stream.

    ``index`` says which call of the answer it belongs to (0 for the first);
    ``id`` and ``name`` come with the first fragment of a call; ``arguments``
    is a piece of the arguments' JSON text, to be concatenated in order.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One entry of a conversation.

    ``tool_calls`` are on assistant messages that call tools; ``tool_call_id``
    (and ``name``, the tool's name) on the tool messages answering them;
    ``reasoning`` is the model's thinking when the server reported it.
    """

    role: Role
    content: str = ""
    images: tuple[Image, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        """A system message."""
        return cls(role=Role.SYSTEM, content=content)

    @classmethod
    def user(cls, content: str, images: Iterable[ImageInput] | None = None) -> Message:
        """A user message, optionally with images."""
        if images is None:
            return cls(role=Role.USER, content=content)
        return cls(role=Role.USER, content=content, images=tuple(Image.coerce(i) for i in images))

    @classmethod
    def assistant(
        cls,
        content: str,
        *,
        tool_calls: Iterable[ToolCall] = (),
        reasoning: str | None = None,
    ) -> Message:
        """An assistant message."""
        return cls(
            role=Role.ASSISTANT, content=content, tool_calls=tuple(tool_calls), reasoning=reasoning
        )

    @classmethod
    def tool(cls, tool_call_id: str, content: str, *, name: str | None = None) -> Message:
        """A tool result answering the tool call ``tool_call_id``."""
        return cls(role=Role.TOOL, content=content, tool_call_id=tool_call_id, name=name)

    @classmethod
    def coerce(cls, value: Message | Mapping[str, Any]) -> Message:
        """A :class:`Message` from a Message or a dict like ``{"role": "user", "content": "hi"}``.

        Dicts may carry ``images``, ``tool_calls`` (``{"id", "name", "arguments"}``
        or OpenAI's ``{"id", "function": {"name", "arguments"}}``),
        ``tool_call_id``, ``name`` and ``reasoning``.

        Raises:
            ValueError: unknown role or malformed entry.
        """
        if isinstance(value, Message):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"a message must be a Message or a dict, not {type(value).__name__}")
        try:
            role = Role(str(value.get("role", "")).lower())
        except ValueError:
            raise ValueError(
                f"unknown message role {value.get('role')!r}; use system, user, assistant or tool"
            ) from None
        content = value.get("content")
        if content is None:
            content = ""
        elif not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        calls: list[ToolCall] = []
        for i, raw in enumerate(value.get("tool_calls") or ()):
            if isinstance(raw, ToolCall):
                calls.append(raw)
                continue
            fn = raw.get("function", raw)
            args = fn.get("arguments", {})
            call_id = str(raw.get("id") or f"call_{i}")
            if isinstance(args, str):
                calls.append(
                    ToolCall.from_json_arguments(id=call_id, name=fn["name"], arguments=args)
                )
            else:
                calls.append(ToolCall(id=call_id, name=fn["name"], arguments=dict(args or {})))
        images = tuple(Image.coerce(i) for i in value.get("images") or ())
        return cls(
            role=role,
            content=content,
            images=images,
            tool_calls=tuple(calls),
            tool_call_id=value.get("tool_call_id"),
            name=value.get("name"),
            reasoning=value.get("reasoning"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what :meth:`coerce` reads back)."""
        data: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.images:
            data["images"] = [i.data_url for i in self.images]
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        if self.reasoning is not None:
            data["reasoning"] = self.reasoning
        return data


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens used by one call, and its cost in USD where the model's prices are known.

    ``cached_tokens`` is the part of the prompt served from a cache (read at
    the cached price), ``cache_creation_tokens`` the part written to a cache
    (Anthropic's ``cache_creation_input_tokens``, billed at the cache-write
    price), ``reasoning_tokens`` the part of the completion spent thinking (all
    0 when the server does not say; ``prompt_tokens`` includes the first two).
    ``estimated`` is True when the server reported no usage and the figures were
    estimated from the text.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    estimated: bool = False
    cache_creation_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        cost = (
            None
            if self.cost_usd is None and other.cost_usd is None
            else (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        )
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost_usd=cost,
            estimated=self.estimated or other.estimated,
            cache_creation_tokens=self.cache_creation_tokens + other.cache_creation_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "estimated": self.estimated,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteResponse:
    """The whole answer of one call.

    ``finish_reason`` is normalised across protocols: ``stop``, ``length``,
    ``tool_calls``, ``content_filter`` (other values pass through as the server
    said them). ``latency_ms`` runs from the request to the last byte;
    ``time_to_first_token_ms`` is set for streamed calls. ``model`` is the
    model name the server reported; ``identifier`` the full identifier of the
    model that answered (with a replica set or fallback chain, the replica or
    member that did).
    """

    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_ms: float = 0.0
    time_to_first_token_ms: float | None = None
    model: str = ""
    identifier: str = ""

    @property
    def message(self) -> Message:
        """The assistant message this answer adds to a conversation."""
        return Message(
            role=Role.ASSISTANT,
            content=self.content,
            tool_calls=self.tool_calls,
            reasoning=self.reasoning or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``llmfactory prompt --json`` prints)."""
        return {
            "content": self.content,
            "reasoning": self.reasoning,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "latency_ms": round(self.latency_ms, 3),
            "time_to_first_token_ms": (
                round(self.time_to_first_token_ms, 3)
                if self.time_to_first_token_ms is not None
                else None
            ),
            "model": self.model,
            "identifier": self.identifier,
        }


# Not slotted on purpose: the field defaults stay class attributes, so that
# ChunkResponse.delta() can build the common text-only chunk by filling two
# entries of the instance dict, five times faster than the generated __init__.
@dataclass(frozen=True, kw_only=True)
class ChunkResponse:
    """One piece of a streamed answer.

    ``content`` and ``reasoning`` are deltas (the text since the previous
    chunk), ``tool_calls`` the tool-call fragments in this piece. The last
    chunk has ``is_complete=True``, the ``finish_reason``, the ``usage`` and
    the assembled ``response``.
    """

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    is_complete: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    response: CompleteResponse | None = None

    @classmethod
    def delta(cls, content: str, reasoning: str = "") -> ChunkResponse:
        """A text-only chunk, built on the streaming hot path without ``__init__``."""
        chunk = _new_object(cls)
        values = chunk.__dict__
        values["content"] = content
        values["reasoning"] = reasoning
        return chunk


_new_object = object.__new__


def estimate_tokens(texts: Sequence[str]) -> int:
    """A rough token count for text when a server reports none (about 4 characters a token)."""
    chars = sum(len(t) for t in texts)
    return (chars + 3) // 4
