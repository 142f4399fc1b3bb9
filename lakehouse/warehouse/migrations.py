"""The warehouse's schema: the numbered migrations of warehouse_sql/ applied in order, each once, then what the
catalogue says of every `dw` table brought in: columns it lists that a table lacks, and every table, view and column
comment (what BI tools show as descriptions)."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2

from lakehouse import tables
from lakehouse.warehouse.loads import LOADS, SQL_DIR

if TYPE_CHECKING:
    from psycopg2.extensions import cursor as Cursor

log = logging.getLogger(__name__)

MIGRATE_LOCK = 0x6C616B65_6D696772  # pg advisory lock key of the migrations runner ("lakemigr")


def migrations() -> list[tuple[int, str, Path]]:
    """The migration files `warehouse_sql/NNN_name.sql`, in order."""
    found = []
    for path in SQL_DIR.glob("*.sql"):
        m = re.fullmatch(r"(\d{3})_(\w+)\.sql", path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return sorted(found)


def stage_tables() -> dict[str, list[tuple[str, str]]]:
    """The unlogged stage tables of the loads, as (column, PostgreSQL type) lists: a dimension's staged gold history,
    its computed versions and the keys whose versions changed, a fact's staged rows."""
    out: dict[str, list[tuple[str, str]]] = {}
    for load in LOADS:
        spec = load.spec
        if load.is_dimension:
            gold = tables.table("gold", load.gold)
            out[f"{load.target}_history"] = [(c.name, tables.pg_type(c.type)) for c in gold.columns]
            versioned = [c for c in spec.columns if not c.name.endswith("_sk") and c.name != "is_current"]
            out[f"{load.target}_version"] = [(c.name, c.type) for c in versioned]
            out[f"{load.target}_changed"] = [(load.key or "", spec.column(load.key or "").type)]
        else:
            out[load.target] = [(c.name, spec.column(c.name).type) for c in spec.columns if c.name in load.columns]
    return out


def _existing_columns(cur: Cursor, schema: str) -> dict[str, set[str]]:
    cur.execute("select table_name, column_name from information_schema.columns where table_schema = %s", (schema,))
    found: dict[str, set[str]] = {}
    for table, column in cur.fetchall():
        found.setdefault(table, set()).add(column)
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


STAGE_OPTIONS = "autovacuum_enabled=false"  # staged rows never get statistics (pg_stats would keep them)


def _stage_tables(cur: Cursor) -> None:
    """Create the stage tables the loads need that are missing (an erasure drops them all), each unlogged and never
    analysed: `pg_stats` keeps no staged value."""
    cur.execute(
        "select c.relname, coalesce(array_to_string(c.reloptions, ','), '') from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'stage' and c.relkind = 'r'"
    )
    found = dict(cur.fetchall())
    for name, columns in stage_tables().items():
        if name not in found:
            listed = ", ".join(f"{column} {pg}" for column, pg in columns)
            cur.execute(f"create unlogged table stage.{name} ({listed}) with ({STAGE_OPTIONS})")
        elif STAGE_OPTIONS not in found[name]:
            cur.execute(f"alter table stage.{name} set ({STAGE_OPTIONS})")


def _current_views(cur: Cursor) -> None:
    """(Re)create each dimension's current-state view whose columns differ from the catalogue's (a column added to
    the dimension reaches its view): the dimension's current versions, `valid_from` as `current_since`."""
    cur.execute(
        "select table_name, array_agg(column_name::text order by ordinal_position) from information_schema.columns"
        " where table_schema = 'dw' group by table_name"
    )
    found = dict(cur.fetchall())
    for view in (t for t in tables.layer("dw") if t.kept_by is tables.Kept.VIEW):
        names = list(view.names)
        if found.get(view.name) == names or view.source not in found:
            continue
        listed = ", ".join("valid_from as current_since" if n == "current_since" else n for n in names)
        cur.execute(f"drop view if exists dw.{view.name}")
        cur.execute(f"create view dw.{view.name} as select {listed} from dw.{view.source} where is_current")
        cur.execute(f"grant select on dw.{view.name} to bi_reader")
        log.info("dw.%s made from the catalogue", view.name)


def sync_catalogue(cur: Cursor) -> None:
    """Create missing stage tables, add the columns the catalogue lists that a `dw` or stage table lacks, bring the
    current-state views to the catalogue's columns, and set every `dw` comment that differs from the catalogue's
    description (tables, views and their columns)."""
    _stage_tables(cur)
    wanted = {
        ("dw", t.name): [(c.name, c.type) for c in t.columns]
        for t in tables.layer("dw")
        if t.kept_by is not tables.Kept.VIEW
    }
    wanted.update({("stage", name): columns for name, columns in stage_tables().items()})
    existing = {"dw": _existing_columns(cur, "dw"), "stage": _existing_columns(cur, "stage")}
    for (schema, table), columns in wanted.items():
        have = existing[schema].get(table)
        if have is None:  # not created yet: its migration makes it
            continue
        for name, pg in columns:
            if name not in have:
                cur.execute(f"alter table {schema}.{table} add column {name} {pg}")
                log.info("added %s.%s.%s (%s) from the catalogue", schema, table, name, pg)
    _current_views(cur)
    cur.execute(
        "select c.relname, c.relkind, a.attname, coalesce(col_description(c.oid, a.attnum), ''),"
        " coalesce(obj_description(c.oid, 'pg_class'), '')"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        " where n.nspname = 'dw' and c.relkind in ('r', 'v', 'm', 'p')"
    )
    described: dict[tuple[str, str | None], str] = {}
    kinds: dict[str, str] = {}
    for table, kind, column, column_comment, table_comment in cur.fetchall():
        kinds[table] = {"v": "view", "m": "materialized view"}.get(kind, "table")
        described[(table, None)] = table_comment
        if column is not None:
            described[(table, column)] = column_comment
    for spec in tables.layer("dw"):
        if spec.name not in kinds:
            continue
        text = f"{spec.grain}; kept: {spec.kept_by}"
        if described.get((spec.name, None)) != text:
            cur.execute(f"comment on {kinds[spec.name]} dw.{spec.name} is {_literal(text)}")
        for c in spec.columns:
            if (spec.name, c.name) in described and described[(spec.name, c.name)] != c.description:
                cur.execute(f"comment on column dw.{spec.name}.{c.name} is {_literal(c.description)}")


class MigrationError(RuntimeError):
    """A migration file no longer matches what was applied to the warehouse."""


def _changed_migrations(done: dict[int, str]) -> list[str]:
    """Why migrate refuses: one line per applied migration whose file changed since it was applied."""
    found = migrations()
    problems = []
    for version, _, path in found:
        checksum = hashlib.sha256(path.read_text().encode()).hexdigest()
        if version in done and done[version] != checksum:
            problems.append(
                f"warehouse_sql/{path.name} was changed after it was applied to this database"
                f" (applied sha256 {done[version][:12]}, file now {checksum[:12]})"
            )
    return problems


def migrate(dsn: str) -> list[str]:
    """Apply the pending warehouse migrations in order, each once (recorded in dw.schema_version), then bring the
    columns and comments of `dw` to the catalogue's; refuse to run when an applied migration file was changed since
    (MigrationError)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    applied: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (MIGRATE_LOCK,))
            cur.execute("create schema if not exists dw")
            cur.execute(
                "create table if not exists dw.schema_version (version integer primary key, name text not null,"
                " checksum text not null, applied_at timestamptz not null default now())"
            )
            cur.execute("select version, checksum from dw.schema_version")
            done = dict(cur.fetchall())
        problems = _changed_migrations(done)
        if problems:
            last = max((v for v, _, _ in migrations()), default=0)
            raise MigrationError(
                "; ".join(problems) + ". Applied migrations are never run again, so the change would not reach"
                " this database. Restore the file as it was applied (for example `git log -p -- warehouse_sql/`)"
                f" and put the change in a new migration, warehouse_sql/{last + 1:03d}_<what>.sql. No migration"
                " was applied."
            )
        for version, name, path in migrations():
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                continue
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(sql)
                cur.execute(
                    "insert into dw.schema_version (version, name, checksum) values (%s, %s, %s)",
                    (version, name, checksum),
                )
            conn.commit()
            conn.autocommit = True
            applied.append(path.name)
            log.info("applied migration %s", path.name)
        conn.autocommit = False
        with conn.cursor() as cur:
            sync_catalogue(cur)
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    finally:
        conn.close()
    return applied
