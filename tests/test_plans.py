"""The physical plans of the heavy transformations: no shuffle or sort they do not need, small dimensions broadcast."""

from __future__ import annotations

from lakehouse import delta, gold, silver
from tests.builders import CAMEL_GLUED, ISO_ANON, SPACED, event_rows, in_file, target


def _plan(df) -> str:
    """The physical plan Spark would run (before adaptive re-planning)."""
    return df._jdf.queryExecution().executedPlan().toString()


def test_page_view_dedup_shuffles_and_sorts_once(spark):
    """Both windows (the earliest occurrence, the first batch) ride on one exchange by event_id and one sort."""
    rows = event_rows(
        spark, in_file("2017-11-16", "a.json", SPACED, CAMEL_GLUED) + in_file("2017-11-17", "b.json", ISO_ANON)
    )
    plan = _plan(silver.page_views(rows, "r"))
    assert plan.count("Exchange hashpartitioning(event_id") == 1 and plan.count("Exchange") == 1, plan
    assert plan.count("Sort [") == 1 and plan.count("Window [") == 2, plan


def test_enrichment_broadcasts_the_student_dimension(spark, settings):
    """page_view_enriched reads the big fact once, without a shuffle: dim_student is broadcast to it."""
    facts = gold.fact_page_view(silver.page_views(event_rows(spark, [(SPACED, "2017-11-16", "a.json", 1)]), "r"))
    students = spark.createDataFrame([("12", "SP")], "student_id string, state string").selectExpr(
        "*",
        *(
            f"cast(null as {t}) as {c}"
            for c, t in (
                ("city", "string"),
                ("university_id", "int"),
                ("university_name", "string"),
                ("course_id", "int"),
                ("course_name", "string"),
                ("signup_source", "string"),
                ("registered_at", "timestamp"),
            )
        ),
    )
    for name, df in {"fact_page_view": facts, "dim_student": students}.items():
        delta.overwrite(df, target(settings, "gold", name, df))
    plan = _plan(
        gold.page_view_enriched(
            delta.read_table(spark, "gold", "fact_page_view", settings),
            delta.read_table(spark, "gold", "dim_student", settings),
        )
    )
    assert "BroadcastHashJoin" in plan and "SortMergeJoin" not in plan, plan
    assert "Exchange hashpartitioning" not in plan, plan


def test_partitioned_writes_keep_files_open_instead_of_sorting(spark):
    """Delta's writer sorts a task's rows by partition only when concurrent writers are off."""
    assert int(spark.conf.get("spark.sql.maxConcurrentOutputFileWriters")) > 0
