"""The gold → dw mirror: each `dw` table brought to what gold holds, in one transaction (COPY into unlogged stage
tables, then the table's load template: SCD2 versions for a dimension, surrogate keys resolved for a fact), then
every table checked against gold (drift). A dimension follows gold's history, not delivery names: a fingerprint of
each delivery's gold rows is kept in dw.load_delivery, and the dimension is restated from the first delivery whose
fingerprint changed (corrected, late, erased or rebuilt), keeping the surrogate keys of the versions that did not."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import psycopg2

from lakehouse import faults, tables
from lakehouse.config import Settings, get_settings
from lakehouse.delta_log import ChangesGone
from lakehouse.pgserver import warehouse_logins
from lakehouse.reports import LoadReport, StageReport, TableDrift
from lakehouse.warehouse.csv_copy import copy_batches
from lakehouse.warehouse.drift import check, recorded, row_hash
from lakehouse.warehouse.gold_tables import ArrowGold, DeltaGold, GoldSource, duckdb_connection
from lakehouse.warehouse.loads import LOADS, Load, load_statements, repoint_statements
from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.roles import ensure_bi_login

if TYPE_CHECKING:
    from psycopg2.extensions import cursor as Cursor

# where gold is read from, as the mirror's callers name it
__all__ = ["ArrowGold", "DeltaGold", "GoldSource", "duckdb_connection", "first_value", "load_session", "mirror"]

log = logging.getLogger(__name__)

MIRROR_LOCK = 0x6C616B65_6D697272  # pg advisory lock key of the mirror ("lakemirr")
BATCH_ROWS = 16_384  # rows per Arrow batch rendered as one CSV chunk
Delivery = tuple[str, datetime]  # (delivery, as_of)


def first_value(cur: Cursor) -> Any:
    """The first column of the row the last statement returned (one it always returns)."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _last_load(cur: Cursor, target: str) -> tuple[int, list[str] | None] | None:
    """(the gold version the table's last load read, -1 when the gold table was gone; the columns it staged), or
    None when it was never loaded."""
    cur.execute(
        "select gold_version, staged_columns from dw.load_audit where table_name = %s order by load_id desc limit 1",
        (target,),
    )
    row = cur.fetchone()
    return (row[0], row[1]) if row else None


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


def _copied(columns: Iterable[str]) -> str:
    """The select list of columns as COPY reads them: timestamps leave DuckDB as UTC text with an explicit offset
    (DuckDB renders them several times faster than Arrow's CSV writer, and PostgreSQL reads them the same whatever
    its session time zone)."""
    return ", ".join(
        f"strftime(cast({c} as timestamp), '%Y-%m-%d %H:%M:%S.%f+00') as {c}" if _is_timestamp(c) else c
        for c in columns
    )


def stage_query(load: Load, relation: str, where: str = "") -> str:
    """The DuckDB query whose rows are COPYed into the load's stage table."""
    columns = ", ".join(load.columns)
    query = load.select.format(src=relation)
    if where:
        query = f"select * from ({query}) as gold({columns}) where {where}"
    return f"select {_copied(load.columns)} from ({query}) as staged({columns})"


def _stage(
    cur: Cursor,
    duck: duckdb.DuckDBPyConnection,
    load: Load,
    relation: str | None,
    where: str = "",
    params: list | None = None,
) -> int:
    """Empty the load's stage tables and COPY the gold rows into stage.<target>(_history); no relation: no gold
    table, nothing staged."""
    stage = f"stage.{load.target}_history" if load.is_dimension else f"stage.{load.target}"
    extra = f", stage.{load.target}_version, stage.{load.target}_changed" if load.is_dimension else ""
    cur.execute(f"truncate {stage}{extra}")
    if relation is None:
        return 0
    reader = duck.execute(stage_query(load, relation, where), params or []).to_arrow_reader(BATCH_ROWS)
    point = f"mirror.{load.target}.copying"
    return copy_batches(cur, stage, load.columns, reader, on_batch=lambda _: faults.point(point))


def replay_from(cur: Cursor, target: str, moment: datetime | None) -> None:
    """Set the as-of a dimension's versions are restated from (stage.load_replay); None: from the start."""
    cur.execute(
        "insert into stage.load_replay (table_name, replay_from) values (%s, coalesce(%s::timestamptz, '-infinity'))"
        " on conflict (table_name) do update set replay_from = excluded.replay_from",
        (target, moment),
    )


def _apply(cur: Cursor, target: str, changes: bool = False) -> dict[str, int]:
    counts = {}
    for name, sql in load_statements(target, changes):
        cur.execute(sql)
        counts[name] = max(cur.rowcount, 0)
    return counts


# -- dimensions: restated from the first delivery whose gold rows changed -----------------------


def gold_deliveries(duck: duckdb.DuckDBPyConnection, load: Load, relation: str | None) -> dict[Delivery, tuple]:
    """(rows, fingerprint) of each delivery of a gold history: its row count and the sum of a hash of each row as
    staged (the hash the drift check uses; stable across DuckDB versions)."""
    if relation is None:
        return {}
    gold = tables.table("gold", load.gold)
    typed = [(c, tables.pg_type(gold.column(c).type)) for c in load.columns]
    query = (
        f"select delivery, cast(as_of as timestamptz), count(*), cast(sum({row_hash(typed)}) as varchar)"
        f" from ({load.select.format(src=relation)}) as gold({', '.join(load.columns)})"
        " where as_of is not null group by all"
    )
    return {(d, a): (n, h) for d, a, n, h in duck.execute(query).fetchall()}


def _applied(cur: Cursor, target: str) -> dict[Delivery, tuple]:
    """(rows, fingerprint) of each delivery dw.load_delivery says the dimension holds (nulls: recorded before
    fingerprints were)."""
    cur.execute("select delivery, as_of, rows, fingerprint from dw.load_delivery where table_name = %s", (target,))
    return {(d, a): (n, h) for d, a, n, h in cur.fetchall()}


def _names(deliveries: Iterable[Delivery]) -> list[str]:
    """Delivery names in as-of order."""
    return [d for d, _ in sorted(deliveries, key=lambda x: (x[1], x[0]))]


def _load_dimension(
    cur: Cursor,
    duck: duckdb.DuckDBPyConnection,
    load: Load,
    source: GoldSource,
    version: int | None,
    load_id: Callable[[], int],
    full_refresh: bool = False,
) -> tuple[LoadReport, bool]:
    """Restate the dimension from the first delivery whose gold rows differ from those it applied (every delivery on
    a full refresh); (its report, whether a surrogate key changed: its facts are then re-pointed)."""
    relation = None if version is None else source.relation(duck, load.gold, version)
    in_gold = gold_deliveries(duck, load, relation)
    applied = _applied(cur, load.target)
    changed = {d for d in in_gold.keys() | applied.keys() if in_gold.get(d) != applied.get(d)}
    if not in_gold and not applied:
        return LoadReport("missing", version), False
    if not changed and not full_refresh:
        return LoadReport("skipped", version), False
    start = None if full_refresh else min(a for _, a in changed)
    unknown = {d for d, (_, h) in applied.items() if h is None}  # applied before fingerprints: re-read, not corrected
    report = LoadReport(
        "applied",
        version,
        deliveries=_names(d for d in changed if d not in applied),
        corrected=_names(d for d in changed if d in applied and d not in unknown),
        replayed=_names(d for d in in_gold if (d not in changed or d in unknown) and (start is None or d[1] >= start)),
        restated_from=start.isoformat() if start else "-infinity",
    )
    replay_from(cur, load.target, start)
    report.rows_staged = _stage(cur, duck, load, relation, *(("as_of >= ?", [start]) if start else ()))
    faults.point(f"mirror.{load.target}.staged")
    steps = _apply(cur, load.target)
    report.rows_inserted, report.rows_closed, report.rows_removed = steps["inserted"], steps["closed"], steps["removed"]
    # dw.load_delivery brought to gold's fingerprints: the changed deliveries (all of them on a full refresh)
    redone = set(applied) | set(in_gold) if full_refresh else changed
    cur.execute(
        "delete from dw.load_delivery where table_name = %s and (delivery, as_of) in"
        " (select * from unnest(%s::text[], %s::timestamptz[]))",
        (load.target, [d for d, _ in redone], [a for _, a in redone]),
    )
    cur.executemany(
        "insert into dw.load_delivery (table_name, delivery, as_of, load_id, rows, fingerprint)"
        " values (%s, %s, %s, %s, %s, %s)",
        [(load.target, d, a, load_id(), *in_gold[(d, a)]) for d, a in redone if (d, a) in in_gold],
    )
    _audit(cur, load_id(), load, version, report)
    return report, steps["changed"] > 0


# -- facts: restaged when their gold moved, re-pointed when only their dimensions did ----------------


def _load_fact(
    cur: Cursor,
    duck: duckdb.DuckDBPyConnection,
    load: Load,
    source: GoldSource,
    version: int | None,
    load_id: Callable[[], int],
    since: int | None = None,
    repointed: set[str] | None = None,
) -> LoadReport:
    """Bring the fact to exactly gold's rows, each with the surrogate keys valid at its time (no gold table: none).
    `since`: the gold version the fact last applied; when gold's change feed since then can be read, only the grains
    it changed are restaged and replaced (the rows of other grains then get the versions of `repointed` dimensions
    by re-pointing); otherwise, or without `since`, the whole table is read."""
    relation = None if version is None else source.relation(duck, load.gold, version)
    changed = None if since is None or version is None else _changed(duck, load, source, since, version)
    if changed is None:
        report = LoadReport("applied", version, read="full", rows_staged=_stage(cur, duck, load, relation))
    else:
        report = LoadReport("applied", version, read="changes", rows_changed=changed)
        report.rows_staged = _stage_changed(cur, duck, load, relation) if changed else _stage(cur, duck, load, None)
    faults.point(f"mirror.{load.target}.staged")
    if changed != 0:  # no row changed (a commit of table properties, say): nothing to replace
        steps = _apply(cur, load.target, changes=changed is not None)
        report.rows_inserted, report.rows_removed = steps["inserted"], steps["removed"]
    if changed is not None and repointed and version is not None:
        report.rows_repointed = _repoint(cur, load, repointed)
    _audit(cur, load_id(), load, version, report)
    return report


# the DuckDB names of a changes load: gold's changed rows, the keys of the grains they touch
CHANGES, CHANGED_KEYS = "gold_changes", "gold_changed_keys"


def _changed(duck: duckdb.DuckDBPyConnection, load: Load, source: GoldSource, since: int, version: int) -> int | None:
    """Read the rows of the fact's gold table changed after version `since` up to `version` (its change feed) and
    keep the keys of the grains they touch in DuckDB (CHANGED_KEYS); the rows changed, or None when they cannot be
    read: then the whole table is, and one warning says why."""
    if not tables.table("gold", load.gold).change_feed:
        return None  # rewritten whole at every change (the calendar): read whole
    try:
        rows = source.changes(load.gold, since, version)
    except ChangesGone as why:
        log.warning(
            "dw.%s: gold.%s is read whole, its changes since version %d cannot be read: %s",
            load.target,
            load.gold,
            since,
            why,
        )
        return None
    if rows is None:
        return 0
    duck.register(CHANGES, rows)
    keys = ", ".join(load.keys)
    selected = load.select.format(src=CHANGES)
    duck.execute(
        f"create or replace temp table {CHANGED_KEYS} as"
        f" select distinct {keys} from ({selected}) as changed({', '.join(load.columns)})"
    )
    return rows.num_rows


def _stage_changed(cur: Cursor, duck: duckdb.DuckDBPyConnection, load: Load, relation: str | None) -> int:
    """Stage gold's current rows of the grains the changes touch (gold read only in the partitions they touch), and
    list those grains in the temporary table <target>_changed; the rows staged."""
    keys = load.keys
    cur.execute(
        f"create temporary table {load.target}_changed on commit drop as"
        f" select {', '.join(keys)} from dw.{load.target} with no data"
    )
    reader = duck.execute(f"select {_copied(keys)} from {CHANGED_KEYS}").to_arrow_reader(BATCH_ROWS)
    copy_batches(cur, f"{load.target}_changed", keys, reader)
    if relation is not None:
        relation = _partitions_changed(duck, load, relation)
    matched = " and ".join(f"k.{k} is not distinct from gold.{k}" for k in keys)
    return _stage(cur, duck, load, relation, f"exists (select 1 from {CHANGED_KEYS} as k where {matched})")


def _partitions_changed(duck: duckdb.DuckDBPyConnection, load: Load, relation: str) -> str:
    """The gold relation restricted to the partitions the changed rows lie in, by the partition columns that are
    grain columns too (every row of a grain then lies in one partition); the whole of it otherwise."""
    gold = tables.table("gold", load.gold)
    within = []
    for column in (c for c in gold.partition_by if c in load.keys):
        values = [v for (v,) in duck.execute(f"select distinct cast({column} as varchar) from {CHANGES}").fetchall()]
        literals = ", ".join(
            f"cast('{v.replace(chr(39), chr(39) * 2)}' as {gold.column(column).type})" for v in values if v is not None
        )
        found = ([f"{column} in ({literals})"] if literals else []) + ([f"{column} is null"] if None in values else [])
        within.append(f"({' or '.join(found) or 'false'})")
    return f"(select * from {relation} where {' and '.join(within)})" if within else relation


def _repoint(cur: Cursor, load: Load, dimensions: set[str]) -> int:
    """Re-point the fact's rows of the dimension keys whose versions changed; the rows re-pointed."""
    repointed = 0
    for dimension, sql in repoint_statements(load.target).items():
        if dimension in dimensions:
            cur.execute(sql)
            repointed += max(cur.rowcount, 0)
    return repointed


def _repoint_fact(cur: Cursor, load: Load, dimensions: set[str], version: int | None, load_id: int) -> LoadReport:
    """Give the fact's rows of the keys whose versions changed the versions valid at their time (gold unchanged)."""
    report = LoadReport("applied", version, rows_repointed=_repoint(cur, load, dimensions))
    _audit(cur, load_id, load, version, report)
    return report


def _audit(cur: Cursor, load_id: int, load: Load, version: int | None, report: LoadReport) -> None:
    cur.execute(
        "insert into dw.load_audit (load_id, table_name, gold_table, gold_version, deliveries, rows_staged,"
        " rows_inserted, rows_closed, rows_removed, restated_from, rows_repointed, staged_columns)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            load_id,
            load.target,
            load.gold,
            -1 if version is None else version,
            report.deliveries + report.corrected,
            report.rows_staged,
            report.rows_inserted,
            report.rows_closed,
            report.rows_removed,
            report.restated_from,
            report.rows_repointed,
            list(load.columns),
        ),
    )


def _record_states(cur: Cursor, drift: list[TableDrift]) -> None:
    """Keep what gold held in each table's last load row when it read that gold version: the next runs' checks need
    not read it again (written once per version; a run with nothing new then writes nothing)."""
    columns = {load.target: list(load.columns) for load in LOADS}
    cur.executemany(
        "update dw.load_audit as a set gold_rows = %s, gold_state = %s"
        " where a.table_name = %s and a.load_id = (select max(load_id) from dw.load_audit where table_name = %s)"
        " and a.gold_version = %s and a.staged_columns = %s::text[] and a.gold_state is distinct from %s",
        [
            (
                t.gold_rows,
                t.gold_hash,
                t.table,
                t.table,
                -1 if t.gold_version is None else t.gold_version,
                columns[t.table],
                t.gold_hash,
            )
            for t in drift
        ],
    )


# -- the mirror ------------------------------------------------------------------------------


def mirror(
    settings: Settings | None = None,
    source: GoldSource | None = None,
    dsn: str | None = None,
    full_refresh: bool = False,
) -> StageReport:
    """Bring the PostgreSQL warehouse to what gold holds, in one transaction, and check every table against gold;
    returns a report. `full_refresh` restates every dimension from its first delivery and reloads every table: dw
    then equals a mirror of gold into an empty warehouse (BI sessions read the previous state until it commits)."""
    settings = settings or get_settings()
    dsn, roles_dsn = (dsn, dsn) if dsn else warehouse_logins(settings)
    source = source or DeltaGold(settings)
    started = time.perf_counter()
    migrate(dsn)
    ensure_bi_login(roles_dsn, settings)

    duck = duckdb_connection()
    conn = psycopg2.connect(dsn)
    loaded: dict[str, LoadReport] = {}
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

            versions: dict[str, int | None] = {}
            repointed: set[str] = set()  # dimensions whose loads changed surrogate keys
            for load in LOADS:
                version = versions[load.gold] = source.version(load.gold)
                if load.is_dimension:
                    loaded[load.target], keys_changed = _load_dimension(
                        cur, duck, load, source, version, load_id, full_refresh
                    )
                    if keys_changed:
                        repointed.add(load.target)
                else:
                    last = _last_load(cur, load.target)
                    seen = None if last is None or last[0] == -1 else last[0]
                    reshaped = last is not None and last[1] != list(load.columns)  # loaded before a column was
                    if version is None and last is None:
                        loaded[load.target] = LoadReport("missing")
                    elif full_refresh or seen is None or version is None or version < seen or reshaped:
                        loaded[load.target] = _load_fact(cur, duck, load, source, version, load_id)
                    elif version > seen:  # gold's changes since the version applied, when they can be read
                        loaded[load.target] = _load_fact(
                            cur, duck, load, source, version, load_id, since=seen, repointed=repointed
                        )
                    elif repointed.intersection(load.depends) and version is not None:
                        loaded[load.target] = _repoint_fact(cur, load, repointed, version, load_id())
                    else:
                        loaded[load.target] = LoadReport("skipped", version)
                if loaded[load.target].status == "applied":
                    faults.point(f"mirror.{load.target}.applied")
            drift = check(cur, duck, source, versions, recorded(cur))
            _record_states(cur, drift)
            for table in drift:
                if table.drifted:
                    log.warning(
                        "dw.%s differs from gold.%s (%d rows against %d): `lakehouse run --full-refresh warehouse`"
                        " rebuilds dw from gold",
                        table.table,
                        table.gold_table,
                        table.dw_rows,
                        table.gold_rows,
                    )
            faults.point("mirror.before_commit")
        faults.point("mirror.committed")
    finally:
        conn.close()
        duck.close()

    applied = [t for t, r in loaded.items() if r.status == "applied"]
    seconds = time.perf_counter() - started
    staged = sum(r.rows_staged for r in loaded.values())
    return StageReport(
        "mirror",
        rows_in=staged,
        rows_out=sum(r.rows_inserted for r in loaded.values()),
        deliveries=sorted({d for r in loaded.values() for d in (*r.deliveries, *r.corrected)}),
        skipped=not applied,
        seconds=round(seconds, 3),
        details={
            "load_id": load_ids[0] if load_ids else None,
            "applied": applied,
            "full_refresh": full_refresh,
            "rows_per_second": round(staged / seconds) if seconds and staged else 0,
            "tables": loaded,
            "drift": drift,
            "drifted": [t.table for t in drift if t.drifted],
        },
    )
