"""pytest fixtures for the loopback servers (star-imported by ``tests/conftest.py``).

Every server fixture is function-scoped: it yields a started server and stops it
(joining its thread) after the test.

* ``ollama_server`` — :class:`OllamaServer` with the default models.
* ``openai_server`` — :class:`OpenAICompatServer` flavour ``"openai"``, key ``"sk-test"``.
* ``lmstudio_server`` — flavour ``"lmstudio"`` (no key).
* ``llamacpp_server`` — flavour ``"llamacpp"`` (llama-cpp-python's server, no key).
* ``anthropic_server`` — :class:`AnthropicServer`, key ``"sk-ant-test"``.
* ``start_server`` — a function ``start_server(server) -> server`` that starts any
  :class:`LoopbackServer` and stops it at teardown (for custom arguments).
* ``blackhole`` — a started :class:`BlackholeServer`.

Plain helpers re-exported here: :func:`free_port`, :func:`refused_port`,
:func:`blackhole_server`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.servers.anthropic import AnthropicServer
from tests.servers.base import LoopbackServer
from tests.servers.net import BlackholeServer, blackhole_server, free_port, refused_port
from tests.servers.ollama import OllamaServer
from tests.servers.openai_compat import OpenAICompatServer

__all__ = [
    "ANTHROPIC_TEST_KEY",
    "OPENAI_TEST_KEY",
    "anthropic_server",
    "blackhole",
    "blackhole_server",
    "free_port",
    "llamacpp_server",
    "lmstudio_server",
    "ollama_server",
    "openai_server",
    "refused_port",
    "start_server",
]

OPENAI_TEST_KEY = "sk-test"
ANTHROPIC_TEST_KEY = "sk-ant-test"

S = TypeVar("S", bound=LoopbackServer)


@pytest.fixture
def ollama_server() -> Iterator[OllamaServer]:
    """A started Ollama server with the default models."""
    with OllamaServer() as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[OpenAICompatServer]:
    """A started OpenAI-flavoured server requiring ``Authorization: Bearer sk-test``."""
    with OpenAICompatServer("openai", api_key=OPENAI_TEST_KEY) as server:
        yield server


@pytest.fixture
def lmstudio_server() -> Iterator[OpenAICompatServer]:
    """A started LM Studio-flavoured server (no key)."""
    with OpenAICompatServer("lmstudio") as server:
        yield server


@pytest.fixture
def llamacpp_server() -> Iterator[OpenAICompatServer]:
    """A started llama-cpp-python-flavoured server (no key)."""
    with OpenAICompatServer("llamacpp") as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    """A started Anthropic server requiring the key ``sk-ant-test``."""
    with AnthropicServer(api_key=ANTHROPIC_TEST_KEY) as server:
        yield server


@pytest.fixture
def start_server() -> Iterator[Callable[[S], S]]:
    """``start_server(OllamaServer(models=[...]))``: started now, stopped at teardown."""
    started: list[LoopbackServer] = []

    def start(server: S) -> S:
        server.start()
        started.append(server)
        return server

    yield start
    errors: list[BaseException] = []
    for server in reversed(started):
        try:
            server.stop()
        except BaseException as exc:  # stop them all, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def blackhole() -> Iterator[BlackholeServer]:
    """A server that accepts connections and never answers."""
    with blackhole_server() as server:
        yield server
