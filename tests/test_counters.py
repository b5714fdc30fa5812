"""Per-conversation counters (request_count, last_response) and reset_session()."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmfactory import ExtensionError, LLMAPIError, LLMExtension, LLMFactory
from llmfactory.api.transport import close_client, get_client
from llmfactory.base_llm import Call
from tests.api.chat_support import clients, collect  # noqa: F401  (clients: a fixture)
from tests.servers import Fault, OllamaServer


class Refuse(LLMExtension):
    def before_invoke(self, call: Call) -> None:
        if call.messages and call.messages[-1].content == "forbidden":
            self.refuse("no")


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_request_count_and_last_response(factory: LLMFactory,
                                               ollama_server: OllamaServer) -> None:
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    llm.register_extension(Refuse())
    assert llm.request_count == 0 and llm.last_response is None
    first = await llm.send_user_message("one")
    assert llm.request_count == 1 and llm.last_response is first
    _, chunks = await collect(llm.stream_user_message("two"))
    assert llm.request_count == 2 and llm.last_response is chunks[-1].response
    stateless = await llm.complete([{"role": "user", "content": "three"}])
    assert llm.request_count == 3 and llm.last_response is stateless
    ollama_server.push_fault(Fault.http_error(500), path="/api/chat")
    with pytest.raises(LLMAPIError):
        await llm.send_user_message("four", retries=0)
    assert llm.request_count == 4 and llm.last_response is stateless  # failures count, keep
    with pytest.raises(ExtensionError):
        await llm.send_user_message("forbidden")
    assert llm.request_count == 4  # refused before the network: no request
    assert first.identifier == llm.identifier


@pytest.mark.anyio
@pytest.mark.usefixtures("clients")
async def test_reset_session_drops_this_hosts_pooled_client(
    factory: LLMFactory, ollama_server: OllamaServer,
    start_server: Callable[[OllamaServer], OllamaServer],
) -> None:
    other = start_server(OllamaServer())
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    await llm.send_user_message("Hi")
    mine, theirs = get_client(ollama_server.url), get_client(other.url)
    await llm.reset_session()
    assert mine.is_closed and not theirs.is_closed
    assert get_client(ollama_server.url) is not mine
    assert (await llm.send_user_message("Again")).content  # reconnects
    assert [m.content for m in llm.messages][::2] == ["Hi", "Again"]  # history kept
    assert llm.request_count == 2
    assert not await close_client("http://127.0.0.1:1")  # no client there: nothing to do


def test_sync_twins(factory: LLMFactory, ollama_server: OllamaServer) -> None:
    llm = factory.create_llm(f"llama3.2:ollama@{ollama_server.host}")
    try:
        llm.send_user_message_sync("Hi")
        llm.reset_session_sync()
        assert llm.send_user_message_sync("Again").content
        assert llm.request_count == 2 and llm.last_response is not None
        assert llm.health_check_sync().ok
    finally:
        llm.close()
