"""The mock runtime and MockLLM: a test double that goes through the real pipeline
(history transaction, extensions, usage tracking, streaming, the sync facade)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import llmfactory
from llmfactory import (
    ConversationBusyError,
    LLMConfig,
    LLMConnectionError,
    LLMFactory,
    MockLLM,
    MockReply,
    MockScript,
    RateLimitError,
    ToolCall,
    Usage,
)
from llmfactory.extensions.base import LLMExtension
from llmfactory.mock import clear_mock_scripts, mock_model, mock_script

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(autouse=True)
def _no_shared_scripts() -> Iterator[None]:
    clear_mock_scripts()
    yield
    clear_mock_scripts()


async def _collect(stream: Any) -> tuple[str, list[Any]]:
    chunks = []
    async with stream:
        async for chunk in stream:
            chunks.append(chunk)
    return "".join(c.content for c in chunks), chunks


# --------------------------------------------------------------------------- creation


def test_create_llm_gives_a_mock_without_any_server(factory: LLMFactory) -> None:
    llm = factory.create_llm("echo:mock@local")
    assert isinstance(llm, MockLLM)
    assert llm.identifier == "echo:mock@local:1" and llm.provider == "mock"
    assert llm.send_user_message_sync("Hello there").content == "Hello there"
    assert [m.content for m in llm.messages] == ["Hello there", "Hello there"]
    assert llm.usage.calls == 1 and factory.usage.calls == 1  # the factory's tracker
    llm.close()


@pytest.mark.anyio
async def test_discovery_serves_the_mock_models_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shared factory probes the identifier's host through the runtime registry; the
    mock runtime needs no network, so no connection is even attempted."""
    from llmfactory.runtimes import discovery

    async def no_connect(*args: object) -> None:
        raise AssertionError("the mock runtime must not connect anywhere")

    monkeypatch.setattr(discovery, "_connect_check", no_connect)
    mock_script("weather-bot").queue_reply("Sunny.")
    llm = llmfactory.create_llm("weather-bot:mock@local")
    assert isinstance(llm, MockLLM) and llm.model.source == "discovered"
    assert "completion" in llm.model.capabilities
    served = {m.name for m in llmfactory.list_models(runtime="mock")}
    assert served == {"echo", "weather-bot"}
    assert (await llm.send_user_message("Weather?")).content == "Sunny."


def test_mock_llm_built_by_hand_tracks_usage_in_memory() -> None:
    llm = MockLLM("llama3.2", LLMConfig(system_message="Be brief."))
    assert llm.identifier == "llama3.2:mock@local:1" and llm.model.provider == "meta"
    answer = llm.send_user_message_sync("abcdefgh")  # 8 characters: 2 tokens
    assert answer.usage is not None and answer.usage.completion_tokens == 2
    assert not answer.usage.estimated and answer.usage.cost_usd == 0.0
    assert llm.usage.calls == 1 and llm.usage.completion_tokens == 2
    assert llm.last_call is not None and llm.last_call.system == "Be brief."
    llm.close()


# --------------------------------------------------------------------------- scripting


@pytest.mark.anyio
async def test_scripted_replies_in_order_then_echo() -> None:
    llm = MockLLM()
    llm.queue_reply("Paris.").queue_reply(MockReply(content="Lyon.", model="big-model"))
    first = await llm.send_user_message("Capital?")
    second = await llm.send_user_message("Second city?")
    third = await llm.send_user_message("Say this back")
    assert (first.content, second.content, third.content) == ("Paris.", "Lyon.", "Say this back")
    assert (first.model, second.model) == ("echo", "big-model")
    assert llm.script.pending == 0 and len(llm.calls) == 3


@pytest.mark.anyio
async def test_streamed_chunks_reasoning_usage_and_finish_reason() -> None:
    llm = MockLLM()
    llm.queue_reply(
        chunks=["The ", "answer ", "is 42."],
        reasoning="Let me think.",
        usage={"prompt_tokens": 100, "completion_tokens": 7},
        finish_reason="length",
    )
    text, chunks = await _collect(llm.stream_user_message("Question?"))
    assert text == "The answer is 42."
    assert [c.content for c in chunks if c.content] == ["The ", "answer ", "is 42."]
    assert "".join(c.reasoning for c in chunks) == "Let me think."
    last = chunks[-1]
    assert last.is_complete and last.finish_reason == "length"
    assert last.usage == Usage(prompt_tokens=100, completion_tokens=7, total_tokens=107,
                               cost_usd=0.0)
    assert last.response is not None and last.response.reasoning == "Let me think."
    assert llm.messages[-1].content == "The answer is 42."
    assert llm.last_call is not None and llm.last_call.stream


@pytest.mark.anyio
async def test_tool_calls_round_trip() -> None:
    llm = MockLLM()
    llm.queue_reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    llm.queue_reply("It is sunny in Paris.")
    answer = await llm.send_user_message("Weather in Paris?", tools=[WEATHER])
    assert answer.finish_reason == "tool_calls" and len(answer.tool_calls) == 1
    call = answer.tool_calls[0]
    assert (call.name, dict(call.arguments)) == ("get_weather", {"city": "Paris"})
    llm.add_tool_result(call.id, {"sky": "clear"})
    final = await llm.send_user_message(tools=[WEATHER])
    assert final.content == "It is sunny in Paris."
    sent = llm.calls[-1]
    assert [t.name for t in sent.tools] == ["get_weather"]
    assert [m.role.value for m in sent.messages] == ["user", "assistant", "tool"]
    assert sent.messages[-1].content == '{"sky": "clear"}'


@pytest.mark.anyio
async def test_streamed_tool_calls_are_assembled() -> None:
    llm = MockLLM()
    given = ToolCall(id="call_1", name="get_weather", arguments={"city": "Lyon"})
    llm.queue_reply(content="Checking.", tool_calls=[given])
    _, chunks = await _collect(llm.stream_user_message("Weather in Lyon?", tools=[WEATHER]))
    response = chunks[-1].response
    assert response is not None and response.tool_calls == (given,)
    assert response.content == "Checking." and response.finish_reason == "tool_calls"


@pytest.mark.anyio
async def test_a_responder_answers_when_nothing_is_queued() -> None:
    llm = MockLLM()
    llm.respond_with(lambda call: f"{len(call.messages)} messages, last: {call.prompt}")
    assert (await llm.send_user_message("one")).content == "1 messages, last: one"
    assert (await llm.send_user_message("two")).content == "3 messages, last: two"
    llm.script.reset()
    assert (await llm.send_user_message("echo")).content == "echo" and len(llm.calls) == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.anyio
async def test_injected_errors_leave_the_history_and_are_tracked() -> None:
    llm = MockLLM()
    limited = RateLimitError("slow down", status=429, retry_after=2.0, provider="mock")
    llm.queue_error(limited)
    llm.queue_error(LLMConnectionError("the connection broke"), after_chunks=2,
                    content="one two three four")
    with pytest.raises(RateLimitError) as info:
        await llm.send_user_message("first")
    assert info.value is limited and info.value.retry_after == 2.0
    received: list[str] = []
    with pytest.raises(LLMConnectionError):
        async with llm.stream_user_message("second") as stream:
            async for chunk in stream:
                received.append(chunk.content)
    assert received == ["one ", "two "]
    assert llm.messages == []  # both calls failed: nothing committed
    assert (llm.usage.calls, llm.usage.errors) == (2, 2)
    assert (await llm.send_user_message("third")).content == "third"
    assert len(llm.messages) == 2


@pytest.mark.anyio
async def test_a_slow_reply_can_be_cancelled_and_the_conversation_is_free_again() -> None:
    llm = MockLLM()
    llm.queue_reply("too late", delay=30)
    with anyio.move_on_after(0.05) as scope:
        await llm.send_user_message("hurry")
    assert scope.cancelled_caught and llm.messages == []
    assert (await llm.send_user_message("again")).content == "again"


@pytest.mark.anyio
async def test_one_message_at_a_time_as_for_a_real_model() -> None:
    llm = MockLLM()
    reached = anyio.Event()

    def slow(call: Any) -> MockReply:  # a queued responder: runs when the call arrives
        reached.set()
        return MockReply(content="slow", delay=30)

    llm.queue_reply(slow)
    async with anyio.create_task_group() as tg:
        tg.start_soon(llm.send_user_message, "first")
        with anyio.fail_after(5):
            await reached.wait()
        with pytest.raises(ConversationBusyError):
            await llm.send_user_message("second")
        tg.cancel_scope.cancel()
    assert llm.messages == [] and len(llm.calls) == 1
    assert (await llm.send_user_message("third")).content == "third"


# --------------------------------------------------------------------------- recording


@pytest.mark.anyio
async def test_calls_record_what_the_extensions_sent() -> None:
    class Shout(LLMExtension):
        def before_invoke(self, call: Any) -> None:
            call.messages = [m if m.role.value != "user" else type(m)(role=m.role,
                             content=m.content.upper()) for m in call.messages]

    llm = MockLLM(config=LLMConfig(options={"num_ctx": 4096}))
    llm.configure_system_prompt("You are terse.")
    llm.register_extension(Shout())
    answer = await llm.send_user_message("quiet please", temperature=0.1, max_tokens=5)
    assert answer.content == "QUIET PLEASE"
    call = llm.last_call
    assert call is not None and call.operation == "chat" and not call.stream
    assert call.system == "You are terse." and call.prompt == "QUIET PLEASE"
    assert (call.config.temperature, call.config.max_tokens) == (0.1, 5)
    assert call.options == {"num_ctx": 4096}
    assert llm.messages[1].content == "quiet please"  # the history keeps what the user wrote


@pytest.mark.anyio
async def test_a_shared_script_serves_conversations_the_code_creates(factory: LLMFactory) -> None:
    script = mock_script("assistant")
    script.queue_reply("Hi!", times=2)

    async def code_under_test(question: str) -> str:
        llm = factory.create_llm("assistant:mock@local")
        return (await llm.send_user_message(question)).content

    assert [await code_under_test("a"), await code_under_test("b")] == ["Hi!", "Hi!"]
    assert [c.prompt for c in script.calls] == ["a", "b"]
    assert (await code_under_test("c")) == "c"


def test_replies_given_at_construction_and_a_given_script() -> None:
    script = MockScript(["one", RateLimitError("no", status=429)])
    llm = MockLLM(mock_model("m", context_length=1000), script=script, replies=["three"],
                  track_usage=False)
    assert llm.extensions == [] and llm.model.context_length == 1000
    assert llm.send_user_message_sync("x").content == "one"
    with pytest.raises(RateLimitError):
        llm.send_user_message_sync("y")
    assert llm.complete_sync([{"role": "user", "content": "z"}]).content == "three"
    assert script.pending == 0 and len(script.calls) == 3
    with pytest.raises(TypeError):
        script.queue_reply(MockReply(content="a"), content="b")
    with pytest.raises(ValueError):
        script.queue_reply("a", times=0)
    llm.close()


# --------------------------------------------------------------------------- sync, text


def test_the_sync_facade_runs_the_same_mock() -> None:
    with MockLLM() as llm:
        llm.queue_reply(chunks=["a", "b", "c"])
        with llm.stream_user_message_sync("letters") as stream:
            assert [c.content for c in stream if c.content] == ["a", "b", "c"]
        assert llm.messages[-1].content == "abc"
        assert llm.complete_text_sync("Once upon a time").content == "Once upon a time"
        assert llm.calls[-1].operation == "text_completion"
        with llm.stream_text_sync("streamed text") as stream:
            assert "".join(c.content for c in stream) == "streamed text"
        assert len(llm.messages) == 2  # text completion is stateless


@pytest.mark.anyio
async def test_text_completion_on_the_mock_is_recorded() -> None:
    llm = MockLLM()
    llm.queue_reply(" there lived a cat.")
    response = await llm.complete_text("Once upon a time", max_tokens=20)
    assert response.content == " there lived a cat." and llm.messages == []
    call = llm.last_call
    assert call is not None and call.operation == "text_completion"
    assert call.prompt == "Once upon a time" and call.system is None
