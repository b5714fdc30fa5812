"""The Ollama runtime against the loopback Ollama server (asyncio and trio)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from llmfactory.runtimes.ollama import ollama_capabilities
from tests.runtimes.helpers import models_by_name, probe_one
from tests.servers import Fault, OllamaServer, OpenAICompatServer, Reply, RequestContext

pytestmark = pytest.mark.anyio


async def test_lists_and_describes(ollama_server: OllamaServer) -> None:
    outcome = await probe_one("ollama", ollama_server.url)
    assert outcome.report.status == "ok", outcome.report.error
    assert outcome.report.version == ollama_server.version
    models = models_by_name(outcome)
    assert set(models) == {"llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest"}
    llama = models["llama3.2:latest"]
    assert llama.identifier == f"llama3.2:latest:ollama@{ollama_server.host}"
    assert llama.context_length == 131072  # model_info["llama.context_length"]
    assert llama.extras["num_ctx"] == 4096  # PARAMETER num_ctx
    assert set(llama.capabilities) >= {"chat", "streaming", "tools", "completion"}
    assert (llama.family, llama.parameter_size, llama.quantization) == ("llama", "3.2B", "Q4_K_M")
    assert llama.digest and len(llama.digest) == 64 and llama.size_bytes == 2_019_393_189
    assert (llama.provider, llama.runtime, llama.source) == ("meta", "ollama", "discovered")
    assert llama.input_price_per_million == 0 and llama.available
    assert "reasoning" in models["qwen3:4b"].capabilities
    assert models["qwen3:4b"].context_length == 40960
    embed = models["nomic-embed-text:latest"]
    assert embed.capabilities == ["embedding"]  # embedding-only: no chat
    assert embed.context_length == 2048
    assert ollama_server.show_calls == 3
    shown = [r.json for r in ollama_server.requests_to("/api/show")]
    assert all(set(body) == {"model"} for body in shown)  # type: ignore[arg-type]


async def test_digest_cache_skips_show_until_the_digest_changes(
    ollama_server: OllamaServer,
) -> None:
    first = models_by_name(await probe_one("ollama", ollama_server.url))
    known = {m.identifier: m for m in first.values()}
    assert ollama_server.show_calls == 3
    second = models_by_name(await probe_one("ollama", ollama_server.url, known=known))
    assert ollama_server.show_calls == 3  # nothing asked again
    assert second["llama3.2:latest"].context_length == 131072
    assert second["llama3.2:latest"].extras["num_ctx"] == 4096
    assert second["nomic-embed-text:latest"].capabilities == ["embedding"]
    models = ollama_server.models
    models[1] = replace(models[1], digest="f" * 64, context_length=8192)
    ollama_server.set_models(models)
    third = models_by_name(await probe_one("ollama", ollama_server.url, known=known))
    assert ollama_server.show_calls == 4  # only the changed model
    assert third["qwen3:4b"].context_length == 8192


async def test_a_model_that_cannot_be_described_is_still_listed(
    ollama_server: OllamaServer,
) -> None:
    ollama_server.push_fault(Fault.http_error(500), path="/api/show", times=1)
    outcome = await probe_one("ollama", ollama_server.url)
    assert outcome.report.status == "ok"
    assert outcome.report.warnings and "not described" in outcome.report.warnings[0]
    models = models_by_name(outcome)
    failed = [m for m in models.values() if "describe_error" in m.extras]
    assert len(failed) == 1 and "HTTP 500" in failed[0].extras["describe_error"]
    assert failed[0].family is not None  # from /api/tags
    # Not cached: the next discovery asks again.
    known = {m.identifier: m for m in models.values()}
    calls = ollama_server.show_calls
    again = models_by_name(await probe_one("ollama", ollama_server.url, known=known))
    assert ollama_server.show_calls == calls + 1
    assert all("describe_error" not in m.extras for m in again.values())


async def test_a_newer_listing_with_capabilities_needs_no_show(
    ollama_server: OllamaServer,
) -> None:
    async def tags(ctx: RequestContext) -> Reply:
        return Reply.json({"models": [{
            "name": "gemma3:1b", "model": "gemma3:1b", "size": 815_319_791,
            "digest": "8" * 64, "modified_at": "2025-10-01T10:00:00Z",
            "capabilities": ["completion", "vision"],
            "details": {"family": "gemma3", "parameter_size": "999.89M",
                        "quantization_level": "Q4_K_M", "context_length": 32768},
        }]})

    ollama_server.add_route(("GET", "HEAD"), "/api/tags", tags)
    models = models_by_name(await probe_one("ollama", ollama_server.url))
    assert ollama_server.show_calls == 0
    gemma = models["gemma3:1b"]
    assert gemma.context_length == 32768 and "vision" in gemma.capabilities
    assert gemma.provider == "google"


async def test_something_else_on_the_port_is_an_error(
    lmstudio_server: OpenAICompatServer,
) -> None:
    outcome = await probe_one("ollama", lmstudio_server.url)
    assert outcome.report.status == "error"
    assert "/api/version" in (outcome.report.error or "")


def test_capability_mapping() -> None:
    assert ollama_capabilities(["embedding"]) == ["embedding"]
    assert ollama_capabilities(["completion", "thinking", "insert"]) == [
        "chat", "completion", "json_output", "reasoning", "streaming"]
    assert ollama_capabilities(None, name="mxbai-embed-large:latest") == ["embedding"]
    assert "chat" in ollama_capabilities(None, name="llama3:latest")


def test_the_official_client_reads_what_we_read(ollama_server: OllamaServer) -> None:
    """The server is faithful: the official ollama client sees the same description."""
    import ollama

    client = ollama.Client(host=ollama_server.url)
    try:
        shown: Any = client.show("llama3.2:latest")
        listed = client.list()
    finally:
        client._client.close()
    assert shown.modelinfo["llama.context_length"] == 131072
    assert "tools" in shown.capabilities
    assert {m.model for m in listed.models} >= {"llama3.2:latest", "qwen3:4b"}


async def test_describing_stops_before_the_deadline(ollama_server: OllamaServer) -> None:
    """A server slow to describe still gets its models listed, within the deadline."""
    import time

    ollama_server.push_fault(Fault.stall_before_headers(10), path="/api/show", times=None)
    start = time.perf_counter()
    outcome = await probe_one("ollama", ollama_server.url, deadline=1.0)
    assert time.perf_counter() - start < 1.5
    assert outcome.report.status == "ok"
    models = models_by_name(outcome)
    assert len(models) == 3
    assert all("before the discovery deadline" in m.extras["describe_error"]
               for m in models.values())
    assert models["llama3.2:latest"].family == "llama"  # what /api/tags said
