"""`llmfactory models` groups replicas; `llmfactory hosts --check` probes hosts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmfactory.cli import cli
from llmfactory.cli import main as cli_main
from tests.servers import OllamaServer, refused_port
from tests.servers.scripting import ServedModel

cli_main  # noqa: B018  (importing main registers the commands)

Run = Callable[..., tuple[int, str, str]]
DIGEST = "b" * 64


@pytest.fixture
def run(home: Path) -> Run:
    import llmfactory.cli.catalog
    import llmfactory.cli.discovery  # noqa: F401

    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture
def pair(start_server: Callable[[OllamaServer], OllamaServer]) -> list[OllamaServer]:
    return [
        start_server(OllamaServer(models=[ServedModel("llama3.2:latest", digest=DIGEST),
                                          ServedModel("qwen3:4b")])),
        start_server(OllamaServer(models=[ServedModel("llama3.2:3b", digest=DIGEST)])),
    ]


def test_models_group_replicas(run: Run, pair: list[OllamaServer]) -> None:
    a, b = pair
    code, _, _ = run("discover", "--quiet", "--host", f"ollama={a.url}", "--host",
                     f"ollama={b.url}")
    assert code == 0
    code, out, _ = run("--no-discover", "models", "--json", "--runtime", "ollama")
    by_id = {m["id"]: m for m in json.loads(out)}
    replicas = sorted([f"llama3.2:3b:ollama@{b.host}", f"llama3.2:latest:ollama@{a.host}"])
    for ident in replicas:  # same digest, other tag: one logical model
        assert by_id[ident]["replica_group"] == "llama3.2:latest:ollama@any"
        assert by_id[ident]["replicas"] == replicas
        assert "details" in by_id[ident]  # nothing removed
    group = by_id[replicas[0]]["replica_group"]
    assert by_id[f"qwen3:4b:ollama@{a.host}"]["replicas"] == []
    code, out, _ = run("--no-discover", "models", "--json")
    gpt = next(m for m in json.loads(out) if m["id"] == "gpt-4o")
    assert gpt["replica_group"] is None and gpt["replicas"] == []

    code, out, _ = run("--no-discover", "models", "--group", "--json", "--runtime", "ollama")
    rows = {r["id"]: r for r in json.loads(out)}
    assert set(rows) == {group, "qwen3:4b:ollama@any"}
    assert rows[group]["replicas"] == replicas
    assert sorted(rows[group]["hosts"]) == sorted([a.host, b.host])

    code, out, _ = run("--no-discover", "models", "--runtime", "ollama")
    assert code == 0 and "replicas" in out
    code, out, _ = run("--no-discover", "models", "--group", "--runtime", "ollama")
    assert code == 0 and group in out and "2 model(s)" in out
    code, out, _ = run("--no-discover", "models", "--provider", "openai")
    assert "replicas" not in out  # no column when nothing listed has replicas


def test_hosts_check(run: Run, pair: list[OllamaServer]) -> None:
    a, _ = pair
    dead = f"http://127.0.0.1:{refused_port()}"
    assert run("hosts", "add", "ollama", a.url, "--no-probe")[0] == 0
    assert run("hosts", "add", "ollama", dead, "--no-probe")[0] == 0
    code, out, _ = run("--no-discover", "hosts", "list", "--check", "--json", "--timeout", "1")
    assert code == 0
    rows = {r["url"]: r for r in json.loads(out)}
    assert rows[a.url]["status"] == "ok" and rows[a.url]["check"]["status"] == "ok"
    assert rows[a.url]["version"] == a.version
    assert rows[dead]["status"] == "unreachable" and rows[dead]["check"]["error"]
    a.stop_and_keep_port()
    code, out, _ = run("--no-discover", "hosts", "--check")
    assert code == 0 and "check" in out and "unreachable" in out and "ok" not in out.split()
    code, out, _ = run("--no-discover", "hosts", "--json")  # no command: the list
    assert {r["status"] for r in json.loads(out)} == {"unreachable"}
    assert all("check" not in r for r in json.loads(out))
