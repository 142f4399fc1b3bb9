"""The mirror reads gold's change data feed: after a small change to gold facts it stages only the rows of the grains
that changed (at most twice the change rows) and dw equals a full mirror of the same gold; when the changes cannot
be read any more (a vacuum deleted their files), it reads the tables whole, says so in one log line, and dw is the
same."""

from __future__ import annotations

import logging

import psycopg2
import pytest

from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.mirror import mirror
from tests.builders import new_database
from tests.warehouse_data import canonical, empty_warehouse, sample_gold, write_delta

FACTS = ("fact_session", "fact_page_view")


def _state(dsn: str) -> dict:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            found = canonical(cur)
            found.pop("load_audit")
            return found
    finally:
        conn.close()


def _full_mirror(settings, dsn: str) -> dict:
    """dw as a mirror of the same gold into an empty warehouse gives it."""
    migrate(dsn)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        empty_warehouse(cur)
    conn.close()
    report = mirror(settings, dsn=dsn)
    assert all(t.read in (None, "full") for t in report.details["tables"].values())
    return _state(dsn)


@pytest.fixture
def gold_lake(spark, settings):
    """Gold written by Spark: the facts with their change feed, fact_page_view partitioned by day as the lake's is."""
    lake = settings.lake_url
    gold = sample_gold(upto=3)
    write_delta(spark, lake, {n: t for n, t in gold.items() if n != "fact_page_view"})
    views = spark.createDataFrame(gold["fact_page_view"].to_pandas())
    views = views.withColumn("event_at", views["event_at"].cast("timestamp"))
    views = views.withColumn("event_date", views["event_date"].cast("date"))
    views.write.format("delta").partitionBy("event_date").save(f"{lake}/gold/fact_page_view")
    for name in FACTS:
        spark.sql(f"ALTER TABLE delta.`{lake}/gold/{name}` SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')")
    return lake


def _change(spark, lake: str, n: int) -> None:
    """A small change to both facts: sessions updated, deleted and inserted; page views late and corrected."""
    sessions, views = f"delta.`{lake}/gold/fact_session`", f"delta.`{lake}/gold/fact_page_view`"
    spark.sql(f"UPDATE {sessions} SET client_type = 'iOS{n}' WHERE student_id IN ('{n}', '{n + 11}')")
    spark.sql(f"DELETE FROM {sessions} WHERE student_id = '{n + 5}'")
    spark.sql(
        f"INSERT INTO {sessions} VALUES ('{n + 3}', timestamp'2017-11-16 10:0{n}:00', date'2017-11-16', 'Webapp')"
    )
    spark.sql(  # a late event on a day gold already holds
        f"INSERT INTO {views} (event_id, event_at, event_date, student_id, client_type, country)"
        f" VALUES ('late{n}', timestamp'2017-11-16 09:00:00', date'2017-11-16', '{n}', 'Website', 'Brazil')"
    )
    spark.sql(f"UPDATE {views} SET country = 'Peru' WHERE student_id = '{n + 1}'")


def test_mirror_stages_only_the_grains_gold_changed(spark, settings, pg_server, gold_lake):
    kept, fresh = new_database(pg_server), new_database(pg_server)
    first = mirror(settings, dsn=kept)
    assert first.details["tables"]["fact_session"].read == "full"  # never loaded: read whole
    for n in (1, 2):
        _change(spark, gold_lake, n)
        report = mirror(settings, dsn=kept)
        assert report.details["drifted"] == []
        for target in ("fact_session", "fact_page_view_daily"):
            load = report.details["tables"][target]
            assert load.read == "changes" and load.rows_changed > 0, (n, target)
            assert 0 < load.rows_staged <= 2 * load.rows_changed, (n, target, load)
        assert _state(kept) == _full_mirror(settings, fresh), n
    assert mirror(settings, dsn=kept).skipped


def test_changes_gone_fall_back_to_a_full_read_with_one_log_line(spark, settings, pg_server, gold_lake, caplog):
    kept, fresh = new_database(pg_server), new_database(pg_server)
    mirror(settings, dsn=kept)
    _change(spark, gold_lake, 1)
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:  # the change-data files of the updates, and the files they replaced, deleted
        for name in FACTS:
            spark.sql(f"VACUUM delta.`{gold_lake}/gold/{name}` RETAIN 0 HOURS")
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    with caplog.at_level(logging.WARNING, logger="lakehouse.warehouse.mirror"):
        report = mirror(settings, dsn=kept)
    lines = [r.getMessage() for r in caplog.records if r.name == "lakehouse.warehouse.mirror"]
    assert len(lines) == 2, lines  # one per table read whole
    assert all("is read whole" in line and "deleted (a vacuum)" in line for line in lines)
    for target in ("fact_session", "fact_page_view_daily"):
        assert report.details["tables"][target].read == "full"
    assert report.details["drifted"] == []
    assert _state(kept) == _full_mirror(settings, fresh)
