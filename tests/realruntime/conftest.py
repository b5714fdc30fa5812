"""Fixtures for end-to-end tests against a real llama-cpp-python server and a tiny model.

- ``tiny_gguf``: the tiny test model (session scope, written once, ~0.1 s).
- ``llama_server``: one running server for the whole session, alias ``tiny``.  Do not
  kill or stop it from a test; use ``fresh_llama_server`` for that.
- ``fresh_llama_server``: a server of the test's own (~0.6 s to start), stopped after it.

All of them skip when the 'realruntime' extra is not installed, unless the environment
variable ``LLMFACTORY_REQUIRE_REALRUNTIME`` is set (e.g. in CI): then they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import LlamaServer, realruntime_available

REQUIRE_ENV_VAR = "LLMFACTORY_REQUIRE_REALRUNTIME"
SKIP_REASON = "realruntime tests need the 'realruntime' extra: pip install -e '.[realruntime]'"


@pytest.fixture(scope="session")
def _require_realruntime() -> None:
    available, why = realruntime_available()
    if not available:
        if os.environ.get(REQUIRE_ENV_VAR):
            pytest.fail(f"{REQUIRE_ENV_VAR} is set but {why}")
        pytest.skip(f"{SKIP_REASON} ({why})")


@pytest.fixture(scope="session")
def tiny_gguf(_require_realruntime: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .make_tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_gguf: Path) -> Iterator[LlamaServer]:
    with LlamaServer(tiny_gguf) as server:
        yield server


@pytest.fixture
def fresh_llama_server(tiny_gguf: Path) -> Iterator[LlamaServer]:
    with LlamaServer(tiny_gguf) as server:
        yield server
