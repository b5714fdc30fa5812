"""LoggingExtension: one structured log record per call.

Each call, successful or not, produces exactly one record on the
``llmfactory.calls`` logger (or the one you give): INFO for a success,
WARNING for a failure. The message is one readable line; the same facts are
attached to the record as a dict in its ``llm_call`` attribute, for JSON
formatters and log shippers::

    {"identifier": "llama3.2:latest:ollama@localhost:11434", "service": "ollama",
     "stream": true, "messages": 3, "ok": true, "finish_reason": "stop",
     "prompt_tokens": 31, "completion_tokens": 12, "cached_tokens": 0,
     "reasoning_tokens": 0, "estimated": false, "cost_usd": 0.0,
     "latency_ms": 412.5, "time_to_first_token_ms": 80.1}

A failure has ``ok: false``, ``error_kind`` (the exception's class name) and,
for an answer the server refused, its HTTP ``status``. Message content — the
prompt, the reply and error text, which may quote the prompt — is left out
unless ``include_content=True``; it is then under ``messages`` (role and text
of each) and ``reply`` (or ``error``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from llmfactory.extensions.base import LLMExtension

if TYPE_CHECKING:
    from llmfactory.base_llm import Call
    from llmfactory.messages import CompleteResponse

__all__ = ["LoggingExtension"]


class LoggingExtension(LLMExtension):
    """Logs one structured record per call (content excluded unless asked).

    ``logger`` is a :class:`logging.Logger` or a logger name
    (default ``llmfactory.calls``); ``level`` and ``error_level`` the levels of
    successes and failures; ``include_content`` adds the messages sent and
    the reply (off by default: prompts and replies often hold personal data).
    """

    name = "logging"

    def __init__(
        self,
        *,
        logger: logging.Logger | str = "llmfactory.calls",
        level: int = logging.INFO,
        error_level: int = logging.WARNING,
        include_content: bool = False,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.error_level = error_level
        self.include_content = include_content

    def _base(self, call: Call) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "identifier": call.llm.identifier,
            "service": call.llm.provider,
            "stream": call.stream,
            "messages": len(call.messages),
        }
        if self.include_content:
            fields["messages"] = [
                {"role": m.role.value, "content": m.content} for m in call.messages
            ]
        return fields

    def after_invoke(self, call: Call, response: CompleteResponse) -> None:
        """Log the successful call."""
        if not self.logger.isEnabledFor(self.level):
            return
        fields = self._base(call)
        usage = response.usage
        fields.update(
            ok=True,
            finish_reason=response.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cached_tokens=usage.cached_tokens if usage else None,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            estimated=usage.estimated if usage else None,
            cost_usd=usage.cost_usd if usage else None,
            latency_ms=round(response.latency_ms, 3),
            time_to_first_token_ms=(
                round(response.time_to_first_token_ms, 3)
                if response.time_to_first_token_ms is not None
                else None
            ),
        )
        if self.include_content:
            fields["reply"] = response.content
        tokens = (
            f"{'~' if usage.estimated else ''}{usage.prompt_tokens}+{usage.completion_tokens} "
            "tokens"
            if usage
            else "usage unknown"
        )
        cost = f", ${usage.cost_usd:.6f}" if usage and usage.cost_usd else ""
        self.logger.log(
            self.level,
            "llm call to %s ok: %s%s, %.0f ms",
            call.llm.identifier,
            tokens,
            cost,
            response.latency_ms,
            extra={"llm_call": fields},
        )

    def on_error(self, call: Call, error: Exception) -> None:
        """Log the failed call."""
        if not self.logger.isEnabledFor(self.error_level):
            return
        fields = self._base(call)
        latency = (time.perf_counter() - call.started) * 1000.0 if call.started else 0.0
        fields.update(ok=False, error_kind=type(error).__name__, latency_ms=round(latency, 3))
        status = getattr(error, "status", None)
        if isinstance(status, int):
            fields["status"] = status
        if self.include_content:
            fields["error"] = str(error)
        self.logger.log(
            self.error_level,
            "llm call to %s failed: %s after %.0f ms",
            call.llm.identifier,
            type(error).__name__,
            latency,
            extra={"llm_call": fields},
        )
