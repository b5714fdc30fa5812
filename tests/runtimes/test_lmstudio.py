"""The LM Studio runtime: /api/v1/models, then /api/v0/models, then /v1/models."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.runtimes.helpers import models_by_name, probe_one
from tests.servers import OpenAICompatServer

pytestmark = pytest.mark.anyio

Start = Callable[[OpenAICompatServer], OpenAICompatServer]


async def test_native_v1_listing(lmstudio_server: OpenAICompatServer) -> None:
    outcome = await probe_one("lmstudio", lmstudio_server.url)
    assert outcome.report.status == "ok", outcome.report.error
    assert outcome.report.api == "api/v1"
    models = models_by_name(outcome)
    qwen = models["qwen/qwen3-4b"]
    assert qwen.identifier == f"qwen/qwen3-4b:lmstudio@{lmstudio_server.host}"
    assert qwen.context_length == 32768
    assert qwen.extras["state"] == "loaded" and qwen.extras["loaded"] is True
    assert qwen.extras["loaded_context_length"] == 4096
    assert qwen.extras["arch"] == "qwen3" and qwen.extras["publisher"] == "qwen"
    assert {"chat", "tools", "reasoning"} <= set(qwen.capabilities)
    assert qwen.quantization == "Q4_K_M" and qwen.provider == "qwen"
    gemma = models["google/gemma-3-4b"]
    assert gemma.extras["state"] == "not-loaded"  # downloaded, loaded on demand
    assert "vision" in gemma.capabilities and gemma.available
    embed = models["text-embedding-nomic-embed-text-v1.5"]
    assert embed.capabilities == ["embedding"] and embed.context_length == 2048
    assert lmstudio_server.count("/api/v0/models") == 0


async def test_older_servers_use_v0(start_server: Start) -> None:
    server = start_server(OpenAICompatServer("lmstudio", lmstudio_v1=False))
    outcome = await probe_one("lmstudio", server.url)
    assert outcome.report.api == "api/v0"
    models = models_by_name(outcome)
    assert models["qwen/qwen3-4b"].extras["state"] == "loaded"
    assert models["qwen/qwen3-4b"].extras["loaded_context_length"] == 4096
    assert "tools" in models["qwen/qwen3-4b"].capabilities
    assert "vision" in models["google/gemma-3-4b"].capabilities  # type "vlm"
    assert models["google/gemma-3-4b"].extras["state"] == "not-loaded"
    assert models["text-embedding-nomic-embed-text-v1.5"].capabilities == ["embedding"]
    assert models["google/gemma-3-4b"].context_length == 131072


async def test_oldest_servers_fall_back_to_v1_models(start_server: Start) -> None:
    server = start_server(OpenAICompatServer("lmstudio", lmstudio_v1=False, lmstudio_v0=False))
    outcome = await probe_one("lmstudio", server.url)
    assert outcome.report.status == "ok" and outcome.report.api == "v1"
    models = models_by_name(outcome)
    assert set(models) == {"qwen/qwen3-4b", "google/gemma-3-4b",
                           "text-embedding-nomic-embed-text-v1.5"}
    assert models["text-embedding-nomic-embed-text-v1.5"].capabilities == ["embedding"]
    assert models["qwen/qwen3-4b"].context_length is None


async def test_api_token(start_server: Start) -> None:
    server = start_server(OpenAICompatServer("lmstudio", api_key="sk-lm-abc12345:tok"))
    denied = await probe_one("lmstudio", server.url)
    assert denied.report.status == "error"
    assert "401" in (denied.report.error or "") and "LMSTUDIO_API_TOKEN" in (
        denied.report.error or "")
    allowed = await probe_one("lmstudio", server.url,
                              env={"LMSTUDIO_API_TOKEN": "sk-lm-abc12345:tok"})
    assert allowed.report.status == "ok" and allowed.report.model_count == 3
    assert server.last_request.header("authorization") == "Bearer sk-lm-abc12345:tok"
