"""The OpenAI-compatible runtime: vLLM, llama.cpp's llama-server, llama-cpp-python, others."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmfactory.runtimes.openai_compatible import llamacpp_context_length
from tests.runtimes.helpers import models_by_name, probe_one
from tests.servers import OpenAICompatServer, Reply, RequestContext

pytestmark = pytest.mark.anyio

Start = Callable[[OpenAICompatServer], OpenAICompatServer]


async def test_vllm(start_server: Start) -> None:
    server = start_server(OpenAICompatServer("vllm"))
    outcome = await probe_one("openai_compatible", server.url)
    assert outcome.report.status == "ok", outcome.report.error
    assert outcome.report.version == "0.10.1"  # GET /version
    model = models_by_name(outcome)["Qwen/Qwen2.5-0.5B-Instruct"]
    assert model.context_length == 32768  # max_model_len
    assert model.extras["server"] == "vllm" and model.provider == "qwen"
    assert model.identifier == f"Qwen/Qwen2.5-0.5B-Instruct:openai_compatible@{server.host}"
    assert {"chat", "streaming"} <= set(model.capabilities)


async def test_llama_cpp_python_leaves_the_context_unknown(
    llamacpp_server: OpenAICompatServer,
) -> None:
    outcome = await probe_one("openai_compatible", llamacpp_server.url)
    model = models_by_name(outcome)["tiny"]
    assert model.context_length is None
    assert model.extras["owned_by"] == "me"


async def test_llama_server_props_give_the_context(start_server: Start) -> None:
    server = start_server(OpenAICompatServer("generic"))

    async def models(ctx: RequestContext) -> Reply:
        return Reply.json({"object": "list", "data": [{
            "id": "gemma-3-1b-it-Q4_K_M.gguf", "object": "model", "created": 1, "owned_by":
            "llamacpp", "meta": {"vocab_type": 1, "n_ctx_train": 32768, "n_embd": 1152}}]})

    async def props(ctx: RequestContext) -> Reply:
        return Reply.json({"default_generation_settings": {"n_ctx": 8192},
                           "build_info": "b6123-abcdef", "model_path": "/m.gguf"})

    server.add_route("GET", "/v1/models", models)
    server.add_route("GET", "/props", props)
    outcome = await probe_one("openai_compatible", server.url + "/v1")  # a /v1 URL works too
    assert outcome.report.version == "b6123-abcdef"
    model = models_by_name(outcome)["gemma-3-1b-it-Q4_K_M.gguf"]
    assert model.context_length == 8192
    assert model.extras["n_ctx_train"] == 32768 and model.extras["server"] == "llamacpp"
    assert model.provider == "google"


def test_llamacpp_context_length() -> None:
    assert llamacpp_context_length({"default_generation_settings": {"n_ctx": 4096}}) == 4096
    assert llamacpp_context_length({"n_ctx": 2048}) == 2048
    assert llamacpp_context_length({"build_info": "b1"}) is None
    assert llamacpp_context_length(None) is None


async def test_not_an_openai_server(ollama_server: object) -> None:
    from tests.servers import OllamaServer

    assert isinstance(ollama_server, OllamaServer)
    # Ollama serves /v1/models too: it is a fine OpenAI-compatible server.
    outcome = await probe_one("openai_compatible", ollama_server.url)
    assert outcome.report.status == "ok" and outcome.report.model_count == 3


def test_the_official_client_lists_what_we_list(start_server: Start) -> None:
    """The server is faithful: the official openai client lists the same ids."""
    import openai

    server = start_server(OpenAICompatServer("vllm"))
    with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as client:
        ids = [m.id for m in client.models.list()]
    assert ids == ["Qwen/Qwen2.5-0.5B-Instruct"]
