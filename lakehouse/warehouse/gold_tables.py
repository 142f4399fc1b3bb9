"""Where the mirror and the drift check read gold: each gold table as a DuckDB relation at a version (the lake's Delta
tables, or Arrow tables in memory for tests and benchmarks), and the rows changed between two versions."""

from __future__ import annotations

from typing import Any, Protocol

import duckdb

from lakehouse.catalog import extension_path, gcs_secret_sql, httpfs_path
from lakehouse.config import Settings
from lakehouse.delta_log import ChangesGone, DeltaLog, latest_version


class GoldSource(Protocol):
    """Gold tables as DuckDB relations, each with a version number."""

    def version(self, table: str) -> int | None:
        """The table's current version (None: no such table)."""

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, version: int) -> str:
        """SQL text of a relation reading `table` at `version` in DuckDB connection `con`."""

    def changes(self, table: str, after: int, upto: int) -> Any:
        """The rows of `table` changed after version `after` up to `upto` as an Arrow table with `_change_type`
        (None: none changed); raises ChangesGone when they cannot be read."""


class DeltaGold:
    """Gold tables read from the lake's Delta tables (version = latest commit in `_delta_log`)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def path(self, table: str) -> str:
        return self.settings.table_path("gold", table)

    def version(self, table: str) -> int | None:
        return latest_version(self.path(table), self.settings)

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, version: int) -> str:
        con.execute(f"load '{extension_path()}'")  # a no-op once loaded
        if not self.settings.lake_is_local:
            con.execute(f"load '{httpfs_path(self.settings)}'")
            con.execute(gcs_secret_sql(self.settings))
        path = self.path(table).replace("'", "''")
        return f"delta_scan('{path}', version => {int(version)})"

    def changes(self, table: str, after: int, upto: int) -> Any:
        return DeltaLog(self.path(table), self.settings).changes(after, upto)


class ArrowGold:
    """Gold tables given in memory as Arrow tables (tests, benchmarks), each with a version."""

    def __init__(self, tables: dict[str, Any], versions: dict[str, int] | None = None):
        self.tables = tables
        self.versions = versions or {name: 0 for name in tables}

    def version(self, table: str) -> int | None:
        return self.versions.get(table) if table in self.tables else None

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, version: int) -> str:
        name = f"gold_{table}_v{int(version)}"
        con.register(name, self.tables[table])
        return name

    def changes(self, table: str, after: int, upto: int) -> Any:
        raise ChangesGone("gold held in memory keeps no change feed")


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with UTC as its time zone, and no progress bar on stdout."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_progress_bar = false")
    return con
