"""estimate_cost: the cost of a call before sending it, from the model's prices and a token
count (exact with a tokenizer, else the stated ~4 characters a token)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from llmfactory import CostEstimate, LLMConfig, LLMFactory, Message, MockLLM
from llmfactory import cost as cost_module
from llmfactory.config import PriceOverride
from llmfactory.cost import APPROXIMATION
from llmfactory.messages import estimate_tokens

TOOL = {"name": "lookup", "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}


@pytest.fixture(autouse=True)
def _fresh_tokenizer_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cost_module, "_tiktoken_cache", {})
    yield


def _fake_tiktoken(monkeypatch: pytest.MonkeyPatch, *, broken: bool = False) -> list[str]:
    """Install a stand-in ``tiktoken`` (one token per word); return the encodings asked for."""
    asked: list[str] = []

    class Encoding:
        name = "o200k_base"

        def encode(self, text: str, disallowed_special: object = ()) -> list[int]:
            return [0] * len(text.split())

    def encoding_for_model(name: str) -> Encoding:
        asked.append(name)
        if broken:
            raise OSError("no network to download the vocabulary")
        raise KeyError(name)

    def get_encoding(name: str) -> Encoding:
        asked.append(name)
        return Encoding()

    module = types.ModuleType("tiktoken")
    module.encoding_for_model = encoding_for_model  # type: ignore[attr-defined]
    module.get_encoding = get_encoding  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", module)
    return asked


def _approx(*texts: str) -> int:
    """The approximate count of a request of these message texts."""
    return sum(estimate_tokens([t]) + 3 for t in texts) + 3


def test_a_local_model_is_free_and_approximated() -> None:
    llm = MockLLM(config=LLMConfig(max_tokens=100))
    estimate = llm.estimate_cost("What is the capital of France?")
    assert isinstance(estimate, CostEstimate)
    assert estimate.prompt_tokens == _approx("What is the capital of France?")
    assert (estimate.method, estimate.exact) == (APPROXIMATION, False)
    assert estimate.priced and estimate.is_free
    assert (estimate.min_cost_usd, estimate.max_cost_usd) == (0.0, 0.0)
    assert estimate.max_completion_tokens == 100 and estimate.fits_context is None
    assert "approximation" in str(estimate) and estimate.to_dict()["priced"] is True
    assert llm.calls == []  # nothing was sent


def test_a_string_counts_the_conversation_a_send_would_carry() -> None:
    llm = MockLLM()
    llm.configure_system_prompt("You are terse.")
    llm.add_user_message("Hello there, how are you?")
    llm.add_assistant_message("Fine.")
    as_text = llm.estimate_cost("And now?")
    assert as_text.prompt_tokens == _approx(
        "You are terse.", "Hello there, how are you?", "Fine.", "And now?"
    )
    as_messages = llm.estimate_cost([{"role": "user", "content": "And now?"}])
    assert as_messages.prompt_tokens == _approx("You are terse.", "And now?")
    own_system = llm.estimate_cost([Message.system("Hi"), Message.user("And now?")])
    assert own_system.prompt_tokens == _approx("Hi", "And now?")


def test_a_priced_cloud_model_gives_a_range(factory: LLMFactory) -> None:
    llm = factory.create_llm("claude-sonnet-4-5")
    prices = llm.model.pricing
    estimate = llm.estimate_cost("x" * 4000)
    assert estimate.prompt_tokens == _approx("x" * 4000) == 1006
    assert estimate.max_completion_tokens == 4096  # what AnthropicLLM sends by default
    assert estimate.min_cost_usd == pytest.approx(1006 * prices.input_per_million / 1e6)
    assert estimate.max_cost_usd == pytest.approx(
        (1006 * prices.input_per_million + 4096 * prices.output_per_million) / 1e6
    )
    assert estimate.fits_context is True and not estimate.is_free
    smaller = llm.estimate_cost("x" * 4000, max_tokens=10)
    assert smaller.max_completion_tokens == 10 and smaller.max_cost_usd is not None
    assert smaller.max_cost_usd < (estimate.max_cost_usd or 0)
    with pytest.raises(ValueError):
        llm.estimate_cost("x", max_tokens=-1)


def test_the_bound_falls_back_to_the_models_output_limit(factory: LLMFactory) -> None:
    llm = factory.create_llm("gemini-2.5-flash")
    assert llm.estimate_cost("hi").max_completion_tokens == llm.model.max_output_tokens
    configured = factory.create_llm("gemini-2.5-flash", LLMConfig(max_tokens=256))
    assert configured.estimate_cost("hi").max_completion_tokens == 256


def test_a_cloud_model_without_prices_is_flagged(factory: LLMFactory) -> None:
    factory.register_model("mystery-model", service="openai")
    estimate = factory.create_llm("mystery-model").estimate_cost("hello")
    assert not estimate.priced and estimate.min_cost_usd is None
    assert estimate.max_cost_usd is None and "prices unknown" in str(estimate)


def test_a_price_override_applies_to_a_local_model() -> None:
    llm = MockLLM(config=LLMConfig(pricing=PriceOverride(input=2.0, output=4.0)))
    estimate = llm.estimate_cost("y" * 400, max_tokens=1000)  # 100 + 3 + 3 prompt tokens
    assert estimate.min_cost_usd == pytest.approx(106 * 2.0 / 1e6)
    assert estimate.max_cost_usd == pytest.approx((106 * 2.0 + 1000 * 4.0) / 1e6)


def test_tiktoken_counts_openai_models_exactly(
    factory: LLMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _fake_tiktoken(monkeypatch)
    llm = factory.create_llm("gpt-4o")
    estimate = llm.estimate_cost("one two three four five")
    assert (estimate.method, estimate.exact) == ("tiktoken:o200k_base", True)
    assert estimate.prompt_tokens == 5 + 3 + 3
    llm.estimate_cost("again")
    assert asked == ["gpt-4o", "o200k_base"]  # the encoding is looked up once
    claude = factory.create_llm("claude-sonnet-4-5")
    assert claude.estimate_cost("one two").method == APPROXIMATION  # not an OpenAI model


def test_a_failing_tiktoken_falls_back_to_the_approximation(
    factory: LLMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_tiktoken(monkeypatch, broken=True)
    estimate = factory.create_llm("gpt-4o").estimate_cost("one two three")
    assert (estimate.method, estimate.exact) == (APPROXIMATION, False)
    assert estimate.prompt_tokens == _approx("one two three")


def test_without_tiktoken_openai_models_are_approximated(
    factory: LLMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import fails
    assert factory.create_llm("gpt-4o").estimate_cost("hi").method == APPROXIMATION


def test_a_custom_tokenizer_and_tools_are_counted() -> None:
    def letters(text: str) -> int:
        return len(text)

    llm = MockLLM()
    plain = llm.estimate_cost("abc", tokenizer=letters)
    assert (plain.method, plain.exact, plain.prompt_tokens) == ("tokenizer:letters", True, 9)
    with_tools = llm.estimate_cost("abc", tokenizer=letters, tools=[TOOL])
    assert with_tools.prompt_tokens > plain.prompt_tokens + 50
    tool_calls = llm.estimate_cost(
        [{"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "name": "lookup", "arguments": {"word": "cat"}}]}],
        tokenizer=letters,
    )
    assert tool_calls.prompt_tokens == 3 + 3 + len("lookup") + len('{"word":"cat"}')
