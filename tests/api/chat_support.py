"""Helpers shared by the chat protocol tests (``test_*_chat.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from llmfactory.api.transport import close_clients, get_client
from llmfactory.base_llm import BaseLLM, ChunkStream

__all__ = [
    "busy_connections",
    "clients",
    "collect",
    "eventually",
    "pool_connections",
]


@pytest.fixture
async def clients() -> AsyncIterator[None]:
    """Close the pooled HTTP clients of the test's event loop when the test ends."""
    yield
    await close_clients()


def pool_connections(url: str) -> list[Any]:
    """The httpcore connections the pooled client for ``url`` holds."""
    transport = get_client(url)._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    return list(transport._pool.connections)


def busy_connections(url: str) -> int:
    """How many of the pool's connections are in use (not idle, not closed)."""
    return sum(1 for c in pool_connections(url) if not c.is_idle() and not c.is_closed())


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (at most 5 s) until ``predicate()`` holds."""
    with anyio.fail_after(5):
        while not predicate():  # noqa: ASYNC110  (state changes in another thread or task)
            await anyio.sleep(0.01)


async def collect(stream: ChunkStream) -> tuple[str, list[Any]]:
    """Read a stream to its end inside ``async with``; return the text and the chunks."""
    chunks = []
    async with stream:
        async for chunk in stream:
            chunks.append(chunk)
    return "".join(c.content for c in chunks), chunks


def wire_messages(llm: BaseLLM) -> list[tuple[str, str]]:
    """The conversation as (role, content) pairs."""
    return [(m.role.value, m.content) for m in llm.messages]
