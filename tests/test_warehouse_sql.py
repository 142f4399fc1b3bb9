"""The warehouse's load SQL: one template per kind of load (a dimension's SCD2 restatement, a fact's load, a fact's
re-pointing) rendered per dw table from its load spec, and the drift check's state query; readable from the package,
printed by `lakehouse warehouse sql`, and in the style sqlfluff keeps."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lakehouse.cli import app
from lakehouse.config import PROJECT_ROOT
from lakehouse.warehouse import drift, loads, migrations

DIMENSION_STEPS = ["versions", "changed", "removed", "closed", "inserted"]
FACT_STEPS = ["resolved", "removed", "inserted"]


def test_every_table_renders_from_one_template_per_kind_of_load():
    assert sorted(p.name for p in (loads.SQL_DIR / "load").glob("*.sql")) == [
        "dimension.sql",
        "fact.sql",
        "repoint.sql",
    ]
    for load in loads.LOADS:
        sql = loads.load_sql(load.target)
        header = " ".join(ln.removeprefix("-- ") for ln in sql.splitlines()[:2])
        assert sql.startswith(f"-- dw.{load.target}: ") and f"{load.grain}." in header, load.target
        assert "{{" not in sql and "{%" not in sql
        steps = [name for name, _ in loads.load_statements(load.target)]
        assert steps == (DIMENSION_STEPS if load.is_dimension else FACT_STEPS), load.target
        if not load.is_dimension:  # the load of the grains gold changed: the same steps, removing among them only
            changes = loads.load_statements(load.target, changes=True)
            assert [name for name, _ in changes] == FACT_STEPS, load.target
            assert f"from {load.target}_changed as k" in dict(changes)["removed"], load.target
        for column in load.columns:
            if column not in ("as_of", "delivery"):  # dimensions turn these into valid_from / valid_to
                assert column in sql, (load.target, column)
        for dimension in load.depends:  # a fact resolves the surrogate key of every dimension it depends on
            entity = dimension.removeprefix("dim_")
            assert f"from dw.{dimension}\n" in sql and f"as {entity}_sk," in sql, (load.target, dimension)
        repoint = loads.repoint_statements(load.target)
        assert list(repoint) == list(load.depends), load.target  # one re-pointing per dimension it carries
        for dimension, sql in repoint.items():
            assert f"from stage.{dimension}_changed" in sql and f"update dw.{load.target} as f" in sql


def test_table_options_reach_the_rendered_sql():
    student = loads.load_sql("dim_student")
    assert 'partition by student_id collate "C" order by as_of' in student
    assert "collate" not in loads.load_sql("dim_course")
    daily = loads.load_sql("fact_page_view_daily")
    assert "sum(page_views) as page_views" in daily and "max(last_event_at) as last_event_at" in daily
    assert "group by event_date, student_id, client_type, country" in daily
    assert "s.first_event_at < student_first.valid_from" in daily


def test_unknown_table_is_refused_in_one_line():
    with pytest.raises(KeyError, match="no dw target table 'dim_nothing'"):
        loads.load_sql("dim_nothing")
    result = CliRunner().invoke(app, ["warehouse", "sql", "dim_nothing"])
    assert result.exit_code == 1
    assert "no dw table 'dim_nothing'; one of: dim_student" in result.output


def test_cli_prints_the_rendered_sql():
    result = CliRunner().invoke(app, ["warehouse", "sql", "fact_subject_follow"])
    assert result.exit_code == 0, result.output
    assert result.output == loads.load_sql("fact_subject_follow") + "\n" + loads.repoint_sql("fact_subject_follow")


def test_sql_folder_is_the_checkout_folder_or_the_packaged_copy():
    assert loads.SQL_DIR in (PROJECT_ROOT / "warehouse_sql", PROJECT_ROOT / "lakehouse" / "warehouse_sql")
    assert [p.name for _, _, p in migrations.migrations()][0] == "001_schemas.sql"


def test_rendered_sql_of_every_table_passes_sqlfluff():
    """The templates are linted with example values (pyproject.toml); this lints what the mirror really runs."""
    import sqlfluff

    config = str(PROJECT_ROOT / "pyproject.toml")
    problems = {
        load.target: [
            f"L{v['start_line_no']} {v['code']} {v['description']}"
            for sql in (
                loads.table_sql(load.target),
                drift.state_sql(load),
                *(() if load.is_dimension else (loads.load_sql(load.target, changes=True),)),
            )
            for v in sqlfluff.lint(sql, config_path=config)
        ]
        for load in loads.LOADS
    }
    assert problems == {load.target: [] for load in loads.LOADS}
