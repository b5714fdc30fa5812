"""Shared fixtures: isolated factories and homes, async backends, loopback servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmfactory import LLMFactory
from tests.servers.fixtures import *  # noqa: F403  (loopback protocol servers)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test under asyncio and under trio."""
    return str(request.param)


_ENV_VARS = (
    "LLMFACTORY_HOME",
    "LLMFACTORY_CONFIG",
    "LLMFACTORY_DATABASE_URL",
    "LLMFACTORY_HOSTS",
    "LLMFACTORY_NO_DISCOVER",
    "OLLAMA_HOST",
    "LMSTUDIO_HOST",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GEMINI_BASE_URL",
    "MISTRAL_API_KEY",
    "MISTRAL_BASE_URL",
    "DEEPSEEK_API_KEY",
    "DEEPSEEK_BASE_URL",
    "GROQ_API_KEY",
    "GROQ_BASE_URL",
    "LMSTUDIO_API_TOKEN",
    "LM_API_TOKEN",
    "OPENAI_COMPATIBLE_API_KEY",
    "LLMFACTORY_MDNS_INTERFACES",
)


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own LLMFACTORY_HOME and a fresh process-wide factory.

    Nothing a test does reaches the user's real registry or config, and no
    runtime on this machine is probed unless a test points llmfactory at it.
    """
    home = tmp_path_factory.mktemp("home")
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMFACTORY_HOME", str(home))
    # Default-port probing would reach real runtimes on this machine; tests opt in.
    monkeypatch.setenv("LLMFACTORY_NO_DEFAULT_HOSTS", "1")
    previous = LLMFactory.set_instance(None)
    yield home
    LLMFactory.reset_instance()
    LLMFactory.set_instance(previous)


@pytest.fixture
def home(_isolated_environment: Path) -> Path:
    """This test's LLMFACTORY_HOME (registry and config file live here)."""
    return _isolated_environment


@pytest.fixture
def factory() -> Iterator[LLMFactory]:
    """An isolated in-memory factory with the catalogue and no discovery."""
    f = LLMFactory(database_url="sqlite://", discover=False)
    f.ensure_initialized()
    yield f
    f.close()


@pytest.fixture
def cli_env(home: Path) -> dict[str, str]:
    """Environment for running the CLI as a subprocess against this test's home."""
    env = dict(os.environ)
    env["LLMFACTORY_HOME"] = str(home)
    return env
