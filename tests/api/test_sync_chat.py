"""The sync facade against every wire protocol: same answers, same history rules."""

from __future__ import annotations

import pytest

from llmfactory import LLMConfig, LLMConnectionError, LLMFactory, Message
from llmfactory.base_llm import BaseLLM
from llmfactory.sync import shared_portal_running
from tests.servers import AnthropicServer, Fault, OllamaServer, OpenAICompatServer
from tests.servers.base import LoopbackServer
from tests.servers.fixtures import ANTHROPIC_TEST_KEY


def _conversation(kind: str, factory: LLMFactory, request: pytest.FixtureRequest
                  ) -> tuple[BaseLLM, LoopbackServer]:
    if kind == "ollama":
        ollama: OllamaServer = request.getfixturevalue("ollama_server")
        return factory.create_llm(f"llama3.2:ollama@{ollama.host}"), ollama
    if kind == "lmstudio":
        lmstudio: OpenAICompatServer = request.getfixturevalue("lmstudio_server")
        return factory.create_llm(f"qwen/qwen3-4b:lmstudio@{lmstudio.host}"), lmstudio
    anthropic: AnthropicServer = request.getfixturevalue("anthropic_server")
    config = LLMConfig(api_key=ANTHROPIC_TEST_KEY, base_url=anthropic.url)
    return factory.create_llm("claude-haiku-4-5", config), anthropic


@pytest.mark.parametrize("kind", ["ollama", "lmstudio", "anthropic"])
def test_sync_facade(kind: str, factory: LLMFactory, request: pytest.FixtureRequest) -> None:
    llm, server = _conversation(kind, factory, request)
    with llm:
        llm.configure_system_prompt("Be brief.")
        assert llm.send_user_message_sync("one").content == "Echo: one"
        with llm.stream_user_message_sync("two") as stream:
            pieces = [chunk.content for chunk in stream]
        assert "".join(pieces) == "Echo: two" and len(pieces) > 2
        assert stream.response is not None and stream.response.usage is not None
        assert llm.complete_sync([Message.user("three")]).content == "Echo: three"
        assert [m.role.value for m in llm.messages] == [
            "system", "user", "assistant", "user", "assistant"
        ]
        server.push_fault(Fault.cut_after(2))
        with pytest.raises(LLMConnectionError), llm.stream_user_message_sync("four") as broken:
            list(broken)
        with llm.stream_user_message_sync("five") as early:
            next(early)  # stop after the first chunk
        assert len(llm.messages) == 5
    assert not shared_portal_running()
