"""Stage reports: one shape for every stage, read back by `lakehouse summary` from the last run's JSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lakehouse.reports import StageReport, TableReport

LANDED = StageReport(
    "land",
    files=2,
    deliveries=["2017-11-16", "2017-11-17"],
    seconds=0.4,
    details={
        "batch_id": 1,
        "not_landed": 3,
        "not_landed_files": [{"path": "events/latest", "why": "delivery folder name is not an ISO date"}],
    },
)
INGESTED = StageReport("bronze", files=2, rows_in=10, rows_out=7, quarantined=3, deliveries=["2017-11-16"])


def test_a_layer_report_sums_its_tables_and_is_skipped_only_when_every_table_is():
    tables = {"a": TableReport(rows_in=3, rows_out=2, version=4), "b": TableReport(skipped=True)}
    report = StageReport.of_tables("silver", tables, 1.23456, run_id="r")
    assert (report.rows_in, report.rows_out, report.skipped, report.seconds) == (3, 2, False, 1.235)
    assert report.details == {"run_id": "r"} and report.tables == tables
    assert StageReport.of_tables("gold", {"a": tables["b"]}, 0).skipped
    assert StageReport.from_dict(json.loads(json.dumps(report.as_dict()))) == report


def test_a_summary_row_counts_deliveries_and_says_skipped():
    assert INGESTED.row() == {
        "stage": "bronze",
        "files": 2,
        "rows in": 10,
        "rows out": 7,
        "quarantined": 3,
        "deliveries": 1,
        "status": "done",
        "seconds": 0.0,
        "commits": 0,
        "jobs": None,
    }
    assert StageReport("silver", skipped=True).row()["status"] == "skipped"


def test_summary_shows_the_last_runs_stages_and_what_was_not_landed(settings):
    from lakehouse.cli import app

    last = {
        "flow": "full-pipeline",
        "summary": [r.row() for r in (LANDED, INGESTED)],
        "stages": {r.stage: r.as_dict() for r in (LANDED, INGESTED)},
    }
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "last-run.json").write_text(json.dumps(last))
    done = CliRunner().invoke(app, ["summary"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "last run" in done.output
    rows = [[c.strip() for c in ln.split("│") if c.strip()] for ln in done.output.splitlines() if "│" in ln]
    assert [
        "bronze",
        "2",
        "10",
        "7",
        "3",
        "1",
        "done",
        "0",
        "-",
    ] in rows  # files, rows in, rows out, quarantined, deliveries
    assert ["land", "2", "0", "0", "0", "2", "done", "0", "-"] in rows
    assert "events/latest: delivery folder name is not an ISO date" in done.output
    assert "... 3 in all" in done.output


def test_summary_of_a_last_run_written_by_an_older_version_says_so(settings):
    from lakehouse.cli import app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "last-run.json").write_text(json.dumps({"stages": {"land": {"files_new": 2}}}))
    done = CliRunner().invoke(app, ["summary"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "older version" in done.output
