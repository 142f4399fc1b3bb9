"""DuckDB over a real gold-shaped Delta lake: discovery, formats, time travel, errors, sandbox, hostile values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from lakehouse import catalog
from lakehouse.config import Settings
from tests.gold_lake import shared_lake

# fmt: off
HOSTILE = [
    "'",
    "br' OR '1'='1",
    "'; DROP VIEW gold.fact_page_view; --",
    "read_csv('/etc/passwd')",
    "' UNION SELECT * FROM read_csv('/etc/passwd') --",
    "br' UNION SELECT 1, 2 --",
    "$country",
]
# fmt: on


# the first test also writes the shared lake with Spark: minutes on a busy 2-core machine
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # one shared lake built by the whole pipeline


@pytest.fixture(scope="module")
def lake(request: pytest.FixtureRequest) -> str:
    return shared_lake(None if os.environ.get("LAKEHOUSE_TEST_LAKE") else request.getfixturevalue("spark"))


@pytest.fixture
def lake_settings(lake, tmp_path, monkeypatch) -> Iterator[Settings]:
    """Settings (and environment, for the CLI) on the shared lake with this test's own data folder."""
    from lakehouse import config

    monkeypatch.setenv("LAKEHOUSE_LAKE", lake)
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(tmp_path / "data"))
    config.get_settings.cache_clear()
    yield config.get_settings()
    config.get_settings.cache_clear()


def cli(*args: str):
    from lakehouse.cli import app

    return CliRunner().invoke(app, list(args))


def test_every_layer_is_a_view(lake_settings, lake):
    Path(lake, "gold", "not_a_table").mkdir(exist_ok=True)  # no _delta_log: not a view
    Path(lake, "gold", "Bad-Name", "_delta_log").mkdir(parents=True, exist_ok=True)  # not an allowed name
    keys = {t.key for t in catalog.discover(lake_settings)}
    assert {
        "bronze.events",
        "silver.students",
        "quarantine.events",
        "quarantine.transactional",
        "gold.fact_page_view",
        "gold.dim_student",
        "gold.mart_country_access",
    } <= keys
    assert not any("not_a_table" in k or "Bad-Name" in k for k in keys)
    names, rows, warnings = catalog.query(
        "select table_schema, count(*) from information_schema.tables group by 1 order by 1", lake_settings
    )
    assert dict(rows) == {"bronze": 1, "gold": 8, "quarantine": 2, "silver": 1} and warnings == []
    _, rows, _ = catalog.query(
        "select (select count(*) from bronze.events), (select count(*) from quarantine.events), "
        "(select count(*) from silver.students), (select count(*) from gold.fact_page_view)",
        lake_settings,
    )
    assert rows == [(200, 7, 200, 3000)]


def test_reads_through_the_delta_log(lake_settings, lake, tmp_path):
    table = Path(lake, "quarantine", "transactional")
    stray = next(table.glob("*.parquet"))
    shutil.copy(stray, table / "part-stray-not-in-log.parquet")  # a file the log does not list is not data
    try:
        assert catalog.query("select count(*) from quarantine.transactional", lake_settings)[1] == [(2,)]
    finally:
        (table / "part-stray-not-in-log.parquet").unlink()


def test_formats(lake_settings):
    sql = "select user_type, page_views from gold.mart_users_by_type where user_type = 'CoreUser'"
    as_json = cli("query", "--format", "json", sql)
    assert as_json.exit_code == 0, as_json.output
    records = json.loads(as_json.stdout)
    assert isinstance(records, list) and records[0]["user_type"] == "CoreUser" and records[0]["page_views"] > 0
    as_csv = cli("query", "--format", "csv", sql)
    assert as_csv.stdout.splitlines() == ["user_type,page_views", f"CoreUser,{records[0]['page_views']}"]
    as_table = cli("query", sql)
    assert as_table.exit_code == 0 and "user_type" in as_table.stdout and "CoreUser" in as_table.stdout
    dated = json.loads(
        cli(
            "query",
            "-f",
            "json",
            "select max(as_of) as a, max(event_date) as d from gold.dim_student, gold.fact_page_view",
        ).stdout
    )
    assert dated == [{"a": "2017-11-18T06:00:00+00:00", "d": "2017-11-30"}]


def test_time_travel(lake_settings):
    sql = "select user_type from gold.mart_users_by_type order by 1"
    assert catalog.query(sql, lake_settings, version=0)[1] == [("StaleType",)]
    current = [r[0] for r in catalog.query(sql, lake_settings)[1]]
    assert "StaleType" not in current and "CoreUser" in current
    assert catalog.query(sql, lake_settings, version=1)[1] == [(v,) for v in current]
    travelled = cli("query", "--version", "0", "-f", "json", sql)
    assert json.loads(travelled.stdout) == [{"user_type": "StaleType"}]
    missing = cli("query", "--version", "9", sql)
    assert missing.exit_code == 1 and "no Delta version 9" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "sql, message",
    [
        ("selec 1", "syntax error"),
        ("select * from gold.no_such_table", "no_such_table"),
        ("select 1; select 2", "exactly one SQL statement"),
        ("drop view gold.fact_page_view", "read-only"),
        ("copy (select 1) to 'out.csv'", "read-only"),
        ("attach 'x.db'", "read-only"),
        ("explain analyze copy (select 1) to 'out.csv'", "read-only"),
        ("select * from read_csv('/etc/passwd')", "Permission Error"),
    ],
)
def test_clean_one_line_errors(lake_settings, sql, message):
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.query(sql, lake_settings)
    result = cli("query", sql)
    assert result.exit_code == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_only_values(lake_settings, value):
    sql = "select count(*) from gold.fact_page_view where country = ?"
    assert catalog.query(sql, lake_settings, params=[value])[1] == [(0,)]
    assert catalog.query("select count(*) from gold.fact_page_view", lake_settings)[1] == [(3000,)]


def test_connection_is_locked_down(lake_settings):
    lake = catalog.connect(lake_settings, read_only=True)
    try:
        for sql in (
            "select * from read_csv('/etc/passwd')",
            "select * from read_text('/etc/hostname')",
            f"select * from read_text('{lake_settings.lake_url}/../outside.txt')",
            "set enable_external_access = true",
            "set allowed_directories = ['/']",
            "create table gold.t as select 1",
            "create or replace view gold.fact_page_view as select 1",
            "install httpfs",
            "load httpfs",
        ):
            with pytest.raises(duckdb.Error):
                lake.con.execute(sql)
        assert lake.rows("select count(*) from gold.fact_page_view")[1] == [(3000,)]
    finally:
        lake.close()


def test_catalog_file_follows_the_lake(lake_settings, lake):
    copy = Path(lake, "quarantine", "copy_for_test")
    shutil.copytree(Path(lake, "quarantine", "transactional"), copy)
    try:
        catalog.query("select 1", lake_settings)
        assert lake_settings.catalog_path.exists()
        con = duckdb.connect(str(lake_settings.catalog_path), read_only=True)
        con.execute(f"LOAD '{catalog.extension_path()}'")
        views = {
            f"{s}.{v}"
            for s, v in con.execute("select schema_name, view_name from duckdb_views() where not internal").fetchall()
        }
        assert {"gold.fact_page_view", "bronze.events", "quarantine.copy_for_test"} <= views
        assert con.execute("select count(*) from quarantine.copy_for_test").fetchone() == (2,)
        con.close()
    finally:
        shutil.rmtree(copy)
    catalog.query("select 1", lake_settings)
    con = duckdb.connect(str(lake_settings.catalog_path), read_only=True)
    views = {v for (v,) in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    con.close()
    assert "copy_for_test" not in views and "fact_page_view" in views


def test_catalog_file_locked_elsewhere_still_answers(lake_settings):
    lake_settings.catalog_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(  # another process (a DBeaver session, say) holds the catalog file open for writing
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(120)",
            str(lake_settings.catalog_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert catalog.query("select count(*) from gold.dim_date", lake_settings)[1] == [(46,)]
    finally:
        holder.kill()
        holder.wait()


def test_dashboard_queries_bind_every_filter(lake_settings):
    from apps.queries import Filters, Gold

    gold = Gold(lake_settings)
    start, end = gold.bounds()
    assert (start, end) == (date(2017, 10, 16), date(2017, 11, 30))
    everything = gold.headline(Filters(start, end))
    assert everything["page_views"] == 3000 and 0 < everything["active_students"] <= 200
    assert everything["sessions"] > 0 and everything["paying_students"] > 0
    android = gold.headline(Filters(start, end, client_type="Android"))
    assert 0 < android["page_views"] < 3000
    for value in HOSTILE:
        hostile = Filters(start, end, client_type=value, country=value)
        assert gold.headline(hostile)["page_views"] == 0
        for name in ("state", "university", "course"):
            assert gold.breakdown(name, hostile).empty
        assert gold.frame("daily", hostile.params()).empty
    with pytest.raises(ValueError):
        gold.foreign(date(2017, 11, 1), "100 or 1=1")
    with pytest.raises(ValueError):
        gold.breakdown("state; drop", Filters(start, end))
    assert gold.headline(Filters(start, end))["page_views"] == 3000
    foreign = gold.foreign(date(2017, 11, 1), 5)
    assert len(foreign) > 0 and (foreign["page_views"] > 5).all() and "br" not in set(foreign["country"])
    fresh = gold.freshness()
    assert fresh["last_run"] is not None and int(fresh["quarantine"]["rows"].sum()) == 9
    gold.lake.close()


def test_daily_chart_has_every_calendar_day_with_zero_for_days_without_page_views(lake_settings):
    from apps.queries import Filters, Gold

    gold = Gold(lake_settings)
    start, end = gold.bounds()
    rarest = catalog.query(
        "select country from gold.fact_page_view where country <> 'br' group by 1 order by count(*), 1 limit 1",
        lake_settings,
    )[1][0][0]
    sparse = Filters(start, end, country=rarest)  # a few page views: most days have none
    daily = gold.frame("daily", sparse.params())
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    assert len(days) == 46 and not daily.empty
    for client, rows in daily.groupby("client_type"):  # one point per calendar day, so no line spans a gap
        assert [d.date() for d in pd.to_datetime(rows["event_date"])] == days, client
    assert (daily["page_views"] == 0).any()
    assert daily["page_views"].sum() == gold.headline(sparse)["page_views"]
    week = gold.frame("daily", Filters(date(2017, 11, 1), date(2017, 11, 7)).params())
    assert sorted(set(pd.to_datetime(week["event_date"]).dt.day)) == list(range(1, 8))
    gold.lake.close()


def test_missing_client_type_is_one_label_everywhere(lake_settings):
    from apps.queries import UNKNOWN, Filters, Gold

    gold = Gold(lake_settings)
    start, end = gold.bounds()
    assert gold.options("client_types")[-1] == UNKNOWN and None not in gold.options("client_types")
    nulls = catalog.query("select count(*) from gold.fact_page_view where client_type is null", lake_settings)[1][0][0]
    assert nulls > 0
    everything = gold.overview(Filters(start, end))
    assert UNKNOWN in set(everything["daily"]["client_type"]) and everything["daily"]["client_type"].notna().all()
    unknown = gold.overview(Filters(start, end, client_type=UNKNOWN))  # reaches DuckDB as a bound value
    assert unknown["headline"]["page_views"] == nulls and set(unknown["daily"]["client_type"]) == {UNKNOWN}
    assert unknown["headline"] == gold.headline(Filters(start, end, client_type=UNKNOWN))
    gold.lake.close()


def test_gs_lake_without_httpfs_is_a_one_line_error(lake_settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb_extension_httpfs", None)  # as when the package is not installed
    monkeypatch.setenv("LAKEHOUSE_LAKE", "gs://lake-bucket/lake")
    from lakehouse import config

    config.get_settings.cache_clear()
    result = cli("query", "select 1")
    assert result.exit_code == 1 and f"duckdb-extension-httpfs=={duckdb.__version__}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_gcs_secret_from_settings(monkeypatch):
    from lakehouse.config import Settings

    monkeypatch.delenv("LAKEHOUSE_GCS_ENDPOINT", raising=False)
    assert catalog.gcs_secret_sql(Settings(gcs_token="anon")) == "CREATE OR REPLACE SECRET lake_gcs (TYPE gcs)"
    with pytest.raises(catalog.CatalogError, match="HMAC"):
        catalog.gcs_secret_sql(Settings(gcs_token=None))
    keyed = catalog.gcs_secret_sql(Settings(gcs_hmac_key_id="k'1", gcs_hmac_secret="s"))
    assert "KEY_ID 'k''1'" in keyed and "SECRET 's'" in keyed
    emulated = catalog.gcs_secret_sql(Settings(gcs_token=None, gcs_endpoint="http://127.0.0.1:9023"))
    assert "ENDPOINT '127.0.0.1:9023'" in emulated and "USE_SSL false" in emulated
