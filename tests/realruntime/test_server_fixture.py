"""The real-runtime fixtures and the tiny model behave as the reference says (plain httpx)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .make_tiny_gguf import CONTEXT_LENGTH, write_tiny_gguf
from .server import LlamaServer

pytestmark = pytest.mark.realruntime

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def http(llama_server: LlamaServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llama_server.url, timeout=30.0) as client:
        yield client


def _sse_events(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line.removeprefix("data: ")


def _stream(client: httpx.Client, body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of a streamed chat completion, and whether ``[DONE]`` came."""
    chunks: list[dict[str, Any]] = []
    done = False
    with client.stream("POST", CHAT, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        for data in _sse_events(response):
            if data == "[DONE]":
                done = True
            else:
                chunks.append(json.loads(data))
    return chunks, done


def test_tiny_gguf_is_small_and_deterministic(tiny_gguf: Path, tmp_path: Path) -> None:
    import gguf

    assert 400_000 < tiny_gguf.stat().st_size < 700_000
    reader = gguf.GGUFReader(tiny_gguf)
    assert len(reader.tensors) == 21
    arch = reader.get_field("general.architecture")
    assert arch is not None and arch.contents() == "llama"
    context = reader.get_field("llama.context_length")
    assert context is not None and context.contents() == CONTEXT_LENGTH

    again = write_tiny_gguf(tmp_path / "again.gguf")
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=1)
    assert again.read_bytes() == tiny_gguf.read_bytes()
    assert other.read_bytes() != tiny_gguf.read_bytes()


def test_models_lists_tiny(http: httpx.Client) -> None:
    response = http.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["tiny"]


def test_chat_runs_to_max_tokens(http: httpx.Client) -> None:
    response = http.post(CHAT, json={"model": "tiny", "messages": MESSAGES, "max_tokens": 16})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content and content.isascii() and content.isprintable()
    usage = body["usage"]
    assert usage["completion_tokens"] == 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16


def test_stream_has_one_chunk_per_token_and_no_usage(http: httpx.Client) -> None:
    body = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 16,
        "stream_options": {"include_usage": True},
    }
    chunks, done = _stream(http, body)
    assert done
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert not any(chunk.get("usage") for chunk in chunks)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant"}
    content = [delta["content"] for delta in deltas if delta.get("content")]
    assert len(content) == 16
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert len(chunks) == 1 + 16 + 1


def test_prompt_longer_than_context_is_a_400(http: httpx.Client) -> None:
    long_prompt = [{"role": "user", "content": "x" * (CONTEXT_LENGTH * 2)}]
    response = http.post(CHAT, json={"model": "tiny", "messages": long_prompt, "max_tokens": 16})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert f"maximum context length is {CONTEXT_LENGTH} tokens" in error["message"]


def test_temperature_zero_is_reproducible(http: httpx.Client) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 32, "temperature": 0}
    texts = [http.post(CHAT, json=body).json()["choices"][0]["message"]["content"] for _ in "ab"]
    assert texts[0] == texts[1]
    assert len(texts[0]) >= 16  # 32 one-character tokens (a leading "▁" may be dropped)
    streamed, _ = _stream(http, body)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed)
    assert text == texts[0]


def test_seeded_sampling_is_reproducible_and_seeds_differ(http: httpx.Client) -> None:
    def sample(seed: int) -> str:
        body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 32, "seed": seed}
        response = http.post(CHAT, json={**body, "temperature": 1.0})
        content: str = response.json()["choices"][0]["message"]["content"]
        return content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_sampling_never_ends_early_or_leaves_printable_ascii(http: httpx.Client) -> None:
    # No top-k/top-p/min-p and a high temperature: still only printable NORMAL tokens.
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "héllo wörld 🎉\n\tand more"}],
        "max_tokens": 64,
        "temperature": 2.0,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
    }
    for seed in range(10):
        body["seed"] = seed
        result = http.post(CHAT, json=body).json()
        content = result["choices"][0]["message"]["content"]
        assert result["choices"][0]["finish_reason"] == "length"
        assert result["usage"]["completion_tokens"] == 64
        assert content.isascii() and content.isprintable()


def test_kill_mid_stream_cuts_the_stream(fresh_llama_server: LlamaServer) -> None:
    server = fresh_llama_server
    assert server.running
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 480, "stream": True}
    received: list[str] = []
    done = False
    with (
        httpx.Client(base_url=server.url, timeout=30.0) as client,
        pytest.raises(httpx.TransportError),
        client.stream("POST", CHAT, json=body) as response,
    ):
        for data in _sse_events(response):
            done = done or data == "[DONE]"
            received.append(data)
            if len(received) == 3:
                server.kill()
    assert not done
    assert 3 <= len(received) < 480
    assert not server.running
    assert server.returncode == -9
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v1/models", timeout=5.0)


def test_stop_terminates_promptly(tiny_gguf: Path) -> None:
    server = LlamaServer(tiny_gguf, startup_timeout=60.0).start()
    try:
        assert server.startup_seconds is not None and server.startup_seconds < 60.0
        assert httpx.get(f"{server.url}/v1/models", timeout=5.0).status_code == 200
        started = time.monotonic()
    finally:
        server.stop()
    assert time.monotonic() - started < 5.0
    assert not server.running
    assert server.returncode is not None
