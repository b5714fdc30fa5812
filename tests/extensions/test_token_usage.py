"""TokenUsageTrackingExtension: tokens and cost per call as the runtime reported them,
estimates when it reported none, failures, totals per conversation and per factory, and the
rows written to the registry (off the event loop, flushed on close)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from llmfactory import LLMConfig, LLMFactory, Usage
from llmfactory.config import PriceOverride
from llmfactory.extensions import CallUsage, TokenUsageTrackingExtension, UsageTotals
from llmfactory.extensions.token_usage import UsageLedger
from llmfactory.registry.store import Store
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.extensions import ScriptedLLM, fake_model
from tests.servers import Fault, OllamaServer, OpenAICompatServer
from tests.servers.fixtures import OPENAI_TEST_KEY

PRICED = {"input_price_per_million": 1.25, "output_price_per_million": 10.0}


def _file_factory(tmp_path: Path) -> LLMFactory:
    factory = LLMFactory(database_url=f"sqlite:///{tmp_path / 'registry.db'}", discover=False)
    factory.ensure_initialized()
    return factory


def _rows(tmp_path: Path) -> list[dict[str, object]]:
    """The usage rows as another process would read them (a separate connection)."""
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        return [r.model_dump() for r in store.query_usage()]
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_rows_have_the_cost_from_the_models_pricing(
    tmp_path: Path, ollama_server: OllamaServer
) -> None:
    factory = _file_factory(tmp_path)
    identifier = f"llama3.2:latest:ollama@{ollama_server.host}"
    factory.register_model(identifier, **PRICED)
    ollama_server.script_reply("Paris.", prompt_tokens=1000, completion_tokens=500)
    ollama_server.script_reply("On the Seine.", prompt_tokens=2000, completion_tokens=100)
    llm = factory.create_llm(identifier)
    first = await llm.send_user_message("Capital of France?")
    _, chunks = await collect(llm.stream_user_message("River?"))
    assert first.usage is not None and first.usage.cost_usd == pytest.approx(0.00625)
    assert chunks[-1].usage is not None and chunks[-1].usage.cost_usd == pytest.approx(0.0035)

    totals = llm.usage
    assert (totals.calls, totals.errors, totals.prompt_tokens, totals.completion_tokens) == (
        2, 0, 3000, 600)
    assert totals.cost_usd == pytest.approx(0.00975) and totals.total_tokens == 3600
    assert factory.usage == totals  # the factory's only conversation so far

    await llm.aclose()  # flushes: another process sees the rows now
    rows = _rows(tmp_path)
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(1000, 500),
                                                                          (2000, 100)]
    assert [r["cost_usd"] for r in rows] == [pytest.approx(0.00625), pytest.approx(0.0035)]
    row = rows[0]
    assert row["identifier"] == identifier and row["provider"] == "meta"
    assert row["ok"] is True and row["error_kind"] is None and row["estimated"] is False
    assert isinstance(row["latency_ms"], float) and row["latency_ms"] > 0
    # never any message content
    assert not any("Paris" in str(v) or "France" in str(v) for r in rows for v in r.values())
    factory.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_cached_and_reasoning_tokens_and_a_config_price_override(
    factory: LLMFactory, openai_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url + "/v1")
    openai_server.script_reply("Done.", prompt_tokens=1000, completion_tokens=300,
                               cached_tokens=400, reasoning_tokens=200)
    config = LLMConfig(pricing=PriceOverride(input=2.0, output=8.0, cached_input=0.5))
    llm = factory.create_llm("gpt-4o-mini", config)
    await llm.send_user_message("Think, then answer.")
    tracker = llm.get_extension(TokenUsageTrackingExtension)
    assert tracker is not None and tracker.last is not None
    last = tracker.last
    assert (last.prompt_tokens, last.completion_tokens) == (1000, 300)
    assert (last.cached_tokens, last.reasoning_tokens) == (400, 200)
    assert last.cost_usd == pytest.approx((600 * 2.0 + 400 * 0.5 + 300 * 8.0) / 1e6)
    (row,) = factory.store.query_usage()  # an in-memory registry is written inline
    assert (row.cached_tokens, row.reasoning_tokens, row.provider) == (400, 200, "openai")


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_a_failed_call_is_a_row_with_its_error_kind(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    ollama_server.push_fault(Fault.http_error(400), path="/api/chat")
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}", LLMConfig(retries=0))
    with pytest.raises(Exception) as info:
        await llm.send_user_message("hi")
    assert llm.usage.errors == 1 and llm.usage.calls == 1 and llm.usage.total_tokens == 0
    (row,) = factory.store.query_usage()
    assert (row.ok, row.error_kind) == (False, type(info.value).__name__)
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (0, 0, 0.0)


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_no_reported_usage_is_estimated_and_flagged(streamed: bool) -> None:
    model = fake_model(input_price_per_million=1.0, output_price_per_million=2.0)
    llm = ScriptedLLM(model=model, reply="a" * 40, usage=None)
    llm.register_extension(TokenUsageTrackingExtension)  # a bare BaseLLM: in memory only
    if streamed:
        _, chunks = await collect(llm.stream_user_message("b" * 80))
        response = chunks[-1].response
        assert chunks[-1].usage == (response.usage if response else None)
    else:
        response = await llm.send_user_message("b" * 80)
    assert response is not None and response.usage is not None
    usage = response.usage
    assert usage.estimated and (usage.prompt_tokens, usage.completion_tokens) == (20, 10)
    assert usage.cost_usd == pytest.approx((20 * 1.0 + 10 * 2.0) / 1e6)
    tracker = llm.get_extension(TokenUsageTrackingExtension)
    assert tracker is not None and tracker.ledger is None and tracker.last is not None
    assert tracker.last.estimated and llm.usage.estimated == 1
    assert llm.messages[-1].content == "a" * 40


@pytest.mark.anyio
async def test_a_custom_estimator_and_reset() -> None:
    llm = ScriptedLLM(reply="one two three", usage=None)
    tracker = llm.register_extension(
        TokenUsageTrackingExtension(estimator=lambda texts: sum(len(t.split()) for t in texts))
    )
    await llm.send_user_message("four five")
    assert tracker.last is not None
    assert (tracker.last.prompt_tokens, tracker.last.completion_tokens) == (2, 3)
    tracker.reset()
    assert tracker.totals == UsageTotals() and tracker.records == []


def test_sync_calls_and_close_persist_every_row(
    tmp_path: Path, ollama_server: OllamaServer
) -> None:
    factory = _file_factory(tmp_path)
    ollama_server.script_reply("ok", prompt_tokens=7, completion_tokens=3, times=None)
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    for _ in range(5):
        llm.send_user_message_sync("hi")
    with llm.stream_user_message_sync("stream it") as stream:
        list(stream)
    llm.close()
    rows = _rows(tmp_path)
    assert len(rows) == 6 and sum(r["prompt_tokens"] for r in rows) == 42  # type: ignore[misc]
    assert factory.usage.calls == 6
    factory.close()


def test_the_ledger_writes_off_the_calling_thread_and_flushes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'r.db'}", create_dirs=True)
    ledger = UsageLedger(lambda: store)
    writers: list[str] = []
    original = store.add_usage

    def spy(records):  # type: ignore[no-untyped-def]
        writers.append(threading.current_thread().name)
        original(records)

    store.add_usage = spy  # type: ignore[method-assign]
    from datetime import datetime, timezone

    for i in range(50):
        ledger.record(CallUsage(timestamp=datetime.now(timezone.utc), identifier=f"m{i % 2}",
                                provider="meta", prompt_tokens=i, cost_usd=0.001))
    assert ledger.flush(30)
    assert ledger.written == 50 and threading.current_thread().name not in writers
    assert len(writers) <= 50  # batched when calls come quickly
    assert ledger.totals.calls == 50 and ledger.totals.cost_usd == pytest.approx(0.05)
    summary = {r["key"]: r for r in store.summarize_usage(by="model")}
    assert summary["m0"]["calls"] == 25 and summary["m1"]["prompt_tokens"] == sum(
        range(1, 50, 2))
    assert store.summarize_usage(model="m1")[0]["calls"] == 25
    store.close()


def test_a_closed_factory_drops_rows_with_a_warning(
    factory: LLMFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UsageLedger(lambda: None)
    from datetime import datetime, timezone

    ledger.record(CallUsage(timestamp=datetime.now(timezone.utc), identifier="x",
                            provider="meta"))
    assert ledger.totals.calls == 1 and "not saved" in caplog.text


def test_usage_totals_add_up() -> None:
    a = UsageTotals(calls=1, prompt_tokens=3, completion_tokens=4, cost_usd=0.5)
    b = UsageTotals(calls=2, errors=1, prompt_tokens=1, cost_usd=0.25, estimated=1)
    total = a + b
    assert (total.calls, total.errors, total.total_tokens, total.cost_usd) == (3, 1, 8, 0.75)
    assert total.to_dict()["total_tokens"] == 8 and Usage().estimated is False
