"""The registry's persistence: engine, migrations, upserts and queries.

SQLite in WAL mode with a busy timeout, so several processes can share one
registry file; writes run in ``BEGIN IMMEDIATE`` transactions so that a
writer waits for another instead of failing. Any SQLAlchemy URL works
(``LLMFACTORY_DATABASE_URL``, e.g. PostgreSQL for a team registry);
``sqlite://`` is an in-memory registry for tests.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from llmfactory.errors import StoreError
from llmfactory.registry.migrations import MIGRATIONS, SCHEMA_VERSION
from llmfactory.registry.models import Alias, HostRecord, LLMModel, UsageRecord

__all__ = ["Store", "merge_model"]

logger = logging.getLogger("llmfactory.store")

_MODELS = LLMModel.__table__  # type: ignore[attr-defined]
_HOSTS = HostRecord.__table__  # type: ignore[attr-defined]
_ALIASES = Alias.__table__  # type: ignore[attr-defined]
_USAGE = UsageRecord.__table__  # type: ignore[attr-defined]
_MODEL_COLUMNS = tuple(c.name for c in _MODELS.columns)
_HOST_COLUMNS = tuple(c.name for c in _HOSTS.columns)
_USAGE_COLUMNS = tuple(c.name for c in _USAGE.columns)
_DATETIME_FIELDS = ("first_seen", "last_seen", "last_checked", "timestamp")
_BUSY_TIMEOUT_MS = 30_000
_CHUNK = 500


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _to_db(row: dict[str, Any]) -> dict[str, Any]:
    for key in _DATETIME_FIELDS:
        value = row.get(key)
        if isinstance(value, datetime):
            row[key] = _utc(value)
    return row


def _from_db(row: dict[str, Any]) -> dict[str, Any]:
    for key in _DATETIME_FIELDS:
        value = row.get(key)
        if isinstance(value, datetime):
            row[key] = value.replace(tzinfo=timezone.utc)
    return row


_SEEN_FIELDS = ("last_seen", "available")


def _same_but_seen(a: LLMModel, b: LLMModel) -> bool:
    """True when two records differ at most in when they were seen and availability."""
    da, db = a.__dict__, b.__dict__
    return all(da[c] == db[c] for c in _MODEL_COLUMNS if c not in _SEEN_FIELDS)


def merge_model(existing: LLMModel | None, incoming: LLMModel) -> LLMModel:
    """Combine a stored record with a new one from discovery, the catalogue or the user.

    ``first_seen`` is kept; fields the user set (``user_fields``) are never
    overwritten; a model the user registered is not replaced by a catalogue
    seed at all.
    """
    if existing is None:
        return incoming
    if existing.source == "user" and incoming.source == "builtin":
        return existing
    merged = incoming.to_row()
    merged["first_seen"] = min(_utc(existing.first_seen) or merged["first_seen"],
                               _utc(incoming.first_seen) or merged["first_seen"])
    for field in existing.user_fields:
        if field in merged:
            merged[field] = getattr(existing, field)
    merged["user_fields"] = sorted(set(existing.user_fields) | set(incoming.user_fields))
    if existing.source == "user":
        merged["source"] = "user"
    return LLMModel.from_row(merged)


def _foreign(cursor: Any) -> bool:
    """True for another application's SQLite database (tables, but no schema version).

    Its journal mode is left alone: switching to WAL is persistent, and the file is
    not ours to change (opening it is refused right after).
    """
    if cursor.execute("PRAGMA user_version").fetchone()[0]:
        return False
    return cursor.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1"
    ).fetchone() is not None


def _describe_url(url: str) -> tuple[str | None, str]:
    """Return (file path or None, a printable form of the URL without a password)."""
    parsed = make_url(url)
    printable = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database.startswith("file:"):  # an SQLite URI (?mode=ro&uri=true)
            database = database[len("file:") :].split("?", 1)[0]
            if database and database != ":memory:" and "mode=memory" not in url:
                return database, printable
        elif database and database != ":memory:":
            return database, printable
    return None, printable


class Store:
    """The registry database: open (creating and migrating), read and write.

    Thread-safe: SQLAlchemy's pool hands each thread its own connection; the
    in-memory ``sqlite://`` store shares one connection under a lock.
    """

    def __init__(self, url: str, *, create_dirs: bool = False) -> None:
        self.url = url
        self.path, self._printable = _describe_url(url)
        self._lock = threading.RLock()
        self.hosts_version = 0
        """Incremented by every change of the host records made through this store (lets
        callers cache what :meth:`load_hosts` returned)."""
        if self.path is not None:
            if Path(self.path).expanduser().is_dir():
                raise self._error(
                    "it is a directory, not a registry file; move it aside (`llmfactory "
                    "doctor --repair` does) or point LLMFACTORY_DATABASE_URL / "
                    "LLMFACTORY_HOME elsewhere"
                )
            parent = Path(self.path).expanduser().parent
            if not parent.exists():
                if create_dirs:
                    try:
                        parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise self._error(f"cannot create the directory {parent}: {exc}") from exc
                else:
                    raise self._error(
                        f"the directory {parent} does not exist; create it or point "
                        "LLMFACTORY_DATABASE_URL / LLMFACTORY_HOME elsewhere"
                    )
        self.engine = self._create_engine(url)
        try:
            self._migrate()
        except StoreError:
            self.engine.dispose()
            raise
        except (SQLAlchemyError, sqlite3.Error) as exc:
            self.engine.dispose()
            raise self._error_from(exc, "open") from exc

    # -- engine -----------------------------------------------------------------

    def _create_engine(self, url: str) -> Engine:
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        self.is_sqlite = is_sqlite
        self.in_memory = is_sqlite and self.path is None
        kwargs: dict[str, Any] = {}
        if is_sqlite:
            kwargs["connect_args"] = {
                "timeout": _BUSY_TIMEOUT_MS / 1000,
                "check_same_thread": False,
            }
            if self.in_memory:
                kwargs["poolclass"] = StaticPool
        try:
            engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(
                f"cannot use the registry database {self._printable}: {exc}; check "
                "LLMFACTORY_DATABASE_URL (an SQLAlchemy URL such as sqlite:////path/registry.db)",
                path=self.path,
            ) from exc
        if is_sqlite:

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                # Let SQLAlchemy's "begin" event emit BEGIN, so writes can be IMMEDIATE.
                dbapi_connection.isolation_level = None
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                    if not self.in_memory and not _foreign(cursor):
                        cursor.execute("PRAGMA journal_mode = WAL")
                        cursor.execute("PRAGMA synchronous = NORMAL")
                finally:
                    cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                if conn.get_execution_options().get("llmfactory_write"):
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.exec_driver_sql("BEGIN")

        return engine

    def _error(self, message: str) -> StoreError:
        where = self.path or self._printable
        return StoreError(f"registry {where}: {message}", path=self.path)

    def _error_from(self, exc: BaseException, action: str) -> StoreError:
        text = str(getattr(exc, "orig", None) or exc)
        if "not a database" in text or "malformed" in text:
            return self._error(
                f"the file is not a valid llmfactory registry ({text}); move it aside "
                "(or run `llmfactory doctor --repair`, which keeps a copy) and start again"
            )
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return self._error(
                f"cannot {action} the registry ({text}); check the file's and its "
                "directory's permissions, or set LLMFACTORY_HOME to a writable directory"
            )
        return self._error(f"cannot {action} the registry: {text}")

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock:
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(llmfactory_write=True)
                    with conn.begin():
                        yield conn
            except StoreError:
                raise
            except (OperationalError, DatabaseError) as exc:
                raise self._error_from(exc, "write to") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        # The in-memory store has one shared connection: reads must not interleave with
        # another thread's transaction on it. File stores give each thread its own.
        lock = self._lock if self.in_memory else contextlib.nullcontext()
        try:
            with lock, self.engine.connect() as conn, conn.begin():
                yield conn
        except (OperationalError, DatabaseError) as exc:
            raise self._error_from(exc, "read") from exc

    # -- schema -----------------------------------------------------------------

    def schema_version(self) -> int:
        """The schema version of the database as it is now."""
        with self._read() as conn:
            return self._read_version(conn)

    def _read_version(self, conn: Connection) -> int:
        if self.is_sqlite:
            return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        try:
            with conn.begin_nested():
                value = conn.execute(
                    text("SELECT value FROM meta WHERE key = 'schema_version'")
                ).scalar()
            return int(value or 0)
        except SQLAlchemyError:
            return 0

    def _write_version(self, conn: Connection, version: int) -> None:
        if self.is_sqlite:
            conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
        self._set_meta(conn, "schema_version", str(version))

    def _migrate(self) -> None:
        with self._write() as conn:
            version = self._read_version(conn)
            if version > SCHEMA_VERSION:
                raise self._error(
                    f"its schema version is {version}, newer than this llmfactory understands "
                    f"({SCHEMA_VERSION}); upgrade llmfactory (pip install -U llmfactory) or "
                    "point LLMFACTORY_HOME at another directory"
                )
            if version == 0 and self.is_sqlite:
                tables = [
                    row[0]
                    for row in conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'"
                    )
                ]
                if tables:
                    raise self._error(
                        "the file is an SQLite database but not an llmfactory registry "
                        f"(it has tables {', '.join(sorted(tables)[:5])}); point "
                        "LLMFACTORY_DATABASE_URL at another file"
                    )
            for target in range(version, SCHEMA_VERSION):
                logger.info("migrating registry %s to schema version %d", self._printable,
                            target + 1)
                MIGRATIONS[target](conn)
                self._write_version(conn, target + 1)

    # -- meta -------------------------------------------------------------------

    def _set_meta(self, conn: Connection, key: str, value: str | None) -> None:
        conn.execute(text("DELETE FROM meta WHERE key = :key"), {"key": key})
        if value is not None:
            conn.execute(
                text("INSERT INTO meta (key, value) VALUES (:key, :value)"),
                {"key": key, "value": value},
            )

    def get_meta(self, key: str) -> str | None:
        """A value from the registry's key/value ``meta`` table."""
        with self._read() as conn:
            value = conn.execute(
                text("SELECT value FROM meta WHERE key = :key"), {"key": key}
            ).scalar()
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a value in the ``meta`` table."""
        with self._write() as conn:
            self._set_meta(conn, key, value)

    # -- models -----------------------------------------------------------------

    def load_models(self) -> list[LLMModel]:
        """Every stored model."""
        with self._read() as conn:
            result = conn.execute(select(_MODELS))
            keys = list(result.keys())  # once: a RowMapping looks its keys up per row
            rows = result.all()
        return [LLMModel.from_row(_from_db(dict(zip(keys, row, strict=True)))) for row in rows]

    def get_model(self, identifier: str) -> LLMModel | None:
        """One stored model, read from the database (not from any cache)."""
        with self._read() as conn:
            row = conn.execute(
                select(_MODELS).where(_MODELS.c.identifier == identifier)
            ).mappings().first()
        return LLMModel.from_row(_from_db(dict(row))) if row is not None else None

    def _existing(self, conn: Connection, identifiers: Sequence[str]) -> dict[str, LLMModel]:
        found: dict[str, LLMModel] = {}
        for start in range(0, len(identifiers), _CHUNK):
            chunk = identifiers[start : start + _CHUNK]
            result = conn.execute(select(_MODELS).where(_MODELS.c.identifier.in_(chunk)))
            keys = list(result.keys())
            for row in result:
                model = LLMModel.from_row(_from_db(dict(zip(keys, row, strict=True))))
                found[model.identifier] = model
        return found

    def upsert_models(self, models: Iterable[LLMModel]) -> list[LLMModel]:
        """Insert or merge models (see :func:`merge_model`); return the stored records."""
        incoming: dict[str, LLMModel] = {}
        for model in models:
            incoming[model.identifier] = model
        if not incoming:
            return []
        with self._write() as conn:
            existing = self._existing(conn, list(incoming))
            merged = [merge_model(existing.get(i), m) for i, m in incoming.items()]
            self._write_models(conn, merged, existing)
        return merged

    def update_model(
        self, identifier: str, change: Callable[[LLMModel | None], LLMModel | None]
    ) -> LLMModel | None:
        """Read one model, apply ``change`` and write the result, in one transaction.

        ``change`` receives the stored record (or None) and returns the record to
        store, or None to leave the database as it is.
        """
        with self._write() as conn:
            existing = self._existing(conn, [identifier])
            result = change(existing.get(identifier))
            if result is not None:
                self._write_models(conn, [result], existing)
        return result

    def _write_models(
        self, conn: Connection, models: Sequence[LLMModel], existing: dict[str, LLMModel]
    ) -> None:
        # Rows whose only change is when they were seen (rediscovery of an unchanged
        # model) get one UPDATE per batch; the rest are replaced wholesale (delete +
        # insert in one transaction: portable, and much faster than per-row UPDATEs).
        touched: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        replaced: list[str] = []
        for model in models:
            old = existing.get(model.identifier)
            if old is not None and _same_but_seen(old, model):
                touched.append(
                    {"k": model.identifier, "seen": _utc(model.last_seen),
                     "avail": model.available}
                )
                continue
            if old is not None:
                replaced.append(model.identifier)
            rows.append(_to_db(model.to_row()))
        if touched:
            conn.execute(
                update(_MODELS)
                .where(_MODELS.c.identifier == bindparam("k"))
                .values(last_seen=bindparam("seen"), available=bindparam("avail")),
                touched,
            )
        for start in range(0, len(replaced), _CHUNK):
            chunk = replaced[start : start + _CHUNK]
            conn.execute(delete(_MODELS).where(_MODELS.c.identifier.in_(chunk)))
        if rows:
            conn.execute(insert(_MODELS), rows)

    def set_availability(
        self, identifiers: Sequence[str], available: bool, *, seen: datetime | None = None
    ) -> None:
        """Mark models available or not (``seen`` updates ``last_seen`` too)."""
        if not identifiers:
            return
        values: dict[str, Any] = {"available": available}
        if seen is not None:
            values["last_seen"] = _utc(seen)
        with self._write() as conn:
            for start in range(0, len(identifiers), _CHUNK):
                chunk = list(identifiers[start : start + _CHUNK])
                conn.execute(
                    update(_MODELS).where(_MODELS.c.identifier.in_(chunk)).values(values)
                )

    def delete_model(self, identifier: str) -> bool:
        """Delete a model (and aliases pointing at it); True when it existed."""
        with self._write() as conn:
            result = conn.execute(delete(_MODELS).where(_MODELS.c.identifier == identifier))
            conn.execute(delete(_ALIASES).where(_ALIASES.c.identifier == identifier))
            return bool(result.rowcount)

    # -- hosts ------------------------------------------------------------------

    def load_hosts(self) -> list[HostRecord]:
        """Every stored host."""
        with self._read() as conn:
            rows = conn.execute(select(_HOSTS)).mappings().all()
        return [HostRecord(**_from_db(dict(row))) for row in rows]

    def upsert_hosts(self, hosts: Iterable[HostRecord]) -> None:
        """Insert or replace host records."""
        rows = [_to_db({c: getattr(h, c) for c in _HOST_COLUMNS}) for h in hosts]
        if not rows:
            return
        with self._write() as conn:
            for row in rows:
                conn.execute(
                    delete(_HOSTS).where(
                        (_HOSTS.c.runtime == row["runtime"]) & (_HOSTS.c.address == row["address"])
                    )
                )
            conn.execute(insert(_HOSTS), rows)
        self.hosts_version += 1

    def delete_host(self, runtime: str, address: str) -> bool:
        """Delete a host record; True when it existed."""
        with self._write() as conn:
            result = conn.execute(
                delete(_HOSTS).where((_HOSTS.c.runtime == runtime) & (_HOSTS.c.address == address))
            )
        self.hosts_version += 1
        return bool(result.rowcount)

    # -- aliases ----------------------------------------------------------------

    def load_aliases(self) -> dict[str, str]:
        """Every alias, name → identifier."""
        with self._read() as conn:
            rows = conn.execute(select(_ALIASES)).all()
        return {str(name): str(identifier) for name, identifier in rows}

    def set_alias(self, name: str, identifier: str) -> None:
        """Create or replace an alias."""
        with self._write() as conn:
            conn.execute(delete(_ALIASES).where(_ALIASES.c.name == name))
            conn.execute(insert(_ALIASES), [{"name": name, "identifier": identifier}])

    def delete_alias(self, name: str) -> bool:
        """Delete an alias; True when it existed."""
        with self._write() as conn:
            return bool(conn.execute(delete(_ALIASES).where(_ALIASES.c.name == name)).rowcount)

    # -- usage ------------------------------------------------------------------

    def add_usage(self, records: Iterable[UsageRecord]) -> None:
        """Append usage records."""
        rows = []
        for record in records:
            row = {c: getattr(record, c) for c in _USAGE_COLUMNS if c != "id"}
            rows.append(_to_db(row))
        if rows:
            with self._write() as conn:
                conn.execute(insert(_USAGE), rows)

    def query_usage(
        self, *, since: datetime | None = None, identifier: str | None = None
    ) -> list[UsageRecord]:
        """Usage records, oldest first, optionally since a time and for one identifier."""
        stmt = select(_USAGE).order_by(_USAGE.c.timestamp, _USAGE.c.id)
        if since is not None:
            stmt = stmt.where(
                _USAGE.c.timestamp >= _utc(since)
            )
        if identifier is not None:
            stmt = stmt.where(_USAGE.c.identifier == identifier)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [UsageRecord(**_from_db(dict(row))) for row in rows]

    def summarize_usage(
        self,
        *,
        since: datetime | None = None,
        model: str | None = None,
        by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Usage totals computed by the database, one dict per group.

        ``model`` keeps the rows of that identifier, or of every identifier of
        that model name (``llama3`` matches ``llama3:latest:ollama@…``). ``by``
        groups by ``"model"`` (identifier) or ``"day"`` (UTC date); None gives
        one group. Each dict has ``key`` (None without grouping), ``calls``,
        ``errors``, ``estimated``, the four token counts, ``cost_usd`` and
        ``latency_ms`` (sums), ordered by key.
        """
        from sqlalchemy import case, func, literal, or_

        u = _USAGE.c
        if by is None:
            key: Any = literal(None)
        elif by == "model":
            key = u.identifier
        elif by == "day":
            key = func.date(u.timestamp)
        else:
            raise ValueError(f"by must be 'model', 'day' or None, not {by!r}")
        stmt = select(
            key.label("key"),
            func.count().label("calls"),
            func.coalesce(func.sum(case((u.ok.is_(False), 1), else_=0)), 0).label("errors"),
            func.coalesce(func.sum(case((u.estimated.is_(True), 1), else_=0)), 0).label(
                "estimated"
            ),
            func.coalesce(func.sum(u.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(u.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(u.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(u.reasoning_tokens), 0).label("reasoning_tokens"),
            func.coalesce(func.sum(u.cost_usd), 0.0).label("cost_usd"),
            func.coalesce(func.sum(u.latency_ms), 0.0).label("latency_ms"),
        )
        if since is not None:
            stmt = stmt.where(u.timestamp >= _utc(since))
        if model is not None:
            escaped = model.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(
                or_(u.identifier == model, u.identifier.like(f"{escaped}:%", escape="\\"))
            )
        if by is not None:
            stmt = stmt.group_by(key).order_by(key)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        result = []
        for row in rows:
            item = dict(row)
            if not item["calls"]:
                continue  # no rows at all: an empty ungrouped aggregate
            item["key"] = None if item["key"] is None else str(item["key"])
            for name in ("calls", "errors", "estimated", "prompt_tokens", "completion_tokens",
                         "cached_tokens", "reasoning_tokens"):
                item[name] = int(item[name])
            item["cost_usd"] = float(item["cost_usd"])
            item["latency_ms"] = float(item["latency_ms"])
            result.append(item)
        return result

    # -- lifecycle --------------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``ok`` when healthy)."""
        if not self.is_sqlite:
            return "ok"
        with self._read() as conn:
            return str(conn.exec_driver_sql("PRAGMA integrity_check").scalar())

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self._printable!r}, schema_version={SCHEMA_VERSION})"
