"""The catalogue (lakehouse/tables.py): consistent, the one source the layers, the warehouse, the dashboard and the
docs read, and `lakehouse tables` prints it."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest

from apps import queries
from lakehouse import bronze, dictionary, gold, silver, tables
from lakehouse.config import PROJECT_ROOT
from lakehouse.warehouse.loads import LOADS


def test_every_layer_models_exactly_the_catalogues_tables():
    assert {t for g in bronze.GROUPS.values() for t in g} == {
        (t.layer, t.name) for t in tables.LAKE if t.layer in ("bronze", "quarantine")
    }
    assert tuple(silver.BY_NAME) == tables.names("silver")
    assert set(gold.TABLES) == set(tables.names("gold"))
    loaded = {t.name for t in tables.layer("dw") if t.kept_by is tables.Kept.LOADED}
    assert {load.target for load in LOADS} == loaded
    assert tables.ENTITIES == tuple(e.entity for e in tables.EXPORTS)


def test_no_statistics_on_personal_columns_and_the_learner_is_personal_everywhere():
    for t in tables.TABLES:
        assert not set(t.stats) & set(t.personal), t.key
        if "student_id" in t.names:
            assert t.column("student_id").pii, t.key
    with pytest.raises(ValueError, match="statistics on personal"):
        tables.Table(
            "gold",
            "x",
            "one row",
            ("student_id",),
            (tables.col("student_id"),),
            tables.Kept.REBUILT,
            stats=("student_id",),
        ).check()
    with pytest.raises(ValueError, match="partition column"):
        tables.Table(
            "gold", "x", "one row", (), (tables.col("city"),), tables.Kept.REBUILT, partition_by=("day",)
        ).check()


def test_every_column_is_typed_and_described():
    for t in tables.TABLES:
        assert t.grain and t.keys, t.key
        for c in t.columns:
            assert c.description.strip() and c.type.strip(), f"{t.key}.{c.name}"
            if t.layer != "dw":
                dictionary.duckdb_type(c.type)  # every lake type has its DuckDB name


def test_docs_are_generated_from_the_catalogue():
    assert (PROJECT_ROOT / "docs" / "lake-tables.md").read_text() == dictionary.markdown()


def test_the_dashboard_reads_only_what_the_catalogue_declares():
    """Every statement of the dashboard binds against empty tables made from the catalogue alone."""
    con = duckdb.connect()
    for layer in dictionary.QUERY_LAYERS:
        con.execute(f"create schema {layer}")
    for t in dictionary.listed():
        columns = ", ".join(f'"{c.name}" {dictionary.duckdb_type(c.type)}' for c in t.columns)
        con.execute(f'create table {t.layer}."{t.name}" ({columns})')
    assert set(queries.CACHE_SOURCES) <= set(tables.BY_KEY)
    for sql in queries.CACHE:
        con.execute(sql)
    assert set(queries.CACHE_SOURCES) == {
        "gold.fact_page_view",
        "gold.dim_student",
        "gold.fact_session",
        "gold.fact_subscription",
        "gold.dim_date",
    }
    params = {"start": "2017-11-01", "end": "2017-11-30", "client": None, "country": None, "top": 5}
    params |= {"month": "2017-11-01", "min_views": 100}
    for sql in queries.SQL.values():  # only the catalogue's tables exist here: any other name fails to bind
        con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql} or None).fetchall()


def test_tables_command_prints_the_data_dictionary():
    out = subprocess.run(
        [sys.executable, "-m", "lakehouse.cli", "tables", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    entries = json.loads(out.stdout)
    assert [e["table"] for e in entries] == [t.key for t in dictionary.listed()]
    for e in entries:
        assert set(e) == {"table", "grain", "keys", "kept_by", "columns"}
        for c in e["columns"]:
            assert set(c) == {"name", "type", "description", "pii"}
            if c["name"] == "student_id":
                assert c["pii"] is True
    one = subprocess.run(
        [sys.executable, "-m", "lakehouse.cli", "tables", "dim_student", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    assert [e["table"] for e in json.loads(one.stdout)] == ["gold.dim_student"]
    missing = subprocess.run(
        [sys.executable, "-m", "lakehouse.cli", "tables", "gold.nothing"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert missing.returncode == 1 and "no table 'gold.nothing'" in missing.stderr
