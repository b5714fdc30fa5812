"""API keys never leave the request that needs them.

Unique keys are planted in the environment and in the config file; then
discovery, calls (right key, wrong key, a server echoing the key in its
errors), the CLI and ``doctor`` run with every ``llmfactory`` logger (and
httpx's) at DEBUG. The keys must then appear nowhere: not in the registry
file (nor its ``-wal``/``-shm``), the captured logs, the reprs of the objects
holding them, the messages of the errors raised, or the CLI's output. The
only place a key may go is the ``Authorization`` / ``x-api-key`` header of
a request to the service it belongs to, which the test checks too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmfactory import (
    AuthenticationError,
    LLMAPIError,
    LLMConfig,
    LLMFactory,
    MissingAPIKeyError,
)
from llmfactory.config import Settings
from llmfactory.errors import MalformedResponseError
from tests.servers import AnthropicServer, Fault, LoopbackServer, OpenAICompatServer
from tests.servers.base import CannedResponse

Start = Callable[[LoopbackServer], LoopbackServer]
_TAG = uuid.uuid4().hex[:12]
OPENAI_ENV_KEY = f"sk-planted-env-{_TAG}"  # OPENAI_API_KEY
OPENAI_FILE_KEY = f"sk-planted-file-{_TAG}"  # api_keys.openai (the env var wins)
ANTHROPIC_FILE_KEY = f"sk-ant-planted-file-{_TAG}"  # api_keys.anthropic, file only
LMSTUDIO_TOKEN = f"lms-planted-env-{_TAG}"  # LMSTUDIO_API_TOKEN
WRONG_KEY = f"sk-planted-wrong-{_TAG}"  # LLMConfig(api_key=...): the server says 401
SECRETS = (OPENAI_ENV_KEY, OPENAI_FILE_KEY, ANTHROPIC_FILE_KEY, LMSTUDIO_TOKEN, WRONG_KEY)
# The tag alone would also betray a key cut short or partly masked.
NEEDLES = (*SECRETS, _TAG)


def _leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [n for n in NEEDLES if n.encode() in data]


def _error_texts(errors: Iterable[BaseException]) -> Iterator[str]:
    """Every text an error carries: message, repr, args, attributes, and its causes."""
    for error in errors:
        seen: BaseException | None = error
        while seen is not None:
            yield str(seen)
            yield repr(seen)
            yield repr(seen.args)
            yield repr({k: v for k, v in vars(seen).items() if not k.startswith("__")})
            seen = seen.__cause__ or seen.__context__


def _write_config(home: Path, mode: int = 0o600) -> Path:
    path = home / "config.toml"
    path.write_text(
        "[api_keys]\n"
        f'openai = "{OPENAI_FILE_KEY}"\n'
        f'anthropic = "{ANTHROPIC_FILE_KEY}"\n'
    )
    os.chmod(path, mode)
    return path


@pytest.fixture
def servers(start_server: Start) -> dict[str, LoopbackServer]:
    """An OpenAI server wanting the env key, an Anthropic one wanting the file key, an LM
    Studio wanting the token, and an LM Studio wanting a token nobody has."""
    return {
        "openai": start_server(OpenAICompatServer("openai", api_key=OPENAI_ENV_KEY)),
        "anthropic": start_server(AnthropicServer(api_key=ANTHROPIC_FILE_KEY)),
        "lmstudio": start_server(OpenAICompatServer("lmstudio", api_key=LMSTUDIO_TOKEN)),
        "locked": start_server(OpenAICompatServer("lmstudio", api_key="someone-elses-token")),
    }


@pytest.fixture
def planted(home: Path, servers: dict[str, LoopbackServer],
            monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The keys in the environment and the config file; the servers as hosts and base URLs."""
    _write_config(home)
    env = {
        "OPENAI_API_KEY": OPENAI_ENV_KEY,
        "OPENAI_BASE_URL": servers["openai"].url + "/v1",
        "ANTHROPIC_BASE_URL": servers["anthropic"].url,
        "LMSTUDIO_API_TOKEN": LMSTUDIO_TOKEN,
        "LLMFACTORY_HOSTS": f"lmstudio={servers['lmstudio'].url},lmstudio={servers['locked'].url}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _grep_registry(home: Path) -> None:
    files = [p for p in home.iterdir() if p.name.startswith("registry.db")]
    assert any(p.name == "registry.db" for p in files), files
    for path in files:
        assert _leaks(path.read_bytes()) == [], path


def test_keys_reach_only_their_servers(
    planted: dict[str, str], servers: dict[str, LoopbackServer], home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    texts: list[str] = []

    def expect(kind: type[BaseException], call: Callable[[], Any]) -> None:
        try:
            call()
        except kind as exc:
            errors.append(exc)
        else:
            raise AssertionError(f"expected {kind.__name__}")

    factory = LLMFactory(discover=True)
    factory.ensure_initialized()  # start-up discovery: both LM Studio hosts
    report = factory.last_discovery
    assert report is not None
    statuses = {h.base_url: h.status for h in report.hosts}
    assert statuses == {servers["lmstudio"].url: "ok", servers["locked"].url: "error"}
    refused = next(h for h in report.hosts if h.status == "error")
    assert "LMSTUDIO_API_TOKEN" in (refused.error or "")  # names the variable, not the value
    texts += [repr(report), repr(report.to_dict()), repr(factory.hosts())]

    # Calls with the right keys: env (OpenAI), config file (Anthropic), token (LM Studio).
    openai = factory.create_llm("gpt-4o-mini")
    anthropic = factory.create_llm("claude-sonnet-4-5")
    name = servers["lmstudio"].models[0].name  # type: ignore[attr-defined]
    lmstudio = factory.create_llm(f"{name}:lmstudio@{servers['lmstudio'].url[7:]}")
    for llm in (openai, anthropic, lmstudio):
        assert llm.send_user_message_sync("hello").content == "Echo: hello"
        with llm.stream_user_message_sync("again") as stream:
            assert "".join(c.content for c in stream) == "Echo: again"
        texts += [repr(llm), repr(llm.config), repr(llm.endpoint()), repr(llm.messages),
                  repr(llm.usage), repr(llm.extensions)]
    assert servers["openai"].last_request.header("authorization") == f"Bearer {OPENAI_ENV_KEY}"
    assert servers["anthropic"].last_request.header("x-api-key") == ANTHROPIC_FILE_KEY
    assert servers["lmstudio"].last_request.header("authorization") == f"Bearer {LMSTUDIO_TOKEN}"

    # A wrong key: 401, unary and streamed.
    wrong = factory.create_llm("gpt-4o-mini", LLMConfig(api_key=WRONG_KEY))
    expect(AuthenticationError, lambda: wrong.send_user_message_sync("hi"))
    expect(AuthenticationError, lambda: list(wrong.stream_user_message_sync("hi")))
    texts += [repr(wrong), repr(wrong.config), repr(wrong.endpoint())]

    # A server (or a proxy) that quotes the key it was sent in its errors.
    server = servers["openai"]

    def quoting(key: str) -> dict[str, Any]:
        return {"error": {"message": f"Incorrect API key provided: {key}",
                          "type": "invalid_request_error"}}

    server.push_fault(Fault.http_error(401, quoting(OPENAI_ENV_KEY)))
    expect(AuthenticationError, lambda: openai.send_user_message_sync("hi"))
    server.push_fault(Fault.http_error(401, quoting(WRONG_KEY)))
    expect(AuthenticationError, lambda: wrong.send_user_message_sync("hi"))
    server.push_fault(Fault.error_mid_stream(1, quoting(OPENAI_ENV_KEY)))
    expect(LLMAPIError, lambda: list(openai.stream_user_message_sync("hi")))
    # ... and in a 200 answer that is not what the protocol says (raised past the transport).
    server.push_fault(Fault(response=CannedResponse(200, {"note": f"key {OPENAI_ENV_KEY}"})))
    expect(MalformedResponseError, lambda: openai.send_user_message_sync("hi"))
    # Discovery with a token, answered by an error quoting it: reported and stored redacted.
    locked = servers["locked"]
    locked.push_fault(Fault.http_error(401, quoting(LMSTUDIO_TOKEN)), times=None)
    again = factory.refresh([("lmstudio", locked.url)])
    assert "[redacted]" in (again.hosts[0].error or ""), again.hosts[0].error
    texts.append(repr(again))

    # A service with no key at all names the variable to set.
    expect(MissingAPIKeyError, lambda: factory.create_llm("mistral-large-latest")
           .send_user_message_sync("hi"))
    assert "MISTRAL_API_KEY" in str(errors[-1])

    settings = Settings.load()
    texts += [repr(settings), str(settings), repr(factory), repr(factory.store),
              repr(factory.usage), repr(LLMConfig(api_key=WRONG_KEY))]
    for llm in (openai, anthropic, lmstudio, wrong):
        llm.close()
    factory.close()  # usage rows are written before it returns

    assert len(errors) == 7
    assert [text for text in _error_texts(errors) if _leaks(text)] == []
    assert [leak for text in texts for leak in _leaks(text)] == []
    logged = caplog.text + "".join(
        repr(r.args) + repr(getattr(r, "llm_call", "")) for r in caplog.records
    )
    assert any(r.name.startswith("llmfactory.") and r.levelno == logging.DEBUG
               for r in caplog.records), "nothing was logged at DEBUG"
    assert _leaks(logged) == []
    _grep_registry(home)


# Runs CLI commands one after the other in one process (a process each would cost a
# second of start-up apiece), every logger at DEBUG on the real stderr; prints, as JSON,
# each command's exit status and what it wrote.
_CLI = """
import contextlib, io, json, logging, sys
logging.basicConfig(level=logging.DEBUG)
from llmfactory.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    results.append({"args": args, "code": code, "output": out.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def _cli(env: dict[str, str], *runs: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CLI, json.dumps(runs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(*procs: subprocess.Popen[str]) -> tuple[dict[str, tuple[int, str]], str]:
    """Each command's (exit status, output) by its arguments, and all the logs."""
    results: dict[str, tuple[int, str]] = {}
    logs = ""
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            logs += err
            for item in json.loads(out):
                results[" ".join(item["args"])] = (item["code"], item["output"])
    finally:
        for proc in procs:  # nothing is left running, also when an assertion failed
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results, logs


def test_the_cli_never_shows_a_key(
    planted: dict[str, str], servers: dict[str, LoopbackServer], home: Path,
    cli_env: dict[str, str],
) -> None:
    env = {**cli_env, **planted, "LLMFACTORY_NO_DISCOVER": "1"}
    # First the registry is created and filled (discovery of the LM Studios)...
    results, logs = _results(_cli({**env, "LLMFACTORY_NO_DISCOVER": ""}, ["discover", "--json"]))
    # ... then everything else, and the wrong key from the environment, side by side.
    more, more_logs = _results(
        _cli(env, ["prompt", "gpt-4o-mini", "hello"],
             ["prompt", "claude-sonnet-4-5", "hello", "--json"],
             ["models"], ["models", "--json"],
             ["show", "gpt-4o-mini"], ["show", "claude-sonnet-4-5", "--json"],
             ["doctor"], ["doctor", "--json"], ["paths"], ["paths", "--json"],
             ["hosts", "list"], ["hosts", "list", "--json"], ["usage", "--json"]),
        _cli({**env, "OPENAI_API_KEY": WRONG_KEY}, ["prompt", "gpt-4o-mini", "hi"]),
    )
    results.update(more)
    logs += more_logs
    assert _leaks(logs) == []
    assert "DEBUG:llmfactory.transport" in logs  # the logs were on
    for command, (_, output) in results.items():
        assert _leaks(output) == [], (command, output)
    codes = {command: code for command, (code, _) in results.items()}
    assert codes.pop("prompt gpt-4o-mini hi") == 1
    assert set(codes.values()) == {0}, results
    assert "Echo: hello" in results["prompt gpt-4o-mini hello"][1]
    assert "Echo: hello" in results["prompt claude-sonnet-4-5 hello --json"][1]
    assert "keys for: openai, anthropic" in results["doctor"][1]
    assert "401" in results["prompt gpt-4o-mini hi"][1]
    _grep_registry(home)


def test_a_config_file_others_can_read_draws_a_warning(
    planted: dict[str, str], home: Path, cli_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _write_config(home, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="llmfactory"):
        Settings.load()
    assert "can be read by other users" in caplog.text and "chmod 600" in caplog.text
    env = {**cli_env, **planted, "LLMFACTORY_NO_DISCOVER": "1"}
    results, logs = _results(_cli(env, ["doctor", "--json"], ["prompt", "gpt-4o-mini", "hi"]))
    assert f"chmod 600 {path}" in results["doctor --json"][1]  # a doctor finding
    assert f"chmod 600 {path}" in logs  # and a warning whenever the file is read
    assert _leaks(logs) == []
    for command, (code, output) in results.items():
        assert code == 0 and _leaks(output) == [], (command, output)
    os.chmod(path, 0o600)
    results, logs = _results(_cli(env, ["doctor"]))
    assert results["doctor"][0] == 0
    assert "chmod" not in results["doctor"][1] + logs
