"""The catalogue commands, in-process (click's runner) and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmfactory.cli import cli
from llmfactory.cli import main as cli_main

cli_main  # noqa: B018  (importing main registers the commands)


@pytest.fixture
def run(home: Path):  # type: ignore[no-untyped-def]
    import llmfactory.cli.catalog  # noqa: F401

    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, ["--no-discover", *args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_models_json_lists_the_catalogue(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("models", "--json")
    assert code == 0
    models = json.loads(out)
    by_id = {m["id"]: m for m in models}
    gpt = by_id["gpt-4o"]
    for key in ("id", "name", "provider", "runtime", "host", "context_length", "capabilities",
                "pricing", "available", "source"):
        assert key in gpt
    assert gpt["host"] is None
    assert gpt["context_length"] == 128000
    assert gpt["pricing"]["input_per_million"] == 2.5
    assert gpt["pricing"]["output_per_million"] == 10.0
    assert gpt["source"] == "builtin"
    assert {"openai", "anthropic", "google", "mistral", "deepseek", "meta"} <= {
        m["provider"] for m in models}
    # One model per line (fast to write, easy to grep), each line a JSON object.
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(models) + 2
    assert json.loads(lines[1].strip().rstrip(",")) == models[0]


def test_models_filters(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("models", "--json", "--provider", "anthropic", "--capability", "vision")
    assert code == 0
    models = json.loads(out)
    assert models and all(m["provider"] == "anthropic" and "vision" in m["capabilities"]
                          for m in models)
    code, out, _ = run("models", "--json", "--search", "flash")
    assert {m["id"] for m in json.loads(out)} >= {"gemini-2.5-flash", "gemini-2.5-flash-lite"}
    code, out, _ = run("models", "--json", "--runtime", "ollama")
    assert json.loads(out) == []


def test_models_table(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("models", "--provider", "openai")
    assert code == 0
    assert "gpt-4o" in out and "$in/M" in out and "model(s)" in out


def test_show(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("show", "claude-haiku-4-5", "--json")
    assert code == 0 and json.loads(out)["provider"] == "anthropic"
    code, out, _ = run("show", "claude-haiku-4-5")
    assert "context length" in out and "200000" in out


def test_show_unknown_exits_1_with_suggestions(run) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("show", "gpt-4-o")
    assert code == 1
    assert out == ""
    assert err.startswith("error: model 'gpt-4-o' not found; did you mean: gpt-4o")
    assert "Traceback" not in err


def test_register_remove_alias(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("register", "mine:ollama@gpu-box", "--context-length", "8192",
                       "-c", "chat", "-c", "tools", "--price-in", "0.1", "--price-out", "0.2")
    assert code == 0 and "registered mine:ollama@gpu-box:11434" in out
    code, out, _ = run("show", "mine:ollama@gpu-box:11434", "--json")
    data = json.loads(out)
    assert data["context_length"] == 8192 and data["capabilities"] == ["chat", "tools"]
    assert data["pricing"]["input_per_million"] == 0.1 and data["source"] == "user"
    assert run("alias", "mine", "mine:ollama@gpu-box:11434")[0] == 0
    _, out, _ = run("alias", "--json")
    assert json.loads(out) == {"mine": "mine:ollama@gpu-box:11434"}
    assert json.loads(run("show", "mine", "--json")[1])["id"] == "mine:ollama@gpu-box:11434"
    code, out, _ = run("remove", "mine:ollama@gpu-box:11434")
    assert code == 0 and "removed" in out
    code, _, err = run("remove", "mine:ollama@gpu-box:11434")
    assert code == 1 and "not found" in err


def test_register_bad_input(run) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("register", "x@y", "--context-length", "10")
    assert code == 1 and "runtime is missing" in err
    code, _, err = run("register", "x:ollama@h", "-c", "telepathy")
    assert code == 1 and "unknown capability" in err
    code, _, err = run("register", "x:ollama@h", "--context-length", "0")
    assert code == 2 and "0" in err


def test_paths(run, home: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("paths", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["config_file"] == str(home / "config.toml")
    assert data["database_file"] == str(home / "registry.db")


def test_subprocess_models_and_show(cli_env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "llmfactory", "--no-discover"]
    proc = subprocess.run([*cmd, "models", "--json"], env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert any(m["id"] == "gpt-4o" for m in json.loads(proc.stdout))
    proc = subprocess.run([*cmd, "show", "no-such-model"], env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: model 'no-such-model' not found")
    assert "Traceback" not in proc.stderr


def test_console_script_installed(cli_env: dict[str, str]) -> None:
    exe = Path(sys.executable).parent / "llmfactory"
    proc = subprocess.run([str(exe), "--no-discover", "register", "a:ollama@h", "--json",
                           "--context-length", "5"], env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(exe), "--no-discover", "show", "a:ollama@h:11434", "--json"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["context_length"] == 5
