"""The discovery commands, in-process (click's runner) and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmfactory.cli import cli
from llmfactory.cli import main as cli_main
from tests.servers import BlackholeServer, OllamaServer, refused_port

cli_main  # noqa: B018  (importing main registers the commands)

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(home: Path) -> Run:
    import llmfactory.cli.catalog
    import llmfactory.cli.discovery  # noqa: F401

    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def _config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def test_discover_a_named_host(run: Run, ollama_server: OllamaServer) -> None:
    code, out, _ = run("discover", "--host", f"ollama={ollama_server.url}", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["summary"] == {"hosts": 1, "ok": 1, "unreachable": 0, "errors": 0,
                                 "added": 3, "updated": 0, "unavailable": 0}
    assert report["hosts"][0]["version"] == ollama_server.version
    code, out, _ = run("--no-discover", "models", "--json", "--runtime", "ollama")
    ids = {m["id"] for m in json.loads(out)}
    assert f"qwen3:4b:ollama@{ollama_server.host}" in ids


def test_discover_reports_a_black_holed_host_within_the_deadline(
    run: Run, home: Path, ollama_server: OllamaServer, blackhole: BlackholeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _config(home, f'[discovery]\ndeadline = 1.0\n[[hosts]]\nruntime = "ollama"\n'
                  f'url = "{blackhole.url}"\n')
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.host)
    start = time.perf_counter()
    code, out, err = run("discover")
    assert time.perf_counter() - start < 2.5
    assert code == 0
    assert "1 ok" in out and "1 unreachable" in out and "3 added" in out
    assert f"ollama@{blackhole.host}" in err and "unreachable" in err  # status lines
    assert f"ollama@{ollama_server.host}" in err


def test_a_host_down_then_back(run: Run, ollama_server: OllamaServer) -> None:
    host = f"ollama={ollama_server.url}"
    run("discover", "--host", host, "--quiet")
    ollama_server.stop_and_keep_port()
    _, out, _ = run("discover", "--host", host, "--json")
    assert json.loads(out)["summary"]["unavailable"] == 3
    _, out, _ = run("--no-discover", "models", "--json", "--runtime", "ollama")
    models = json.loads(out)
    assert len(models) == 3 and not any(m["available"] for m in models)
    assert all(m["last_seen"] for m in models)
    _, out, _ = run("--no-discover", "models", "--runtime", "ollama")
    assert "no (last seen" in out
    ollama_server.restart()
    run("discover", "--host", host, "--quiet")
    _, out, _ = run("--no-discover", "models", "--json", "--runtime", "ollama", "--available")
    assert len(json.loads(out)) == 3


def test_hosts_add_list_remove(run: Run, ollama_server: OllamaServer) -> None:
    code, out, _ = run("hosts", "add", "ollama", ollama_server.url)
    assert code == 0 and "ok, 3 model(s)" in out
    code, out, _ = run("--no-discover", "hosts", "list", "--json")
    hosts = json.loads(out)
    assert [(h["runtime"], h["address"], h["source"], h["status"], h["model_count"])
            for h in hosts] == [("ollama", ollama_server.host, "user", "ok", 3)]
    assert hosts[0]["version"] == ollama_server.version and hosts[0]["last_seen"]
    code, out, _ = run("hosts", "list")  # start-up discovery probes the added host
    assert code == 0 and ollama_server.url in out and "ok" in out
    dead = f"http://127.0.0.1:{refused_port()}"
    code, out, _ = run("hosts", "add", "lmstudio", dead)
    assert code == 0 and "unreachable" in out
    code, out, _ = run("--no-discover", "hosts", "list")
    assert "connection refused" in out
    code, out, _ = run("hosts", "remove", "ollama", ollama_server.url)
    assert code == 0 and "removed" in out
    code, _, err = run("hosts", "remove", "ollama", ollama_server.url)
    assert code == 1 and err.startswith("error: no stored ollama host")


def test_hosts_add_checks_its_arguments(run: Run) -> None:
    code, _, err = run("hosts", "add", "nosuch", "http://box:1")
    assert code == 1 and "unknown runtime 'nosuch'" in err and "ollama" in err
    code, _, err = run("hosts", "add", "ollama", "http://bad host")
    assert code == 1 and err.startswith("error: invalid host")


# -- as a subprocess: the "done when" lines -------------------------------------------


def _llmfactory(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmfactory", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_models_lists_what_ollama_host_serves(
    cli_env: dict[str, str], ollama_server: OllamaServer
) -> None:
    cli_env["OLLAMA_HOST"] = f"127.0.0.1:{ollama_server.port}"
    proc = _llmfactory(cli_env, "models", "--json", "--runtime", "ollama")
    assert proc.returncode == 0, proc.stderr
    models = {m["id"]: m for m in json.loads(proc.stdout)}
    port = ollama_server.port
    assert set(models) == {f"llama3.2:latest:ollama@127.0.0.1:{port}",
                           f"qwen3:4b:ollama@127.0.0.1:{port}",
                           f"nomic-embed-text:latest:ollama@127.0.0.1:{port}"}
    llama = models[f"llama3.2:latest:ollama@127.0.0.1:{port}"]
    assert llama["context_length"] == 131072 and "tools" in llama["capabilities"]
    assert llama["available"] is True
    embed = models[f"nomic-embed-text:latest:ollama@127.0.0.1:{port}"]
    assert embed["capabilities"] == ["embedding"]


def test_discover_finishes_within_the_deadline_with_a_black_holed_host(
    cli_env: dict[str, str], home: Path, blackhole: BlackholeServer,
    ollama_server: OllamaServer,
) -> None:
    _config(home, f'[discovery]\ndeadline = 1.5\n[[hosts]]\nruntime = "ollama"\n'
                  f'url = "{blackhole.url}"\n')
    cli_env["OLLAMA_HOST"] = ollama_server.host
    start = time.perf_counter()
    proc = _llmfactory(cli_env, "discover", "--json")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    status = {f"{h['runtime']}@{h['address']}": h["status"] for h in report["hosts"]}
    assert status == {f"ollama@{blackhole.host}": "unreachable",
                      f"ollama@{ollama_server.host}": "ok"}
    assert report["elapsed"] < 2.5
    assert elapsed < 10  # interpreter start-up included, on a slow machine
