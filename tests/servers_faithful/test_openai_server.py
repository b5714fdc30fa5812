"""The OpenAI-compatible loopback server, checked with the official ``openai`` client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.servers import Fault, OpenAICompatServer, ServedModel, ToolCallSpec
from tests.servers.fixtures import OPENAI_TEST_KEY

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
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def client(openai_server: OpenAICompatServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=openai_server.url + "/v1", api_key=OPENAI_TEST_KEY, max_retries=0
    ) as c:
        yield c


def sse_events(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_models_list(client: openai.OpenAI, openai_server: OpenAICompatServer) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-4o-mini", "text-embedding-3-small"]
    assert client.models.retrieve("gpt-4o-mini").owned_by == "system"
    assert openai_server.last_request.header("authorization") == f"Bearer {OPENAI_TEST_KEY}"


def test_chat_non_stream(client: openai.OpenAI, openai_server: OpenAICompatServer) -> None:
    openai_server.script_reply(content="Hi!", cached_tokens=3, reasoning_tokens=0)
    done = client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
    assert done.object == "chat.completion"
    assert done.choices[0].message.content == "Hi!"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.prompt_tokens == 5 and done.usage.completion_tokens == 1
    assert done.usage.total_tokens == 6
    assert done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 3
    assert done.usage.completion_tokens_details is not None
    assert done.usage.completion_tokens_details.reasoning_tokens == 0


def test_chat_stream_with_usage(client: openai.OpenAI, openai_server: OpenAICompatServer) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_tool_call_deltas_accumulate(
    client: openai.OpenAI, openai_server: OpenAICompatServer
) -> None:
    openai_server.script_reply(
        tool_calls=[
            ToolCallSpec("get_weather", {"city": "Tokyo", "unit": "celsius"}, id="call_1"),
            ToolCallSpec("get_weather", {"city": "Paris"}),
        ],
        times=2,
    )
    with client.chat.completions.stream(
        model="gpt-4o-mini",
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    calls = [
        (tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in message.tool_calls
    ]  # type: ignore[union-attr]
    assert calls[0] == ("call_1", "get_weather", {"city": "Tokyo", "unit": "celsius"})
    assert calls[1][1:] == ("get_weather", {"city": "Paris"})

    raw = httpx.post(
        openai_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {OPENAI_TEST_KEY}"},
        json={"model": "gpt-4o-mini", "messages": USER, "stream": True},
    )
    events = [json.loads(e) for e in sse_events(raw.text) if e != "[DONE]"]
    first_tool = next(e for e in events if e["choices"][0]["delta"].get("tool_calls"))
    head = first_tool["choices"][0]["delta"]["tool_calls"][0]
    assert head == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert sse_events(raw.text)[-1] == "[DONE]"
    assert events[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


def test_reasoning_deltas_and_line_endings() -> None:
    server = OpenAICompatServer(
        "generic", reasoning_field="reasoning_content", sse_line_ending="\r\n", sse_comment_every=2
    )
    server.script_reply(content="Answer.", thinking="Hmm, let me think.")
    with server, openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        raw = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "Qwen/Qwen2.5-0.5B-Instruct", "messages": USER, "stream": True},
        )
        assert b"\r\n\r\n" in raw.content and b": keep-alive\r\n\r\n" in raw.content
        server.script_reply(content="Answer.", thinking="Hmm, let me think.")
        chunks = list(
            c.chat.completions.create(
                model="Qwen/Qwen2.5-0.5B-Instruct",
                messages=USER,  # type: ignore[arg-type]
                stream=True,
            )
        )
    reasoning = "".join(
        (ch.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for ch in chunks
        if ch.choices
    )
    assert reasoning == "Hmm, let me think."
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Answer."


def test_completions(client: openai.OpenAI) -> None:
    done = client.completions.create(model="gpt-4o-mini", prompt="Once upon")
    assert done.choices[0].text == "Echo: Once upon"
    assert done.usage is not None and done.usage.completion_tokens == 3
    parts = list(
        client.completions.create(
            model="gpt-4o-mini",
            prompt="Once upon",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == "Echo: Once upon"
    assert parts[-1].usage is not None


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 16 for d in result.data)
    plain = client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="float"
    )
    assert plain.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)


def test_status_errors(openai_server: OpenAICompatServer, client: openai.OpenAI) -> None:
    with (
        openai.OpenAI(base_url=openai_server.url + "/v1", api_key="sk-wrong", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError) as auth,
    ):
        bad.models.list()
    assert auth.value.status_code == 401
    assert auth.value.code == "invalid_api_key"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nope", messages=USER)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"

    openai_server.push_fault(Fault.rate_limited(retry_after=1))
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "rate_limit_exceeded"

    openai_server.push_fault(Fault.http_error(503))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]

    openai_server.push_fault(Fault.http_error(502, body=None))
    with pytest.raises(openai.InternalServerError) as empty:
        client.models.list()
    assert empty.value.response.content == b""


def test_context_length_exceeded() -> None:
    model = ServedModel("small", context_length=16)
    server = OpenAICompatServer("openai", [model])
    with (
        server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0) as c,
        pytest.raises(openai.BadRequestError) as info,
    ):
        c.chat.completions.create(
            model="small",
            messages=[{"role": "user", "content": "word " * 40}],
        )
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 16 tokens" in info.value.message


def test_retry_after_429(openai_server: OpenAICompatServer) -> None:
    openai_server.push_fault(Fault.rate_limited(retry_after=0.3), path="/v1/chat/completions")
    with openai.OpenAI(
        base_url=openai_server.url + "/v1", api_key=OPENAI_TEST_KEY, max_retries=1
    ) as c:
        started = time.monotonic()
        done = c.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
    assert done.choices[0].message.content == "Echo: hello there"
    assert openai_server.count("/v1/chat/completions") == 2
    assert elapsed >= 0.3


def test_mid_stream_error_raises(client: openai.OpenAI, openai_server: OpenAICompatServer) -> None:
    openai_server.push_fault(Fault.error_mid_stream(after_n_chunks=2))
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
        ):
            seen.append(chunk)
    assert len(seen) == 2
    assert "error while processing" in info.value.message


def test_llamacpp_flavor(llamacpp_server: OpenAICompatServer) -> None:
    with openai.OpenAI(base_url=llamacpp_server.url + "/v1", api_key="x", max_retries=0) as c:
        models = list(c.models.list())
        assert [(m.id, m.owned_by) for m in models] == [("tiny", "me")]
        chunks = list(
            c.chat.completions.create(
                model="whatever-name",
                messages=USER,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert all(ch.usage is None for ch in chunks)
        assert {ch.model for ch in chunks} == {"whatever-name"}
        assert chunks[-1].choices[0].finish_reason == "stop"
        done = c.chat.completions.create(
            model="tiny",
            messages=USER,  # type: ignore[arg-type]
            max_tokens=1,
        )
        assert done.choices[0].finish_reason == "length"
        assert done.usage is not None and done.usage.completion_tokens == 1
    with httpx.Client(base_url=llamacpp_server.url) as http:
        nf = http.get("/health")
        assert (nf.status_code, nf.json()) == (404, {"detail": "Not Found"})
        bad = http.post("/v1/chat/completions", content=b"{not json")
        assert bad.status_code == 500


@pytest.mark.parametrize("flavor", ["vllm", "generic"])
def test_vllm_like_flavors(
    flavor: str, start_server: Callable[[OpenAICompatServer], OpenAICompatServer]
) -> None:
    server = start_server(OpenAICompatServer(flavor))  # type: ignore[arg-type]
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        model = next(iter(c.models.list()))
        assert model.model_extra is not None and model.model_extra["max_model_len"] == 32768
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="nope", messages=USER)  # type: ignore[arg-type]
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/version").json() == {"version": "0.10.1"}
        assert http.get("/nope").json() == {"detail": "Not Found"}
        assert http.get("/v1/chat/completions").status_code == 405


@pytest.mark.anyio
async def test_async_client(openai_server: OpenAICompatServer, anyio_backend: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=openai_server.url + "/v1", api_key=OPENAI_TEST_KEY, max_retries=0
    ) as c:
        done = await c.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
        assert done.choices[0].message.content == "Echo: hello there"
        if anyio_backend != "asyncio":
            # openai's AsyncStream leaves its SSE async generators unexhausted after
            # [DONE]; trio reports that as a ResourceWarning (an SDK matter).
            return
        stream = await c.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
        )
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "Echo: hello there"
