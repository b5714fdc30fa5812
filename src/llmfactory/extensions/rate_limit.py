"""RateLimitExtension: requests and tokens per minute, per model, host or overall.

Limits are token buckets: a bucket holds up to ``requests_per_minute``
requests (``tokens_per_minute`` tokens) and refills continuously, so bursts up
to the limit pass at once and the sustained rate is the limit. Before a call
leaves, the extension takes one request and the call's estimated tokens — the
prompt's (about 4 characters a token) plus ``max_tokens`` when it is set —
from the buckets of the call's key; after the call the token bucket is
corrected to what the runtime reported (a failed call gives its tokens back,
but still counts as a request). A call larger than the whole token budget
waits until the bucket is full and then drives it into debt.

When a bucket is short the call **waits** (``anyio.sleep``: asyncio and trio
alike, other calls go on) until it fits; with ``wait=False``, or when the wait
would exceed ``max_wait`` seconds, it is refused with
:class:`RateLimitExceeded` (an :class:`~llmfactory.errors.ExtensionError` with
``retry_after``) before any network traffic.

The state is guarded by a thread lock never held across an ``await``, so one
instance may serve many conversations on many event loops (the sync facade's
included). To share limits across conversations, register one *instance*::

    factory.register_extension(RateLimitExtension(requests_per_minute=60, per="host"))

(registering the class instead gives each conversation its own buckets).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from llmfactory.errors import ExtensionError
from llmfactory.extensions.base import LLMExtension
from llmfactory.messages import estimate_tokens

if TYPE_CHECKING:
    from llmfactory.base_llm import Call
    from llmfactory.messages import CompleteResponse

__all__ = ["RateLimitExceeded", "RateLimitExtension"]

_KEY = "llmfactory.rate_limit"
_PER = ("model", "host", "global")


class RateLimitExceeded(ExtensionError):
    """A call was refused by :class:`RateLimitExtension`; ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float, key: str) -> None:
        super().__init__(message, extension="rate_limit", hook="before_invoke")
        self.retry_after = retry_after
        self.key = key


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, capacity: float, window: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, amount: float) -> float:
        """Seconds until ``amount`` fits (a larger-than-capacity amount needs a full bucket)."""
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimitExtension(LLMExtension):
    """Limits requests and tokens per minute; waits for room rather than failing.

    ``per`` says what shares a budget: ``"model"`` (the identifier), ``"host"``
    (the runtime's ``host:port``, or the cloud service) or ``"global"``.
    ``window`` is the period the limits are given for (60 seconds: per
    minute). ``estimator`` counts the tokens of a list of texts.
    """

    name = "rate_limit"

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        per: str = "model",
        wait: bool = True,
        max_wait: float | None = None,
        window: float = 60.0,
        estimator: Callable[[Sequence[str]], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per not in _PER:
            raise ValueError(f"per must be one of {', '.join(_PER)}, not {per!r}")
        for label, value in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
            ("window", window),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{label} must be > 0, not {value!r}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.per = per
        self.wait = wait
        self.max_wait = max_wait
        self.window = window
        self.estimator = estimator or estimate_tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[_Bucket | None, _Bucket | None]] = {}

    def key_for(self, call: Call) -> str:
        """The budget ``call`` draws from."""
        if self.per == "model":
            return call.llm.identifier
        if self.per == "host":
            return call.model.host or call.llm.provider
        return "*"

    def _estimate(self, call: Call) -> int:
        if self.tokens_per_minute is None:
            return 0
        tokens = self.estimator([m.content for m in call.messages if m.content])
        return tokens + (call.config.max_tokens or 0)

    def _buckets_for(self, key: str, now: float) -> tuple[_Bucket | None, _Bucket | None]:
        buckets = self._buckets.get(key)
        if buckets is None:
            rpm, tpm = self.requests_per_minute, self.tokens_per_minute
            buckets = self._buckets[key] = (
                _Bucket(rpm, self.window, now) if rpm is not None else None,
                _Bucket(tpm, self.window, now) if tpm is not None else None,
            )
        return buckets

    async def before_invoke(self, call: Call) -> None:
        """Take a request and the estimated tokens from the budget; wait (or refuse) if short."""
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            return
        key = self.key_for(call)
        tokens = self._estimate(call)
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                requests, token_bucket = self._buckets_for(key, now)
                delay = 0.0
                if requests is not None:
                    requests.refill(now)
                    delay = requests.delay(1)
                if token_bucket is not None:
                    token_bucket.refill(now)
                    delay = max(delay, token_bucket.delay(tokens))
                if delay <= 0:
                    if requests is not None:
                        requests.level -= 1
                    if token_bucket is not None:
                        token_bucket.level -= tokens
                    call.metadata[_KEY] = (key, tokens)
                    return
            if not self.wait or (self.max_wait is not None and waited + delay > self.max_wait):
                raise RateLimitExceeded(
                    f"rate limit for {key} reached; retry in {delay:.2f} s "
                    f"({self._describe()})",
                    retry_after=delay,
                    key=key,
                )
            await anyio.sleep(delay)
            waited += delay

    def _describe(self) -> str:
        parts = []
        unit = "minute" if self.window == 60.0 else f"{self.window:g} s"
        if self.requests_per_minute is not None:
            parts.append(f"{self.requests_per_minute:g} requests per {unit}")
        if self.tokens_per_minute is not None:
            parts.append(f"{self.tokens_per_minute:g} tokens per {unit}")
        return " and ".join(parts) + f" per {self.per}"

    def _settle(self, call: Call, used: int) -> None:
        taken = call.metadata.pop(_KEY, None)
        if taken is None:
            return
        key, reserved = taken
        with self._lock:
            token_bucket = self._buckets[key][1]
            if token_bucket is not None:
                token_bucket.refill(self._clock())
                token_bucket.level = min(
                    token_bucket.capacity, token_bucket.level + reserved - used
                )

    def after_invoke(self, call: Call, response: CompleteResponse) -> None:
        """Correct the token budget to the tokens the call actually used."""
        usage = response.usage
        used = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        self._settle(call, used if usage is not None else call.metadata.get(_KEY, ("", 0))[1])

    def on_error(self, call: Call, error: Exception) -> None:
        """Give a failed call's tokens back (its request still counts)."""
        self._settle(call, 0)
