"""Cost before sending: ``llm.estimate_cost(text_or_messages, max_tokens=...)``.

A :class:`CostEstimate` bounds what a call would cost from the model's prices
(the catalogue, the config file's ``[pricing]`` or ``LLMConfig.pricing``) and a
count of the prompt's tokens:

* **exact** with the model's own tokenizer where one is available: your
  ``tokenizer`` callable, or ``tiktoken`` (when installed; it is not a
  dependency) for models made by OpenAI — ``method`` is then
  ``"tiktoken:<encoding>"``;
* else an **approximation**, ``method`` ``"approximation: ~4 chars/token"``
  (the same rule the usage tracker uses when a server reports no usage).

Either way each message adds 3 tokens of chat framing and the reply 3 more
(OpenAI's published rule), tool definitions are counted as their JSON, and
images are not counted. The answer's length is unknown before it is written,
so the estimate is a range: ``min_cost_usd`` (an empty answer) to
``max_cost_usd`` (an answer of ``max_completion_tokens``). Local models cost
0; a cloud model without known prices gives ``priced=False`` and None costs.
Cache discounts are not assumed (a warm cache makes the real call cheaper).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmfactory.messages import Message, Tool, ToolInput, Usage, estimate_tokens

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM

__all__ = [
    "APPROXIMATION",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_OVERHEAD_TOKENS",
    "CostEstimate",
    "Tokenizer",
    "count_prompt_tokens",
    "estimate_cost",
]

logger = logging.getLogger("llmfactory.cost")

Tokenizer = Callable[[str], int]
"""Counts the tokens of a text."""

APPROXIMATION = "approximation: ~4 chars/token"
"""``CostEstimate.method`` when no exact tokenizer was available."""

MESSAGE_OVERHEAD_TOKENS = 3
"""Tokens of chat framing (role, separators) counted per message."""

REPLY_OVERHEAD_TOKENS = 3
"""Tokens that prime the reply, counted once per request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CostEstimate:
    """What a call would cost, in USD, before it is sent.

    ``prompt_tokens`` is the count (``exact`` says whether it came from the
    model's tokenizer; ``method`` names how it was made);
    ``max_completion_tokens`` the answer's bound (None when neither the call,
    the config nor the model sets one). ``min_cost_usd`` is the prompt alone,
    ``max_cost_usd`` the prompt plus the longest answer; both None when the
    model's prices are unknown (``priced`` False), and ``max_cost_usd`` also
    when the answer has no bound.
    """

    identifier: str
    prompt_tokens: int
    max_completion_tokens: int | None
    method: str
    exact: bool
    priced: bool
    min_cost_usd: float | None
    max_cost_usd: float | None
    context_length: int | None = None

    @property
    def is_free(self) -> bool:
        """True for a model whose prices are known to be 0 (local models)."""
        return self.priced and not self.max_cost_usd and not self.min_cost_usd

    @property
    def fits_context(self) -> bool | None:
        """Whether the prompt and the longest answer fit the model's context (None: unknown)."""
        if self.context_length is None:
            return None
        return self.prompt_tokens + (self.max_completion_tokens or 0) <= self.context_length

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "identifier": self.identifier,
            "prompt_tokens": self.prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "method": self.method,
            "exact": self.exact,
            "priced": self.priced,
            "min_cost_usd": self.min_cost_usd,
            "max_cost_usd": self.max_cost_usd,
            "context_length": self.context_length,
        }

    def __str__(self) -> str:
        if not self.priced:
            cost = "prices unknown"
        elif self.is_free:
            cost = "free"
        elif self.max_cost_usd is None:
            cost = f"≥ ${self.min_cost_usd:.6f}"
        else:
            cost = f"${self.min_cost_usd:.6f}–${self.max_cost_usd:.6f}"
        bound = (
            f" + up to {self.max_completion_tokens}" if self.max_completion_tokens else ""
        )
        return f"{self.prompt_tokens}{bound} tokens ({self.method}): {cost}"


# --------------------------------------------------------------------------- tokenizers

_lock = threading.Lock()
_tiktoken_cache: dict[str, tuple[Tokenizer, str] | None] = {}


def _tiktoken_for(model_name: str) -> tuple[Tokenizer, str] | None:
    """tiktoken's counter for an OpenAI model (None when tiktoken is missing or fails)."""
    with _lock:
        if model_name in _tiktoken_cache:
            return _tiktoken_cache[model_name]
    found = _load_tiktoken(model_name)
    with _lock:
        _tiktoken_cache[model_name] = found
    return found


def _load_tiktoken(model_name: str) -> tuple[Tokenizer, str] | None:
    try:
        import tiktoken  # type: ignore[import-not-found,unused-ignore]  # optional
    except ImportError:
        return None
    try:
        try:
            encoding = tiktoken.encoding_for_model(model_name.rsplit("/", 1)[-1])
        except KeyError:  # a model newer than this tiktoken: today's encoding
            encoding = tiktoken.get_encoding("o200k_base")
    except Exception as exc:  # no vocabulary file and no network, …: approximate
        logger.debug("tiktoken cannot count for %s (%s); approximating", model_name, exc)
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count, f"tiktoken:{encoding.name}"


def _counter(llm: BaseLLM, tokenizer: Tokenizer | None) -> tuple[Tokenizer, str, bool]:
    if tokenizer is not None:
        return tokenizer, f"tokenizer:{getattr(tokenizer, '__name__', 'custom')}", True
    if llm.model.provider == "openai":
        found = _tiktoken_for(llm.model.name)
        if found is not None:
            return found[0], found[1], True
    return (lambda text: estimate_tokens([text])), APPROXIMATION, False


def count_prompt_tokens(
    messages: Iterable[Message], tools: Iterable[Tool], count: Tokenizer
) -> int:
    """The tokens of a request: each message's text and tool calls plus its framing, the
    tool definitions as JSON, and the reply's priming."""
    import json

    total = REPLY_OVERHEAD_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        if message.content:
            total += count(message.content)
        for call in message.tool_calls:
            total += count(call.name) + count(call.arguments_json)
    for tool in tools:
        total += count(json.dumps(tool.to_openai(), ensure_ascii=False))
    return total


# --------------------------------------------------------------------------- the estimate


def _messages(
    llm: BaseLLM, text_or_messages: str | Iterable[Message | Mapping[str, Any]]
) -> list[Message]:
    if isinstance(text_or_messages, str):  # as send_user_message(text) would send it
        return [*llm.messages, Message.user(text_or_messages)]
    return llm._stateless_messages(text_or_messages, {})


def _completion_bound(llm: BaseLLM, max_tokens: int | None) -> int | None:
    if max_tokens is not None:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, not {max_tokens}")
        return max_tokens
    if llm.config.max_tokens is not None:
        return llm.config.max_tokens
    limit = llm.model.max_output_tokens
    default = getattr(type(llm), "default_max_tokens", None)  # what Anthropic's class sends
    if isinstance(default, int):
        return min(default, limit) if limit else default
    return limit


def estimate_cost(
    llm: BaseLLM,
    text_or_messages: str | Iterable[Message | Mapping[str, Any]],
    *,
    max_tokens: int | None = None,
    tools: Iterable[ToolInput] | None = None,
    tokenizer: Tokenizer | None = None,
) -> CostEstimate:
    """The :class:`CostEstimate` of a call of ``llm`` (``BaseLLM.estimate_cost``)."""
    messages = _messages(llm, text_or_messages)
    tool_list = [Tool.coerce(t) for t in tools] if tools else []
    count, method, exact = _counter(llm, tokenizer)
    prompt = count_prompt_tokens(messages, tool_list, count)
    bound = _completion_bound(llm, max_tokens)
    low = llm._cost(llm.config, Usage(prompt_tokens=prompt, total_tokens=prompt))
    high: float | None = None
    if low is not None and bound is not None:
        high = llm._cost(
            llm.config,
            Usage(prompt_tokens=prompt, completion_tokens=bound, total_tokens=prompt + bound),
        )
    return CostEstimate(
        identifier=llm.identifier,
        prompt_tokens=prompt,
        max_completion_tokens=bound,
        method=method,
        exact=exact,
        priced=low is not None,
        min_cost_usd=low,
        max_cost_usd=high,
        context_length=llm.model.context_length,
    )
