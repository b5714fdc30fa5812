"""What the registry persists: models, hosts, aliases and usage records.

:class:`LLMModel` is metadata about one model at one place; it is a plain
SQLModel row, never an active object. :class:`Capability` and
:class:`Pricing` are the value types that go with it.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class as _MANAGER
from sqlmodel import Field, SQLModel

__all__ = [
    "Alias",
    "Capability",
    "HostRecord",
    "LLMModel",
    "ModelSource",
    "Pricing",
    "UsageRecord",
    "infer_provider",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def _empty_list() -> list[Any]:
    return []


def _empty_dict() -> dict[str, Any]:
    return {}


# pydantic inspects a default factory's signature each time it calls it (to see whether
# it takes the validated data), and inspect.signature(list) alone takes about 0.2 ms: a
# third of the cost of building an LLMModel. A precomputed signature makes that free.
for _factory in (utcnow, _empty_list, _empty_dict):
    setattr(_factory, "__signature__", inspect.Signature())  # noqa: B010
del _factory


class Capability(str, Enum):
    """What a model can do."""

    CHAT = "chat"
    STREAMING = "streaming"
    TOOLS = "tools"
    VISION = "vision"
    EMBEDDING = "embedding"
    REASONING = "reasoning"
    JSON_OUTPUT = "json_output"
    COMPLETION = "completion"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Capability) -> Capability:
        """Parse a capability name, accepting common synonyms (``thinking`` → reasoning)."""
        if isinstance(value, Capability):
            return value
        key = value.strip().lower().replace("-", "_")
        key = _CAPABILITY_SYNONYMS.get(key, key)
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown capability {value!r}; known: {names}") from None


_CAPABILITY_SYNONYMS = {
    "thinking": "reasoning",
    "tool_use": "tools",
    "tool": "tools",
    "function_calling": "tools",
    "image": "vision",
    "images": "vision",
    "embeddings": "embedding",
    "json": "json_output",
    "stream": "streaming",
}


class ModelSource(str, Enum):
    """Where a model's record came from."""

    BUILTIN = "builtin"
    DISCOVERED = "discovered"
    USER = "user"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Pricing:
    """List prices in USD per million tokens (0 for local models)."""

    #: Cache writes cost this many times the input price (Anthropic's 5-minute cache).
    CACHE_WRITE_MULTIPLIER = 1.25

    input_per_million: float = 0.0
    output_per_million: float = 0.0
    cached_input_per_million: float | None = None

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        cache_creation_tokens: int = 0,
    ) -> float:
        """The cost in USD of a call.

        ``prompt_tokens`` includes ``cached_tokens`` (read from a cache: at the
        cached price when known, else the input price) and
        ``cache_creation_tokens`` (written to a cache: at
        :attr:`CACHE_WRITE_MULTIPLIER` times the input price); the rest of the
        prompt at the input price, the completion at the output price.
        """
        cached = min(max(cached_tokens, 0), prompt_tokens)
        created = min(max(cache_creation_tokens, 0), prompt_tokens - cached)
        cached_price = (
            self.cached_input_per_million
            if self.cached_input_per_million is not None
            else self.input_per_million
        )
        return (
            (prompt_tokens - cached - created) * self.input_per_million
            + cached * cached_price
            + created * self.input_per_million * self.CACHE_WRITE_MULTIPLIER
            + completion_tokens * self.output_per_million
        ) / 1_000_000

    @property
    def is_free(self) -> bool:
        """True when both prices are zero."""
        return self.input_per_million == 0 and self.output_per_million == 0


# Ordered: the first pattern that matches the model name wins. Patterns match at
# the start of the name or after a namespace such as "library/" or "qwen/".
_PROVIDER_PATTERNS: list[tuple[str, str]] = [
    ("gpt-oss", "openai"),
    (r"gpt-|o[134](?:-|$)|chatgpt|text-embedding-3|davinci|babbage|whisper|dall-e", "openai"),
    ("claude", "anthropic"),
    (r"codellama|code-llama|llama|llava", "meta"),
    ("qwq|qwen|qvq", "qwen"),
    ("gemma|gemini|paligemma|codegemma", "google"),
    ("codestral|mistral|mixtral|ministral|magistral|devstral|pixtral|mathstral", "mistral"),
    ("phi", "microsoft"),
    ("deepseek", "deepseek"),
    ("command-r|command-a|aya|c4ai", "cohere"),
    ("granite", "ibm"),
    ("nomic", "nomic"),
    ("mxbai", "mixedbread"),
    ("snowflake-arctic|arctic", "snowflake"),
    ("falcon", "tii"),
    ("starcoder|smollm", "huggingface"),
    ("olmo|tulu", "allenai"),
    ("yi-|yi:|yi$", "01-ai"),
    ("glm|chatglm|codegeex", "zhipu"),
    ("internlm|internvl", "shanghai-ai-lab"),
    ("nemotron|nvidia", "nvidia"),
    ("minicpm", "openbmb"),
    ("kimi|moonshot", "moonshot"),
    ("hermes|nous", "nousresearch"),
    ("dolphin", "cognitivecomputations"),
    ("orca", "microsoft"),
    ("vicuna", "lmsys"),
    ("bge|baai", "baai"),
    ("all-minilm|e5-|multilingual-e5", "sentence-transformers"),
    ("exaone", "lg"),
    ("grok", "xai"),
]
_PROVIDER_RES = [
    (re.compile(rf"(?:^|[/_\-.:])(?:{pattern})", re.IGNORECASE), provider)
    for pattern, provider in _PROVIDER_PATTERNS
]
# Namespaces (LM Studio publishers, Hugging Face orgs) that name the maker directly.
_NAMESPACE_PROVIDERS = {
    "meta-llama": "meta",
    "meta": "meta",
    "qwen": "qwen",
    "google": "google",
    "mistralai": "mistral",
    "microsoft": "microsoft",
    "deepseek-ai": "deepseek",
    "openai": "openai",
    "ibm-granite": "ibm",
    "nvidia": "nvidia",
}


def infer_provider(name: str) -> str:
    """Guess who made a model from its name (``llama3.2:latest`` → ``meta``); else ``unknown``."""
    lowered = name.lower()
    namespace, sep, _ = lowered.partition("/")
    if sep and namespace in _NAMESPACE_PROVIDERS:
        return _NAMESPACE_PROVIDERS[namespace]
    for regex, provider in _PROVIDER_RES:
        if regex.search(lowered):
            return provider
    return "unknown"


class LLMModel(SQLModel, table=True):
    """Metadata of one model at one place.

    ``identifier`` is ``model:runtime@host`` for runtime-served models and the
    bare name for cloud models. Prices are USD per million tokens. Fields named
    in ``user_fields`` were set by the user and are never overwritten by
    discovery or the built-in catalogue.
    """

    __tablename__ = "models"

    identifier: str = Field(primary_key=True)
    name: str = Field(index=True)
    provider: str = Field(default="unknown", index=True)
    runtime: str = Field(default="api", index=True)
    host: str | None = Field(default=None, index=True)
    service: str | None = Field(
        default=None, description="the cloud API that serves it (openai, groq, …); None if local"
    )
    context_length: int | None = None
    max_output_tokens: int | None = None
    capabilities: list[str] = Field(
        default_factory=_empty_list, sa_column=Column(JSON, nullable=False)
    )
    input_price_per_million: float = 0.0
    output_price_per_million: float = 0.0
    cached_input_price_per_million: float | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    digest: str | None = None
    extras: dict[str, Any] = Field(
        default_factory=_empty_dict, sa_column=Column(JSON, nullable=False)
    )
    source: str = Field(default=ModelSource.USER.value)
    available: bool = True
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)
    user_fields: list[str] = Field(
        default_factory=_empty_list, sa_column=Column(JSON, nullable=False)
    )

    @property
    def id(self) -> str:
        """Alias of :attr:`identifier`."""
        return self.identifier

    @property
    def pricing(self) -> Pricing:
        """The model's prices as a :class:`Pricing` value."""
        return Pricing(
            input_per_million=self.input_price_per_million,
            output_per_million=self.output_price_per_million,
            cached_input_per_million=self.cached_input_price_per_million,
        )

    @property
    def is_local(self) -> bool:
        """True for a model served by a runtime (it has a host)."""
        return self.host is not None

    def has_capability(self, capability: str | Capability) -> bool:
        """True when the model has ``capability`` (synonyms accepted)."""
        return Capability.parse(capability).value in self.capabilities

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LLMModel:
        """Build from a complete, trusted row without validation (5× faster than ``__init__``).

        Used when loading from the database and when copying a record; the result is
        a normal instance (attributes can be set as usual).
        """
        global _MAPPERS_CONFIGURED
        if not _MAPPERS_CONFIGURED:
            configure_mappers()
            _MAPPERS_CONFIGURED = True
        # What pydantic's model_construct does, minus its per-field default handling
        # (the row is complete), plus the SQLAlchemy instance state it skips.
        values = {name: row[name] for name in _COLUMNS}
        model: LLMModel = cls.__new__(cls)
        _set(model, "__dict__", values)
        _set(model, "__pydantic_fields_set__", set(_COLUMNS))
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        _MANAGER(cls)._new_state_if_none(model)
        return model

    def copy_with(self, **changes: Any) -> LLMModel:
        """A detached copy with ``changes`` applied (the original is not modified)."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise TypeError(f"LLMModel has no field(s) {', '.join(sorted(unknown))}")
        data = self.to_row()
        data.update(changes)
        return LLMModel.from_row(data)

    def to_row(self) -> dict[str, Any]:
        """All persisted fields as a plain dict (lists and dicts copied)."""
        values = self.__dict__
        row = {name: values[name] for name in _COLUMNS}
        row["capabilities"] = list(row["capabilities"])
        row["extras"] = dict(row["extras"])
        row["user_fields"] = list(row["user_fields"])
        return row

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (the shape ``llmfactory models --json`` prints)."""
        v = self.__dict__  # plain dict access: SQLAlchemy's attribute descriptors are slow
        first_seen, last_seen = v["first_seen"], v["last_seen"]
        return {
            "id": v["identifier"],
            "name": v["name"],
            "provider": v["provider"],
            "runtime": v["runtime"],
            "host": v["host"],
            "service": v["service"],
            "context_length": v["context_length"],
            "max_output_tokens": v["max_output_tokens"],
            "capabilities": list(v["capabilities"]),
            "pricing": {
                "input_per_million": v["input_price_per_million"],
                "output_per_million": v["output_price_per_million"],
                "cached_input_per_million": v["cached_input_price_per_million"],
            },
            "details": {
                "family": v["family"],
                "parameter_size": v["parameter_size"],
                "quantization": v["quantization"],
                "size_bytes": v["size_bytes"],
                "digest": v["digest"],
                "extras": dict(v["extras"]),
            },
            "available": v["available"],
            "source": v["source"],
            "first_seen": first_seen.isoformat() if first_seen else None,
            "last_seen": last_seen.isoformat() if last_seen else None,
            "user_fields": list(v["user_fields"]),
        }

    def __repr__(self) -> str:
        return (
            f"LLMModel({self.identifier!r}, provider={self.provider!r}, "
            f"available={self.available})"
        )


_COLUMNS: tuple[str, ...] = tuple(LLMModel.model_fields)
_MAPPERS_CONFIGURED = False
_set = object.__setattr__


class HostRecord(SQLModel, table=True):
    """A place where a runtime listens, with what the last probe found there."""

    __tablename__ = "hosts"

    runtime: str = Field(primary_key=True)
    address: str = Field(primary_key=True, description="normalised host:port")
    scheme: str = "http"
    path: str = ""
    source: str = "user"
    status: str = "unknown"
    version: str | None = None
    model_count: int = 0
    last_seen: datetime | None = None
    last_checked: datetime | None = None
    last_error: str | None = None

    @property
    def base_url(self) -> str:
        """The URL requests go to, e.g. ``http://127.0.0.1:11434``."""
        return f"{self.scheme}://{self.address}{self.path}"

    @property
    def key(self) -> str:
        """``runtime@host:port``."""
        return f"{self.runtime}@{self.address}"


class Alias(SQLModel, table=True):
    """A user-chosen short name for an identifier."""

    __tablename__ = "aliases"

    name: str = Field(primary_key=True)
    identifier: str


class UsageRecord(SQLModel, table=True):
    """One call's tokens, cost and latency (never its content)."""

    __tablename__ = "usage"

    id: int | None = Field(default=None, primary_key=True)
    timestamp: datetime = Field(default_factory=utcnow, index=True)
    identifier: str = Field(index=True)
    provider: str = "unknown"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    estimated: bool = False
    ok: bool = True
    error_kind: str | None = None
