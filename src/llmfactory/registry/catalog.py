"""The built-in catalogue of cloud API models: data, not code.

Prices are the vendors' public list prices in USD per million tokens
(standard tier, text, prompts within the base context tier), with the cached
input price where the vendor publishes one. Context lengths and output limits
are the vendors' published limits. ``CATALOG_CHECKED`` is when these figures
were last compared with the vendors' pricing pages; prices change, so a
config file can override any of them (``[pricing."model"]``), and
``llmfactory register`` can add models that are missing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from llmfactory.registry.models import LLMModel, ModelSource

__all__ = ["CATALOG", "CATALOG_CHECKED", "catalog_models", "catalog_version"]

#: When the figures below were last checked against the vendors' pages.
CATALOG_CHECKED = "2025-11-20"

_CHAT = ["chat", "streaming", "tools", "json_output"]
_CHAT_VISION = [*_CHAT, "vision"]
_REASONING = [*_CHAT_VISION, "reasoning"]

# name, provider, service, context, max output, capabilities, $in, $out, $cached-in
CATALOG: list[dict[str, Any]] = [
    # OpenAI
    {"name": "gpt-5", "provider": "openai", "service": "openai", "context_length": 400_000,
     "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 1.25, "output": 10.0, "cached_input": 0.125},
    {"name": "gpt-5-mini", "provider": "openai", "service": "openai", "context_length": 400_000,
     "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 0.25, "output": 2.0, "cached_input": 0.025},
    {"name": "gpt-5-nano", "provider": "openai", "service": "openai", "context_length": 400_000,
     "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 0.05, "output": 0.40, "cached_input": 0.005},
    {"name": "gpt-4.1", "provider": "openai", "service": "openai", "context_length": 1_047_576,
     "max_output_tokens": 32_768, "capabilities": _CHAT_VISION,
     "input": 2.0, "output": 8.0, "cached_input": 0.50},
    {"name": "gpt-4.1-mini", "provider": "openai", "service": "openai",
     "context_length": 1_047_576, "max_output_tokens": 32_768, "capabilities": _CHAT_VISION,
     "input": 0.40, "output": 1.60, "cached_input": 0.10},
    {"name": "gpt-4.1-nano", "provider": "openai", "service": "openai",
     "context_length": 1_047_576, "max_output_tokens": 32_768, "capabilities": _CHAT_VISION,
     "input": 0.10, "output": 0.40, "cached_input": 0.025},
    {"name": "gpt-4o", "provider": "openai", "service": "openai", "context_length": 128_000,
     "max_output_tokens": 16_384, "capabilities": _CHAT_VISION,
     "input": 2.50, "output": 10.0, "cached_input": 1.25},
    {"name": "gpt-4o-mini", "provider": "openai", "service": "openai", "context_length": 128_000,
     "max_output_tokens": 16_384, "capabilities": _CHAT_VISION,
     "input": 0.15, "output": 0.60, "cached_input": 0.075},
    {"name": "o3", "provider": "openai", "service": "openai", "context_length": 200_000,
     "max_output_tokens": 100_000, "capabilities": _REASONING,
     "input": 2.0, "output": 8.0, "cached_input": 0.50},
    {"name": "o4-mini", "provider": "openai", "service": "openai", "context_length": 200_000,
     "max_output_tokens": 100_000, "capabilities": _REASONING,
     "input": 1.10, "output": 4.40, "cached_input": 0.275},
    {"name": "text-embedding-3-small", "provider": "openai", "service": "openai",
     "context_length": 8_191, "max_output_tokens": None, "capabilities": ["embedding"],
     "input": 0.02, "output": 0.0, "cached_input": None},
    {"name": "text-embedding-3-large", "provider": "openai", "service": "openai",
     "context_length": 8_191, "max_output_tokens": None, "capabilities": ["embedding"],
     "input": 0.13, "output": 0.0, "cached_input": None},
    # Anthropic (cached input = cache read price)
    {"name": "claude-opus-4-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 5.0, "output": 25.0, "cached_input": 0.50},
    {"name": "claude-opus-4-1", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 32_000, "capabilities": _REASONING,
     "input": 15.0, "output": 75.0, "cached_input": 1.50},
    {"name": "claude-sonnet-4-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 3.0, "output": 15.0, "cached_input": 0.30},
    {"name": "claude-sonnet-4-0", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 3.0, "output": 15.0, "cached_input": 0.30},
    {"name": "claude-haiku-4-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 1.0, "output": 5.0, "cached_input": 0.10},
    {"name": "claude-3-5-haiku-latest", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 8_192, "capabilities": _CHAT_VISION,
     "input": 0.80, "output": 4.0, "cached_input": 0.08},
    # Google Gemini (OpenAI-compatible endpoint)
    {"name": "gemini-2.5-pro", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 1.25, "output": 10.0, "cached_input": 0.125},
    {"name": "gemini-2.5-flash", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 0.30, "output": 2.50, "cached_input": 0.03},
    {"name": "gemini-2.5-flash-lite", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 0.10, "output": 0.40, "cached_input": 0.01},
    {"name": "gemini-2.0-flash", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 8_192, "capabilities": _CHAT_VISION,
     "input": 0.10, "output": 0.40, "cached_input": 0.025},
    # Mistral
    {"name": "mistral-large-latest", "provider": "mistral", "service": "mistral",
     "context_length": 131_072, "max_output_tokens": None, "capabilities": _CHAT,
     "input": 2.0, "output": 6.0, "cached_input": None},
    {"name": "mistral-medium-latest", "provider": "mistral", "service": "mistral",
     "context_length": 131_072, "max_output_tokens": None, "capabilities": _CHAT_VISION,
     "input": 0.40, "output": 2.0, "cached_input": None},
    {"name": "mistral-small-latest", "provider": "mistral", "service": "mistral",
     "context_length": 131_072, "max_output_tokens": None, "capabilities": _CHAT_VISION,
     "input": 0.10, "output": 0.30, "cached_input": None},
    {"name": "codestral-latest", "provider": "mistral", "service": "mistral",
     "context_length": 256_000, "max_output_tokens": None, "capabilities": _CHAT,
     "input": 0.30, "output": 0.90, "cached_input": None},
    {"name": "magistral-medium-latest", "provider": "mistral", "service": "mistral",
     "context_length": 40_000, "max_output_tokens": None, "capabilities": [*_CHAT, "reasoning"],
     "input": 2.0, "output": 5.0, "cached_input": None},
    # DeepSeek (cached input = cache hit price)
    {"name": "deepseek-chat", "provider": "deepseek", "service": "deepseek",
     "context_length": 128_000, "max_output_tokens": 8_192, "capabilities": _CHAT,
     "input": 0.28, "output": 0.42, "cached_input": 0.028},
    {"name": "deepseek-reasoner", "provider": "deepseek", "service": "deepseek",
     "context_length": 128_000, "max_output_tokens": 65_536,
     "capabilities": ["chat", "streaming", "json_output", "reasoning"],
     "input": 0.28, "output": 0.42, "cached_input": 0.028},
    # Groq-hosted open models
    {"name": "llama-3.3-70b-versatile", "provider": "meta", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 32_768, "capabilities": _CHAT,
     "input": 0.59, "output": 0.79, "cached_input": None},
    {"name": "llama-3.1-8b-instant", "provider": "meta", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 131_072, "capabilities": _CHAT,
     "input": 0.05, "output": 0.08, "cached_input": None},
    {"name": "openai/gpt-oss-120b", "provider": "openai", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 65_536, "capabilities": [*_CHAT, "reasoning"],
     "input": 0.15, "output": 0.75, "cached_input": None},
    {"name": "openai/gpt-oss-20b", "provider": "openai", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 65_536, "capabilities": [*_CHAT, "reasoning"],
     "input": 0.10, "output": 0.50, "cached_input": None},
    {"name": "qwen/qwen3-32b", "provider": "qwen", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 40_960, "capabilities": [*_CHAT, "reasoning"],
     "input": 0.29, "output": 0.59, "cached_input": None},
]


def catalog_version() -> str:
    """A short hash of the catalogue's data; changes whenever an entry changes."""
    blob = json.dumps([CATALOG_CHECKED, CATALOG], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def catalog_models(now: datetime | None = None) -> list[LLMModel]:
    """The catalogue as :class:`LLMModel` records (source ``builtin``)."""
    now = now or datetime.now(timezone.utc)
    models = []
    for entry in CATALOG:
        models.append(
            LLMModel(
                identifier=entry["name"],
                name=entry["name"],
                provider=entry["provider"],
                runtime="api",
                host=None,
                service=entry["service"],
                context_length=entry["context_length"],
                max_output_tokens=entry["max_output_tokens"],
                capabilities=sorted(entry["capabilities"]),
                input_price_per_million=entry["input"],
                output_price_per_million=entry["output"],
                cached_input_price_per_million=entry["cached_input"],
                source=ModelSource.BUILTIN.value,
                available=True,
                first_seen=now,
                last_seen=now,
                extras={"catalog_checked": CATALOG_CHECKED},
            )
        )
    return models
