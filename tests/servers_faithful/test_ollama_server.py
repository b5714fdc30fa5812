"""The Ollama loopback server, checked with the official ``ollama`` client."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from tests.servers import (
    Fault,
    OllamaServer,
    ScriptedReply,
    ServedModel,
    ToolCallSpec,
    estimate_prompt_tokens,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_identify_routes(ollama_server: OllamaServer) -> None:
    with httpx.Client(base_url=ollama_server.url) as http:
        root = http.get("/")
        assert root.status_code == 200
        assert root.text == "Ollama is running"
        assert root.headers["content-type"].startswith("text/plain")
        assert http.get("/api/version").json() == {"version": "0.12.6"}
        assert http.head("/api/version").status_code == 200
        assert http.head("/api/tags").status_code == 200
        missing = http.get("/api/nope")
        assert (missing.status_code, missing.text) == (404, "404 page not found")
        assert missing.headers["content-type"].startswith("text/plain")
        wrong = http.get("/api/chat")
        assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")
        v1 = http.get("/v1/models").json()
        assert v1["object"] == "list"
        assert {m["id"] for m in v1["data"]} == {
            "llama3.2:latest",
            "qwen3:4b",
            "nomic-embed-text:latest",
        }
        assert all(m["owned_by"] == "library" for m in v1["data"])


def test_list_show_ps(ollama_server: OllamaServer) -> None:
    client = ollama.Client(host=ollama_server.url)
    try:
        listed = client.list()
        names = [m.model for m in listed.models]
        assert names == ["llama3.2:latest", "qwen3:4b", "nomic-embed-text:latest"]
        first = listed.models[0]
        assert first.digest is not None and len(first.digest) == 64
        assert first.details is not None and first.details.family == "llama"
        assert first.details.quantization_level == "Q4_K_M"

        shown = client.show("llama3.2")  # implicit :latest
        assert shown.modelinfo is not None
        arch = shown.modelinfo["general.architecture"]
        assert shown.modelinfo[f"{arch}.context_length"] == 131072
        assert shown.parameters is not None and "num_ctx" in shown.parameters
        assert shown.parameters.splitlines()[0].split() == ["num_ctx", "4096"]
        assert shown.capabilities == ["completion", "tools"]
        assert shown.modified_at is not None
        assert ollama_server.show_calls == 1

        assert client.ps().models == []
        ollama_server.set_loaded("qwen3:4b")
        running = client.ps().models
        assert [m.model for m in running] == ["qwen3:4b"]
        assert running[0].context_length == 4096

        with pytest.raises(ollama.ResponseError) as info:
            client.show("missing-model")
        assert info.value.status_code == 404
        assert info.value.error == "model 'missing-model' not found"
    finally:
        client.close()


def test_show_legacy_name_and_bad_bodies(ollama_server: OllamaServer) -> None:
    with httpx.Client(base_url=ollama_server.url) as http:
        legacy = http.post("/api/show", json={"name": "qwen3:4b"})
        assert legacy.status_code == 200
        assert "thinking" in legacy.json()["capabilities"]
        assert "num_ctx" not in legacy.json()["parameters"]
        empty = http.post("/api/show", content=b"")
        assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
        nomodel = http.post("/api/show", json={})
        assert (nomodel.status_code, nomodel.json()) == (400, {"error": "model is required"})
    assert ollama_server.show_calls == 3


def test_chat_non_stream_and_stream(ollama_server: OllamaServer) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hello there model"},
    ]
    expected_prompt = estimate_prompt_tokens(["Be terse.", "hello there model"])
    with ollama.Client(host=ollama_server.url) as client:
        whole = client.chat(model="llama3.2", messages=messages, stream=False)
        assert whole.message.content == "Echo: hello there model"
        assert whole.done and whole.done_reason == "stop"
        assert whole.prompt_eval_count == expected_prompt
        assert whole.eval_count == 4  # "Echo: ", "hello ", "there ", "model"

        parts = list(client.chat(model="llama3.2", messages=messages, stream=True))
    assert len(parts) == 5
    assert "".join(p.message.content or "" for p in parts) == "Echo: hello there model"
    assert [p.done for p in parts] == [False] * 4 + [True]
    assert parts[-1].eval_count == 4
    assert parts[-1].total_duration and parts[-1].total_duration > 0
    request = ollama_server.requests_to("/api/chat")[-1]
    assert request.json["stream"] is True
    assert request.json["messages"][1]["content"] == "hello there model"


def test_chat_default_stream_is_ndjson(ollama_server: OllamaServer) -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=ollama_server.url) as http:
        streamed = http.post("/api/chat", json=body)  # no "stream": defaults to true
        assert streamed.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in streamed.headers
        lines = [json.loads(line) for line in streamed.text.splitlines()]
        assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
        whole = http.post("/api/chat", json={**body, "stream": False})
        assert whole.headers["content-type"] == "application/json; charset=utf-8"
        load = http.post("/api/chat", json={"model": "llama3.2", "messages": []}).json()
        assert load["done_reason"] == "load"
        unload = http.post(
            "/api/chat", json={"model": "llama3.2", "messages": [], "keep_alive": 0}
        ).json()
        assert unload["done_reason"] == "unload"


def test_chat_tools_and_thinking(ollama_server: OllamaServer) -> None:
    ollama_server.script_reply(
        content="Let me check.",
        thinking="The user wants weather.",
        tool_calls=[ToolCallSpec("get_weather", {"city": "Tokyo"})],
        times=2,
    )
    msgs = [{"role": "user", "content": "Weather in Tokyo?"}]
    with ollama.Client(host=ollama_server.url) as client:
        whole = client.chat(model="qwen3:4b", messages=msgs, tools=[WEATHER_TOOL], think=True)
        assert whole.message.thinking == "The user wants weather."
        assert whole.message.content == "Let me check."
        assert whole.message.tool_calls is not None
        call = whole.message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert call.function.arguments == {"city": "Tokyo"}

        parts = list(
            client.chat(
                model="qwen3:4b", messages=msgs, tools=[WEATHER_TOOL], think=True, stream=True
            )
        )
        assert "".join(p.message.thinking or "" for p in parts) == "The user wants weather."
        calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
        assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
            ("get_weather", {"city": "Tokyo"})
        ]
        assert parts[-1].done_reason == "stop"

        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="llama3.2", messages=msgs, think=True)
        assert info.value.status_code == 400
        assert info.value.error == '"llama3.2" does not support thinking'

        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="nomic-embed-text", messages=msgs)
        assert info.value.status_code == 400


def test_thinking_defaults_on_for_thinking_models(ollama_server: OllamaServer) -> None:
    msgs = [{"role": "user", "content": "why"}]
    with ollama.Client(host=ollama_server.url) as client:
        default = client.chat(model="qwen3:4b", messages=msgs)
        assert default.message.thinking == "Thinking about: why"
        off = client.chat(model="qwen3:4b", messages=msgs, think=False)
        assert off.message.thinking is None
        plain = client.chat(model="llama3.2", messages=msgs)
        assert plain.message.thinking is None


def test_chat_unknown_model_and_mid_stream_error(ollama_server: OllamaServer) -> None:
    msgs = [{"role": "user", "content": "one two three four five"}]
    with ollama.Client(host=ollama_server.url) as client:
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="nope", messages=msgs)
        assert info.value.status_code == 404
        assert info.value.error == 'model "nope" not found, try pulling it first'

        ollama_server.push_fault(Fault.error_mid_stream(after_n_chunks=2))
        seen: list[str] = []
        with pytest.raises(ollama.ResponseError) as info:
            for part in client.chat(model="llama3.2", messages=msgs, stream=True):
                seen.append(part.message.content or "")
        assert seen == ["Echo: ", "one "]
        assert "error was encountered" in info.value.error


def test_scripted_replies_and_limits(ollama_server: OllamaServer) -> None:
    ollama_server.script_reply(
        chunks=["a", "b", "c"], prompt_tokens=11, completion_tokens=22, done_reason="stop"
    )
    ollama_server.script_reply(lambda req: ScriptedReply(content=f"model={req['model']}"))
    msgs = [{"role": "user", "content": "x"}]
    with ollama.Client(host=ollama_server.url) as client:
        first = client.chat(model="llama3.2", messages=msgs)
        assert (first.message.content, first.prompt_eval_count, first.eval_count) == ("abc", 11, 22)
        assert client.chat(model="llama3.2", messages=msgs).message.content == "model=llama3.2"
        cut = client.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "a b c d e f"}],
            options={"num_predict": 2},
        )
        assert cut.message.content == "Echo: a "
        assert cut.done_reason == "length"


def test_generate_and_embed(ollama_server: OllamaServer) -> None:
    with ollama.Client(host=ollama_server.url) as client:
        whole = client.generate(model="llama3.2", prompt="say hi")
        assert whole.response == "Echo: say hi"
        assert whole.done and whole.context
        parts = list(client.generate(model="llama3.2", prompt="say hi", stream=True))
        assert "".join(p.response or "" for p in parts) == "Echo: say hi"
        assert parts[-1].done
        thought = client.generate(model="qwen3:4b", prompt="q", think=True)
        assert thought.thinking == "Thinking about: q"

        embedded = client.embed(model="nomic-embed-text", input=["a", "b"])
        assert len(embedded.embeddings) == 2
        assert all(len(v) == 16 for v in embedded.embeddings)
        assert embedded.embeddings[0] != embedded.embeddings[1]
        assert (
            client.embed(model="nomic-embed-text", input="a").embeddings[0]
            == (embedded.embeddings[0])
        )
        legacy = client.embeddings(model="nomic-embed-text", prompt="a")
        assert list(legacy.embedding) == list(embedded.embeddings[0])
        with pytest.raises(ollama.ResponseError) as info:
            client.embed(model="ghost", input="a")
        assert info.value.status_code == 404


@pytest.mark.anyio
async def test_async_client(ollama_server: OllamaServer) -> None:
    client = ollama.AsyncClient(host=ollama_server.url)
    try:
        listed = await client.list()
        assert len(listed.models) == 3
        text = ""
        async for part in await client.chat(
            model="llama3.2", messages=[{"role": "user", "content": "async"}], stream=True
        ):
            text += part.message.content or ""
        assert text == "Echo: async"
    finally:
        await client.close()


def test_custom_models_and_digest(start_server: object) -> None:
    model = ServedModel(
        "acme/coder:7b",
        family="qwen2",
        context_length=32768,
        num_ctx=8192,
        capabilities=("completion", "tools", "insert"),
    )
    with OllamaServer([model], version="0.5.1") as server:
        with ollama.Client(host=server.url) as client:
            listed = client.list().models
            assert [m.model for m in listed] == ["acme/coder:7b"]
            assert listed[0].digest == model.digest_hex
            info = client.show("acme/coder:7b").modelinfo
            assert info is not None and info["qwen2.context_length"] == 32768
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/api/version").json() == {"version": "0.5.1"}
            entry = http.get("/v1/models").json()["data"][0]
            assert entry["owned_by"] == "acme"
        server.set_models([])
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/api/tags").json() == {"models": []}


def test_many_chunks_stream_fast(ollama_server: OllamaServer) -> None:
    ollama_server.script_reply(chunks=["tok "] * 20_000)
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "long"}]}
    with (
        httpx.Client(base_url=ollama_server.url, timeout=30) as http,
        http.stream("POST", "/api/chat", json=body) as response,
    ):
        lines = sum(1 for _ in response.iter_lines())
    assert lines == 20_001
