"""Retention that matches its promise: vacuum keeps what the Delta log offers, and a version whose files a vacuum
deleted is refused in one line naming the oldest readable version."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_vacuum_retention_never_shorter_than_log_retention():
    from lakehouse.delta import TABLE_PROPERTIES
    from lakehouse.maintenance import min_retain_hours, retention_hours

    assert TABLE_PROPERTIES["delta.logRetentionDuration"] == TABLE_PROPERTIES["delta.deletedFileRetentionDuration"]
    assert min_retain_hours() == 7 * 24
    # a table written by an earlier version (30-day log, 7-day files) is vacuumed keeping 30 days
    earlier = {
        "delta.logRetentionDuration": "interval 30 days",
        "delta.deletedFileRetentionDuration": "interval 7 days",
    }
    assert retention_hours(earlier, 168) == 720
    assert retention_hours({}, 200) == 200


def _vacuum_everything(spark, path: str) -> None:
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS").collect()
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")


def test_a_vacuumed_version_names_the_oldest_readable_one(spark, settings):
    from typer.testing import CliRunner

    from lakehouse import catalog, delta, delta_log
    from lakehouse.cli import app
    from tests.builders import target

    df = spark.createDataFrame([(1, "a")], "id int, name string")
    for _ in range(3):
        delta.overwrite(df, target(settings, "gold", "t_retention", df))  # versions 0, 1, 2: each replaces the files
    path = settings.table_path("gold", "t_retention")
    assert delta_log.oldest_readable_version(path) == 0
    _vacuum_everything(spark, path)
    assert delta_log.oldest_readable_version(path) == 2

    names, rows, _ = catalog.query("select count(*) from gold.t_retention", settings, version=2)
    assert rows == [(1,)]
    with pytest.raises(catalog.CatalogError) as refused:
        catalog.query("select count(*) from gold.t_retention", settings, version=0)
    assert str(refused.value) == (
        "gold.t_retention version 0 can no longer be read (a vacuum deleted its files);"
        " the oldest readable version is 2"
    )
    said = CliRunner().invoke(app, ["query", "--version", "1", "select * from gold.t_retention"])
    assert said.exit_code == 1
    lines = [line for line in said.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "the oldest readable version is 2" in lines[0], said.output


def test_oldest_readable_version_after_the_log_was_cleaned(spark, settings):
    """The log of a long-lived table starts at a checkpoint: versions before it are gone from the log too."""
    from lakehouse import delta, delta_log
    from tests.builders import target

    df = spark.createDataFrame([(1,)], "x int")
    for version in range(12):  # appends: every version's files stay; Delta checkpoints at version 10
        delta.append_once(df, target(settings, "bronze", "t_cleaned", df, app_id="t", version=version))
    path = settings.table_path("bronze", "t_cleaned")
    log = Path(path, "_delta_log")
    assert (log / f"{10:020d}.checkpoint.parquet").exists()
    for version in range(10):  # what the log cleanup does past the log retention
        (log / f"{version:020d}.json").unlink()
    assert delta_log.oldest_readable_version(path) == 10
    delta.overwrite(df, target(settings, "bronze", "t_cleaned", df))  # version 12 replaces every file
    _vacuum_everything(spark, path)
    assert delta_log.oldest_readable_version(path) == 12
