"""End-to-end: llmfactory against a real OpenAI-compatible runtime, as a user would use it.

The runtime is llama-cpp-python's server (``python -m llama_cpp.server``) serving the tiny
generated model (see ``conftest.py``): it only emits printable characters and never
end-of-text, so every answer runs to ``max_tokens`` with ``finish_reason: "length"``, and
with ``temperature: 0`` its text is reproducible. The server is named to llmfactory the
way a user names it: ``LLMFACTORY_HOSTS=openai_compatible=http://127.0.0.1:PORT``.

What this server does, and what llmfactory makes of it, as the tests pin it:

* ``/v1/models`` lists ids only: discovery finds ``tiny:openai_compatible@127.0.0.1:PORT``
  with an unknown context length (llama.cpp's own ``llama-server`` answers ``/props``,
  which gives it; see ``tests/runtimes/test_openai_compatible.py``), shown as ``?``
  until the user sets it with ``llmfactory register``.
* Unary answers carry the server's usage; streams never do (``stream_options`` is
  ignored), so llmfactory estimates it and flags it ``Usage.estimated``.
* A prompt longer than the context: unary, HTTP 400 ``context_length_exceeded`` →
  :class:`~llmfactory.ContextLengthExceededError`; streamed, this server answers 200
  with an empty event stream → :class:`~llmfactory.LLMConnectionError`.
* The server killed mid-stream → :class:`~llmfactory.LLMConnectionError`, and the next
  discovery marks its model unavailable.

Every failing call leaves the conversation's history exactly as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import llmfactory
from llmfactory import (
    AuthenticationError,
    ChunkResponse,
    ContextLengthExceededError,
    LLMAPIError,
    LLMConfig,
    LLMConnectionError,
    LLMFactory,
    LLMTimeoutError,
    Role,
)
from llmfactory.api.openai import OpenAILLM
from llmfactory.api.transport import close_clients

from .make_tiny_gguf import CONTEXT_LENGTH
from .server import MODEL_ALIAS, LlamaServer

pytestmark = pytest.mark.realruntime

RUNTIME = "openai_compatible"
MAX_TOKENS = 16
PROMPT = "Hello there"
FOLLOW_UP = "And again?"
# One token per character for this tokenizer: far more than the 512-token context.
TOO_LONG = "x" * (CONTEXT_LENGTH * 2)
# What llmfactory reads for an openai_compatible server's bearer token (docs/discovery.md).
KEY_ENV = "OPENAI_COMPATIBLE_API_KEY"
API_KEY = "sk-e2e-test-key-0123456789"
# Bounds on a slow 2-core machine: a 16-token answer takes ~15 ms, a CLI run ~0.7 s.
CALL_TIMEOUT = 60.0
CLI_TIMEOUT = 90.0


def identifier(server: LlamaServer) -> str:
    """The identifier discovery gives the server's one model."""
    return f"{MODEL_ALIAS}:{RUNTIME}@{server.host}:{server.port}"


def hosts_value(server: LlamaServer) -> str:
    """``LLMFACTORY_HOSTS`` naming the server, as a user would set it."""
    return f"{RUNTIME}={server.url}"


def point_at(server: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Name ``server`` in ``LLMFACTORY_HOSTS`` and initialise llmfactory (start-up
    discovery probes it); return the model's identifier."""
    monkeypatch.setenv("LLMFACTORY_HOSTS", hosts_value(server))
    llmfactory.ensure_initialized()
    return identifier(server)


@pytest.fixture
def tiny(llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared server's model, discovered by this test's factory."""
    return point_at(llama_server, monkeypatch)


@pytest.fixture
async def http_clients() -> AsyncIterator[None]:
    """Close the pooled HTTP clients of the test's event loop when the test ends."""
    yield
    await close_clients()


def run_cli(env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m llmfactory ARGS`` and check its exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "llmfactory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == expect, (
        f"llmfactory {' '.join(args)} exited {done.returncode}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done


@pytest.fixture
def user_env(cli_env: dict[str, str], llama_server: LlamaServer) -> dict[str, str]:
    """The CLI's environment: this test's home, and the server in ``LLMFACTORY_HOSTS``."""
    return {
        **cli_env,
        "LLMFACTORY_HOSTS": hosts_value(llama_server),
        "LLMFACTORY_NO_DEFAULT_HOSTS": "1",
        "COLUMNS": "200",  # rich tables: no truncated identifiers
    }


def content_chunks(chunks: list[ChunkResponse]) -> list[str]:
    """The non-empty content deltas of a stream."""
    return [chunk.content for chunk in chunks if chunk.content]


def turns(llm: llmfactory.BaseLLM) -> list[tuple[Role, str]]:
    return [(message.role, message.content) for message in llm.messages]


def assert_printable(text: str) -> None:
    assert text and text.isascii() and text.isprintable(), repr(text)


# --------------------------------------------------------------------------- discovery


def test_cli_discover_finds_the_server_with_an_unknown_context_length(
    user_env: dict[str, str], llama_server: LlamaServer
) -> None:
    tiny_id = identifier(llama_server)

    report = json.loads(run_cli(user_env, "discover", "--json").stdout)
    (host,) = report["hosts"]
    assert host["runtime"] == RUNTIME
    assert host["address"] == f"127.0.0.1:{llama_server.port}"
    assert host["url"] == llama_server.url
    assert host["source"] == "env"
    assert (host["status"], host["model_count"], host["error"]) == ("ok", 1, None)
    assert report["added"] == [tiny_id]
    assert report["summary"]["unreachable"] == report["summary"]["errors"] == 0

    model = json.loads(run_cli(user_env, "show", "--json", tiny_id).stdout)
    assert model["id"] == tiny_id
    assert (model["name"], model["runtime"], model["host"]) == (
        MODEL_ALIAS,
        RUNTIME,
        f"127.0.0.1:{llama_server.port}",
    )
    assert model["source"] == "discovered"
    assert model["available"] is True
    assert {"chat", "streaming"} <= set(model["capabilities"])
    # llama-cpp-python's /v1/models has ids only, and it has no /props: unknown.
    assert model["context_length"] is None
    assert model["pricing"]["input_per_million"] == model["pricing"]["output_per_million"] == 0

    table = run_cli(user_env, "models", "--runtime", RUNTIME).stdout
    (row,) = [line.split() for line in table.splitlines() if line.startswith(tiny_id)]
    assert row[1:4] == ["unknown", RUNTIME, "?"]  # provider, runtime, context: unknown
    assert row[-1] == "yes"  # available

    # The documented remedy: set it by hand; rediscovery keeps it.
    run_cli(user_env, "register", tiny_id, "--context-length", str(CONTEXT_LENGTH))
    again = json.loads(run_cli(user_env, "discover", "--json").stdout)
    assert again["hosts"][0]["status"] == "ok"
    assert tiny_id in again["updated"] and not again["added"]
    model = json.loads(run_cli(user_env, "show", "--json", tiny_id).stdout)
    assert model["context_length"] == CONTEXT_LENGTH
    assert model["available"] is True


def test_start_up_discovery_registers_the_model(tiny: str, llama_server: LlamaServer) -> None:
    factory = LLMFactory.instance()
    model = factory.get_model(tiny)
    assert model.identifier == tiny
    assert (model.name, model.runtime, model.host) == (
        MODEL_ALIAS,
        RUNTIME,
        f"127.0.0.1:{llama_server.port}",
    )
    assert model.available and model.context_length is None
    assert model.is_local
    report = factory.last_discovery
    assert report is not None and [h.status for h in report.hosts] == ["ok"]


# --------------------------------------------------------------------------- talking


@pytest.mark.anyio
@pytest.mark.usefixtures("http_clients")
async def test_unary_send_returns_the_servers_usage(tiny: str) -> None:
    llm = llmfactory.create_llm(tiny)
    assert isinstance(llm, OpenAILLM)
    assert llm.provider == RUNTIME
    with anyio.fail_after(CALL_TIMEOUT):
        response = await llm.send_user_message(PROMPT, max_tokens=MAX_TOKENS)

    assert_printable(response.content)
    assert len(response.content) <= MAX_TOKENS  # one character per token
    assert response.finish_reason == "length"
    assert response.model == MODEL_ALIAS
    assert response.latency_ms > 0
    assert response.time_to_first_token_ms is None  # not streamed
    usage = response.usage
    assert usage is not None
    assert usage.estimated is False  # the server's own count
    assert usage.completion_tokens == MAX_TOKENS
    assert usage.prompt_tokens > len(PROMPT)  # the chat template adds its markers
    assert usage.total_tokens == usage.prompt_tokens + MAX_TOKENS
    assert usage.cost_usd == 0.0  # a local model
    assert turns(llm) == [(Role.USER, PROMPT), (Role.ASSISTANT, response.content)]


@pytest.mark.anyio
@pytest.mark.usefixtures("http_clients")
async def test_stream_yields_one_chunk_per_token_and_estimates_usage(tiny: str) -> None:
    llm = llmfactory.create_llm(tiny)
    with anyio.fail_after(CALL_TIMEOUT):
        unary = await llm.complete(
            [{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS, temperature=0
        )
        chunks: list[ChunkResponse] = []
        async with llm.stream_user_message(PROMPT, max_tokens=MAX_TOKENS, temperature=0) as stream:
            async for chunk in stream:
                chunks.append(chunk)

    pieces = content_chunks(chunks)
    assert len(pieces) == MAX_TOKENS
    last = chunks[-1]
    assert last.is_complete and not any(chunk.is_complete for chunk in chunks[:-1])
    assert last.finish_reason == "length"
    # This server never streams usage: llmfactory estimates it, and says so.
    usage = last.usage
    assert usage is not None
    assert usage.estimated is True
    assert usage.completion_tokens == MAX_TOKENS  # one streamed piece per token
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert unary.usage is not None and unary.usage.estimated is False

    response = stream.response
    assert response is not None and last.response is response
    assert response.usage == usage
    assert response.content == "".join(pieces)
    assert response.content == unary.content  # temperature 0: the same text either way
    assert response.time_to_first_token_ms is not None
    assert 0 < response.time_to_first_token_ms <= response.latency_ms
    assert turns(llm) == [(Role.USER, PROMPT), (Role.ASSISTANT, response.content)]


@pytest.mark.anyio
@pytest.mark.usefixtures("http_clients")
async def test_two_turns_keep_the_history_and_the_prompt_grows(tiny: str) -> None:
    llm = llmfactory.create_llm(tiny)
    with anyio.fail_after(CALL_TIMEOUT):
        first = await llm.send_user_message(PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        second = await llm.send_user_message(FOLLOW_UP, max_tokens=MAX_TOKENS, temperature=0)
        # What the second turn should have sent, sent statelessly.
        replay = await llm.complete(llm.messages[:3], max_tokens=MAX_TOKENS, temperature=0)

    assert turns(llm) == [
        (Role.USER, PROMPT),
        (Role.ASSISTANT, first.content),
        (Role.USER, FOLLOW_UP),
        (Role.ASSISTANT, second.content),
    ]
    assert first.usage is not None and second.usage is not None and replay.usage is not None
    assert not first.usage.estimated and not second.usage.estimated
    # The second prompt holds the first exchange: at least its 16 completion tokens and
    # the follow-up's characters more (plus the chat template's markers).
    assert second.usage.prompt_tokens >= (
        first.usage.prompt_tokens + first.usage.completion_tokens + len(FOLLOW_UP)
    )
    # ... and exactly the history: the server counts the same prompt for the replay.
    assert replay.usage.prompt_tokens == second.usage.prompt_tokens
    assert replay.content == second.content
    assert len(llm.messages) == 4  # the stateless replay left the history alone


def test_the_sync_facade(tiny: str) -> None:
    with llmfactory.create_llm(tiny) as llm:
        response = llm.send_user_message_sync(PROMPT, max_tokens=MAX_TOKENS)
        with llm.stream_user_message_sync(FOLLOW_UP, max_tokens=MAX_TOKENS) as stream:
            chunks = list(stream)
        assert response.finish_reason == "length"
        assert response.usage is not None and response.usage.completion_tokens == MAX_TOKENS
        assert not response.usage.estimated
        assert len(content_chunks(chunks)) == MAX_TOKENS
        streamed = stream.response
        assert streamed is not None and streamed.finish_reason == "length"
        assert streamed.usage is not None and streamed.usage.estimated
        assert turns(llm) == [
            (Role.USER, PROMPT),
            (Role.ASSISTANT, response.content),
            (Role.USER, FOLLOW_UP),
            (Role.ASSISTANT, streamed.content),
        ]


def test_cli_prompt(user_env: dict[str, str], llama_server: LlamaServer) -> None:
    tiny_id = identifier(llama_server)
    options = ("--max-tokens", str(MAX_TOKENS), "--temperature", "0")
    # Named the way OpenAI clients are given it, with /v1: the same host, the same model.
    user_env = {**user_env, "LLMFACTORY_HOSTS": f"{RUNTIME}={llama_server.base_url}"}

    streamed = run_cli(user_env, "prompt", tiny_id, PROMPT, *options)
    text = streamed.stdout.removesuffix("\n")
    assert_printable(text)
    assert len(text) <= MAX_TOKENS
    # The usage line (stderr): estimated ("~"), since the stream carried none.
    assert f"~{MAX_TOKENS} completion tokens" in streamed.stderr
    assert "finish: length" in streamed.stderr
    assert MODEL_ALIAS in streamed.stderr

    as_json = run_cli(user_env, "prompt", tiny_id, PROMPT, *options, "--json")
    answer: dict[str, Any] = json.loads(as_json.stdout)
    assert answer["content"] == text  # temperature 0: the same text streamed or not
    assert answer["finish_reason"] == "length"
    assert answer["model"] == MODEL_ALIAS
    assert answer["usage"]["completion_tokens"] == MAX_TOKENS
    assert answer["usage"]["estimated"] is False
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + MAX_TOKENS

    too_long = run_cli(user_env, "prompt", tiny_id, TOO_LONG, *options, "--json", expect=1)
    assert too_long.stdout == ""
    assert f"maximum context length is {CONTEXT_LENGTH} tokens" in too_long.stderr
    assert "context window" in too_long.stderr


def test_a_server_that_wants_an_api_key(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As vLLM or llama-server started with --api-key: every route wants the bearer token.
    with LlamaServer(tiny_gguf, api_key=API_KEY) as server:
        monkeypatch.setenv("LLMFACTORY_HOSTS", hosts_value(server))
        factory = LLMFactory.instance()

        refused = factory.refresh()
        (host,) = refused.hosts
        assert host.status == "error"
        assert "401" in (host.error or "") and KEY_ENV in (host.error or "")
        assert not factory.list_models(runtime=RUNTIME)

        # Settings (and so the environment) are read once per factory, as in a new process.
        monkeypatch.setenv(KEY_ENV, API_KEY)
        LLMFactory.reset_instance()
        factory = LLMFactory.instance()
        found = factory.refresh()
        assert [h.status for h in found.hosts] == ["ok"]
        assert list(found.added) == [identifier(server)]

        with llmfactory.create_llm(identifier(server)) as llm:
            response = llm.send_user_message_sync(PROMPT, max_tokens=MAX_TOKENS)
            assert response.finish_reason == "length"
            assert response.usage is not None
            assert response.usage.completion_tokens == MAX_TOKENS
            assert API_KEY not in repr(llm) and API_KEY not in repr(llm.endpoint())

        wrong = llmfactory.create_llm(identifier(server), LLMConfig(api_key="not-the-key"))
        with wrong, pytest.raises(AuthenticationError) as info:
            wrong.send_user_message_sync(PROMPT, max_tokens=MAX_TOKENS)
        assert info.value.status == 401
        assert "not-the-key" not in str(info.value)
        assert wrong.messages == []


# --------------------------------------------------------------------------- failures


@pytest.mark.anyio
@pytest.mark.usefixtures("http_clients")
async def test_a_prompt_longer_than_the_context(tiny: str) -> None:
    llm = llmfactory.create_llm(tiny)
    with anyio.fail_after(CALL_TIMEOUT):
        await llm.send_user_message(PROMPT, max_tokens=4)
        before = llm.messages

        with pytest.raises(ContextLengthExceededError) as info:
            await llm.send_user_message(TOO_LONG, max_tokens=MAX_TOKENS)
        error = info.value
        assert isinstance(error, LLMAPIError)
        assert (error.status, error.code, error.error_type) == (
            400,
            "context_length_exceeded",
            "invalid_request_error",
        )
        assert error.provider == RUNTIME
        message = str(error)
        assert f"maximum context length is {CONTEXT_LENGTH} tokens" in message  # the server's
        assert "context window" in message  # llmfactory's hint
        assert llm.messages == before

        # Streamed, this server answers 200 with an empty event stream (no error event,
        # no [DONE]): llmfactory can only say the stream ended early.
        with pytest.raises(LLMConnectionError, match="ended before the answer was complete"):
            async with llm.stream_user_message(TOO_LONG, max_tokens=MAX_TOKENS) as stream:
                async for _ in stream:
                    pass
        assert stream.response is None
        assert llm.messages == before

        # The conversation goes on.
        after = await llm.send_user_message(FOLLOW_UP, max_tokens=4)
    assert turns(llm)[-2:] == [(Role.USER, FOLLOW_UP), (Role.ASSISTANT, after.content)]


@pytest.mark.anyio
@pytest.mark.usefixtures("http_clients")
async def test_server_killed_mid_stream(
    fresh_llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fresh_llama_server
    fresh_id = point_at(server, monkeypatch)
    factory = LLMFactory.instance()
    llm = llmfactory.create_llm(fresh_id)
    received: list[str] = []
    with anyio.fail_after(CALL_TIMEOUT):
        await llm.send_user_message(PROMPT, max_tokens=4)
        before = llm.messages

        # 450 tokens take the server ~0.4 s; it is killed a few tokens in.
        with pytest.raises(LLMConnectionError) as info:
            async with llm.stream_user_message(FOLLOW_UP, max_tokens=450) as stream:
                async for chunk in stream:
                    if chunk.content:
                        received.append(chunk.content)
                    if len(received) == 3 and server.running:
                        await anyio.to_thread.run_sync(server.kill)
    error = info.value
    assert not isinstance(error, LLMTimeoutError)  # the connection broke
    assert "mid-response" in str(error) and server.url in str(error)
    assert error.provider == RUNTIME
    assert 3 <= len(received) < 450
    assert not server.running
    assert stream.response is None
    assert llm.messages == before

    # The next discovery finds the host gone and marks its model unavailable.
    with anyio.fail_after(CALL_TIMEOUT):
        report = await factory.arefresh()
    assert [(h.address, h.status) for h in report.hosts] == [
        (f"127.0.0.1:{server.port}", "unreachable")
    ]
    assert fresh_id in report.unavailable
    model = factory.get_model(fresh_id)
    assert not model.available
