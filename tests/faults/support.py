"""What the fault corpus shares: the wire protocols, how to talk to each, and clean-state checks.

A :class:`Protocol` knows how to start a loopback server of its kind, the path
of its chat endpoint, how to build a conversation with it (through the factory,
as a user does) and what a stream cut inside a frame looks like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from llmfactory import LLMConfig, LLMFactory
from llmfactory.base_llm import BaseLLM
from tests.api.chat_support import busy_connections, collect, pool_connections
from tests.servers import AnthropicServer, LoopbackServer, OllamaServer, OpenAICompatServer

__all__ = [
    "ANTHROPIC_KEY",
    "MODES",
    "OPENAI_KEY",
    "PROTOCOLS",
    "Protocol",
    "open_connections",
    "run_call",
    "settle_pool",
]

OPENAI_KEY = "sk-faults-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-faults-0123456789"

MODES = ("unary", "stream")


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """One wire protocol: its server, its chat path and how to build a conversation with it.

    ``address`` given to :attr:`llm` is ``host:port`` (the server's, or a refused
    or black-holed one); ``truncated`` is a body cut inside a frame, with its
    content type.
    """

    name: str
    server: Callable[[], LoopbackServer]
    chat_path: str
    llm: Callable[[LLMFactory, str, LLMConfig], BaseLLM]
    truncated: bytes
    stream_type: str


def _ollama(factory: LLMFactory, address: str, config: LLMConfig) -> BaseLLM:
    return factory.create_llm(f"llama3.2:latest:ollama@{address}", config)


def _openai(factory: LLMFactory, address: str, config: LLMConfig) -> BaseLLM:
    config = config.merged(LLMConfig(base_url=f"http://{address}/v1", api_key=OPENAI_KEY))
    return factory.create_llm("gpt-4o-mini", config)


def _anthropic(factory: LLMFactory, address: str, config: LLMConfig) -> BaseLLM:
    config = config.merged(LLMConfig(base_url=f"http://{address}", api_key=ANTHROPIC_KEY))
    return factory.create_llm("claude-sonnet-4-5", config)


PROTOCOLS: dict[str, Protocol] = {
    "ollama": Protocol(
        name="ollama",
        server=OllamaServer,
        chat_path="/api/chat",
        llm=_ollama,
        truncated=b'{"model":"llama3.2:latest","message":{"role":"assistant","content":"He'
        b'llo"},"done":false}\n{"model":"llama3.2:latest","message":{"role":"assist',
        stream_type="application/x-ndjson",
    ),
    "openai": Protocol(
        name="openai",
        server=lambda: OpenAICompatServer("openai", api_key=OPENAI_KEY),
        chat_path="/v1/chat/completions",
        llm=_openai,
        truncated=b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
        b'"delta":{"content":"Hello"},"finish_reason":null}]}\n\ndata: {"id":"c1","obj',
        stream_type="text/event-stream",
    ),
    "anthropic": Protocol(
        name="anthropic",
        server=lambda: AnthropicServer(api_key=ANTHROPIC_KEY),
        chat_path="/v1/messages",
        llm=_anthropic,
        truncated=b'event: message_start\ndata: {"type":"message_start","message":{"model":'
        b'"claude-sonnet-4-5","usage":{"input_tokens":3}}}\n\nevent: content_block_delta\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_d',
        stream_type="text/event-stream",
    ),
}


async def run_call(llm: BaseLLM, mode: str, text: str, **overrides: Any) -> str:
    """Send ``text`` as a unary call or a stream read to its end; return the answer's text."""
    if mode == "unary":
        return (await llm.send_user_message(text, **overrides)).content
    answer, _ = await collect(llm.stream_user_message(text, **overrides))
    return answer


def open_connections(url: str) -> int:
    """Connections the pooled client for ``url`` holds that are not closed."""
    return sum(1 for c in pool_connections(url) if not c.is_closed())


async def settle_pool(url: str) -> int:
    """Wait (at most 5 s) until no pooled connection to ``url`` is in use; return how many
    are open."""
    with anyio.fail_after(5):
        while busy_connections(url):  # noqa: ASYNC110  (httpx releases in another task)
            await anyio.sleep(0.01)
    return open_connections(url)
