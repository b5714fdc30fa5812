"""LLMExtension and its dispatch: order, sync and async hooks, refusal, observing failures,
critical extensions, registration, factory defaults, the config file and entry points."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmfactory import (
    ChunkResponse,
    CompleteResponse,
    ConfigError,
    ExtensionError,
    LLMFactory,
    Message,
)
from llmfactory.base_llm import BaseLLM, Call
from llmfactory.extensions import (
    LLMExtension,
    LoggingExtension,
    TokenUsageTrackingExtension,
    extension_names,
    load_extension,
)
from llmfactory.extensions import base as ext_base
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.extensions import ScriptedLLM
from tests.servers import OllamaServer

anyio_mark = pytest.mark.anyio


class Recorder(LLMExtension):
    """Records every hook it sees in a shared list, as ``"<tag>:<hook>"``."""

    def __init__(self, tag: str, events: list[str]) -> None:
        self.tag = tag
        self.events = events

    def on_register(self, llm: BaseLLM) -> None:
        self.events.append(f"{self.tag}:register")

    def on_unregister(self, llm: BaseLLM) -> None:
        self.events.append(f"{self.tag}:unregister")

    def before_invoke(self, call: Call) -> None:
        self.events.append(f"{self.tag}:before")

    def on_chunk(self, call: Call, chunk: ChunkResponse) -> None:
        self.events.append(f"{self.tag}:chunk")

    def after_invoke(self, call: Call, response: CompleteResponse) -> None:
        self.events.append(f"{self.tag}:after")

    def on_error(self, call: Call, error: Exception) -> None:
        self.events.append(f"{self.tag}:error:{type(error).__name__}")

    def on_close(self, llm: BaseLLM) -> None:
        self.events.append(f"{self.tag}:close")


class AsyncRecorder(Recorder):
    """The same hooks, as coroutines."""

    async def on_register(self, llm: BaseLLM) -> None:  # type: ignore[override]
        self.events.append(f"{self.tag}:register")

    async def before_invoke(self, call: Call) -> None:  # type: ignore[override]
        self.events.append(f"{self.tag}:before")

    async def on_chunk(self, call: Call, chunk: ChunkResponse) -> None:  # type: ignore[override]
        self.events.append(f"{self.tag}:chunk")

    async def after_invoke(  # type: ignore[override]
        self, call: Call, response: CompleteResponse
    ) -> None:
        self.events.append(f"{self.tag}:after")

    async def on_error(self, call: Call, error: Exception) -> None:  # type: ignore[override]
        self.events.append(f"{self.tag}:error:{type(error).__name__}")

    async def on_close(self, llm: BaseLLM) -> None:  # type: ignore[override]
        self.events.append(f"{self.tag}:close")


@pytest.fixture(autouse=True)
def _fresh_extension_names() -> Iterator[None]:
    ext_base._forget_loaded()
    yield
    ext_base._forget_loaded()


def _ollama(factory: LLMFactory, server: OllamaServer) -> BaseLLM:
    return factory.create_llm(f"llama3.2:latest:ollama@{server.host}")


# --------------------------------------------------------------------------- dispatch


@anyio_mark
@pytest.mark.usefixtures("clients")
async def test_hooks_run_in_registration_order_sync_and_async(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    events: list[str] = []
    llm = _ollama(factory, ollama_server)
    llm.register_extension(Recorder("a", events))
    llm.register_extension(AsyncRecorder("b", events))
    assert events == ["a:register"]  # an async on_register runs at the next call
    ollama_server.script_reply("one two", times=2)
    await llm.send_user_message("hi")
    assert events[1:] == ["b:register", "a:before", "b:before", "a:after", "b:after"]
    del events[:]
    text, chunks = await collect(llm.stream_user_message("again"))
    assert text == "one two"
    per_chunk = ["a:chunk", "b:chunk"]
    assert events == ["a:before", "b:before", *per_chunk * (len(chunks) - 1),
                      "a:after", "b:after", *per_chunk]
    del events[:]
    bad = factory.create_llm(f"nope:1b:ollama@{ollama_server.host}")
    bad.register_extension(Recorder("a", events))
    bad.register_extension(AsyncRecorder("b", events))
    with pytest.raises(Exception, match="not found"):
        await bad.send_user_message("x")
    assert events[-2:] == ["a:error:LLMAPIError", "b:error:LLMAPIError"]
    del events[:]
    await llm.aclose()
    assert events == ["a:close", "b:close"]


@anyio_mark
@pytest.mark.usefixtures("clients")
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_refusal_stops_the_call_before_any_network_traffic(
    factory: LLMFactory, ollama_server: OllamaServer, streamed: bool
) -> None:
    class Guard(LLMExtension):
        def before_invoke(self, call: Call) -> None:
            if "password" in call.messages[-1].content:
                raise PermissionError("no passwords, please")

    class Polite(LLMExtension):
        async def before_invoke(self, call: Call) -> None:
            if "rude" in call.messages[-1].content:
                self.refuse("be polite")

    events: list[str] = []
    llm = _ollama(factory, ollama_server)
    await llm.send_user_message("hello")
    before = llm.messages
    llm.register_extension(Guard)
    llm.register_extension(Polite())
    llm.register_extension(Recorder("r", events))
    for text, error, match in (("my password is x", PermissionError, "no passwords"),
                               ("rude words", ExtensionError, "be polite")):
        with pytest.raises(error, match=match) as info:
            if streamed:
                await collect(llm.stream_user_message(text))
            else:
                await llm.send_user_message(text)
        assert llm.messages == before
        assert ollama_server.count("/api/chat") == 1  # only the first, unguarded call
        assert events[-1] == f"r:error:{error.__name__}"  # everyone hears of it
        assert "r:before" not in events  # the refusal came first
    assert isinstance(info.value, ExtensionError) and info.value.extension == "Polite"
    assert info.value.hook == "before_invoke"
    usage = llm.get_extension(TokenUsageTrackingExtension)
    assert usage is not None and usage.last is not None
    assert (usage.last.ok, usage.last.error_kind) == (False, "ExtensionError")


@anyio_mark
@pytest.mark.usefixtures("clients")
async def test_before_invoke_may_rewrite_messages_and_options(
    factory: LLMFactory, ollama_server: OllamaServer
) -> None:
    from dataclasses import replace

    class Rewriter(LLMExtension):
        def before_invoke(self, call: Call) -> None:
            call.messages.insert(0, Message.system("Be brief."))
            call.config = replace(call.config, temperature=0.0)

    llm = _ollama(factory, ollama_server)
    llm.register_extension(Rewriter)
    await llm.send_user_message("hi")
    request = ollama_server.requests_to("/api/chat")[0].json
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request["options"]["temperature"] == 0.0
    assert [m.role.value for m in llm.messages] == ["user", "assistant"]  # history untouched


@anyio_mark
async def test_observing_failures_are_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(LLMExtension):
        def on_chunk(self, call: Call, chunk: ChunkResponse) -> None:
            raise ValueError("chunk bug")

        async def after_invoke(  # type: ignore[override]
            self, call: Call, response: CompleteResponse
        ) -> None:
            raise ValueError("after bug")

        def on_error(self, call: Call, error: Exception) -> None:
            raise ValueError("error bug")

    events: list[str] = []
    llm = ScriptedLLM(reply="fine thanks")
    llm.register_extension(Broken())
    llm.register_extension(Recorder("r", events))
    with caplog.at_level(logging.WARNING, logger="llmfactory.extensions"):
        assert (await llm.send_user_message("hi")).content == "fine thanks"
        text, _ = await collect(llm.stream_user_message("hi"))
    assert text == "fine thanks" and len(llm.messages) == 4
    assert events.count("r:after") == 2 and "r:chunk" in events  # the others still run
    messages = [r.getMessage() for r in caplog.records]
    assert any("'Broken' failed in after_invoke: ValueError: after bug" in m for m in messages)
    assert any("failed in on_chunk" in m for m in messages)
    wrapped = caplog.records[0].exc_info
    assert wrapped is not None and isinstance(wrapped[1], ValueError)


@anyio_mark
async def test_a_critical_extension_fails_the_call() -> None:
    class Auditor(LLMExtension):
        critical = True

        def after_invoke(self, call: Call, response: CompleteResponse) -> None:
            raise OSError("audit log unavailable")

    events: list[str] = []
    llm = ScriptedLLM()
    llm.register_extension(Auditor())
    llm.register_extension(Recorder("r", events))
    with pytest.raises(ExtensionError, match="audit log unavailable") as info:
        await llm.send_user_message("hi")
    assert isinstance(info.value.__cause__, OSError)
    assert (info.value.extension, info.value.hook) == ("Auditor", "after_invoke")
    assert llm.messages == [] and events[-1] == "r:error:ExtensionError"


@anyio_mark
async def test_hooks_may_replace_chunks_and_the_response() -> None:
    class Shout(LLMExtension):
        def on_chunk(self, call: Call, chunk: ChunkResponse) -> ChunkResponse:
            return ChunkResponse(content=chunk.content.upper(), is_complete=chunk.is_complete,
                                 usage=chunk.usage, response=chunk.response,
                                 finish_reason=chunk.finish_reason)

        async def after_invoke(  # type: ignore[override]
            self, call: Call, response: CompleteResponse
        ) -> CompleteResponse:
            from dataclasses import replace

            return replace(response, content=response.content.upper())

    llm = ScriptedLLM(reply="quiet words")
    llm.register_extension(Shout)
    assert (await llm.send_user_message("hi")).content == "QUIET WORDS"
    text, chunks = await collect(llm.stream_user_message("hi"))
    assert text == "QUIET WORDS" and chunks[-1].response is not None
    assert chunks[-1].response.content == "QUIET WORDS"
    assert [m.content for m in llm.messages][1::2] == ["QUIET WORDS", "QUIET WORDS"]


def test_only_extensions_overriding_on_chunk_are_called_per_chunk(factory: LLMFactory) -> None:
    llm = factory.create_llm("llama3.2:ollama@127.0.0.1:1")
    assert [type(e) for e in llm.extensions] == [TokenUsageTrackingExtension]
    assert not llm._wants_chunks()  # the default extensions cost nothing per chunk
    llm.register_extension(LoggingExtension())
    assert not llm._wants_chunks()

    class Duck:  # no base class: any object with hooks works
        def on_chunk(self, call: Call, chunk: ChunkResponse) -> None:
            pass

    duck = llm.register_extension(Duck())
    assert llm._wants_chunks()
    assert llm.unregister_extension(duck) and not llm._wants_chunks()


# --------------------------------------------------------------------------- registration


@anyio_mark
async def test_register_unregister_and_get() -> None:
    events: list[str] = []
    llm = ScriptedLLM()
    recorder = llm.register_extension(Recorder("a", events))
    assert llm.register_extension(recorder) is recorder and llm.extensions == [recorder]
    logging_ext = llm.register_extension("logging")
    assert isinstance(logging_ext, LoggingExtension)
    assert llm.get_extension(Recorder) is recorder and llm.get_extension("logging") is logging_ext
    assert llm.get_extension(TokenUsageTrackingExtension) is None
    assert llm.usage.calls == 0  # no tracker on a bare BaseLLM: zeros

    first = llm.register_extension(TokenUsageTrackingExtension)
    second = llm.register_extension(TokenUsageTrackingExtension())  # unique: replaces
    assert second is not first and llm.extensions == [recorder, logging_ext, second]

    assert llm.unregister_extension(Recorder) and events == ["a:register", "a:unregister"]
    assert not llm.unregister_extension(Recorder)
    assert llm.unregister_extension("logging") and llm.extensions == [second]

    class NeedsArgs(LLMExtension):
        def __init__(self, level: int) -> None:
            self.level = level

    with pytest.raises(ExtensionError, match="register an instance instead"):
        llm.register_extension(NeedsArgs)

    class BadStart(LLMExtension):
        def on_register(self, llm: BaseLLM) -> None:
            raise RuntimeError("cannot start")

    with pytest.raises(ExtensionError, match="cannot start"):
        llm.register_extension(BadStart)
    assert llm.extensions == [second]
    await llm.send_user_message("hi")
    assert llm.usage.calls == 1 and second.totals.calls == 1


def test_sync_close_runs_sync_and_async_on_close_hooks() -> None:
    events: list[str] = []
    llm = ScriptedLLM()
    llm.register_extension(Recorder("a", events))
    llm.register_extension(AsyncRecorder("b", events))
    llm.close()
    assert events == ["a:register", "b:register", "a:close", "b:close"]
    llm.close()
    assert events.count("a:close") == 1


def test_factory_defaults_apply_by_runtime_and_provider(factory: LLMFactory) -> None:
    shared = LoggingExtension()
    factory.register_extension(shared)

    class OnlyLMStudio(LLMExtension):
        pass

    class OnlyMeta(LLMExtension):
        pass

    factory.register_extension(OnlyLMStudio, runtimes="lmstudio")
    factory.register_extension(OnlyMeta, providers=["meta"])
    llama = factory.create_llm("llama3.2:ollama@127.0.0.1:1")
    qwen = factory.create_llm("qwen/qwen3-4b:lmstudio@127.0.0.1:2")
    assert [type(e).__name__ for e in llama.extensions] == [
        "TokenUsageTrackingExtension", "LoggingExtension", "OnlyMeta"]
    assert [type(e).__name__ for e in qwen.extensions] == [
        "TokenUsageTrackingExtension", "LoggingExtension", "OnlyLMStudio"]
    assert llama.extensions[1] is qwen.extensions[1] is shared  # an instance is shared
    assert factory.unregister_extension(OnlyMeta)
    assert [type(e).__name__ for e in factory.create_llm("llama3.2:ollama@h:1").extensions] == [
        "TokenUsageTrackingExtension", "LoggingExtension"]
    with pytest.raises(ConfigError, match="unknown extension 'nope'"):
        factory.register_extension("nope")


def test_config_file_names_extensions_and_unknown_names_are_clear(home: Path) -> None:
    (home / "config.toml").write_text('[extensions]\nenabled = ["logging", "token_usage"]\n')
    with LLMFactory(database_url="sqlite://", discover=False) as factory:
        llm = factory.create_llm("llama3.2:ollama@127.0.0.1:1")
        assert [type(e) for e in llm.extensions] == [TokenUsageTrackingExtension,
                                                     LoggingExtension]
    (home / "config.toml").write_text('[extensions]\nenabled = ["logging", "no-such-ext"]\n')
    with LLMFactory(database_url="sqlite://", discover=False) as factory, pytest.raises(
        ConfigError, match=r"unknown extension 'no-such-ext'; installed: .*logging.*rate_limit"
    ):
        factory.create_llm("llama3.2:ollama@127.0.0.1:1")
    assert {"logging", "rate_limit", "redaction", "token_usage"} <= set(extension_names())


# --------------------------------------------------------------------------- entry points

_PACKAGE = '''
"""A third-party extension package, as a user would publish it."""

from pathlib import Path

from llmfactory.extensions import LLMExtension

CALLS: list[str] = []


class Stamp(LLMExtension):
    """Records every successful call; writes it to $STAMP_FILE when that is set."""

    name = "stamp"

    def after_invoke(self, call, response):
        import os

        CALLS.append(response.content)
        path = os.environ.get("STAMP_FILE")
        if path:
            with open(path, "a") as f:
                f.write(call.llm.identifier + "\\n")
'''


def make_distribution(root: Path, module: str = "llmf_stamp_ext") -> Path:
    """A throwaway installed distribution declaring ``stamp = <module>:Stamp``."""
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(textwrap.dedent(_PACKAGE))
    info = root / f"{module.replace('_', '-')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[llmfactory.extensions]\nstamp = {module}:Stamp\n")
    return root


@anyio_mark
@pytest.mark.usefixtures("clients")
async def test_an_installed_package_is_discovered_through_its_entry_point(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ollama_server: OllamaServer
) -> None:
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path / "site")))
    monkeypatch.delitem(sys.modules, "llmf_stamp_ext", raising=False)
    try:
        assert "stamp" in extension_names(rescan=True)
        (home / "config.toml").write_text('[extensions]\nenabled = ["stamp"]\n')
        with LLMFactory(database_url="sqlite://", discover=False) as factory:
            llm = _ollama(factory, ollama_server)
            stamp = llm.get_extension("stamp")
            assert stamp is not None and type(stamp) is load_extension("stamp")
            ollama_server.script_reply("stamped")
            await llm.send_user_message("hi")
        assert sys.modules["llmf_stamp_ext"].CALLS == ["stamped"]
    finally:
        sys.modules.pop("llmf_stamp_ext", None)


def test_a_package_named_in_the_config_file_works_from_the_cli(
    cli_env: dict[str, str], tmp_path: Path, home: Path, ollama_server: OllamaServer
) -> None:
    site = make_distribution(tmp_path / "site")
    stamps = tmp_path / "stamps.txt"
    (home / "config.toml").write_text('[extensions]\nenabled = ["stamp"]\n')
    path = [str(site), *filter(None, [cli_env.get("PYTHONPATH")])]
    env = {**cli_env, "LLMFACTORY_NO_DISCOVER": "1", "STAMP_FILE": str(stamps),
           "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run(
        [sys.executable, "-m", "llmfactory", "prompt", f"llama3.2:ollama@{ollama_server.host}",
         "hello"], capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert stamps.read_text() == f"llama3.2:latest:ollama@{ollama_server.host}\n"


def test_extension_hooks_on_a_plain_object_are_found() -> None:
    class Plain:
        name = "plain"

        def after_invoke(self, call: Call, response: CompleteResponse) -> None:
            pass

    plan = ext_base._Plan((Plain(), object(), LoggingExtension()))
    assert next(e for e, _, _ in plan.after).name == "plain"
    assert len(plan.after) == 2 and plan.chunk == () and plan.before == ()
    assert not any(is_async for _, _, is_async in plan.after)
