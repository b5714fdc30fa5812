"""``llmfactory prompt`` and ``llmfactory chat`` as subprocesses against loopback servers.

``chat`` runs once with piped stdin and once on a pseudo-terminal, where Ctrl-C
(SIGINT) stops an answer and the conversation goes on without it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.servers import AnthropicServer, Fault, OllamaServer, OpenAICompatServer, refused_port
from tests.servers.fixtures import ANTHROPIC_TEST_KEY

TIMEOUT = 60


def _env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "LLMFACTORY_NO_DISCOVER": "1", "PYTHONUNBUFFERED": "1"}


def _run(cli_env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmfactory", *args],
        input=stdin, capture_output=True, text=True, env=_env(cli_env), timeout=TIMEOUT,
    )


def test_prompt_streams_the_answer_to_stdout(
    cli_env: dict[str, str], ollama_server: OllamaServer
) -> None:
    ollama_server.script_reply("Bonjour, le monde.", prompt_tokens=12, completion_tokens=4)
    result = _run(cli_env, "prompt", f"llama3.2:ollama@{ollama_server.host}", "Say hello",
                  "--system", "Answer in French.", "-t", "0.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Bonjour, le monde.\n"
    assert "12 prompt + 4 completion tokens" in result.stderr
    request = ollama_server.requests_to("/api/chat")[0].json
    assert request["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Say hello"},
    ]
    assert request["stream"] is True and request["options"] == {"temperature": 0.5}


def test_prompt_json_from_stdin(cli_env: dict[str, str],
                                lmstudio_server: OpenAICompatServer) -> None:
    result = _run(cli_env, "prompt", f"qwen/qwen3-4b:lmstudio@{lmstudio_server.host}",
                  "--json", stdin="from standard input")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["content"] == "Echo: from standard input"
    assert data["usage"]["total_tokens"] > 0 and data["model"] == "qwen/qwen3-4b"


def test_prompt_against_anthropic(cli_env: dict[str, str],
                                  anthropic_server: AnthropicServer) -> None:
    env = {**cli_env, "ANTHROPIC_API_KEY": ANTHROPIC_TEST_KEY,
           "ANTHROPIC_BASE_URL": anthropic_server.url}
    result = _run(env, "prompt", "claude-haiku-4-5", "Hi there")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Echo: Hi there\n" and "$" in result.stderr
    missing = _run(cli_env, "prompt", "claude-haiku-4-5", "Hi")
    assert missing.returncode == 1 and "ANTHROPIC_API_KEY" in missing.stderr
    assert missing.stdout == ""


def test_prompt_errors_are_one_line(cli_env: dict[str, str]) -> None:
    result = _run(cli_env, "prompt", f"llama3.2:ollama@127.0.0.1:{refused_port()}", "hi")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "cannot connect" in result.stderr


def test_chat_with_piped_stdin(cli_env: dict[str, str], ollama_server: OllamaServer) -> None:
    script = (
        "hello\n/usage\n/system Be nice.\n/system\nsecond\n/nope\n/reset\n/usage\n/exit\nlost\n"
    )
    result = _run(cli_env, "chat", f"llama3.2:ollama@{ollama_server.host}", stdin=script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Echo: hello"
    assert lines[1].startswith("1 answers,") and "2 messages" in lines[1]
    assert lines[2] == "Be nice."
    assert lines[3] == "Echo: second"
    assert lines[4].startswith("2 answers,") and "1 messages" in lines[4]
    assert "unknown command /nope" in result.stderr
    chats = ollama_server.requests_to("/api/chat")
    assert len(chats) == 2  # "lost" came after /exit
    assert [m["content"] for m in chats[1].json["messages"]] == [
        "Be nice.", "hello", "Echo: hello", "second"
    ]


@pytest.mark.parametrize("kind", ["lmstudio", "anthropic"])
def test_chat_against_the_other_protocols(
    kind: str, cli_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if kind == "lmstudio":
        lmstudio: OpenAICompatServer = request.getfixturevalue("lmstudio_server")
        identifier, env = f"qwen/qwen3-4b:lmstudio@{lmstudio.host}", cli_env
    else:
        anthropic: AnthropicServer = request.getfixturevalue("anthropic_server")
        identifier = "claude-haiku-4-5"
        env = {**cli_env, "ANTHROPIC_API_KEY": ANTHROPIC_TEST_KEY,
               "ANTHROPIC_BASE_URL": anthropic.url}
    result = _run(env, "chat", identifier, "--system", "Be brief.",
                  stdin="first\nsecond\n/usage\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Echo: first", "Echo: second"]
    assert lines[2].startswith("2 answers,") and "5 messages" in lines[2]


def _read_until(fd: int, marker: str, seen: list[str], timeout: float = 20.0) -> str:
    """Read the pty until ``marker`` shows up in everything read so far."""
    deadline = time.monotonic() + timeout
    while marker not in "".join(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{marker!r} not seen; output so far: {''.join(seen)!r}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                data = b""
            if not data:
                raise AssertionError(f"EOF before {marker!r}: {''.join(seen)!r}")
            seen.append(data.decode("utf-8", "replace"))
    return "".join(seen)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_chat_on_a_terminal_ctrl_c_stops_the_answer_only(
    cli_env: dict[str, str], ollama_server: OllamaServer
) -> None:
    import pty

    ollama_server.script_reply(" ".join(f"word{i}" for i in range(200)))
    ollama_server.push_fault(Fault.drip(0.05))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmfactory", "chat", f"llama3.2:ollama@{ollama_server.host}"],
        stdin=slave, stdout=slave, stderr=slave, env=_env(cli_env), close_fds=True,
    )
    os.close(slave)
    seen: list[str] = []
    try:
        _read_until(master, "/help", seen)
        os.write(master, b"tell me a long story\r")
        _read_until(master, "word3", seen)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C on the terminal sends
        _read_until(master, "answer cancelled", seen)
        os.write(master, b"second\r")
        _read_until(master, "Echo: second", seen)
        os.write(master, b"/usage\r")
        _read_until(master, "1 answers", seen)
        os.write(master, b"/exit\r")
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        os.close(master)
    assert "word199" not in "".join(seen)
    chats = ollama_server.requests_to("/api/chat")
    assert [m["content"] for m in chats[-1].json["messages"]] == ["second"]
