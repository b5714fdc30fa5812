"""llmfactory: find, describe and talk to large language models wherever they run.

Importing the package does no I/O and loads no heavy module: the names below
are imported on first use.

    >>> import llmfactory
    >>> llmfactory.list_models(provider="openai")        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmfactory.errors import (
    AmbiguousModelError,
    AuthenticationError,
    ConfigError,
    ContextLengthExceededError,
    ConversationBusyError,
    ExtensionError,
    InvalidIdentifierError,
    LLMAPIError,
    LLMConnectionError,
    LLMFactoryError,
    LLMTimeoutError,
    MissingAPIKeyError,
    ModelNotFoundError,
    NotSupportedError,
    RateLimitError,
    RuntimeUnavailableError,
    StoreError,
)
from llmfactory.identifiers import (
    HostAddress,
    ModelIdentifier,
    format_identifier,
    normalize_host,
    parse_identifier,
)

if TYPE_CHECKING:
    from llmfactory.api.mock import MockLLM
    from llmfactory.base_llm import BaseLLM
    from llmfactory.config import LLMConfig, Settings
    from llmfactory.cost import CostEstimate
    from llmfactory.extensions.base import LLMExtension
    from llmfactory.extensions.logging_ext import LoggingExtension
    from llmfactory.extensions.otel import OpenTelemetryExtension
    from llmfactory.extensions.rate_limit import RateLimitExtension
    from llmfactory.extensions.redaction import RedactionExtension
    from llmfactory.extensions.token_usage import (
        CallUsage,
        TokenUsageTrackingExtension,
        UsageTotals,
    )
    from llmfactory.factory import (
        LLMFactory,
        create_llm,
        ensure_initialized,
        get_model,
        list_models,
        register_model,
        unregister_model,
    )
    from llmfactory.fallback import FallbackLLM
    from llmfactory.health import HealthReport
    from llmfactory.messages import (
        ChunkResponse,
        CompleteResponse,
        Image,
        Message,
        Role,
        Tool,
        ToolCall,
        ToolCallDelta,
        Usage,
    )
    from llmfactory.mock import MockReply, MockScript
    from llmfactory.registry.models import (
        Capability,
        HostRecord,
        LLMModel,
        ModelSource,
        Pricing,
        UsageRecord,
        infer_provider,
    )
    from llmfactory.replicas import ReplicaLLM
    from llmfactory.runtimes.base import ProbeResult, Runtime, register_runtime
    from llmfactory.runtimes.discovery import (
        DiscoveryReport,
        HostReport,
        add_host,
        arefresh,
        list_hosts,
        refresh,
        remove_host,
    )
    from llmfactory.streams import ChunkStream
    from llmfactory.sync import SyncChunkStream

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY: dict[str, str] = {
    "LLMConfig": "llmfactory.config",
    "LLMExtension": "llmfactory.extensions.base",
    "LoggingExtension": "llmfactory.extensions.logging_ext",
    "OpenTelemetryExtension": "llmfactory.extensions.otel",
    "CostEstimate": "llmfactory.cost",
    "MockLLM": "llmfactory.api.mock",
    "MockReply": "llmfactory.mock",
    "MockScript": "llmfactory.mock",
    "RateLimitExtension": "llmfactory.extensions.rate_limit",
    "RedactionExtension": "llmfactory.extensions.redaction",
    "CallUsage": "llmfactory.extensions.token_usage",
    "TokenUsageTrackingExtension": "llmfactory.extensions.token_usage",
    "UsageTotals": "llmfactory.extensions.token_usage",
    "Settings": "llmfactory.config",
    "LLMFactory": "llmfactory.factory",
    "FallbackLLM": "llmfactory.fallback",
    "HealthReport": "llmfactory.health",
    "ReplicaLLM": "llmfactory.replicas",
    "create_llm": "llmfactory.factory",
    "ensure_initialized": "llmfactory.factory",
    "BaseLLM": "llmfactory.base_llm",
    "ChunkStream": "llmfactory.streams",
    "SyncChunkStream": "llmfactory.sync",
    "ChunkResponse": "llmfactory.messages",
    "CompleteResponse": "llmfactory.messages",
    "Image": "llmfactory.messages",
    "Message": "llmfactory.messages",
    "Role": "llmfactory.messages",
    "Tool": "llmfactory.messages",
    "ToolCall": "llmfactory.messages",
    "ToolCallDelta": "llmfactory.messages",
    "Usage": "llmfactory.messages",
    "get_model": "llmfactory.factory",
    "list_models": "llmfactory.factory",
    "register_model": "llmfactory.factory",
    "unregister_model": "llmfactory.factory",
    "Capability": "llmfactory.registry.models",
    "HostRecord": "llmfactory.registry.models",
    "LLMModel": "llmfactory.registry.models",
    "ModelSource": "llmfactory.registry.models",
    "Pricing": "llmfactory.registry.models",
    "UsageRecord": "llmfactory.registry.models",
    "infer_provider": "llmfactory.registry.models",
    "ProbeResult": "llmfactory.runtimes.base",
    "Runtime": "llmfactory.runtimes.base",
    "register_runtime": "llmfactory.runtimes.base",
    "DiscoveryReport": "llmfactory.runtimes.discovery",
    "HostReport": "llmfactory.runtimes.discovery",
    "add_host": "llmfactory.runtimes.discovery",
    "arefresh": "llmfactory.runtimes.discovery",
    "list_hosts": "llmfactory.runtimes.discovery",
    "refresh": "llmfactory.runtimes.discovery",
    "remove_host": "llmfactory.runtimes.discovery",
}

__all__ = [
    "AmbiguousModelError",
    "AuthenticationError",
    "BaseLLM",
    "CallUsage",
    "Capability",
    "ChunkResponse",
    "ChunkStream",
    "CompleteResponse",
    "ConfigError",
    "ContextLengthExceededError",
    "ConversationBusyError",
    "CostEstimate",
    "DiscoveryReport",
    "ExtensionError",
    "FallbackLLM",
    "HealthReport",
    "HostAddress",
    "HostRecord",
    "HostReport",
    "Image",
    "InvalidIdentifierError",
    "LLMAPIError",
    "LLMConfig",
    "LLMConnectionError",
    "LLMExtension",
    "LLMFactory",
    "LLMFactoryError",
    "LLMModel",
    "LLMTimeoutError",
    "LoggingExtension",
    "Message",
    "MissingAPIKeyError",
    "MockLLM",
    "MockReply",
    "MockScript",
    "ModelIdentifier",
    "ModelNotFoundError",
    "ModelSource",
    "NotSupportedError",
    "OpenTelemetryExtension",
    "Pricing",
    "ProbeResult",
    "RateLimitError",
    "RateLimitExtension",
    "RedactionExtension",
    "ReplicaLLM",
    "Role",
    "Runtime",
    "RuntimeUnavailableError",
    "Settings",
    "StoreError",
    "SyncChunkStream",
    "TokenUsageTrackingExtension",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageRecord",
    "UsageTotals",
    "__version__",
    "add_host",
    "arefresh",
    "create_llm",
    "ensure_initialized",
    "format_identifier",
    "get_model",
    "infer_provider",
    "list_hosts",
    "list_models",
    "normalize_host",
    "parse_identifier",
    "refresh",
    "register_model",
    "register_runtime",
    "remove_host",
    "unregister_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmfactory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
