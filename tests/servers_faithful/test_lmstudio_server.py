"""The LM Studio flavour: the openai client on /v1, raw checks on the native routes."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.servers import OpenAICompatServer

USER = [{"role": "user", "content": "hi"}]


def test_openai_client_against_lmstudio(lmstudio_server: OpenAICompatServer) -> None:
    with openai.OpenAI(
        base_url=lmstudio_server.url + "/v1", api_key="lm-studio", max_retries=0
    ) as c:
        models = list(c.models.list())
        assert [m.id for m in models] == [
            "qwen/qwen3-4b",
            "google/gemma-3-4b",
            "text-embedding-nomic-embed-text-v1.5",
        ]
        assert {m.owned_by for m in models} == {"organization_owner"}
        done = c.chat.completions.create(model="qwen/qwen3-4b", messages=USER)  # type: ignore[arg-type]
        assert done.choices[0].message.content == "Echo: hi"
        chunks = list(
            c.chat.completions.create(
                model="qwen/qwen3-4b",
                messages=USER,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 4
        with pytest.raises(openai.NotFoundError) as info:
            c.chat.completions.create(model="default", messages=USER)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert 'Model "default" not found' in info.value.message
    assert "- qwen/qwen3-4b" in info.value.message


def test_native_routes(lmstudio_server: OpenAICompatServer) -> None:
    with httpx.Client(base_url=lmstudio_server.url) as http:
        greeting = http.get("/lmstudio-greeting")
        assert greeting.json() == {"lmstudio": True}
        assert greeting.headers["x-powered-by"] == "Express"

        v0 = http.get("/api/v0/models").json()
        assert v0["object"] == "list"
        by_id = {m["id"]: m for m in v0["data"]}
        qwen = by_id["qwen/qwen3-4b"]
        assert qwen == {
            "id": "qwen/qwen3-4b",
            "object": "model",
            "type": "llm",
            "publisher": "qwen",
            "arch": "qwen3",
            "compatibility_type": "gguf",
            "quantization": "Q4_K_M",
            "state": "loaded",
            "max_context_length": 32768,
            "loaded_context_length": 4096,
            "capabilities": ["tool_use"],
        }
        assert by_id["google/gemma-3-4b"]["type"] == "vlm"
        assert by_id["google/gemma-3-4b"]["state"] == "not-loaded"
        embed = by_id["text-embedding-nomic-embed-text-v1.5"]
        assert (embed["type"], embed["publisher"]) == ("embeddings", "nomic-ai")
        one = http.get("/api/v0/models/qwen/qwen3-4b").json()
        assert one == qwen

        v1 = http.get("/api/v1/models").json()["models"]
        keys = {m["key"]: m for m in v1}
        q1 = keys["qwen/qwen3-4b"]
        assert q1["type"] == "llm" and q1["architecture"] == "qwen3"
        assert q1["loaded_instances"][0]["config"]["context_length"] == 4096
        assert q1["capabilities"]["trained_for_tool_use"] is True
        assert q1["capabilities"]["reasoning"]["default"] == "on"
        assert q1["quantization"] == {"name": "Q4_K_M", "bits_per_weight": 4}
        assert keys["google/gemma-3-4b"]["loaded_instances"] == []
        e1 = keys["text-embedding-nomic-embed-text-v1.5"]
        assert e1["type"] == "embedding"
        assert "architecture" not in e1 and "capabilities" not in e1


def test_unknown_routes_answer_200(lmstudio_server: OpenAICompatServer) -> None:
    with httpx.Client(base_url=lmstudio_server.url) as http:
        unknown = http.get("/foo")
        assert unknown.status_code == 200
        assert unknown.json() == {"error": "Unexpected endpoint or method. (GET /foo)"}
        assert unknown.headers["x-powered-by"] == "Express"
        assert unknown.headers["content-type"] == "application/json; charset=utf-8"
        wrong_method = http.post("/v1/models")
        assert wrong_method.status_code == 200
        assert wrong_method.json() == {"error": "Unexpected endpoint or method. (POST /v1/models)"}
        assert http.head("/v1/models").status_code == 200  # Express answers HEAD for GET


def test_version_switches(lmstudio_server: OpenAICompatServer) -> None:
    lmstudio_server.lmstudio_v1 = False  # an LM Studio older than 0.4.0
    lmstudio_server.lmstudio_greeting = False
    with httpx.Client(base_url=lmstudio_server.url) as http:
        old = http.get("/api/v1/models")
        assert old.status_code == 200
        assert old.json() == {"error": "Unexpected endpoint or method. (GET /api/v1/models)"}
        assert "error" in http.get("/lmstudio-greeting").json()
        assert http.get("/api/v0/models").json()["data"]
        lmstudio_server.lmstudio_v0 = False
        assert "error" in http.get("/api/v0/models").json()


def test_api_key_when_enabled() -> None:
    server = OpenAICompatServer("lmstudio", api_key="sk-lm-abc12345:xyz")
    with server, httpx.Client(base_url=server.url) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/api/v0/models").status_code == 401
        assert http.get("/lmstudio-greeting").status_code == 200
        ok = http.get("/api/v0/models", headers={"Authorization": "Bearer sk-lm-abc12345:xyz"})
        assert ok.status_code == 200
