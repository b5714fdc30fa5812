"""Schema migrations: an append-only list of small functions.

Each migration takes a SQLAlchemy connection inside the store's write
transaction and moves the schema one version up. Never edit a released
migration; append a new one. The schema version is kept in SQLite's
``PRAGMA user_version`` (and in the ``meta`` table on other databases).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]


def _v1_models_hosts_aliases(conn: Connection) -> None:
    conn.exec_driver_sql(
        """
        CREATE TABLE models (
            identifier VARCHAR NOT NULL PRIMARY KEY,
            name VARCHAR NOT NULL,
            provider VARCHAR NOT NULL,
            runtime VARCHAR NOT NULL,
            host VARCHAR,
            service VARCHAR,
            context_length INTEGER,
            max_output_tokens INTEGER,
            capabilities JSON NOT NULL,
            input_price_per_million FLOAT NOT NULL,
            output_price_per_million FLOAT NOT NULL,
            cached_input_price_per_million FLOAT,
            family VARCHAR,
            parameter_size VARCHAR,
            quantization VARCHAR,
            size_bytes BIGINT,
            digest VARCHAR,
            extras JSON NOT NULL,
            source VARCHAR NOT NULL,
            available BOOLEAN NOT NULL,
            first_seen TIMESTAMP NOT NULL,
            last_seen TIMESTAMP NOT NULL,
            user_fields JSON NOT NULL
        )
        """
    )
    for column in ("name", "provider", "runtime", "host"):
        conn.exec_driver_sql(f"CREATE INDEX ix_models_{column} ON models ({column})")
    conn.exec_driver_sql(
        """
        CREATE TABLE hosts (
            runtime VARCHAR NOT NULL,
            address VARCHAR NOT NULL,
            scheme VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            version VARCHAR,
            model_count INTEGER NOT NULL,
            last_seen TIMESTAMP,
            last_checked TIMESTAMP,
            last_error VARCHAR,
            PRIMARY KEY (runtime, address)
        )
        """
    )
    conn.exec_driver_sql(
        "CREATE TABLE aliases (name VARCHAR NOT NULL PRIMARY KEY, identifier VARCHAR NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL PRIMARY KEY, value VARCHAR)"
    )


def _v2_usage(conn: Connection) -> None:
    conn.exec_driver_sql(
        """
        CREATE TABLE usage (
            id INTEGER NOT NULL PRIMARY KEY,
            timestamp TIMESTAMP NOT NULL,
            identifier VARCHAR NOT NULL,
            provider VARCHAR NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_usd FLOAT NOT NULL,
            latency_ms FLOAT NOT NULL,
            estimated BOOLEAN NOT NULL,
            ok BOOLEAN NOT NULL,
            error_kind VARCHAR
        )
        """
    )
    conn.exec_driver_sql("CREATE INDEX ix_usage_timestamp ON usage (timestamp)")
    conn.exec_driver_sql("CREATE INDEX ix_usage_identifier ON usage (identifier)")


#: MIGRATIONS[i] takes the schema from version i to version i + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_models_hosts_aliases,
    _v2_usage,
]

#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)
