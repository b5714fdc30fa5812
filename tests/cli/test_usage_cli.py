"""``llmfactory usage``: what ``llmfactory prompt`` sessions recorded, summed across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner

import llmfactory.cli.usage  # noqa: F401  (registers the command)
from llmfactory.cli import cli
from llmfactory.cli.usage import parse_since
from tests.servers import OllamaServer

TIMEOUT = 60


def _run(cli_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cli_env, "LLMFACTORY_NO_DISCOVER": "1"}
    return subprocess.run([sys.executable, "-m", "llmfactory", *args], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT)


def _usage(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--no-discover", "usage", *args])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def test_two_prompt_processes_add_up(cli_env: dict[str, str],
                                     ollama_server: OllamaServer) -> None:
    identifier = f"llama3.2:latest:ollama@{ollama_server.host}"
    registered = _run(cli_env, "register", identifier, "--price-in", "1.25", "--price-out", "10")
    assert registered.returncode == 0, registered.stderr
    ollama_server.script_reply("First answer.", prompt_tokens=1000, completion_tokens=500)
    ollama_server.script_reply("Second answer.", prompt_tokens=3000, completion_tokens=200)
    for text in ("one", "two"):
        result = _run(cli_env, "prompt", identifier, text)
        assert result.returncode == 0, result.stderr

    result = _run(cli_env, "usage", "--json")  # a third process
    assert result.returncode == 0, result.stderr
    total = json.loads(result.stdout)["total"]
    assert (total["calls"], total["errors"]) == (2, 0)
    assert (total["prompt_tokens"], total["completion_tokens"]) == (4000, 700)
    assert total["cost_usd"] == pytest.approx((4000 * 1.25 + 700 * 10) / 1e6)  # 0.012

    by_model = _usage("--json", "--by", "model")  # the same, in this process
    assert [(g["model"], g["calls"]) for g in by_model["groups"]] == [(identifier, 2)]
    by_day = _usage("--by", "day", "--json", "--since", "1d")
    assert by_day["groups"][0]["day"] == datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert by_day["total"]["calls"] == 2
    for model, calls in (("llama3.2", 2), (identifier, 2), ("llama3", 0), ("gpt-4o", 0)):
        data = _usage("--json", "--model", model)
        assert data["total"]["calls"] == calls, model

    table = CliRunner().invoke(cli, ["--no-discover", "usage", "--by", "model"])
    assert table.exit_code == 0 and identifier in table.output
    assert "0.012000" in table.output and "2 call(s)" in table.output
    bad = CliRunner().invoke(cli, ["--no-discover", "usage", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "neither a duration" in bad.output


def test_parse_since() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2025-05-01", now) == datetime(2025, 5, 1, tzinfo=timezone.utc)
