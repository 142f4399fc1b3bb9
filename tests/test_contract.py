"""The catalogue as a contract: after pipeline runs, every table of the lake is what the catalogue says (columns,
types, how it is kept), `lakehouse tables` types match `lakehouse query`'s, and every `dw` table and column carries
the catalogue's description. A transform that forgets the catalogue fails here (and at its write)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psycopg2
import pytest

from lakehouse import bronze, catalog, dictionary, gold, silver, tables
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.delta import SchemaMismatch, Target, overwrite
from lakehouse.delta_log import DeltaLog
from lakehouse.landing import land
from lakehouse.tools.generate import generate
from lakehouse.warehouse.mirror import mirror
from tests.builders import new_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def built(spark, pg_server, tmp_path_factory):
    """A lake built by two runs (two deliveries, then the third: the incremental paths) and mirrored."""
    root = tmp_path_factory.mktemp("contract")
    generate(root / "all", seed=3, students=40, events=600, deliveries=3)
    deliveries = sorted(p.name for p in (root / "all" / "events").iterdir())
    settings = Settings(
        source=str(root / "source"),
        lake=str(root / "lake"),
        data_dir=str(root / "data"),
        pg_dsn=new_database(pg_server),
        spark_master="local[2]",
        shuffle_partitions=2,
    )
    for run, upto in enumerate((2, 3)):
        for kind in ("events", "transactional"):
            for d in deliveries[:upto]:
                shutil.copytree(root / "all" / kind / d, root / "source" / kind / d, dirs_exist_ok=True)
        land(settings)
        bronze.ingest(spark, settings, f"run-{run}")
        silver.refresh(spark, settings, f"run-{run}")
        gold.refresh(spark, settings, f"run-{run}")
        mirror(settings)
    return settings


def test_every_delta_table_has_the_catalogues_columns_and_types(spark, built):
    found = catalog.lake_tables(built, [*dictionary.QUERY_LAYERS, "_system"])
    lake_specs = {t.key for t in tables.LAKE if t.layer != "_system"}
    assert {t.key for t in found} >= lake_specs  # every table the catalogue promises was built
    for table in found:
        spec = tables.table(table.layer, table.name)
        schema = spark.read.format("delta").load(table.location).schema
        assert [(f.name, f.dataType.simpleString()) for f in schema.fields] == [(c.name, c.type) for c in spec.columns]


def test_tables_command_types_are_lakehouse_querys(built):
    env = {"LAKEHOUSE_LAKE": built.lake_url, "LAKEHOUSE_DATA_DIR": str(built.data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "lakehouse.cli", "tables", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
    )
    described = {e["table"]: [(c["name"], c["type"]) for c in e["columns"]] for e in json.loads(out.stdout)}
    lake = catalog.connect(built, read_only=True)
    try:
        for table in lake.tables:
            _, rows = lake.rows(f"describe {table.key}")
            assert described[table.key] == [(r[0], r[1]) for r in rows], table.key
    finally:
        lake.close()


# how each way of keeping a table shows in the Delta log: (operation, mode, whether a predicate narrows it)
_OPERATIONS = {
    tables.Kept.APPENDED: {("WRITE", "Append", False)},
    tables.Kept.MERGED: {("MERGE", None, True), ("WRITE", "Append", False)},  # a MERGE's predicate: its ON
    tables.Kept.REPLACED_BY_DELIVERY: {("WRITE", "Overwrite", True)},
    tables.Kept.REPLACED_BY_GROUP: {("WRITE", "Overwrite", True)},
    tables.Kept.REBUILT: {("WRITE", "Overwrite", False)},
}


def test_each_table_is_kept_as_the_catalogue_says(built):
    """Every commit after a table's first that changed data is of the kind its `kept_by` names."""
    for spec in tables.LAKE:
        if spec.layer == "_system":
            continue
        log = DeltaLog(built.table_path(spec.layer, spec.name))
        seen = set()
        for _, name in log.commits[1:]:
            actions = list(log.actions(name))
            if not any("add" in a or "remove" in a for a in actions):
                continue  # an empty commit records progress only
            info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
            params = info.get("operationParameters") or {}
            predicate = params.get("predicate") not in (None, "[]", "")
            seen.add((info["operation"], params.get("mode"), predicate))
        assert seen <= _OPERATIONS[spec.kept_by], (spec.key, seen)


def test_every_dw_table_view_and_column_has_the_catalogues_description(built):
    with psycopg2.connect(built.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute(
            "select c.relname, c.relkind, a.attname, col_description(c.oid, a.attnum),"
            " obj_description(c.oid, 'pg_class')"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
            " where n.nspname = 'dw' and c.relkind in ('r', 'v', 'm')"
            " order by c.relname, a.attnum"
        )
        found = cur.fetchall()
    conn.close()
    assert {t for t, *_ in found} == set(tables.names("dw"))
    views = {t for t, kind, *_ in found if kind == "v"}
    assert views == {t.name for t in tables.layer("dw") if t.kept_by is tables.Kept.VIEW} and views
    for table, _, column, comment, table_comment in found:
        spec = tables.table("dw", table)
        assert comment and comment == spec.column(column).description, (table, column)
        assert table_comment and table_comment.startswith(spec.grain), table
    for spec in tables.layer("dw"):  # every column the catalogue lists is there, views' in their order
        columns = [c for t, _, c, *_ in found if t == spec.name]
        assert (columns if spec.name in views else sorted(columns)) == (
            list(spec.names) if spec.name in views else sorted(spec.names)
        ), spec.name


def test_a_write_that_forgets_the_catalogue_is_refused(spark, built):
    rows = spark.read.format("delta").load(built.table_path("gold", "mart_users_by_type"))
    target = Target(tables.table("gold", "mart_users_by_type"), built)
    with pytest.raises(SchemaMismatch, match="not in the catalogue: extra"):
        overwrite(rows.selectExpr("*", "1 as extra"), target)
    with pytest.raises(SchemaMismatch, match="page_views is int, the catalogue says bigint"):
        overwrite(rows.selectExpr("user_type", "cast(page_views as int) as page_views", "students"), target)
