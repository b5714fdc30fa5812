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
    ExtensionError,
    InvalidIdentifierError,
    LLMAPIError,
    LLMConnectionError,
    LLMFactoryError,
    LLMTimeoutError,
    MissingAPIKeyError,
    ModelNotFoundError,
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
    from llmfactory.config import LLMConfig, Settings
    from llmfactory.factory import (
        LLMFactory,
        ensure_initialized,
        get_model,
        list_models,
        register_model,
        unregister_model,
    )
    from llmfactory.registry.models import (
        Capability,
        HostRecord,
        LLMModel,
        ModelSource,
        Pricing,
        UsageRecord,
        infer_provider,
    )

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY: dict[str, str] = {
    "LLMConfig": "llmfactory.config",
    "Settings": "llmfactory.config",
    "LLMFactory": "llmfactory.factory",
    "ensure_initialized": "llmfactory.factory",
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
}

__all__ = [
    "AmbiguousModelError",
    "AuthenticationError",
    "Capability",
    "ConfigError",
    "ContextLengthExceededError",
    "ExtensionError",
    "HostAddress",
    "HostRecord",
    "InvalidIdentifierError",
    "LLMAPIError",
    "LLMConfig",
    "LLMConnectionError",
    "LLMFactory",
    "LLMFactoryError",
    "LLMModel",
    "LLMTimeoutError",
    "MissingAPIKeyError",
    "ModelIdentifier",
    "ModelNotFoundError",
    "ModelSource",
    "Pricing",
    "RateLimitError",
    "RuntimeUnavailableError",
    "Settings",
    "StoreError",
    "UsageRecord",
    "__version__",
    "ensure_initialized",
    "format_identifier",
    "get_model",
    "infer_provider",
    "list_models",
    "normalize_host",
    "parse_identifier",
    "register_model",
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
