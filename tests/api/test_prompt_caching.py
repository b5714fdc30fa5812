"""Prompt caching: Anthropic cache_control breakpoints when enabled in the config; cache reads
and writes (Anthropic) and cached tokens (OpenAI) in the usage, the cost, the usage rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmfactory import LLMConfig, LLMFactory, Pricing
from llmfactory.api.prompt_caching import EPHEMERAL, mark_anthropic_cache
from llmfactory.registry.store import Store
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.servers import AnthropicServer, OpenAICompatServer
from tests.servers.fixtures import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

MARK = dict(EPHEMERAL)
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture
def env(anthropic_server: AnthropicServer, monkeypatch: pytest.MonkeyPatch) -> AnthropicServer:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.url)
    return anthropic_server


def _bodies(server: AnthropicServer) -> list[Any]:
    return [r.json for r in server.requests_to("/v1/messages")]


# --------------------------------------------------------------------------- breakpoints


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_breakpoints_on_the_system_prompt_and_the_stable_prefix(
    env: AnthropicServer, factory: LLMFactory
) -> None:
    llm = factory.create_llm("claude-sonnet-4-5", LLMConfig(prompt_caching=True))
    llm.configure_system_prompt("You are a careful assistant. " * 10)
    await llm.send_user_message("First question?")
    await collect(llm.stream_user_message("Second question?"))
    first, second = _bodies(env)
    system = [{"type": "text", "text": "You are a careful assistant. " * 10,
               "cache_control": MARK}]
    assert first["system"] == second["system"] == system
    assert first["messages"] == [
        {"role": "user",
         "content": [{"type": "text", "text": "First question?", "cache_control": MARK}]},
    ]
    # The previous user turn (what the first request cached) and the new one.
    assert second["messages"][0]["content"][-1]["cache_control"] == MARK
    assert second["messages"][1] == {"role": "assistant", "content": "Echo: First question?"}
    assert second["messages"][2]["content"] == [
        {"type": "text", "text": "Second question?", "cache_control": MARK}
    ]
    assert llm.messages[1].content == "First question?"  # the history is not touched


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_off_by_default_and_on_per_call(env: AnthropicServer, factory: LLMFactory) -> None:
    llm = factory.create_llm("claude-sonnet-4-5", LLMConfig(system_message="Be brief."))
    await llm.send_user_message("hi")
    await llm.send_user_message("again", prompt_caching=True)
    plain, cached = _bodies(env)
    assert "cache_control" not in str(plain) and plain["system"] == "Be brief."
    assert cached["system"][0]["cache_control"] == MARK


def test_tools_are_marked_when_there_is_no_system_prompt() -> None:
    payload: dict[str, Any] = {
        "tools": [dict(WEATHER), {"name": "other", "input_schema": {}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert mark_anthropic_cache(payload) == 2
    assert "cache_control" not in payload["tools"][0]
    assert payload["tools"][1]["cache_control"] == MARK


def test_requests_that_carry_their_own_breakpoints_are_left_alone() -> None:
    system = [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral",
                                                                 "ttl": "1h"}}]
    payload: dict[str, Any] = {"system": system, "messages": [{"role": "user", "content": "q"}]}
    assert mark_anthropic_cache(payload) == 0 and payload["messages"][0]["content"] == "q"


def test_empty_text_blocks_are_not_marked() -> None:
    payload: dict[str, Any] = {"messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "11C"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": ""}]},
    ]}
    assert mark_anthropic_cache(payload) == 1
    assert payload["messages"][0]["content"][0]["cache_control"] == MARK
    assert "cache_control" not in payload["messages"][2]["content"][0]


# --------------------------------------------------------------------------- usage and cost


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
@pytest.mark.parametrize("streamed", [False, True])
async def test_anthropic_cache_reads_and_writes_in_usage_and_cost(
    env: AnthropicServer, factory: LLMFactory, streamed: bool
) -> None:
    env.script_reply("Done.", prompt_tokens=50, completion_tokens=10, cached_tokens=2000,
                     cache_creation_tokens=1000)
    llm = factory.create_llm("claude-sonnet-4-5", LLMConfig(prompt_caching=True))
    if streamed:
        _, chunks = await collect(llm.stream_user_message("Summarise the document."))
        usage = chunks[-1].usage
    else:
        usage = (await llm.send_user_message("Summarise the document.")).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_creation_tokens) == (
        3050, 2000, 1000)
    prices = llm.model.pricing
    assert prices.cached_input_per_million is not None
    assert usage.cost_usd == pytest.approx(
        (50 * prices.input_per_million
         + 2000 * prices.cached_input_per_million
         + 1000 * prices.input_per_million * 1.25
         + 10 * prices.output_per_million) / 1e6
    )
    assert llm.usage.cached_tokens == 2000 and llm.usage.cost_usd == pytest.approx(usage.cost_usd)


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_openai_cached_tokens_are_priced_and_recorded_in_the_usage_rows(
    tmp_path: Path, openai_server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{openai_server.url}/v1")
    factory = LLMFactory(database_url=f"sqlite:///{tmp_path / 'registry.db'}", discover=False)
    name = openai_server.models[0].name
    factory.register_model(name, service="openai", input_price_per_million=2.0,
                           output_price_per_million=8.0, cached_input_price_per_million=0.5)
    openai_server.script_reply("Fine.", prompt_tokens=4000, completion_tokens=100,
                               cached_tokens=3000)
    llm = factory.create_llm(name)
    usage = (await llm.send_user_message("Long prompt")).usage
    assert usage is not None and usage.cached_tokens == 3000
    assert usage.cost_usd == pytest.approx((1000 * 2.0 + 3000 * 0.5 + 100 * 8.0) / 1e6)
    await llm.aclose()
    factory.close()
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        rows = store.query_usage()
    finally:
        store.close()
    assert [(r.prompt_tokens, r.cached_tokens) for r in rows] == [(4000, 3000)]
    assert rows[0].cost_usd == pytest.approx(usage.cost_usd)


def test_pricing_rule_for_cache_reads_and_writes() -> None:
    pricing = Pricing(input_per_million=3.0, output_per_million=15.0,
                      cached_input_per_million=0.3)
    assert pricing.cost(1_000_000, 0, cached_tokens=400_000, cache_creation_tokens=100_000) == (
        pytest.approx(500_000 * 3.0 / 1e6 + 400_000 * 0.3 / 1e6 + 100_000 * 3.75 / 1e6)
    )
    assert pricing.cost(100, 0, cached_tokens=80, cache_creation_tokens=80) == pytest.approx(
        (80 * 0.3 + 20 * 3.75) / 1e6)  # counts are capped by the prompt
    no_cache_price = Pricing(input_per_million=1.0, output_per_million=1.0)
    assert no_cache_price.cost(10, 0, cached_tokens=10) == pytest.approx(10 / 1e6)


def test_prompt_caching_from_the_config_file_defaults() -> None:
    config = LLMConfig.from_mapping({"prompt_caching": True, "temperature": 0.2})
    assert config.prompt_caching is True
    assert LLMConfig().merged(config).prompt_caching is True


def test_deepseek_cache_hits_count_as_cached_tokens() -> None:
    from llmfactory.api.openai import _usage

    usage = _usage({"prompt_tokens": 100, "completion_tokens": 1,
                    "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40})
    assert usage is not None and usage.cached_tokens == 60
    details = _usage({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 30},
                      "prompt_cache_hit_tokens": 60})
    assert details is not None and details.cached_tokens == 30
