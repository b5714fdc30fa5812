"""The built-in catalogue of cloud API models: data, not code.

Prices are the vendors' public list prices in USD per million tokens
(standard tier, text, prompts within the base context tier), with the cached
input price where the vendor publishes one. Where a vendor bills by time of day
or runs an introductory rate, the entry carries the rate in force when it was checked
(DeepSeek: peak-hour rates; Gemini 3.8 Flash: the introductory rate that ends
2026-12-31). Context lengths and output limits are the vendors' published limits
(a vendor's "1M" is written as the exact token count a source gives).
``CATALOG_CHECKED`` is when these figures were last compared with the vendors'
pricing pages; prices change, so a config file can override any of them
(``[pricing."model"]``), and ``llmfactory register`` can add models that are missing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from llmfactory.registry.models import LLMModel, ModelSource

__all__ = ["CATALOG", "CATALOG_CHECKED", "catalog_models", "catalog_version"]

#: When the figures below were last checked: the date of the newest dated source used
#: (docs.laozhang.ai GPT-6.2 announcement, "last verified November 18, 2026"); see the
#: source notes above ``CATALOG``.
CATALOG_CHECKED = "2026-11-18"

_CHAT = ["chat", "streaming", "tools", "json_output"]
_CHAT_VISION = [*_CHAT, "vision"]
_REASONING = [*_CHAT_VISION, "reasoning"]
_REASONING_TEXT = [*_CHAT, "reasoning"]
_EMBEDDING = ["embedding"]

# Sources (read 2026-11-23 from stored copies of public pages and repositories; a page
# with no date of its own is marked "undated"). Every number below comes from one of them.
#
# OpenAI
#   - developers.openai.com/api/docs/models/<id> (undated): gpt-6.2-sol, gpt-6-sol,
#     gpt-5.4-nano (limits, input / cached input / output), text-embedding-3-large and
#     -small (prices).
#   - gpt-6.2-astra: docs.laozhang.ai/en/announcements/gpt-6-2-2026-11 (2026-11-18) and
#     vercel.com/ai-gateway/models/gpt-6.2-astra (undated): $8 / $40, 1,050,000 / 128,000.
#     Cached input is only described as "60% cheaper" than GPT-6 Astra's (BerriAI/litellm
#     discussion #52347); no explicit figure was found, so it is left unset.
#   - gpt-6-astra: BerriAI/litellm discussion #39633 (2026-09) and anomalyco/models.dev
#     models/openai/gpt-6-astra.toml + providers/openai/models/gpt-6-astra.toml.
#   - gpt-6.1-sol: docs.apiyi.com/en/news/gpt-6-1-sol-launch (2026-09-29 release; $2 /
#     $0.10 / $10) and documentation.s3ns.fr partner-model page (1,050,000 / 128,000).
#   - gpt-6.1-terra: docs.litellm.ai/blog/gpt-6-1-terra (2026-10-26 release).
#   - gpt-6-luna: docs.litellm.ai/blog/gpt_6_sol_luna (2026-09-22) and
#     github.com/merefield/codexometer release v0.18.4 (cached input $0.01).
#   - gpt-5.5, gpt-5.4: models.dev providers/openai/models/gpt-5.5.toml, gpt-5.4.toml
#     (limits) and simonw/llm-prices data/openai.json (prices, short-context tier).
#   - gpt-5.4-mini: simonw/llm-prices data/openai.json (prices); vercel.com AI Gateway and
#     docs.venice.ai model pages (400,000 / 128,000).
#   - gpt-4.1, gpt-4o, text-embedding-3-*: models.dev models/openai/*.toml (limits);
#     gpt-4.1-mini, gpt-4o-mini: vercel.com AI Gateway "(Fast)" pages (limits); all four
#     chat prices from simonw/llm-prices data/openai.json.
#   Dropped: gpt-5 / -mini / -nano and o3 (shut down 2026-12-11, per the SDK's ChatModel
#   notes and OpenAI's deprecations page), gpt-4.1-nano and o4-mini (shut down 2026-10-23).
#   gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini shut down 2027-01-14; gpt-5.4-nano on
#   2027-04-01. The GPT-5.6 family is left out: it is superseded by GPT-6, and the sources
#   disagree on its current prices.
#
# Anthropic (cached input = cache-hit price)
#   - platform.claude.com/docs/.../models/<id>/overview and the pricing page (undated):
#     limits and prices of Opus 5, Sonnet 5, Opus 4.8, Opus 4.6, Opus 4.5, Sonnet 4.6,
#     Sonnet 4.5 and Haiku 4.5; the comparison tables there give Opus 5.5, Sonnet 5.5,
#     Haiku 5.5 and Fable 5.1 as 1M context / 128K output.
#     "1M" is written as 1,000,000, the figure vercel.com's AI Gateway gives for Fable 5.2.
#   - claude-fable-5-2: vercel.com/ai-gateway/models/claude-fable-5.2 (1,000,000 / 128,000,
#     $8 / $40) and github.com/archid21/rightsize release v0.10.2 ($0.20 cache read).
#   - claude-opus-5-5: github.com/kurofune/claudit release v1.8.2 (checked 2026-09-23).
#   - claude-sonnet-5-5 and claude-haiku-5-5: claudit release v1.9.2 (checked
#     2026-10-24; Sonnet 5.5 cache reads cut to $0.10 on 2026-10-07; Haiku 5.5 prices are
#     for prompts up to 100,000 tokens, $0.50 / $2.50 above).
#   - claude-fable-5-1: BerriAI/litellm discussion #39163 ($0.25 cache read).
#   - Sonnet 4.5 / Haiku 4.5 cache hits: patrickcarmichael/claude-docs pricing copy
#     (2025-11-08). No explicit cache-hit price was found for Sonnet 4.6: left unset.
#   Dropped: claude-sonnet-4-0 and claude-3-5-haiku-latest (retired, SDK
#   DEPRECATED_MODELS), claude-opus-4-1 (retired on the Claude API per the pricing page).
#   claude-sonnet-4-5 retires 2026-11-30. Mythos models (limited availability) left out.
#
# Google Gemini (OpenAI-compatible endpoint)
#   - api-evangelist/deepmind plans/deepmind-plans-pricing.yml (ai.google.dev pricing page
#     read 2026-10-07): current lineup and input / output prices.
#   - models.dev providers/google/models/*.toml and models/google/*.toml: limits and cache
#     reads of gemini-3.8-flash, 3.5-flash, 3.1-pro-preview, 2.5-pro, 2.5-flash,
#     2.5-flash-lite, embedding-2.
#   - gemini-3.5-flash-lite: simstudioai/sim PR #5812 (2026-07-21).
#   - gemini-3.8-flash limits: BerriAI/litellm discussion #39357. Its prices are
#     introductory rates valid through 2026-12-31 ($1.50 / $7.50 / $0.15 from 2027-01-01).
#   Dropped: gemini-2.0-flash (not on the 2026 pricing page read; not confirmed served).
#
# Mistral
#   - models.dev providers/mistral/models/mistral-large-latest.toml (updated 2025-12-02),
#     mistral-medium-latest.toml -> models/mistral/mistral-medium-2604.toml (Medium 3.5,
#     2026-04-29), mistral-small-latest.toml (an older entry, 2024-09), codestral-latest.toml
#     -> models/mistral/codestral-2508.toml (accessed 2026-08-28).
#   Dropped: magistral-medium-latest (marked deprecated). mistral-large-4 (public preview,
#   half-price preview rates) left out.
#
# DeepSeek (cached input = cache-hit price; peak-hour prices, off-peak is half)
#   - api-docs.deepseek.com/quick_start/pricing (stored copy "check=20261115"):
#     deepseek-flash (DeepSeek-V4.1-Flash-1017) and deepseek-v4-pro; "1M" context and
#     "maximum 384K" output. Exact token counts 1,048,576 / 393,216 from the docs.apiyi.com
#     deepseek-v4-flash page.
#   Dropped: deepseek-chat and deepseek-reasoner (names retired 2026-07-24, per
#   arikusi/deepseek-mcp-server release v2.0.0; no longer on the pricing page).
#
# Groq-hosted open models
#   - models.dev providers/groq/models/openai/gpt-oss-120b.toml, gpt-oss-20b.toml (updated
#     2026-05-27) and qwen/qwen3.8-27b.toml (Groq docs and pricing accessed 2026-08-29).
#   - llama-3.1-8b-instant: weakly sourced. $0.05 / $0.08 and 131,072 context from
#     huggingface.co/datasets/gemmozero/ai-pricing-matrix-2026 (snapshot 2026-09-26) and
#     the groq-cost-tuning skill page; no max output figure found (left unset). No
#     shutdown notice was found for it; re-check on console.groq.com/docs/deprecations.
#   Dropped: llama-3.3-70b-versatile (decommissioned 2026-08-16), qwen/qwen3-32b (not
#   confirmed still served).

# name, provider, service, context, max output, capabilities, $in, $out, $cached-in
CATALOG: list[dict[str, Any]] = [
    # OpenAI: GPT-6 family
    {"name": "gpt-6.2-astra", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 8.0, "output": 40.0, "cached_input": None},
    {"name": "gpt-6.2-sol", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 2.0, "output": 10.0, "cached_input": 0.10},
    {"name": "gpt-6-astra", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 10.0, "output": 50.0, "cached_input": 1.0},
    {"name": "gpt-6.1-sol", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 2.0, "output": 10.0, "cached_input": 0.10},
    {"name": "gpt-6.1-terra", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 1.0, "output": 5.0, "cached_input": 0.05},
    {"name": "gpt-6-sol", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 2.0, "output": 10.0, "cached_input": 0.20},
    {"name": "gpt-6-luna", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 0.10, "output": 0.50, "cached_input": 0.01},
    # OpenAI: GPT-5.x
    {"name": "gpt-5.5", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 5.0, "output": 30.0, "cached_input": 0.50},
    {"name": "gpt-5.4", "provider": "openai", "service": "openai",
     "context_length": 1_050_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 2.50, "output": 15.0, "cached_input": 0.25},
    {"name": "gpt-5.4-mini", "provider": "openai", "service": "openai",
     "context_length": 400_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 0.75, "output": 4.50, "cached_input": 0.075},
    {"name": "gpt-5.4-nano", "provider": "openai", "service": "openai",
     "context_length": 400_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 0.20, "output": 1.25, "cached_input": 0.02},
    # OpenAI: older models still served (shutdown 2027-01-14)
    {"name": "gpt-4.1", "provider": "openai", "service": "openai", "context_length": 1_047_576,
     "max_output_tokens": 32_768, "capabilities": _CHAT_VISION,
     "input": 2.0, "output": 8.0, "cached_input": 0.50},
    {"name": "gpt-4.1-mini", "provider": "openai", "service": "openai",
     "context_length": 1_047_576, "max_output_tokens": 32_768, "capabilities": _CHAT_VISION,
     "input": 0.40, "output": 1.60, "cached_input": 0.10},
    {"name": "gpt-4o", "provider": "openai", "service": "openai", "context_length": 128_000,
     "max_output_tokens": 16_384, "capabilities": _CHAT_VISION,
     "input": 2.50, "output": 10.0, "cached_input": 1.25},
    {"name": "gpt-4o-mini", "provider": "openai", "service": "openai", "context_length": 128_000,
     "max_output_tokens": 16_384, "capabilities": _CHAT_VISION,
     "input": 0.15, "output": 0.60, "cached_input": 0.075},
    # OpenAI: embeddings
    {"name": "text-embedding-3-small", "provider": "openai", "service": "openai",
     "context_length": 8_191, "max_output_tokens": None, "capabilities": _EMBEDDING,
     "input": 0.02, "output": 0.0, "cached_input": None},
    {"name": "text-embedding-3-large", "provider": "openai", "service": "openai",
     "context_length": 8_191, "max_output_tokens": None, "capabilities": _EMBEDDING,
     "input": 0.13, "output": 0.0, "cached_input": None},
    # Anthropic (cached input = cache hit price)
    {"name": "claude-fable-5-2", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 8.0, "output": 40.0, "cached_input": 0.20},
    {"name": "claude-fable-5-1", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 10.0, "output": 50.0, "cached_input": 0.25},
    {"name": "claude-opus-5-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 4.0, "output": 20.0, "cached_input": 0.20},
    {"name": "claude-sonnet-5-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 2.0, "output": 10.0, "cached_input": 0.10},
    {"name": "claude-haiku-5-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 0.10, "output": 0.50, "cached_input": 0.01},
    {"name": "claude-opus-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 5.0, "output": 25.0, "cached_input": 0.50},
    {"name": "claude-sonnet-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 2.0, "output": 10.0, "cached_input": 0.20},
    {"name": "claude-opus-4-8", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 5.0, "output": 25.0, "cached_input": 0.50},
    {"name": "claude-opus-4-6", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 5.0, "output": 25.0, "cached_input": 0.50},
    {"name": "claude-sonnet-4-6", "provider": "anthropic", "service": "anthropic",
     "context_length": 1_000_000, "max_output_tokens": 128_000, "capabilities": _REASONING,
     "input": 3.0, "output": 15.0, "cached_input": None},
    {"name": "claude-opus-4-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 5.0, "output": 25.0, "cached_input": 0.50},
    {"name": "claude-sonnet-4-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 3.0, "output": 15.0, "cached_input": 0.30},
    {"name": "claude-haiku-4-5", "provider": "anthropic", "service": "anthropic",
     "context_length": 200_000, "max_output_tokens": 64_000, "capabilities": _REASONING,
     "input": 1.0, "output": 5.0, "cached_input": 0.10},
    # Google Gemini (OpenAI-compatible endpoint)
    {"name": "gemini-3.8-flash", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 0.75, "output": 3.75, "cached_input": 0.075},
    {"name": "gemini-3.5-flash", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 1.50, "output": 9.0, "cached_input": 0.15},
    {"name": "gemini-3.5-flash-lite", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 0.30, "output": 2.50, "cached_input": 0.03},
    {"name": "gemini-3.1-pro-preview", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 2.0, "output": 12.0, "cached_input": 0.20},
    {"name": "gemini-2.5-pro", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 1.25, "output": 10.0, "cached_input": 0.125},
    {"name": "gemini-2.5-flash", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 0.30, "output": 2.50, "cached_input": 0.03},
    {"name": "gemini-2.5-flash-lite", "provider": "google", "service": "gemini",
     "context_length": 1_048_576, "max_output_tokens": 65_536, "capabilities": _REASONING,
     "input": 0.10, "output": 0.40, "cached_input": 0.01},
    {"name": "gemini-embedding-2", "provider": "google", "service": "gemini",
     "context_length": 8_192, "max_output_tokens": None, "capabilities": _EMBEDDING,
     "input": 0.20, "output": 0.0, "cached_input": None},
    # Mistral
    {"name": "mistral-large-latest", "provider": "mistral", "service": "mistral",
     "context_length": 262_144, "max_output_tokens": 262_144, "capabilities": _CHAT_VISION,
     "input": 0.50, "output": 1.50, "cached_input": None},
    {"name": "mistral-medium-latest", "provider": "mistral", "service": "mistral",
     "context_length": 262_144, "max_output_tokens": 262_144, "capabilities": _REASONING,
     "input": 1.50, "output": 7.50, "cached_input": None},
    {"name": "mistral-small-latest", "provider": "mistral", "service": "mistral",
     "context_length": 128_000, "max_output_tokens": 16_384, "capabilities": _CHAT_VISION,
     "input": 0.10, "output": 0.30, "cached_input": None},
    {"name": "codestral-latest", "provider": "mistral", "service": "mistral",
     "context_length": 256_000, "max_output_tokens": 4_096, "capabilities": _CHAT,
     "input": 0.30, "output": 0.90, "cached_input": None},
    # DeepSeek (cached input = cache hit price; peak-hour rates)
    {"name": "deepseek-flash", "provider": "deepseek", "service": "deepseek",
     "context_length": 1_048_576, "max_output_tokens": 393_216, "capabilities": _REASONING,
     "input": 0.30, "output": 1.20, "cached_input": 0.006},
    {"name": "deepseek-v4-pro", "provider": "deepseek", "service": "deepseek",
     "context_length": 1_048_576, "max_output_tokens": 393_216,
     "capabilities": _REASONING_TEXT,
     "input": 1.32, "output": 3.96, "cached_input": 0.044},
    # Groq-hosted open models
    {"name": "openai/gpt-oss-120b", "provider": "openai", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 65_536, "capabilities": _REASONING_TEXT,
     "input": 0.15, "output": 0.60, "cached_input": 0.075},
    {"name": "openai/gpt-oss-20b", "provider": "openai", "service": "groq",
     "context_length": 131_072, "max_output_tokens": 65_536, "capabilities": _REASONING_TEXT,
     "input": 0.075, "output": 0.30, "cached_input": 0.0375},
    {"name": "qwen/qwen3.8-27b", "provider": "qwen", "service": "groq",
     "context_length": 131_042, "max_output_tokens": 16_384, "capabilities": _REASONING,
     "input": 0.80, "output": 4.0, "cached_input": 0.40},
    {"name": "llama-3.1-8b-instant", "provider": "meta", "service": "groq",
     "context_length": 131_072, "max_output_tokens": None, "capabilities": _CHAT,
     "input": 0.05, "output": 0.08, "cached_input": None},
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
