"""Prompt caching: where explicit cache breakpoints go, for protocols that need them.

Anthropic caches a prompt prefix only up to a block marked
``"cache_control": {"type": "ephemeral"}`` (5 minutes, refreshed on each hit).
With ``LLMConfig(prompt_caching=True)`` an Anthropic request gets, at most three
breakpoints:

1. the **system prompt** (which also covers the tool definitions before it; with
   no system prompt, the last tool definition);
2. the last block of the **previous user turn** — the stable prefix that the
   previous request wrote to the cache, read back now at the cached price;
3. the last block of the **last user turn**, so that the next request of the
   conversation reads everything up to here from the cache.

Prefixes shorter than the model's minimum (1,024 tokens for most models) are
not cached by the server, and nothing fails. A request that already carries a
``cache_control`` (set through ``LLMConfig.options``) is left as it is.
OpenAI-compatible servers need no markers: OpenAI, DeepSeek and others cache
long prefixes on their own. Either way the server's counts arrive in
``Usage.cached_tokens`` (read) and ``Usage.cache_creation_tokens`` (written),
and the cost uses them (see :meth:`~llmfactory.registry.models.Pricing.cost`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["EPHEMERAL", "mark_anthropic_cache"]

EPHEMERAL: Mapping[str, str] = {"type": "ephemeral"}
"""The ``cache_control`` value llmfactory sets (Anthropic's default 5-minute cache)."""


def _marked(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "cache_control" in value or any(_marked(v) for v in value.values())
    if isinstance(value, list):
        return any(_marked(v) for v in value)
    return False


def _mark_last_block(holder: dict[str, Any], key: str) -> bool:
    """Mark the last block of ``holder[key]`` (a string becomes one text block)."""
    content = holder.get(key)
    if isinstance(content, str):
        if not content:
            return False
        holder[key] = [{"type": "text", "text": content, "cache_control": dict(EPHEMERAL)}]
        return True
    if isinstance(content, list) and content and isinstance(content[-1], Mapping):
        last = content[-1]
        if last.get("type") == "text" and not last.get("text"):
            return False  # the API refuses cache_control on an empty text block
        content[-1] = {**last, "cache_control": dict(EPHEMERAL)}
        return True
    return False


def mark_anthropic_cache(payload: dict[str, Any]) -> int:
    """Add the cache breakpoints described above to a Messages API request, in place.

    Returns how many were added (0 when the request already had some).
    """
    if _marked(payload.get("system")) or _marked(payload.get("messages")) or _marked(
        payload.get("tools")
    ):
        return 0
    marks = 0
    if payload.get("system"):
        marks += _mark_last_block(payload, "system")
    else:
        tools = payload.get("tools")
        if isinstance(tools, list) and tools and isinstance(tools[-1], Mapping):
            tools[-1] = {**tools[-1], "cache_control": dict(EPHEMERAL)}
            marks += 1
    turns = payload.get("messages")
    if isinstance(turns, list):
        users = [i for i, t in enumerate(turns) if isinstance(t, dict) and t.get("role") == "user"]
        for index in users[-2:]:
            marks += _mark_last_block(turns[index], "content")
    return marks
