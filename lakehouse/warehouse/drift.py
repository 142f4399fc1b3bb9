"""Drift: each `dw` table against gold, by its rows and a hash of its current state (a dimension's current versions,
every row of a fact, mart or calendar), so a warehouse that no longer says what gold says is named, table by table.
Gold's side is computed in DuckDB, dw's by warehouse_sql/check/state.sql, from the same text of each row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import duckdb
import psycopg2

from lakehouse.config import Settings, get_settings
from lakehouse.pgserver import warehouse_dsn
from lakehouse.reports import TableDrift
from lakehouse.warehouse.gold_tables import DeltaGold, GoldSource, duckdb_connection
from lakehouse.warehouse.loads import LOADS, Load, render

if TYPE_CHECKING:
    from psycopg2.extensions import cursor as Cursor


def _text(column: str, pg_type: str) -> str:
    """DuckDB: a value as state.sql renders it in PostgreSQL (times in UTC to the microsecond)."""
    if pg_type == "timestamptz":
        return f"strftime(cast({column} as timestamp), '%Y-%m-%d %H:%M:%S.%f')"
    if pg_type == "date":
        return f"strftime(cast({column} as date), '%Y-%m-%d')"
    return f"cast({column} as varchar)"


def row_hash(columns: Sequence[tuple[str, str]]) -> str:
    """DuckDB: the 60-bit hash of a row's text that state.sql computes in PostgreSQL ((name, type) per column)."""
    texts = ", ".join(f"coalesce({_text(c, t)}, chr(30))" for c, t in columns)
    return f"cast('0x' || md5(concat_ws(chr(31), {texts}))[1:15] as bigint)"


def state_columns(load: Load) -> list[tuple[str, str]]:
    """The columns a table's state is compared on, with their PostgreSQL types: a dimension's key, attributes and
    deletion flag; every staged column of the others."""
    names = [c for c in load.columns if c not in ("as_of", "delivery")] if load.is_dimension else list(load.columns)
    return [(c, load.spec.column(c).type) for c in names]


def gold_state_query(load: Load, relation: str) -> str:
    """DuckDB: (rows, state hash) of what gold says the table holds: for a dimension each key's latest state (the
    row its load keeps when a key has two at one as-of), for the others the staged rows, one per grain."""
    columns = state_columns(load)
    names = [c for c, _ in columns]
    gold = f"({load.select.format(src=relation)}) as gold({', '.join(load.columns)})"
    if load.is_dimension:
        key, attributes = names[0], names[1:-1]
        rows = (
            f"select distinct on ({key}) {key}, {', '.join(attributes)}, coalesce(is_deleted, false) as is_deleted"
            f" from {gold} where {key} is not null and as_of is not null"
            f" order by {key}, as_of desc, is_deleted, delivery, {', '.join(attributes)}"
        )
    else:
        measures = dict(load.measures)
        grain = [c for c in names if c not in measures]
        aggregated = [*grain, *(f"{aggregate}({c}) as {c}" for c, aggregate in load.measures)]
        rows = f"select {', '.join(aggregated)} from {gold} group by {', '.join(grain)}"
    return f"select count(*), cast(coalesce(sum({row_hash(columns)}), 0) as varchar) from ({rows}) as state"


def state_sql(load: Load) -> str:
    """PostgreSQL: (rows, state hash) of the dw table (warehouse_sql/check/state.sql rendered for it)."""
    surrogate = load.spec.keys[0] if load.is_dimension else ""
    columns = [{"name": c, "type": t} for c, t in state_columns(load)]
    return render("check/state.sql", {"table": load.target, "state_columns": columns, "surrogate_key": surrogate})


# what a gold table's state was at a version: (version, the columns staged, rows, hash), by dw table
Known = dict[str, tuple[int | None, list[str], int, str]]


def recorded(cur: Cursor) -> Known:
    """The gold state each table's last load recorded (dw.load_audit): still gold's while its version is the same."""
    cur.execute(
        "select distinct on (table_name) table_name, gold_version, staged_columns, gold_rows, gold_state"
        " from dw.load_audit where gold_state is not null order by table_name, load_id desc"
    )
    return {t: (None if v == -1 else v, list(c or []), n, h) for t, v, c, n, h in cur.fetchall()}


def check(
    cur: Cursor,
    duck: duckdb.DuckDBPyConnection,
    source: GoldSource,
    versions: dict[str, int | None] | None = None,
    known: Known | None = None,
) -> list[TableDrift]:
    """Every loaded dw table against gold, gold read at `versions` (gold table -> version; latest for the others);
    a gold state in `known` at the same version and columns is not read again."""
    versions, known = versions or {}, known or {}
    cur.execute("select relname from pg_class where relnamespace = 'dw'::regnamespace")
    present = {r[0] for r in cur.fetchall()}
    found = []
    for load in LOADS:
        version = versions[load.gold] if load.gold in versions else source.version(load.gold)
        gold_rows, gold_hash = 0, "0"
        same = known.get(load.target)
        if same is not None and same[:2] == (version, list(load.columns)):
            gold_rows, gold_hash = same[2:]
        elif version is not None:
            query = gold_state_query(load, source.relation(duck, load.gold, version))
            gold_rows, gold_hash = duck.execute(query).fetchone() or (0, "0")
        dw_rows, dw_hash = 0, "0"
        if load.target in present:
            cur.execute(state_sql(load))
            dw_rows, dw_hash = cur.fetchone() or (0, "0")
        found.append(TableDrift(load.target, load.gold, version, gold_rows, dw_rows, gold_hash, dw_hash))
    return found


def drift(
    settings: Settings | None = None, source: GoldSource | None = None, dsn: str | None = None
) -> list[TableDrift]:
    """Each dw table against gold as it is now (latest versions), in one read-only snapshot of the warehouse: one
    result per table, `drifted` when they differ (what `lakehouse checks` reports)."""
    settings = settings or get_settings()
    source = source or DeltaGold(settings)
    duck = duckdb_connection()
    conn = psycopg2.connect(dsn or warehouse_dsn(settings))
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn, conn.cursor() as cur:
            return check(cur, duck, source)
    finally:
        conn.close()
        duck.close()
