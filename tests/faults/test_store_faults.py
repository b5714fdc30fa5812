"""A registry file that is not a registry: a typed error naming the path and the fix; repair.

For each broken file — garbage, a registry cut short, a newer schema, another
application's SQLite database, a directory, a missing directory, a read-only
registry, garbage in the write-ahead log — the factory (what every command
and every program goes through) raises :class:`StoreError` with the path and
what to do, ``doctor`` reports it, and ``doctor --repair`` moves the file aside
(byte for byte, never deleting it) and rebuilds a registry from the catalogue
and a discovery of the configured hosts.

``tests/registry/test_store.py`` covers the same files at the level of
:class:`~llmfactory.registry.store.Store`; ``tests/test_doctor.py`` the CLI of
``doctor`` on a garbage file.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmfactory import LLMFactory, StoreError
from llmfactory.config import Settings
from llmfactory.doctor import repair_store, run_checks
from llmfactory.registry.migrations import SCHEMA_VERSION
from llmfactory.registry.store import Store
from tests.servers import OllamaServer


def _registry(path: Path) -> None:
    """A healthy registry with one model the user registered."""
    factory = LLMFactory(database_url=f"sqlite:///{path}", discover=False)
    factory.register_model("mine:ollama@gpu:11434", context_length=1234)
    factory.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not SQLite\xff" * 300)


def _cut_short(path: Path) -> None:
    _registry(path)
    path.write_bytes(path.read_bytes()[:4096])  # the header survives, the tables do not


def _newer(path: Path) -> None:
    _registry(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "something").write_text("a user's file")


BROKEN: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (how to break the file, what the error says, the fix it names)
    "garbage": (_garbage, "not a valid llmfactory registry", "llmfactory doctor --repair"),
    "cut short": (_cut_short, "malformed", "llmfactory doctor --repair"),
    "newer schema": (_newer, "newer than this llmfactory understands", "pip install -U"),
    "another application's database": (_foreign, "not an llmfactory registry",
                                       "LLMFACTORY_DATABASE_URL"),
    "a directory": (_directory, "is a directory", "llmfactory doctor --repair"),
}


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir()}
    return {"": path.read_bytes()}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_registry_is_named_then_moved_aside_and_rebuilt(
    case: str, home: Path, ollama_server: OllamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home / "registry.db"
    breaks, says, fix = BROKEN[case]
    breaks(path)
    before = _snapshot(path)

    factory = LLMFactory(discover=False)
    with pytest.raises(StoreError) as info:
        factory.ensure_initialized()
    assert info.value.path == str(path)
    message = str(info.value)
    assert str(path) in message and says in message and fix in message, message

    checks = {c.name: c for c in run_checks()}
    assert checks["registry"].status == "error" and str(path) in checks["registry"].detail
    assert "--repair" in checks["registry"].fix

    monkeypatch.setenv("LLMFACTORY_HOSTS", f"ollama={ollama_server.url}")
    result = repair_store(Settings.load())
    assert result.repaired
    (kept,) = [p for p in result.moved if not p.name.endswith(("-wal", "-shm"))]
    assert _snapshot(kept) == before  # moved aside, byte for byte
    assert "3 models discovered on 1 of 1 hosts" in result.detail, result.detail

    factory = LLMFactory(discover=False)
    names = {m.name for m in factory.list_models()}
    assert {"gpt-4o", "llama3.2:latest"} <= names  # the catalogue, and what was discovered
    factory.close()
    store = Store(f"sqlite:///{path}")
    assert store.integrity_check() == "ok" and store.schema_version() == SCHEMA_VERSION
    store.close()
    assert {c.name: c.status for c in run_checks()}["registry"] == "ok"


def test_repairing_twice_in_a_second_keeps_both_copies(home: Path) -> None:
    path = home / "registry.db"
    kept = []
    for n in range(3):
        path.write_bytes(f"broken {n} ".encode() * 200)
        result = repair_store(Settings.load(), discover=False)
        assert "discovery was off" in result.detail
        kept += result.moved
    assert len({p.name for p in kept}) == 3
    assert sorted(p.read_bytes()[:8] for p in kept) == [b"broken 0", b"broken 1", b"broken 2"]


def test_a_missing_directory_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "registry.db"
    monkeypatch.setenv("LLMFACTORY_DATABASE_URL", f"sqlite:///{missing}")
    with pytest.raises(StoreError) as info:
        LLMFactory(discover=False).ensure_initialized()
    assert str(missing.parent) in str(info.value) and "LLMFACTORY_HOME" in str(info.value)


def test_a_read_only_registry_is_read_and_a_write_says_why(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = home / "registry.db"
    _registry(path)
    monkeypatch.setenv("LLMFACTORY_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    factory = LLMFactory(discover=False)
    assert factory.get_model("mine:ollama@gpu:11434").context_length == 1234
    with pytest.raises(StoreError) as info:
        factory.register_model("other:ollama@gpu:11434", context_length=1)
    assert str(path) in str(info.value) and "readonly" in str(info.value)
    assert "LLMFACTORY_HOME" in str(info.value)
    factory.close()


def test_garbage_in_the_write_ahead_log_is_ignored(home: Path) -> None:
    path = home / "registry.db"
    _registry(path)
    Path(f"{path}-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\xaa" * 8000)
    factory = LLMFactory(discover=False)
    assert factory.get_model("mine:ollama@gpu:11434").context_length == 1234
    factory.register_model("more:ollama@gpu:11434", context_length=5)  # and writable
    factory.close()
    store = Store(f"sqlite:///{path}")
    assert store.integrity_check() == "ok"
    store.close()


def test_the_cli_says_it_in_one_line(home: Path, cli_env: dict[str, str]) -> None:
    path = home / "registry.db"
    _garbage(path)
    proc = subprocess.run([sys.executable, "-m", "llmfactory", "--no-discover", "models"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: registry ") and str(path) in line and "--repair" in line
