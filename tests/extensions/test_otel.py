"""OpenTelemetryExtension: one span per call with the GenAI semantic-convention attributes,
checked with the SDK's in-memory exporter on a private TracerProvider."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmfactory import (
    ExtensionError,
    LLMConfig,
    LLMFactory,
    MockLLM,
    OpenTelemetryExtension,
    RateLimitError,
)
from llmfactory.extensions import load_extension
from llmfactory.extensions.base import LLMExtension
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.servers import AnthropicServer, OllamaServer
from tests.servers.fixtures import ANTHROPIC_TEST_KEY


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


def _only(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, tuple | list) else v
            for k, v in (span.attributes or {}).items()}


@pytest.mark.anyio
async def test_one_span_per_call_with_the_genai_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    llm = MockLLM("llama3.2", LLMConfig(temperature=0.2, max_tokens=64))
    llm.register_extension(OpenTelemetryExtension(tracer_provider=provider))
    llm.queue_reply("Paris.", usage={"prompt_tokens": 12, "completion_tokens": 3},
                    model="llama3.2:latest")
    await llm.send_user_message("Capital of France?", top_p=0.9, seed=1, stop=["\n"])
    span = _only(exporter)
    assert span.name == "chat llama3.2" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert _attributes(span) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "gen_ai.system": "mock",
        "gen_ai.request.model": "llama3.2",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 1,
        "gen_ai.request.stop_sequences": ("\n",),
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "llama3.2:latest",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "llmfactory.identifier": "llama3.2:mock@local:1",
        "llmfactory.cost_usd": 0.0,
        "server.address": "local",
        "server.port": 1,
    }
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time >= span.start_time


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_streamed_calls_and_text_completion_against_ollama(
    provider: TracerProvider, exporter: InMemorySpanExporter, factory: LLMFactory,
    ollama_server: OllamaServer
) -> None:
    ollama_server.script_reply("It is blue.", prompt_tokens=20, completion_tokens=4)
    factory.register_extension(OpenTelemetryExtension(tracer_provider=provider))
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    await collect(llm.stream_user_message("Why is the sky blue?"))
    await llm.complete_text("Once upon a time")
    chat, text = exporter.get_finished_spans()
    attributes = _attributes(chat)
    assert chat.name == "chat llama3.2:latest"
    assert attributes["gen_ai.provider.name"] == "ollama"
    assert attributes["gen_ai.request.stream"] is True
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        20, 4)
    assert attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert (attributes["server.address"], attributes["server.port"]) == (
        "127.0.0.1", ollama_server.port)
    assert text.name == "text_completion llama3.2:latest"
    assert _attributes(text)["gen_ai.operation.name"] == "text_completion"


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_anthropic_cache_tokens_and_provider_name(
    provider: TracerProvider, exporter: InMemorySpanExporter, factory: LLMFactory,
    anthropic_server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url)
    anthropic_server.script_reply("Ok.", prompt_tokens=10, completion_tokens=2,
                                  cached_tokens=500, cache_creation_tokens=100)
    llm = factory.create_llm("claude-sonnet-4-5")
    llm.register_extension(OpenTelemetryExtension(tracer_provider=provider))
    await llm.send_user_message("hi")
    attributes = _attributes(_only(exporter))
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "anthropic"
    assert attributes["gen_ai.usage.input_tokens"] == 610
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 500
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 100
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["llmfactory.cost_usd"] > 0


@pytest.mark.anyio
async def test_a_failed_call_has_error_status(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    llm = MockLLM()
    llm.register_extension(OpenTelemetryExtension(tracer_provider=provider))
    llm.queue_error(RateLimitError("slow down", status=429))
    with pytest.raises(RateLimitError):
        await llm.send_user_message("hi")
    span = _only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RateLimitError"
    attributes = _attributes(span)
    assert attributes["error.type"] == "RateLimitError"
    assert attributes["http.response.status_code"] == 429
    assert "gen_ai.usage.input_tokens" not in attributes
    assert [e.name for e in span.events] == ["exception"]


@pytest.mark.anyio
async def test_a_call_refused_by_an_earlier_extension_still_has_a_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    class Refuse(LLMExtension):
        def before_invoke(self, call: Any) -> None:
            self.refuse("not today")

    llm = MockLLM()
    llm.register_extension(Refuse())
    llm.register_extension(OpenTelemetryExtension(tracer_provider=provider,
                                                  record_exceptions=False))
    with pytest.raises(ExtensionError):
        await llm.send_user_message("hi")
    span = _only(exporter)
    assert span.status.status_code is StatusCode.ERROR and span.events == ()
    assert _attributes(span)["error.type"] == "ExtensionError"
    assert llm.calls == []


@pytest.mark.anyio
async def test_the_span_is_a_child_of_the_current_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    llm = MockLLM()
    llm.register_extension(OpenTelemetryExtension(tracer_provider=provider))
    with provider.get_tracer("app").start_as_current_span("handle request") as parent:
        await llm.send_user_message("hi")
    call_span, parent_span = exporter.get_finished_spans()
    assert parent_span.name == "handle request"
    assert call_span.parent is not None
    assert call_span.parent.span_id == parent.get_span_context().span_id
    assert call_span.context is not None
    assert call_span.context.trace_id == parent.get_span_context().trace_id


@pytest.mark.anyio
async def test_a_cancelled_call_ends_its_span_as_cancelled(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    llm = MockLLM()
    llm.register_extension(OpenTelemetryExtension(tracer_provider=provider))
    llm.queue_reply("late", delay=30)
    with anyio.move_on_after(0.05):
        await llm.send_user_message("hurry")
    for _ in range(10):  # the event loop lets go of the cancelled frames at a checkpoint
        if exporter.get_finished_spans():
            break
        await anyio.lowlevel.checkpoint()
        gc.collect()
    span = _only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert _attributes(span)["error.type"] == "cancelled"


def test_the_sync_facade_and_the_registered_name(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    assert load_extension("otel") is OpenTelemetryExtension
    with MockLLM() as llm:
        llm.register_extension(OpenTelemetryExtension(tracer_provider=provider))
        llm.send_user_message_sync("hi")
        with llm.stream_text_sync("some text") as stream:
            list(stream)
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["chat echo", "text_completion echo"]


def test_opentelemetry_is_imported_only_when_the_extension_is_used() -> None:
    code = (
        "import sys, json; from llmfactory import MockLLM; "
        "llm = MockLLM(); llm.send_user_message_sync('hi'); llm.close(); "
        "before = 'opentelemetry' in sys.modules; "
        "from llmfactory.extensions import OpenTelemetryExtension; "
        "loaded = 'opentelemetry' in sys.modules; OpenTelemetryExtension(); "
        "print(json.dumps([before, loaded, 'opentelemetry' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert json.loads(out) == [False, False, True]
