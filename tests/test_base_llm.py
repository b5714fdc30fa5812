"""BaseLLM: history, system prompt, the transactional call pipeline, the sync facade.

The wire is replaced by a script (:class:`FakeLLM`), so these tests are about
BaseLLM's own contract; the protocol modules have their tests in ``tests/api``.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import AsyncGenerator

import anyio
import pytest

from llmfactory import (
    ChunkResponse,
    CompleteResponse,
    ConversationBusyError,
    LLMConfig,
    LLMConnectionError,
    LLMFactoryError,
    LLMModel,
    Message,
    Role,
    Usage,
)
from llmfactory.api.registry import ServiceSpec
from llmfactory.base_llm import BaseLLM, Call
from llmfactory.config import PriceOverride
from llmfactory.errors import ExtensionError
from llmfactory.messages import ToolCall, ToolCallDelta
from llmfactory.sync import shared_portal_running


def _model(**fields: object) -> LLMModel:
    values: dict[str, object] = {
        "identifier": "fake-model:fake@localhost:1",
        "name": "fake-model",
        "runtime": "fake",
        "host": "localhost:1",
        "capabilities": ["chat", "streaming"],
    }
    values.update(fields)
    return LLMModel(**values)


class FakeLLM(BaseLLM):
    """A BaseLLM whose wire is a script.

    ``behaviour``: ``ok``; ``fail`` (raise after two chunks / at once);
    ``hang`` (wait forever after two chunks / at once); ``tools`` (answer
    with a tool call).
    """

    def __init__(self, config: LLMConfig | None = None, model: LLMModel | None = None) -> None:
        super().__init__(
            model or _model(), config, spec=ServiceSpec(name="fake", llm_class="tests:FakeLLM")
        )
        self.behaviour = "ok"
        self.calls: list[Call] = []
        self.sent: list[list[Message]] = []
        self.cancelled = 0
        self.streams_closed = 0
        self.waiting = threading.Event()

    def _usage(self, call: Call) -> Usage:
        return Usage(prompt_tokens=10 * len(call.messages), completion_tokens=3, total_tokens=0)

    async def _hang(self) -> None:
        self.waiting.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise

    async def _complete(self, call: Call) -> CompleteResponse:
        self.calls.append(call)
        self.sent.append(list(call.messages))
        if self.behaviour == "fail":
            raise LLMConnectionError("the fake server broke")
        if self.behaviour == "hang":
            await self._hang()
        calls: tuple[ToolCall, ...] = ()
        if self.behaviour == "tools":
            calls = (ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"}),)
        call.reported_model = "fake-model-v1"
        return CompleteResponse(
            content=f"answer {len(self.calls)}",
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
            usage=self._usage(call),
        )

    async def _stream(self, call: Call) -> AsyncGenerator[ChunkResponse, None]:
        self.calls.append(call)
        self.sent.append(list(call.messages))
        try:
            for i, piece in enumerate(("ans", "wer ", str(len(self.calls)))):
                if i == 2 and self.behaviour == "fail":
                    raise LLMConnectionError("the fake stream broke")
                if i == 2 and self.behaviour == "hang":
                    await self._hang()
                yield ChunkResponse.delta(piece)
                await anyio.lowlevel.checkpoint()
            if self.behaviour == "tools":
                yield ChunkResponse(
                    tool_calls=(ToolCallDelta(index=0, id="call_1", name="f", arguments='{"a"'),)
                )
                yield ChunkResponse(tool_calls=(ToolCallDelta(index=0, arguments=": 1}"),))
            yield ChunkResponse(is_complete=True, finish_reason="stop", usage=self._usage(call))
        finally:
            self.streams_closed += 1


@pytest.fixture
def llm() -> FakeLLM:
    fake = FakeLLM(LLMConfig(system_message="You are terse."))
    return fake


def _roles(llm: BaseLLM) -> list[str]:
    return [m.role.value for m in llm.messages]


# --------------------------------------------------------------------------- state


def test_system_prompt_is_first_and_updatable(llm: FakeLLM) -> None:
    assert llm.system_prompt == "You are terse."
    assert llm.messages == [Message.system("You are terse.")]
    llm.add_user_message("hi")
    llm.configure_system_prompt("Be kind.")
    assert llm.messages[0] == Message.system("Be kind.") and _roles(llm) == ["system", "user"]
    llm.configure_system_prompt(None)
    assert _roles(llm) == ["user"] and llm.system_prompt is None
    llm.configure_system_prompt("")
    assert llm.system_prompt is None


def test_messages_is_a_copy(llm: FakeLLM) -> None:
    llm.add_user_message("hi")
    copy = llm.messages
    copy.clear()
    assert len(llm.messages) == 2


def test_history_editing(llm: FakeLLM) -> None:
    llm.add_user_message("What's the weather in Paris?", images=[b"\x89PNG\r\n\x1a\n"])
    call = ToolCall(id="call_7", name="get_weather", arguments={"city": "Paris"})
    llm.add_assistant_message("", tool_calls=[call])
    llm.add_tool_result("call_7", {"temperature": 11})
    last = llm.messages[-1]
    assert (last.role, last.tool_call_id, last.name) == (Role.TOOL, "call_7", "get_weather")
    assert last.content == '{"temperature": 11}'
    assert llm.messages[1].images[0].media_type == "image/png"
    with pytest.raises(ValueError, match="call_7"):
        llm.add_tool_result("call_unknown", "x")
    llm.add_tool_result("call_unknown", "x", name="explicit")  # a name given: no lookup
    llm.clear_history()
    assert _roles(llm) == ["system"]


def test_repr_shows_no_secrets() -> None:
    fake = FakeLLM(LLMConfig(api_key="sk-secret-value"))
    assert "sk-secret" not in repr(fake) and "fake-model" in repr(fake)
    assert "sk-secret" not in repr(fake.config)


# --------------------------------------------------------------------------- unary calls


@pytest.mark.anyio
async def test_send_commits_user_message_and_answer(llm: FakeLLM) -> None:
    first = await llm.send_user_message("one")
    second = await llm.send_user_message("two")
    assert (first.content, second.content) == ("answer 1", "answer 2")
    assert _roles(llm) == ["system", "user", "assistant", "user", "assistant"]
    assert [m.content for m in llm.sent[1]] == ["You are terse.", "one", "answer 1", "two"]
    assert second.model == "fake-model-v1" and second.latency_ms > 0
    assert second.usage is not None and second.usage.prompt_tokens == 40
    assert second.usage.cost_usd == 0.0  # a local model is free


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_failure_leaves_history_unchanged(llm: FakeLLM, streamed: bool) -> None:
    await llm.send_user_message("one")
    before = llm.messages
    llm.behaviour = "fail"
    with pytest.raises(LLMConnectionError, match="fake"):
        if streamed:
            async with llm.stream_user_message("two") as stream:
                async for _ in stream:
                    pass
        else:
            await llm.send_user_message("two")
    assert llm.messages == before
    llm.behaviour = "ok"
    await llm.send_user_message("three")  # usable again
    assert [m.content for m in llm.messages[-2:]] == ["three", "answer 3"]


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_timeout_and_cancellation_leave_history_unchanged(
    llm: FakeLLM, streamed: bool
) -> None:
    llm.behaviour = "hang"
    before = llm.messages
    received: list[ChunkResponse] = []
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.05):
            if streamed:
                async with llm.stream_user_message("two") as stream:
                    async for chunk in stream:
                        received.append(chunk)
            else:
                await llm.send_user_message("two")
    with anyio.move_on_after(0.05) as scope:
        await llm.send_user_message("three")
    assert scope.cancelled_caught
    assert llm.messages == before and llm.cancelled == 2
    assert len(received) == (2 if streamed else 0)
    llm.behaviour = "ok"
    await llm.send_user_message("four")
    assert [m.content for m in llm.messages] == ["You are terse.", "four", "answer 3"]


@pytest.mark.anyio
async def test_concurrent_sends_are_refused(llm: FakeLLM) -> None:
    llm.behaviour = "hang"
    async with anyio.create_task_group() as tg:
        tg.start_soon(llm.send_user_message, "first")
        await anyio.sleep(0.01)
        with pytest.raises(ConversationBusyError, match="still answering"):
            await llm.send_user_message("second")
        # stateless calls do not touch the conversation: allowed concurrently
        llm.behaviour = "ok"
        response = await llm.complete([{"role": "user", "content": "independent"}])
        assert response.content.startswith("answer")
        tg.cancel_scope.cancel()
    assert _roles(llm) == ["system"]


@pytest.mark.anyio
async def test_send_without_text_continues_after_tool_results(llm: FakeLLM) -> None:
    llm.behaviour = "tools"
    response = await llm.send_user_message("weather in Paris?", tools=[{"name": "get_weather"}])
    assert response.tool_calls[0].arguments == {"city": "Paris"}
    assert llm.calls[0].tools[0].name == "get_weather"
    llm.add_tool_result(response.tool_calls[0].id, "11C")
    llm.behaviour = "ok"
    await llm.send_user_message()
    assert _roles(llm) == ["system", "user", "assistant", "tool", "assistant"]
    assert [m.role for m in llm.sent[-1]][-1] is Role.TOOL


@pytest.mark.anyio
async def test_per_call_overrides(llm: FakeLLM) -> None:
    await llm.send_user_message("x", temperature=0.0, stop="END", system_message="Just once.")
    config = llm.calls[0].config
    assert (config.temperature, config.stop, config.system_message) == (0.0, ("END",), "Just once.")
    assert llm.sent[0][0] == Message.system("Just once.")
    assert llm.messages[0] == Message.system("You are terse.")  # not kept
    await llm.send_user_message("y", stop=["a", "b"], options={"num_ctx": 8192})
    assert llm.calls[1].config.stop == ("a", "b")
    assert llm.calls[1].config.options == {"num_ctx": 8192}
    assert llm.calls[1].config.temperature is None
    with pytest.raises(TypeError, match=r"unknown option.*tempreature.*options="):
        await llm.send_user_message("z", tempreature=1)


@pytest.mark.anyio
async def test_complete_is_stateless(llm: FakeLLM) -> None:
    response = await llm.complete([Message.user("a"), {"role": "assistant", "content": "b"}])
    assert response.content == "answer 1"
    assert [m.content for m in llm.sent[0]] == ["You are terse.", "a", "b"]
    await llm.complete([{"role": "system", "content": "mine"}, {"role": "user", "content": "c"}])
    assert [m.content for m in llm.sent[1]] == ["mine", "c"]
    async with llm.stream([Message.user("d")]) as stream:
        text = "".join([chunk.content async for chunk in stream])
    assert text == "answer 3" and stream.response is not None
    assert _roles(llm) == ["system"]


@pytest.mark.anyio
async def test_closed_conversation_refuses_to_send(llm: FakeLLM) -> None:
    async with llm:
        await llm.send_user_message("x")
    with pytest.raises(LLMFactoryError, match="closed"):
        await llm.send_user_message("y")


# --------------------------------------------------------------------------- streams


@pytest.mark.anyio
async def test_stream_commits_before_the_last_chunk(llm: FakeLLM) -> None:
    seen: list[tuple[str, bool, int]] = []
    async with llm.stream_user_message("hello") as stream:
        assert stream.call.stream and not llm.calls  # nothing sent before iteration
        async for chunk in stream:
            seen.append((chunk.content, chunk.is_complete, len(llm.messages)))
    assert seen == [("ans", False, 1), ("wer ", False, 1), ("1", False, 1), ("", True, 3)]
    assert stream.response is not None and stream.response.content == "answer 1"
    assert stream.response.time_to_first_token_ms is not None
    assert llm.messages[-1].content == "answer 1"


@pytest.mark.anyio
async def test_stream_assembles_tool_calls(llm: FakeLLM) -> None:
    llm.behaviour = "tools"
    async with llm.stream_user_message("x") as stream:
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].response is not None
    assert chunks[-1].response.tool_calls == (ToolCall(id="call_1", name="f", arguments={"a": 1}),)
    assert llm.messages[-1].tool_calls == chunks[-1].response.tool_calls


@pytest.mark.anyio
async def test_stream_break_leaves_history_and_closes_at_once(llm: FakeLLM) -> None:
    before = llm.messages
    async with llm.stream_user_message("hello") as stream:
        async for _ in stream:
            break
    assert llm.streams_closed == 1 and llm.messages == before
    await llm.send_user_message("again")  # not busy
    assert len(llm.messages) == 3


@pytest.mark.anyio
async def test_abandoned_stream_is_closed_soon_and_frees_the_conversation(llm: FakeLLM) -> None:
    before = llm.messages
    async for _ in llm.stream_user_message("hello"):
        break
    gc.collect()
    await llm.send_user_message("again")  # the abandoned stream released the conversation
    with anyio.fail_after(2):
        while llm.streams_closed < 1:  # noqa: ASYNC110  (closed by a task of the loop)
            await anyio.sleep(0.005)
    assert llm.messages == [*before, Message.user("again"), llm.messages[-1]]


@pytest.mark.anyio
async def test_open_stream_blocks_the_next_send(llm: FakeLLM) -> None:
    stream = llm.stream_user_message("hello")
    await stream.__anext__()
    with pytest.raises(ConversationBusyError):
        await llm.send_user_message("again")
    await stream.aclose()
    await llm.send_user_message("again")


# --------------------------------------------------------------------------- cost


@pytest.mark.anyio
async def test_cost_from_prices_and_overrides() -> None:
    cloud = _model(identifier="cloudy", name="cloudy", runtime="api", host=None,
                   input_price_per_million=2.0, output_price_per_million=10.0)
    fake = FakeLLM(model=cloud)
    response = await fake.send_user_message("x")  # 10 prompt, 3 completion tokens
    assert response.usage is not None and response.usage.cost_usd == pytest.approx(50e-6)
    response = await fake.send_user_message("y", pricing=PriceOverride(output=0.0))
    assert response.usage is not None and response.usage.cost_usd == pytest.approx(60e-6)
    unpriced = FakeLLM(model=_model(identifier="u", name="u", runtime="api", host=None))
    response = await unpriced.send_user_message("x")
    assert response.usage is not None and response.usage.cost_usd is None


# --------------------------------------------------------------------------- extension seams


class Refusing(FakeLLM):
    async def _before_invoke(self, call: Call) -> None:
        if "secret" in call.messages[-1].content:
            raise ExtensionError("refused", extension="guard", hook="before_invoke")
        call.messages.append(Message.user("(rewritten)"))


class Observing(FakeLLM):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def _on_chunk(self, call: Call, chunk: ChunkResponse) -> ChunkResponse:
        self.events.append(f"chunk:{chunk.content}")
        return chunk

    async def _after_invoke(self, call: Call, response: CompleteResponse) -> None:
        self.events.append(f"after:{response.content}:{len(self.messages)}")

    async def _on_error(self, call: Call, error: Exception) -> None:
        self.events.append(f"error:{type(error).__name__}")


@pytest.mark.anyio
async def test_before_invoke_may_rewrite_or_refuse() -> None:
    fake = Refusing()
    with pytest.raises(ExtensionError):
        await fake.send_user_message("the secret")
    assert fake.calls == [] and fake.messages == []
    await fake.send_user_message("hello")
    assert [m.content for m in fake.sent[0]] == ["hello", "(rewritten)"]
    assert [m.content for m in fake.messages] == ["hello", "answer 1"]


@pytest.mark.anyio
async def test_seams_see_chunks_response_and_errors() -> None:
    fake = Observing()
    async with fake.stream_user_message("x") as stream:
        [_ async for _ in stream]
    assert fake.events == ["after:answer 1:0"]  # no extensions: on_chunk is skipped
    fake.extensions.append(object())
    async with fake.stream_user_message("x") as stream:
        [_ async for _ in stream]
    assert fake.events[1:] == ["chunk:ans", "chunk:wer ", "chunk:2", "after:answer 2:2", "chunk:"]
    fake.behaviour = "fail"
    with pytest.raises(LLMConnectionError):
        await fake.send_user_message("x")
    assert fake.events[-1] == "error:LLMConnectionError"


# --------------------------------------------------------------------------- sync facade


def test_sync_facade_runs_the_same_code() -> None:
    fake = FakeLLM(LLMConfig(system_message="S"))
    try:
        assert fake.send_user_message_sync("one").content == "answer 1"
        with fake.stream_user_message_sync("two") as stream:
            text = "".join(chunk.content for chunk in stream)
        assert text == "answer 2" and stream.response is not None
        assert _roles(fake) == ["system", "user", "assistant", "user", "assistant"]
        assert fake.complete_sync([{"role": "user", "content": "x"}]).content == "answer 3"
        with fake.stream_sync([Message.user("y")]) as stateless:
            assert [c.content for c in stateless][-1] == ""
        fake.behaviour = "fail"
        with pytest.raises(LLMConnectionError):
            fake.send_user_message_sync("three")
        with pytest.raises(LLMConnectionError), fake.stream_user_message_sync("four") as failing:
            list(failing)
        assert len(fake.messages) == 5
        assert shared_portal_running()
    finally:
        fake.close()
    assert not shared_portal_running()


def test_sync_stream_closed_early_cancels_the_call() -> None:
    with FakeLLM() as fake:
        fake.behaviour = "hang"
        with fake.stream_user_message_sync("x") as stream:
            assert next(stream).content == "ans"
            assert next(stream).content == "wer "
            assert fake.waiting.wait(5)
        assert fake.cancelled == 1 and fake.streams_closed == 1
        assert fake.messages == []
        with pytest.raises(StopIteration):
            next(stream)
        fake.behaviour = "ok"
        assert fake.send_user_message_sync("y").content == "answer 2"
    assert not shared_portal_running()


@pytest.mark.skipif(os.name != "posix", reason="needs SIGINT")
@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals go to main"
)
def test_sync_ctrl_c_cancels_the_call_and_keeps_history() -> None:
    with FakeLLM() as fake:
        fake.send_user_message_sync("one")
        before = fake.messages
        fake.behaviour = "hang"

        main = threading.main_thread().ident
        assert main is not None

        def interrupt() -> None:  # Ctrl-C, delivered to the main thread
            if fake.waiting.wait(5):
                signal.pthread_kill(main, signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            fake.send_user_message_sync("two")
        assert time.monotonic() - started < 5
        assert fake.cancelled == 1 and fake.messages == before
        fake.behaviour = "ok"
        assert fake.send_user_message_sync("three").content == "answer 3"


def test_dropped_sync_stream_is_cancelled() -> None:
    with FakeLLM() as fake:
        fake.behaviour = "hang"
        for chunk in fake.stream_user_message_sync("x"):
            assert chunk.content == "ans"
            break
        assert fake.waiting.wait(5)
        deadline = time.monotonic() + 5
        while fake.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.cancelled == 1 and fake.messages == []


def test_two_conversations_share_one_portal() -> None:
    a, b = FakeLLM(), FakeLLM()
    a.send_user_message_sync("x")
    b.send_user_message_sync("y")
    assert a._portal is b._portal
    a.close()
    assert shared_portal_running()
    b.close()
    assert not shared_portal_running()
    a.close()  # idempotent


def test_dropped_conversation_releases_the_portal() -> None:
    fake = FakeLLM()
    fake.send_user_message_sync("x")
    assert shared_portal_running()
    del fake
    gc.collect()
    assert not shared_portal_running()
