"""OpenTelemetryExtension: one span per call, with the GenAI semantic-convention attributes.

Needs the ``otel`` extra (``pip install 'llmfactory[otel]'``: ``opentelemetry-api``
and ``-sdk``); nothing imports OpenTelemetry until the extension is created.
Register it on a conversation, on a factory, or by name (``otel``) in the
config file's ``[extensions] enabled`` list::

    from llmfactory.extensions.otel import OpenTelemetryExtension
    llm.register_extension(OpenTelemetryExtension())          # the global TracerProvider
    factory.register_extension(OpenTelemetryExtension(tracer_provider=provider))

Each call — unary or streamed, chat or text completion — is one ``CLIENT``
span named ``"{operation} {request model}"`` (``chat llama3.2:latest``),
started in ``before_invoke`` as a child of the span current at that point and
ended when the answer is complete (``after_invoke``) or the call failed
(``on_error``). Attributes, from the OpenTelemetry GenAI conventions:

* request: ``gen_ai.operation.name`` (``chat`` / ``text_completion``),
  ``gen_ai.provider.name`` and the older ``gen_ai.system`` (``openai``,
  ``anthropic``, ``gcp.gemini``, ``mistral_ai``, ``deepseek``, ``groq``, or the
  runtime: ``ollama``, ``lmstudio``, ``openai_compatible``, ``mock``),
  ``gen_ai.request.model``, ``gen_ai.request.temperature`` / ``top_p`` /
  ``top_k`` / ``max_tokens`` / ``seed`` / ``stop_sequences`` when set,
  ``gen_ai.request.stream``, ``server.address`` and ``server.port``;
* response: ``gen_ai.response.model``, ``gen_ai.response.finish_reasons``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens`` (and, when non-zero,
  ``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.usage.cache_creation.input_tokens``,
  ``gen_ai.usage.reasoning.output_tokens``),
  ``gen_ai.response.time_to_first_chunk`` (seconds, streams), plus
  ``llmfactory.identifier``, ``llmfactory.cost_usd`` and
  ``llmfactory.usage.estimated``;
* failure: status ``ERROR``, ``error.type`` (the exception's class name) and
  the exception as an event (``record_exceptions=False`` leaves it out: error
  messages may quote what the server was sent).

No message content is recorded. A call that is cancelled (or a stream
abandoned before its end) reports no failure to extensions; its span ends when
the call is released, with ``error.type`` ``cancelled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmfactory.errors import ConfigError, LLMFactoryError
from llmfactory.extensions.base import LLMExtension

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from llmfactory.base_llm import BaseLLM, Call
    from llmfactory.messages import CompleteResponse

__all__ = ["PROVIDER_NAMES", "OpenTelemetryExtension"]

#: ``call.metadata`` key holding the call's open span.
METADATA_KEY = "llmfactory.otel.span"

#: ``gen_ai.provider.name`` for llmfactory's services; runtimes keep their own names.
PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "groq": "groq",
}


class _OpenSpan:
    """A call's span; ends it (as cancelled) if the call is dropped before it ended."""

    __slots__ = ("ended", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.ended = False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.span.end()

    def __del__(self) -> None:
        if self.ended:
            return
        try:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_attribute("error.type", "cancelled")
            self.span.set_status(Status(StatusCode.ERROR, "cancelled before completion"))
            self.end()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _server(llm: BaseLLM) -> tuple[str | None, int | None]:
    try:
        url = llm.endpoint().base_url
    except LLMFactoryError:  # no key yet: the call will fail and say so; no address here
        return None, None
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return parts.hostname, port


class OpenTelemetryExtension(LLMExtension):
    """One OpenTelemetry span per call, with the GenAI semantic-convention attributes.

    ``tracer_provider`` is where spans go (default: the global provider set
    with ``opentelemetry.trace.set_tracer_provider``); ``record_exceptions``
    adds a failed call's exception to its span as an event.

    Raises:
        ConfigError: OpenTelemetry is not installed (``pip install 'llmfactory[otel]'``).
    """

    name = "otel"

    def __init__(
        self, *, tracer_provider: TracerProvider | None = None, record_exceptions: bool = True
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise ConfigError(
                "OpenTelemetryExtension needs OpenTelemetry: pip install 'llmfactory[otel]' "
                "(opentelemetry-api and opentelemetry-sdk)"
            ) from exc
        from llmfactory import __version__

        self.tracer: Tracer = trace.get_tracer(
            "llmfactory", __version__, tracer_provider=tracer_provider
        )
        self.record_exceptions = record_exceptions

    # -- hooks -------------------------------------------------------------------------

    def before_invoke(self, call: Call) -> None:
        """Start the call's span (a child of the current span)."""
        self._start(call)

    def after_invoke(self, call: Call, response: CompleteResponse) -> None:
        """Set the response's attributes and end the span."""
        holder = call.metadata.pop(METADATA_KEY, None)
        if not isinstance(holder, _OpenSpan):
            return
        span = holder.span
        attributes: dict[str, Any] = {}
        if response.model:
            attributes["gen_ai.response.model"] = response.model
        if response.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = [response.finish_reason]
        usage = response.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
            if usage.cached_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
            if usage.cache_creation_tokens:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = (
                    usage.cache_creation_tokens
                )
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
            if usage.cost_usd is not None:
                attributes["llmfactory.cost_usd"] = usage.cost_usd
            if usage.estimated:
                attributes["llmfactory.usage.estimated"] = True
        if response.time_to_first_token_ms is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = (
                response.time_to_first_token_ms / 1000.0
            )
        span.set_attributes(attributes)
        holder.end()

    def on_error(self, call: Call, error: Exception) -> None:
        """Mark the span failed (one is made for a call refused before it started) and end it."""
        holder = call.metadata.pop(METADATA_KEY, None)
        if not isinstance(holder, _OpenSpan):
            holder = self._start(call)
            call.metadata.pop(METADATA_KEY, None)
        from opentelemetry.trace import Status, StatusCode

        span = holder.span
        kind = type(error).__qualname__
        span.set_attribute("error.type", kind)
        status = getattr(error, "status", None)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
        if self.record_exceptions:
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, kind))
        holder.end()

    # -- internals -----------------------------------------------------------------------

    def _start(self, call: Call) -> _OpenSpan:
        from opentelemetry.trace import SpanKind

        llm = call.llm
        operation = call.operation
        model = call.model_name
        provider = PROVIDER_NAMES.get(llm.provider, llm.provider)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.stream": call.stream,
            "llmfactory.identifier": llm.identifier,
        }
        config = call.config
        if config.temperature is not None:
            attributes["gen_ai.request.temperature"] = config.temperature
        if config.top_p is not None:
            attributes["gen_ai.request.top_p"] = config.top_p
        if config.top_k is not None:
            attributes["gen_ai.request.top_k"] = config.top_k
        if config.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = config.max_tokens
        if config.seed is not None:
            attributes["gen_ai.request.seed"] = config.seed
        if config.stop:
            attributes["gen_ai.request.stop_sequences"] = list(config.stop)
        address, port = _server(llm)
        if address is not None:
            attributes["server.address"] = address
            if port is not None:
                attributes["server.port"] = port
        span = self.tracer.start_span(
            f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        holder = _OpenSpan(span)
        call.metadata[METADATA_KEY] = holder
        return holder
