"""The SQLite store: schema migrations, merges, errors, and several processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from llmfactory import LLMModel, StoreError
from llmfactory.registry.migrations import MIGRATIONS, SCHEMA_VERSION
from llmfactory.registry.models import Alias, HostRecord, UsageRecord
from llmfactory.registry.store import Store, merge_model

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _model(identifier: str = "m:ollama@h:1", **fields: object) -> LLMModel:
    base: dict[str, object] = {
        "identifier": identifier,
        "name": identifier.split(":")[0],
        "runtime": "ollama",
        "host": "h:1",
        "source": "discovered",
        "first_seen": T0,
        "last_seen": T0,
    }
    base.update(fields)
    return LLMModel(**base)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


def test_new_file_is_created_at_the_current_version_in_wal_mode(db_url: str, tmp_path: Path):
    store = Store(db_url)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    conn = sqlite3.connect(tmp_path / "registry.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_schema_matches_the_sqlmodel_tables(db_url: str) -> None:
    store = Store(db_url)
    from sqlalchemy import inspect

    inspector = inspect(store.engine)
    for table in (LLMModel, HostRecord, Alias, UsageRecord):
        name = table.__tablename__
        actual = {c["name"] for c in inspector.get_columns(name)}
        expected = {c.name for c in table.__table__.columns}  # type: ignore[attr-defined]
        assert actual == expected, name
    store.close()


def test_old_file_is_migrated_in_place_with_its_rows(db_url: str, tmp_path: Path) -> None:
    # Build a registry as version 1 of the schema wrote it, with a row in it.
    engine = create_engine(db_url)
    with engine.begin() as conn:
        MIGRATIONS[0](conn)
        conn.exec_driver_sql("PRAGMA user_version = 1")
        conn.exec_driver_sql(
            "INSERT INTO models VALUES ('old:ollama@h:1', 'old', 'unknown', 'ollama', 'h:1', "
            "NULL, 2048, NULL, '[\"chat\"]', 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, '{}', "
            "'user', 1, '2025-01-01 00:00:00.000000', '2025-01-02 00:00:00.000000', "
            "'[\"context_length\"]')"
        )
        conn.exec_driver_sql("INSERT INTO aliases VALUES ('o', 'old:ollama@h:1')")
    engine.dispose()
    store = Store(db_url)
    assert store.schema_version() == SCHEMA_VERSION
    (model,) = store.load_models()
    assert model.identifier == "old:ollama@h:1"
    assert model.context_length == 2048
    assert model.first_seen == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert model.user_fields == ["context_length"]
    assert store.load_aliases() == {"o": "old:ollama@h:1"}
    store.add_usage([UsageRecord(identifier="old:ollama@h:1", prompt_tokens=3)])
    assert store.query_usage()[0].prompt_tokens == 3
    store.close()


def test_every_migration_step_upgrades_a_file_of_the_previous_version(db_url: str) -> None:
    for version in range(SCHEMA_VERSION):
        path = db_url + f".v{version}"
        engine = create_engine(path)
        with engine.begin() as conn:
            for step in MIGRATIONS[:version]:
                step(conn)
            conn.exec_driver_sql(f"PRAGMA user_version = {version}")
        engine.dispose()
        store = Store(path)
        assert store.schema_version() == SCHEMA_VERSION
        store.close()


def test_newer_schema_is_refused_and_left_untouched(db_url: str, tmp_path: Path) -> None:
    Store(db_url).close()
    conn = sqlite3.connect(tmp_path / "registry.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this llmfactory understands") as info:
        Store(db_url)
    assert info.value.path == str(tmp_path / "registry.db")
    assert "upgrade llmfactory" in str(info.value)
    conn = sqlite3.connect(tmp_path / "registry.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


def test_garbage_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a valid llmfactory registry") as info:
        Store(f"sqlite:///{path}")
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"this is not a database")


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an llmfactory registry"):
        Store(f"sqlite:///{path}")


def test_missing_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'registry.db'}"
    with pytest.raises(StoreError, match="does not exist"):
        Store(url)
    store = Store(url, create_dirs=True)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="LLMFACTORY_DATABASE_URL"):
        Store("nosuchdialect://x")


def test_upsert_keeps_first_seen_and_user_fields() -> None:
    store = Store("sqlite://")
    store.upsert_models([_model(context_length=4096, user_fields=["context_length"],
                                source="user")])
    later = T0 + timedelta(days=3)
    (merged,) = store.upsert_models(
        [_model(context_length=131072, family="llama", first_seen=later, last_seen=later)]
    )
    assert merged.first_seen == T0
    assert merged.last_seen == later
    assert merged.context_length == 4096  # the user's value survives
    assert merged.family == "llama"  # the rest is refreshed
    assert merged.source == "user"
    assert store.get_model("m:ollama@h:1") == merged
    store.close()


def test_catalogue_never_overwrites_a_user_model() -> None:
    user = _model("gpt-4o", runtime="api", host=None, source="user", input_price_per_million=9.0)
    builtin = _model("gpt-4o", runtime="api", host=None, source="builtin",
                     input_price_per_million=2.5)
    assert merge_model(user, builtin) is user


def test_availability_update_and_delete() -> None:
    store = Store("sqlite://")
    store.upsert_models([_model(), _model("n:ollama@h:1", name="n")])
    store.set_availability(["m:ollama@h:1"], False)
    by_id = {m.identifier: m for m in store.load_models()}
    assert not by_id["m:ollama@h:1"].available
    assert by_id["m:ollama@h:1"].last_seen == T0
    assert by_id["n:ollama@h:1"].available
    store.set_alias("x", "m:ollama@h:1")
    assert store.delete_model("m:ollama@h:1")
    assert not store.delete_model("m:ollama@h:1")
    assert store.load_aliases() == {}
    store.close()


def test_hosts_roundtrip() -> None:
    store = Store("sqlite://")
    host = HostRecord(runtime="ollama", address="gpu:11434", source="user", status="ok",
                      version="0.12.6", model_count=3, last_seen=T0)
    store.upsert_hosts([host])
    store.upsert_hosts([host])
    (loaded,) = store.load_hosts()
    assert loaded.base_url == "http://gpu:11434"
    assert loaded.key == "ollama@gpu:11434"
    assert loaded.last_seen == T0
    assert store.delete_host("ollama", "gpu:11434")
    assert store.load_hosts() == []
    store.close()


def test_usage_query_filters() -> None:
    store = Store("sqlite://")
    store.add_usage([
        UsageRecord(identifier="a", timestamp=T0, prompt_tokens=1),
        UsageRecord(identifier="b", timestamp=T0 + timedelta(days=1), prompt_tokens=2),
    ])
    assert [r.identifier for r in store.query_usage()] == ["a", "b"]
    assert [r.identifier for r in store.query_usage(since=T0 + timedelta(hours=1))] == ["b"]
    assert [r.identifier for r in store.query_usage(identifier="a")] == ["a"]
    store.close()


_WRITER = """
import sys
from llmfactory.registry.store import Store
from llmfactory.registry.models import LLMModel
store = Store(sys.argv[1])
name = sys.argv[2]
for i in range(40):
    ident = f"{name}-{i}:ollama@h:1"
    store.upsert_models([LLMModel(identifier=ident, name=f"{name}-{i}", runtime="ollama",
                                  host="h:1", source="discovered")])
store.close()
"""


def test_several_processes_write_one_file(db_url: str) -> None:
    Store(db_url).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, db_url, f"p{n}"],
                         stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    store = Store(db_url)
    assert len(store.load_models()) == 120
    assert store.integrity_check() == "ok"
    store.close()


def test_read_only_registry_can_be_read_but_not_written(db_url: str, tmp_path: Path) -> None:
    store = Store(db_url)
    store.upsert_models([_model()])
    store.close()
    path = tmp_path / "registry.db"
    store = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert store.path == str(path)
    assert [m.identifier for m in store.load_models()] == ["m:ollama@h:1"]
    with pytest.raises(StoreError, match="readonly") as info:
        store.upsert_models([_model("n:ollama@h:1")])
    assert str(path) in str(info.value) and "LLMFACTORY_HOME" in str(info.value)
    store.close()
    assert [m.identifier for m in Store(db_url).load_models()] == ["m:ollama@h:1"]
