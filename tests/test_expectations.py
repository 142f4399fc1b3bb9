"""The expectations file, without Spark: the project's own rules read and explained in the docs, every kind of bad
file refused in one line naming the file, the line and the rule, the SQL Spark gets, and a flow refusing a bad file
before it lands anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lakehouse import expectations
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.expectations import ExpectationsError, load
from lakehouse.reports import ExpectationResult, StageReport

GOOD = """\
expectations:
  - name: not_after_delivery
    table: silver.page_views
    expect: "event_at <= as_of + interval 1 day"
    action: drop
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "expectations.yaml"
    path.write_text(text)
    return path


def _rule(**fields: object) -> str:
    """A file with one rule: a valid one with `fields` changed (None leaves a field out)."""
    rule = {
        "name": "not_after_delivery",
        "table": "silver.page_views",
        "expect": '"event_at <= as_of + interval 1 day"',
        "action": "drop",
        **fields,
    }
    lines = [f"    {k}: {v}" for k, v in rule.items() if v is not None]
    lines[0] = "  - " + lines[0].lstrip()
    return "expectations:\n" + "\n".join(lines) + "\n"


def test_the_projects_own_expectations_load_and_each_is_explained():
    rules = load(PROJECT_ROOT / "expectations.yaml").rules
    assert {r.action for r in rules} == {"warn", "drop", "fail"}
    assert {r.table for r in rules} >= {"silver.page_views", "gold.fact_page_view"}
    known = next(r for r in rules if r.name == "page_view_student_known")
    assert known.reads == ("gold.dim_student",) and known.action == "warn"
    docs = (PROJECT_ROOT / "docs" / "quality.md").read_text()
    for rule in rules:
        assert f"`{rule.name}`" in docs, f"docs/quality.md does not explain {rule.name}"
    assert Settings(_env_file=None).expectations == PROJECT_ROOT / "expectations.yaml"


def test_a_good_file_and_the_sql_spark_gets(tmp_path):
    found = load(_file(tmp_path, GOOD))
    (rule,) = found.rules
    assert (rule.name, rule.table, rule.action, rule.line, rule.max_failed_pct) == (
        "not_after_delivery",
        "silver.page_views",
        "drop",
        2,
        0.0,
    )
    settings = Settings(_env_file=None, lake=str(tmp_path / "lake"))
    assert rule.sql(settings) == "coalesce((event_at <= as_of + interval 1 day), false)"  # as written: null fails
    assert rule.reason == "expectation:not_after_delivery"
    reading = load(
        _file(
            tmp_path,
            _rule(
                name="known",
                table="gold.fact_page_view",
                action="warn",
                expect='"exists (select 1 from gold.dim_student d where d.student_id = row.student_id)"',
            ),
        )
    ).rules[0]
    assert reading.reads == ("gold.dim_student",)
    assert "WHERE FALSE) AS d" in reading.sql(settings)  # not written yet: read as empty, with its columns
    path = settings.table_path("gold", "dim_student")
    log = Path(path) / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text(
        '{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}\n'
        '{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":'
        '"{\\"type\\":\\"struct\\",\\"fields\\":[]}","partitionColumns":[],"configuration":{}}}\n'
    )
    assert f"delta.`{path}` AS d" in reading.sql(settings)
    assert load(_file(tmp_path, "expectations: []\n")).rules == ()
    assert load(_file(tmp_path, "# nothing declared\n")).rules == ()


BAD = {
    "invalid YAML": ("expectations:\n  - name: a\n    table: [silver.page_views\n", 4, "not valid YAML"),
    "not a list": ("expectations: {name: a}\n", 1, "must be a list"),
    "unknown top-level key": ("rules: []\n", 1, "unknown key 'rules'"),
    "unknown table": (
        _rule(table="silver.page_view"),
        3,
        "unknown table 'silver.page_view'; did you mean silver.page_views?",
    ),
    "a bronze table": (_rule(table="bronze.events", action="warn"), 3, "unknown table 'bronze.events'"),
    "unknown column": (
        _rule(expect='"page_nam is not null"'),
        4,
        "unknown column 'page_nam' of silver.page_views; did you mean page_name?",
    ),
    "SQL that does not parse": (_rule(expect='"event_at <="'), 4, "the SQL does not parse"),
    "not a condition": (_rule(expect='"select 1"'), 4, "one SQL condition"),
    "two words": (_rule(expect='"page_name present"'), 4, "one SQL condition"),
    "unknown action": (_rule(action="dorp"), 5, "unknown action 'dorp': one of warn, drop, fail"),
    "drop without a place": (
        _rule(table="silver.students", expect='"state is not null"'),
        5,
        "action drop needs rows with a place in the source",
    ),
    "drop on gold": (_rule(table="gold.fact_page_view"), 5, "gold.fact_page_view has none: use warn or fail"),
    "max_failed_pct on warn": (_rule(action="warn", max_failed_pct=5), 6, "max_failed_pct applies to action fail only"),
    "max_failed_pct over 100": (_rule(action="fail", max_failed_pct=150), 6, "less than or equal to 100"),
    "bad name": (_rule(name="Not-A-Name"), 2, "name 'Not-A-Name' must match [a-z0-9_]+"),
    "unknown field": (_rule(severity="high"), 6, "unknown field `severity`"),
    "missing field": (_rule(expect=None), 2, "`expect` is missing"),
    "subquery of an unknown table": (
        _rule(action="warn", expect='"student_id in (select student_id from gold.students)"'),
        4,
        "unknown table 'gold.students'",
    ),
    "subquery of an unknown column": (
        _rule(action="warn", expect='"student_id in (select learner from gold.dim_student)"'),
        4,
        "unknown column 'learner' of silver.page_views",
    ),
    "the row's unknown column": (
        _rule(action="warn", expect='"exists (select 1 from gold.dim_student d where d.student_id = row.learner)"'),
        4,
        "unknown column 'learner' of silver.page_views",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_kind_of_bad_file_is_refused_in_one_line_naming_the_rule(tmp_path, case):
    text, line, message = BAD[case]
    path = _file(tmp_path, text)
    with pytest.raises(ExpectationsError) as refused:
        load(path)
    said = str(refused.value)
    assert "\n" not in said
    assert said.startswith(f"{path}:{line}: "), said
    assert message in said, said
    if case not in ("invalid YAML", "not a list", "unknown top-level key"):
        assert re.search(r"\.yaml:\d+: expectation \S+: ", said), said  # the rule is named


def test_a_duplicate_name_names_both_lines(tmp_path):
    path = _file(tmp_path, GOOD + GOOD.split("\n", 1)[1])
    with pytest.raises(
        ExpectationsError,
        match=re.escape(f"{path}:6: expectation not_after_delivery: the name is already used on line 2"),
    ):
        load(path)


def test_a_missing_file_is_said_in_one_line(tmp_path):
    with pytest.raises(ExpectationsError, match="cannot read the expectations file"):
        load(tmp_path / "nope.yaml")


def test_a_flow_refuses_a_bad_file_before_landing_anything(settings, monkeypatch, tmp_path):
    from flows.pipeline import full_pipeline, refine

    source = Path(settings.source_url) / "events" / "2017-11-16"
    source.mkdir(parents=True)
    (source / "part-0.json").write_text('{"at":"2017-11-16 10:00:00","PageName":"/a"}\n')
    bad = _file(tmp_path, _rule(action="dorp"))
    monkeypatch.setenv("LAKEHOUSE_EXPECTATIONS", str(bad))
    from lakehouse import config

    config.get_settings.cache_clear()
    for flow in (full_pipeline, refine):
        with pytest.raises(ExpectationsError, match="unknown action 'dorp'"):
            flow.fn()
    assert not any(p.is_file() for p in Path(settings.lake_url).rglob("*")), "nothing was landed"


def test_stage_reports_carry_the_results_both_ways():
    found = ExpectationResult("r", "2026-01-01T00:00:00+00:00", "silver.page_views", "x", "drop", 10, 2, "dropped")
    report = StageReport.of_tables("silver", {}, 1.0, expectations=[found])
    again = StageReport.from_dict(report.as_dict())
    assert again.expectations == [found] and found.line == "silver.page_views x dropped: 2 of 10 rows"
    assert expectations.ACTIONS == ("warn", "drop", "fail")
