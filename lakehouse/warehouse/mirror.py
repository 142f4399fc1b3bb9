"""The gold → dw mirror: each `dw` table brought to what gold holds, in one transaction (COPY into unlogged stage
tables, then the table's load template: SCD2 versions for a dimension, surrogate keys resolved for a fact)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import psycopg2

from lakehouse import faults
from lakehouse.catalog import extension_path, gcs_secret_sql, httpfs_path
from lakehouse.config import Settings, get_settings
from lakehouse.delta_log import latest_version
from lakehouse.pgserver import warehouse_logins
from lakehouse.reports import StageReport
from lakehouse.warehouse.csv_copy import copy_batches
from lakehouse.warehouse.loads import LOADS, Load, load_statements
from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.roles import ensure_bi_login

if TYPE_CHECKING:
    from psycopg2.extensions import cursor as Cursor

log = logging.getLogger(__name__)

MIRROR_LOCK = 0x6C616B65_6D697272  # pg advisory lock key of the mirror ("lakemirr")
BATCH_ROWS = 16_384  # rows per Arrow batch rendered as one CSV chunk


# -- gold sources: where the mirror reads gold -------------------------------------------------


class GoldSource(Protocol):
    """Gold tables as DuckDB relations, each with a version number."""

    def version(self, table: str) -> int | None:
        """The table's current version (None: no such table)."""

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, version: int) -> str:
        """SQL text of a relation reading `table` at `version` in DuckDB connection `con`."""


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


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with UTC as its time zone, and no progress bar on stdout."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_progress_bar = false")
    return con


# -- the mirror ------------------------------------------------------------------------------


def _applied_deliveries(cur: Cursor, target: str) -> set[tuple[str, datetime]]:
    cur.execute("select delivery, as_of from dw.load_delivery where table_name = %s", (target,))
    return set(cur.fetchall())


def first_value(cur: Cursor) -> Any:
    """The first column of the row the last statement returned (one it always returns)."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _last_gold_version(cur: Cursor, target: str) -> int | None:
    cur.execute("select gold_version from dw.load_audit where table_name = %s order by load_id desc limit 1", (target,))
    row = cur.fetchone()
    return row[0] if row else None


# Settings of the load transaction. synchronous_commit off: the commit does not wait for its WAL flush, so a
# server crash right after a commit can lose that whole load (never part of it); the next mirror re-applies it,
# since dw.load_audit is lost with it.
LOAD_SETTINGS = {"timezone": "UTC", "work_mem": "64MB", "synchronous_commit": "off"}


def load_session(cur: Cursor) -> None:
    """Apply LOAD_SETTINGS to the current transaction (SET LOCAL)."""
    for name, value in LOAD_SETTINGS.items():
        cur.execute(f"set local {name} = %s", (value,))


def _is_timestamp(column: str) -> bool:
    return column.endswith("_at") or column == "as_of"


def stage_query(load: Load, relation: str, where: str = "") -> str:
    """The DuckDB query whose rows are COPYed into the load's stage table."""
    columns = ", ".join(load.columns)
    query = load.select.format(src=relation)
    if where:
        query = f"select * from ({query}) as gold({columns}) where {where}"
    # timestamps leave DuckDB as UTC text with an explicit offset: DuckDB renders them several times faster
    # than Arrow's CSV writer, and PostgreSQL reads them the same whatever its session time zone
    rendered = [
        f"strftime(cast({c} as timestamp), '%Y-%m-%d %H:%M:%S.%f+00') as {c}" if _is_timestamp(c) else c
        for c in load.columns
    ]
    return f"select {', '.join(rendered)} from ({query}) as staged({columns})"


def _stage(
    cur: Cursor, duck: duckdb.DuckDBPyConnection, load: Load, relation: str, where: str = "", params: list | None = None
) -> int:
    """Empty the load's stage tables and COPY the gold rows into stage.<target>(_history)."""
    stage = f"stage.{load.target}_history" if load.is_dimension else f"stage.{load.target}"
    extra = f", stage.{load.target}_version" if load.is_dimension else ""
    cur.execute(f"truncate {stage}{extra}")
    reader = duck.execute(stage_query(load, relation, where), params or []).to_arrow_reader(BATCH_ROWS)
    point = f"mirror.{load.target}.copying"
    return copy_batches(cur, stage, load.columns, reader, on_batch=lambda _: faults.point(point))


def _apply(cur: Cursor, target: str) -> dict[str, int]:
    counts = {}
    for name, sql in load_statements(target):
        cur.execute(sql)
        counts[name] = max(cur.rowcount, 0)
    return counts


def _load_dimension(
    cur: Cursor,
    duck: duckdb.DuckDBPyConnection,
    load: Load,
    source: GoldSource,
    version: int,
    load_id: Callable[[], int],
) -> dict:
    relation = source.relation(duck, load.gold, version)
    in_gold = {
        (d, a)
        for d, a in duck.execute(
            f"select distinct cast(delivery as varchar), cast(as_of as timestamptz)"
            f" from {relation} where as_of is not null"
        ).fetchall()
    }
    new = sorted(in_gold - _applied_deliveries(cur, load.target), key=lambda x: (x[1], x[0]))
    report: dict[str, Any] = {"status": "applied", "gold_version": version, "deliveries": [d for d, _ in new]}
    counts = {"rows_staged": 0, "rows_inserted": 0, "rows_closed": 0, "rows_removed": 0}
    if new:
        replay_from = new[0][1]
        replayed = sorted(d for d, a in in_gold if a >= replay_from and (d, a) not in new)
        counts["rows_staged"] = _stage(cur, duck, load, relation, "as_of >= ?", [replay_from])
        faults.point(f"mirror.{load.target}.staged")
        steps = _apply(cur, load.target)
        counts.update(
            rows_inserted=steps.get("inserted", 0),
            rows_closed=steps.get("closed", 0),
            rows_removed=steps.get("rewound", 0),
        )
        cur.executemany(
            "insert into dw.load_delivery (table_name, delivery, as_of, load_id) values (%s, %s, %s, %s)"
            " on conflict do nothing",
            [(load.target, d, a, load_id()) for d, a in new],
        )
        if replayed:
            report["replayed"] = replayed
    _audit(cur, load_id(), load, version, [d for d, _ in new], counts)
    report.update(counts)
    return report


def _load_fact(
    cur: Cursor,
    duck: duckdb.DuckDBPyConnection,
    load: Load,
    source: GoldSource,
    version: int | None,
    load_id: Callable[[], int],
) -> dict:
    counts = {"rows_staged": 0, "rows_inserted": 0, "rows_closed": 0, "rows_removed": 0}
    if version is None:  # gold table gone while its dimensions changed: the fact is empty
        cur.execute(f"truncate stage.{load.target}")
    else:
        counts["rows_staged"] = _stage(cur, duck, load, source.relation(duck, load.gold, version))
    faults.point(f"mirror.{load.target}.staged")
    steps = _apply(cur, load.target)
    counts.update(rows_inserted=steps.get("inserted", 0), rows_removed=steps.get("removed", 0))
    _audit(cur, load_id(), load, -1 if version is None else version, [], counts)
    return {"status": "applied", "gold_version": version, **counts}


def _audit(cur: Cursor, load_id: int, load: Load, version: int, deliveries: list[str], counts: dict[str, int]) -> None:
    cur.execute(
        "insert into dw.load_audit (load_id, table_name, gold_table, gold_version, deliveries, rows_staged,"
        " rows_inserted, rows_closed, rows_removed) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            load_id,
            load.target,
            load.gold,
            version,
            deliveries,
            counts["rows_staged"],
            counts["rows_inserted"],
            counts["rows_closed"],
            counts["rows_removed"],
        ),
    )


def mirror(settings: Settings | None = None, source: GoldSource | None = None, dsn: str | None = None) -> StageReport:
    """Apply new gold versions to the PostgreSQL warehouse in one transaction; returns a report."""
    settings = settings or get_settings()
    dsn, roles_dsn = (dsn, dsn) if dsn else warehouse_logins(settings)
    source = source or DeltaGold(settings)
    started = time.perf_counter()
    migrate(dsn)
    ensure_bi_login(roles_dsn, settings)

    duck = duckdb_connection()
    conn = psycopg2.connect(dsn)
    tables: dict[str, dict] = {}
    load_ids: list[int] = []
    try:
        with conn, conn.cursor() as cur:
            load_session(cur)
            cur.execute("select pg_advisory_xact_lock(%s)", (MIRROR_LOCK,))
            faults.point("mirror.locked")

            def load_id() -> int:
                if not load_ids:
                    cur.execute("select nextval('dw.load_id_seq')")
                    load_ids.append(first_value(cur))
                return load_ids[0]

            changed: set[str] = set()
            for load in LOADS:
                version = source.version(load.gold)
                last = _last_gold_version(cur, load.target)
                if load.is_dimension:
                    if version is None or version == last:
                        tables[load.target] = {
                            "status": "missing" if version is None else "skipped",
                            "gold_version": version,
                        }
                        continue
                    report = _load_dimension(cur, duck, load, source, version, load_id)
                    if report["deliveries"]:
                        changed.add(load.target)
                else:
                    depends_changed = bool(changed.intersection(load.depends))
                    if version is None and not (depends_changed and last is not None):
                        tables[load.target] = {"status": "missing", "gold_version": None}
                        continue
                    if version == last and not depends_changed:
                        tables[load.target] = {"status": "skipped", "gold_version": version}
                        continue
                    report = _load_fact(cur, duck, load, source, version, load_id)
                tables[load.target] = report
                faults.point(f"mirror.{load.target}.applied")
            faults.point("mirror.before_commit")
        faults.point("mirror.committed")
    finally:
        conn.close()
        duck.close()

    applied = [t for t, r in tables.items() if r["status"] == "applied"]
    seconds = time.perf_counter() - started
    staged = sum(r.get("rows_staged", 0) for r in tables.values())
    return StageReport(
        "mirror",
        rows_in=staged,
        rows_out=sum(r.get("rows_inserted", 0) for r in tables.values()),
        deliveries=sorted({d for r in tables.values() for d in r.get("deliveries", [])}),
        skipped=not applied,
        seconds=round(seconds, 3),
        details={
            "load_id": load_ids[0] if load_ids else None,
            "applied": applied,
            "rows_per_second": round(staged / seconds) if seconds and staged else 0,
            "tables": tables,
        },
    )
