"""LoggingExtension: exactly one structured record per call, content only when asked."""

from __future__ import annotations

import logging

import pytest

from llmfactory import LLMAPIError, LLMConfig, LLMFactory
from llmfactory.extensions import LoggingExtension
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.extensions import ScriptedLLM
from tests.servers import Fault, OllamaServer

pytestmark = pytest.mark.anyio


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llmfactory.calls"]


@pytest.mark.usefixtures("clients")
async def test_one_record_per_call_without_content(
    factory: LLMFactory, ollama_server: OllamaServer, caplog: pytest.LogCaptureFixture
) -> None:
    factory.register_extension(LoggingExtension)
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}", LLMConfig(retries=0))
    ollama_server.script_reply("secret answer", prompt_tokens=12, completion_tokens=4, times=2)
    with caplog.at_level(logging.INFO, logger="llmfactory.calls"):
        await llm.send_user_message("my secret question")
        await collect(llm.stream_user_message("again"))
        ollama_server.push_fault(Fault.http_error(400), path="/api/chat")
        with pytest.raises(LLMAPIError):
            await llm.send_user_message("fails")
    ok1, ok2, failed = _records(caplog)
    fields = ok1.llm_call  # type: ignore[attr-defined]
    assert fields["identifier"] == llm.identifier and fields["service"] == "ollama"
    assert (fields["ok"], fields["prompt_tokens"], fields["completion_tokens"]) == (True, 12, 4)
    assert fields["stream"] is False and ok2.llm_call["stream"] is True  # type: ignore[attr-defined]
    assert ok1.levelno == logging.INFO and "12+4 tokens" in ok1.getMessage()
    assert failed.levelno == logging.WARNING
    assert failed.llm_call["ok"] is False  # type: ignore[attr-defined]
    assert failed.llm_call["status"] == 400  # type: ignore[attr-defined]
    text = " ".join(f"{r.getMessage()} {r.llm_call}" for r in _records(caplog))  # type: ignore[attr-defined]
    assert "secret" not in text


async def test_content_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    llm = ScriptedLLM(reply="the reply")
    llm.register_extension(LoggingExtension(logger="custom.calls", include_content=True,
                                            level=logging.DEBUG))
    with caplog.at_level(logging.DEBUG, logger="custom.calls"):
        await llm.send_user_message("the question")
    (record,) = [r for r in caplog.records if r.name == "custom.calls"]
    assert record.levelno == logging.DEBUG
    assert record.llm_call["messages"] == [  # type: ignore[attr-defined]
        {"role": "user", "content": "the question"}]
    assert record.llm_call["reply"] == "the reply"  # type: ignore[attr-defined]
    assert record.llm_call["prompt_tokens"] is None  # type: ignore[attr-defined]


async def test_nothing_is_built_when_the_level_is_off(caplog: pytest.LogCaptureFixture) -> None:
    llm = ScriptedLLM()
    llm.register_extension(LoggingExtension())
    with caplog.at_level(logging.ERROR, logger="llmfactory.calls"):
        await llm.send_user_message("hi")
    assert _records(caplog) == []
