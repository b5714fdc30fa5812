"""TokenUsageTrackingExtension: tokens, cost and latency of every call; totals; persisted.

Every conversation :func:`llmfactory.create_llm` builds carries one. Per call it
records a :class:`CallUsage`: the prompt, completion, cached and reasoning
tokens as the runtime reported them, the cost in USD from the model's pricing
(or the config file's / ``LLMConfig.pricing`` override), the latency, and
whether the call succeeded (``error_kind`` is the exception's class name when
it did not). Never any message content.

When the runtime reported no usage at all, the tokens are estimated from the
text — about 4 characters a token (:func:`llmfactory.messages.estimate_tokens`),
or your own ``estimator`` — and flagged ``estimated=True``; the response's
``usage`` is filled in with the estimate too. The estimate is made once, from
the final response, so the tracker has no ``on_chunk`` hook and costs nothing
per streamed chunk.

Totals: ``llm.usage`` (or :attr:`TokenUsageTrackingExtension.totals`) for one
conversation, ``factory.usage`` for every conversation of a factory in this
process, and ``llmfactory usage`` for everything recorded in the registry.

Persistence: a conversation made by a factory hands each record to the
factory's :class:`UsageLedger`, which appends it to the registry's ``usage``
table from a background writer thread (never on the event loop; batched when
calls come quickly). Pending rows are written before ``llm.close()`` /
``await llm.aclose()`` and ``factory.close()`` return, and the writer is not a
daemon thread, so a normal interpreter exit waits for it. An in-memory
registry (``sqlite://``) is written inline. A conversation built without a
factory tracks in memory only.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmfactory.extensions.base import LLMExtension
from llmfactory.messages import CompleteResponse, Usage, estimate_tokens

if TYPE_CHECKING:
    from llmfactory.base_llm import BaseLLM, Call
    from llmfactory.registry.models import UsageRecord
    from llmfactory.registry.store import Store

__all__ = [
    "CallUsage",
    "TokenUsageTrackingExtension",
    "UsageLedger",
    "UsageTotals",
    "bind_ledger",
]

logger = logging.getLogger("llmfactory.usage")

#: ``call.metadata`` key under which the tracker leaves the call's :class:`CallUsage`.
METADATA_KEY = "llmfactory.usage"

Estimator = Callable[[Sequence[str]], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallUsage:
    """What one call used. ``cost_usd`` is None when the model's prices are unknown."""

    timestamp: datetime
    identifier: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    estimated: bool = False
    ok: bool = True
    error_kind: str | None = None

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_record(self) -> UsageRecord:
        """The registry row for this call."""
        from llmfactory.registry.models import UsageRecord

        return UsageRecord(
            timestamp=self.timestamp,
            identifier=self.identifier,
            provider=self.provider,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cost_usd=self.cost_usd or 0.0,
            latency_ms=self.latency_ms,
            estimated=self.estimated,
            ok=self.ok,
            error_kind=self.error_kind,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "identifier": self.identifier,
            "provider": self.provider,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 3),
            "estimated": self.estimated,
            "ok": self.ok,
            "error_kind": self.error_kind,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals:
    """Running totals over calls: ``llm.usage``, ``factory.usage``, ``llmfactory usage``.

    ``calls`` counts every call, ``errors`` the failed ones among them,
    ``estimated`` those whose tokens were estimated; ``cost_usd`` sums the
    known costs (calls to models without known prices add 0).
    """

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    estimated: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, usage: CallUsage) -> UsageTotals:
        """These totals with one more call."""
        return UsageTotals(
            calls=self.calls + 1,
            errors=self.errors + (0 if usage.ok else 1),
            prompt_tokens=self.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self.completion_tokens + usage.completion_tokens,
            cached_tokens=self.cached_tokens + usage.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + usage.reasoning_tokens,
            cost_usd=self.cost_usd + (usage.cost_usd or 0.0),
            latency_ms=self.latency_ms + usage.latency_ms,
            estimated=self.estimated + (1 if usage.estimated else 0),
        )

    def __add__(self, other: UsageTotals) -> UsageTotals:
        if not isinstance(other, UsageTotals):
            return NotImplemented
        return UsageTotals(
            calls=self.calls + other.calls,
            errors=self.errors + other.errors,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            latency_ms=self.latency_ms + other.latency_ms,
            estimated=self.estimated + other.estimated,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``llmfactory usage --json`` prints)."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "latency_ms": round(self.latency_ms, 3),
            "estimated": self.estimated,
        }


# --------------------------------------------------------------------------- the ledger

_FLUSH_ON_CLOSE = 10.0  # seconds an LLM's close() waits for its rows at most


class UsageLedger:
    """A factory's usage: running totals, and rows appended to the registry off the loop.

    ``store`` returns the registry to write to, or None when there is none
    (the factory was closed): the rows are then dropped with a warning.
    Thread-safe; :meth:`record` never blocks on the database unless the
    registry is in memory.
    """

    def __init__(self, store: Callable[[], Store | None]) -> None:
        self._store = store
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[CallUsage] = []
        self._writer: threading.Thread | None = None
        self._totals = UsageTotals()
        self.written = 0
        """How many rows this ledger has written (for diagnostics and tests)."""

    @property
    def totals(self) -> UsageTotals:
        """Totals of every call recorded in this process."""
        return self._totals

    def record(self, usage: CallUsage) -> None:
        """Count ``usage`` and queue its row for the registry."""
        with self._cond:
            self._totals = self._totals.add(usage)
        store = self._store()
        if store is None:
            logger.warning(
                "the usage of a call to %s is not saved: its factory's registry is closed",
                usage.identifier,
            )
            return
        if store.in_memory:  # microseconds, and one shared connection: write right here
            self._write(store, [usage])
            return
        with self._cond:
            self._pending.append(usage)
            if self._writer is not None:
                return
            writer = threading.Thread(
                target=self._drain, name="llmfactory-usage-writer", daemon=False
            )
            self._writer = writer
            try:
                writer.start()
            except RuntimeError:  # interpreter shutting down: no new threads
                self._writer = None
                batch, self._pending = self._pending, []
            else:
                return
        self._write(store, batch)

    def _drain(self) -> None:
        while True:
            with self._cond:
                batch, self._pending = self._pending, []
                if not batch:
                    self._writer = None
                    self._cond.notify_all()
                    return
            store = self._store()
            if store is None:
                logger.warning(
                    "the usage of %d call(s) is not saved: the factory's registry was closed",
                    len(batch),
                )
                continue
            self._write(store, batch)

    def _write(self, store: Store, batch: list[CallUsage]) -> None:
        try:
            store.add_usage([u.to_record() for u in batch])
        except Exception as exc:  # a full disk or a locked database must not break calls
            logger.warning("cannot save the usage of %d call(s): %s", len(batch), exc)
        else:
            self.written += len(batch)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued row is written; False when ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and self._writer is None, timeout
            )


_LEDGERS: weakref.WeakKeyDictionary[BaseLLM, UsageLedger] = weakref.WeakKeyDictionary()


def bind_ledger(llm: BaseLLM, ledger: UsageLedger) -> None:
    """Make ``ledger`` the one a tracker registered on ``llm`` uses by default."""
    _LEDGERS[llm] = ledger


# --------------------------------------------------------------------------- the extension


class TokenUsageTrackingExtension(LLMExtension):
    """Tracks the tokens, cost and latency of every call (registered by default).

    ``ledger`` is where records go besides this object's own totals; by
    default the ledger of the factory that created the conversation (None for
    a conversation built without one: in memory only). ``estimator`` counts
    the tokens of a list of texts when the runtime reported none (default:
    about 4 characters a token). ``keep`` is how many recent
    :class:`CallUsage` records :attr:`records` holds.

    Unique: registering another instance on a conversation replaces this one.
    """

    name = "token_usage"
    unique = True

    def __init__(
        self,
        *,
        ledger: UsageLedger | None = None,
        estimator: Estimator | None = None,
        keep: int = 1000,
    ) -> None:
        self.ledger = ledger
        self.estimator: Estimator = estimator or estimate_tokens
        self._lock = threading.Lock()
        self._totals = UsageTotals()
        self._records: deque[CallUsage] = deque(maxlen=keep)

    # -- reading -------------------------------------------------------------------

    @property
    def totals(self) -> UsageTotals:
        """Totals over every call this tracker has seen."""
        return self._totals

    @property
    def last(self) -> CallUsage | None:
        """The most recent call's usage (None before the first)."""
        with self._lock:
            return self._records[-1] if self._records else None

    @property
    def records(self) -> list[CallUsage]:
        """The most recent calls' usage, oldest first (at most ``keep``)."""
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        """Start the totals and the records again from zero (the registry keeps its rows)."""
        with self._lock:
            self._totals = UsageTotals()
            self._records.clear()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until this tracker's rows are in the registry (True when nothing is pending)."""
        ledger = self.ledger
        return True if ledger is None else ledger.flush(timeout)

    # -- hooks ---------------------------------------------------------------------

    def on_register(self, llm: BaseLLM) -> None:
        """Adopt the factory's ledger of ``llm`` when none was given."""
        if self.ledger is None:
            self.ledger = _LEDGERS.get(llm)

    def on_close(self, llm: BaseLLM) -> None:
        """Wait (boundedly) until this conversation's rows are written."""
        if not self.flush(_FLUSH_ON_CLOSE):
            logger.warning("usage rows for %s are still being written", llm.identifier)

    def after_invoke(self, call: Call, response: CompleteResponse) -> CompleteResponse | None:
        """Record the call; fill in an estimated usage when the runtime reported none."""
        usage = response.usage
        replaced: CompleteResponse | None = None
        if usage is None or (
            usage.prompt_tokens == 0 and usage.completion_tokens == 0 and not usage.estimated
        ):
            usage = self._estimate(call, response)
            replaced = replace(response, usage=usage)
        self._record(
            call,
            CallUsage(
                timestamp=datetime.now(timezone.utc),
                identifier=call.model.identifier,
                provider=call.model.provider,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                cost_usd=usage.cost_usd,
                latency_ms=response.latency_ms,
                estimated=usage.estimated,
            ),
        )
        return replaced

    def on_error(self, call: Call, error: Exception) -> None:
        """Record a failed call (tokens 0: the runtime reported none)."""
        if METADATA_KEY in call.metadata:
            return  # recorded in after_invoke; a later extension failed the call
        latency = (time.perf_counter() - call.started) * 1000.0 if call.started else 0.0
        self._record(
            call,
            CallUsage(
                timestamp=datetime.now(timezone.utc),
                identifier=call.model.identifier,
                provider=call.model.provider,
                cost_usd=None,
                latency_ms=latency,
                ok=False,
                error_kind=type(error).__name__,
            ),
        )

    # -- internals -----------------------------------------------------------------

    def _estimate(self, call: Call, response: CompleteResponse) -> Usage:
        count = self.estimator
        prompt_texts = [m.content for m in call.messages if m.content]
        for message in call.messages:
            prompt_texts.extend(c.arguments_json for c in message.tool_calls)
        completion_texts = [response.content]
        completion_texts.extend(c.arguments_json for c in response.tool_calls)
        reasoning = count([response.reasoning]) if response.reasoning else 0
        prompt = count(prompt_texts)
        completion = count(completion_texts) + reasoning
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            reasoning_tokens=reasoning,
            estimated=True,
        )
        cost = call.llm._cost(call.config, usage, call.model)
        return replace(usage, cost_usd=cost) if cost is not None else usage

    def _record(self, call: Call, usage: CallUsage) -> None:
        call.metadata[METADATA_KEY] = usage
        with self._lock:
            self._totals = self._totals.add(usage)
            self._records.append(usage)
        ledger = self.ledger
        if ledger is not None:
            ledger.record(usage)
