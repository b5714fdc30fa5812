"""``llmfactory doctor``: checks and repair of a broken registry."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from llmfactory.config import Settings
from llmfactory.doctor import repair_store, run_checks


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmfactory", "--no-discover", "doctor", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_fresh_home_is_healthy(home: Path) -> None:
    checks = {c.name: c for c in run_checks()}
    assert checks["registry"].status == "ok" and "not created yet" in checks["registry"].detail
    assert checks["config"].status == "ok"
    assert not (home / "registry.db").exists()  # doctor creates nothing


def test_keys_are_named_never_shown(home: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-planted-secret-123"}
    checks = {c.name: c for c in run_checks(env)}
    assert "openai" in checks["api keys"].detail
    assert "sk-planted" not in json.dumps([c.to_dict() for c in run_checks(env)])


def test_garbage_registry_is_reported_then_repaired(cli_env: dict[str, str], home: Path) -> None:
    db = home / "registry.db"
    db.write_bytes(b"not a database at all" * 50)
    proc = _doctor(cli_env, "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    registry = next(c for c in data["checks"] if c["name"] == "registry")
    assert registry["status"] == "error" and str(db) in registry["detail"]
    assert "--repair" in registry["fix"]

    proc = _doctor(cli_env, "--repair", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["repair"]["repaired"] is True
    (kept,) = data["repair"]["moved"]
    assert Path(kept).read_bytes().startswith(b"not a database")  # never deleted
    assert data["ok"] is True
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM models").fetchone()[0] > 10
    conn.close()


def test_repair_leaves_a_healthy_registry_alone(home: Path) -> None:
    from llmfactory import LLMFactory

    f = LLMFactory(discover=False)
    f.register_model("keep:ollama@h", context_length=1)
    f.close()
    result = repair_store(Settings.load())
    assert not result.repaired and result.moved == []
    f = LLMFactory(discover=False)
    assert f.find_model("keep:ollama@h:11434") is not None
    f.close()


def test_newer_schema_is_repaired_by_moving_aside(home: Path) -> None:
    from llmfactory.registry.migrations import SCHEMA_VERSION

    db = home / "registry.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    result = repair_store(Settings.load())
    assert result.repaired and "newer" in result.detail


def test_doctor_table_output(cli_env: dict[str, str]) -> None:
    proc = _doctor(cli_env)
    assert proc.returncode == 0
    assert "registry" in proc.stdout and "api keys" in proc.stdout
