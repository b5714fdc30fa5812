"""Extensions: code that hooks into every call of a conversation, without subclassing.

Count tokens and money, log, rate-limit, redact or refuse: an extension is an
object with some of the hooks ``before_invoke(call)``, ``on_chunk(call, chunk)``,
``after_invoke(call, response)``, ``on_error(call, error)``, ``on_register(llm)``,
``on_unregister(llm)`` and ``on_close(llm)`` (sync or async), usually a
subclass of :class:`LLMExtension`. Register one on a conversation
(``llm.register_extension(ext)``), on a factory for every conversation it
creates (``factory.register_extension(ext, runtimes=..., providers=...)``), or
publish it in a package under the ``llmfactory.extensions`` entry-point group
and name it in the config file's ``[extensions] enabled = [...]``.

Shipped:

* :class:`TokenUsageTrackingExtension` — tokens, cost and latency per call,
  totals, persisted in the registry (on every conversation by default);
* :class:`LoggingExtension` — one structured log record per call;
* :class:`RateLimitExtension` — requests and tokens per minute;
* :class:`RedactionExtension` — e-mail addresses, phone numbers and keys
  replaced before the request leaves the process;
* :class:`OpenTelemetryExtension` — one span per call with the GenAI
  semantic-convention attributes (the ``otel`` extra).

See ``docs/extensions.md``. The names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmfactory.extensions.base import (
        ENTRY_POINT_GROUP,
        LLMExtension,
        extension_names,
        load_extension,
    )
    from llmfactory.extensions.logging_ext import LoggingExtension
    from llmfactory.extensions.otel import OpenTelemetryExtension
    from llmfactory.extensions.rate_limit import RateLimitExceeded, RateLimitExtension
    from llmfactory.extensions.redaction import RedactionExtension
    from llmfactory.extensions.token_usage import (
        CallUsage,
        TokenUsageTrackingExtension,
        UsageLedger,
        UsageTotals,
    )

_LAZY: dict[str, str] = {
    "ENTRY_POINT_GROUP": "llmfactory.extensions.base",
    "LLMExtension": "llmfactory.extensions.base",
    "extension_names": "llmfactory.extensions.base",
    "load_extension": "llmfactory.extensions.base",
    "LoggingExtension": "llmfactory.extensions.logging_ext",
    "OpenTelemetryExtension": "llmfactory.extensions.otel",
    "RateLimitExceeded": "llmfactory.extensions.rate_limit",
    "RateLimitExtension": "llmfactory.extensions.rate_limit",
    "RedactionExtension": "llmfactory.extensions.redaction",
    "CallUsage": "llmfactory.extensions.token_usage",
    "TokenUsageTrackingExtension": "llmfactory.extensions.token_usage",
    "UsageLedger": "llmfactory.extensions.token_usage",
    "UsageTotals": "llmfactory.extensions.token_usage",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "CallUsage",
    "LLMExtension",
    "LoggingExtension",
    "OpenTelemetryExtension",
    "RateLimitExceeded",
    "RateLimitExtension",
    "RedactionExtension",
    "TokenUsageTrackingExtension",
    "UsageLedger",
    "UsageTotals",
    "extension_names",
    "load_extension",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmfactory.extensions' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
