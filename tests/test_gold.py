"""Gold transformations on tiny inline silver-shaped rows, and gold.refresh over a temp lake."""

from __future__ import annotations

from datetime import date, datetime

from lakehouse import delta, gold, silver
from tests.builders import (
    CAMEL_GLUED,
    ISO_ANON,
    SPACED,
    STUDENTS,
    commits,
    entity_rows,
    event_rows,
    in_file,
    line,
    names,
    rows_of,
    srt,
    write_bronze,
)

D2, D3 = datetime(2017, 11, 17), datetime(2017, 11, 18, 6)


def test_dim_student_history_takes_names_as_of_each_delivery_and_current_is_latest(spark):
    students = silver.students(entity_rows(spark, "students", STUDENTS))
    universities = names(
        spark,
        "university",
        {
            "2017-11-16": [(10, "UFA", False), (11, "UFB", False)],
            "2017-11-17": [(10, "UFA", False), (11, "UFB Nova", False)],
        },
    )
    courses = names(
        spark,
        "course",
        {
            "2017-11-16": [(20, "Direito", False), (21, "Medicina", False)],
            "2017-11-18T06:00:00": [(22, "Letras", False), (20, "Direito", True)],
        },
    )
    hist = gold.dim_student_history(students, universities, courses)
    assert hist.columns == [*gold.STUDENT_COLUMNS, "delivery"]
    got = rows_of(hist, "student_id", "delivery", "university_name", "course_name", "is_deleted", "state")
    assert got == srt(
        [
            ("1", "2017-11-16", "UFA", "Direito", False, "SP"),
            ("1", "2017-11-17", "UFA", "Direito", False, "MG"),
            ("1", "2017-11-18T06:00:00", "UFA", "Direito", False, "MG"),
            ("2", "2017-11-16", "UFB", "Medicina", False, "SP"),
            ("2", "2017-11-17", "UFB Nova", "Medicina", True, "SP"),
            ("2", "2017-11-18T06:00:00", "UFB Nova", "Letras", False, "SP"),
            ("3", "2017-11-16", "UFA", "Direito", False, "RJ"),
            ("3", "2017-11-17", "UFA", "Direito", False, "RJ"),
            ("3", "2017-11-18T06:00:00", "UFA", "Direito", True, "RJ"),
            ("4", "2017-11-18T06:00:00", "UFB Nova", "Letras", False, None),
        ]
    )
    current = gold.dim_student(hist)
    assert current.columns == list(gold.STUDENT_COLUMNS)
    assert rows_of(current, "student_id", "city", "course_id", "is_deleted", "as_of") == [
        ("1", "Contagem", 20, False, D3),
        ("2", "Santos", 22, False, D3),
        ("3", None, 20, True, D3),
        ("4", "Natal", 22, False, D3),
    ]


def test_dim_course_current_and_history(spark):
    hist = gold.dim_course_history(
        names(
            spark,
            "course",
            {
                "2017-11-16": [(1, "Direito", False), (2, "Medicina", False)],
                "2017-11-17": [(1, "Direito (Bacharelado)", False), (2, "Medicina", True)],
            },
        )
    )
    assert hist.columns == ["course_id", "course_name", "is_deleted", "as_of", "delivery"]
    cur = gold.dim_course(hist)
    assert cur.columns == ["course_id", "course_name", "is_deleted", "as_of"]
    assert rows_of(cur, *cur.columns) == [(1, "Direito (Bacharelado)", False, D2), (2, "Medicina", True, D2)]


def test_dim_date_is_contiguous_over_all_fact_dates(spark):
    a = spark.createDataFrame([(date(2017, 11, 2),), (None,)], "d date")
    b = spark.createDataFrame([(date(2017, 10, 30),)], "d date")
    out = gold.dim_date(a, b)
    assert rows_of(out, "date", "year", "month", "day", "weekday") == [
        (date(2017, 10, 30), 2017, 10, 30, 1),
        (date(2017, 10, 31), 2017, 10, 31, 2),
        (date(2017, 11, 1), 2017, 11, 1, 3),
        (date(2017, 11, 2), 2017, 11, 2, 4),
    ]


FACT = (
    "event_id string, event_at timestamp, event_date date, student_id string, student_erased boolean, client_type string, "
    "country string, region string, city_name string, browser string, platform string, page_name string, "
    "page_category string, user_type string, session_uuid string"
)


def facts(spark):
    def f(i, day, sid, client, country, utype, session):
        at = datetime(2017, 11 if day > 0 else 10, abs(day), 12)
        return (f"e{i}", at, at.date(), sid, False, client, country, None, None, None, None, "/", None, utype, session)

    return spark.createDataFrame(
        [
            f(1, 16, "1", "Website", "br", "CoreUser", "s1"),
            f(2, 16, "1", "Website", "br", "CoreUser", "s1"),
            f(3, 16, None, None, "br", None, "s2"),
            f(4, 17, "2", "Android", "us", "NewUser", "s3"),
            f(5, -31, "2", "Android", "us", "NewUser", "s4"),
            f(6, 17, "9", "iOS", None, "CoreUser", "s5"),
        ],
        FACT,
    )


def test_marts(spark):
    fv = facts(spark)
    assert rows_of(
        gold.mart_country_access(gold.activity_by_country_student(fv)), "country", "month", "page_views", "students"
    ) == srt(
        [
            ("br", date(2017, 11, 1), 3, 1),
            ("us", date(2017, 11, 1), 1, 1),
            ("us", date(2017, 10, 1), 1, 1),
            (None, date(2017, 11, 1), 1, 1),
        ]
    )
    assert rows_of(gold.mart_users_by_type(gold.activity_by_student(fv)), "user_type", "page_views", "students") == srt(
        [("CoreUser", 3, 2), ("NewUser", 2, 1), (None, 1, 0)]
    )
    daily = gold.mart_daily_activity(fv)
    assert daily.columns == ["event_date", "client_type", "page_views", "students", "sessions"]
    assert rows_of(daily, *daily.columns) == srt(
        [
            (date(2017, 10, 31), "Android", 1, 1, 1),
            (date(2017, 11, 16), "Website", 2, 1, 1),
            (date(2017, 11, 16), None, 1, 0, 1),
            (date(2017, 11, 17), "Android", 1, 1, 1),
            (date(2017, 11, 17), "iOS", 1, 1, 1),
        ]
    )
    dim = spark.createDataFrame([("1", "SP"), ("2", "RJ"), ("3", "SP")], "student_id string, state string")
    state = gold.mart_state_activity(gold.activity_by_student(fv), dim)
    assert state.columns == ["state", "page_views", "students"]
    assert rows_of(state, *state.columns) == srt([("SP", 2, 1), ("RJ", 2, 1), (None, 2, 1)])


def test_page_view_enriched_joins_current_student(spark):
    hist = gold.dim_student_history(
        silver.students(entity_rows(spark, "students", STUDENTS)),
        names(spark, "university", {"2017-11-16": [(10, "UFA", False)]}),
        names(spark, "course", {"2017-11-16": [(20, "Direito", False)]}),
    )
    out = gold.page_view_enriched(facts(spark), gold.dim_student(hist))
    assert out.count() == 6
    assert rows_of(
        out.where("event_id in ('e1', 'e3', 'e6')"), "event_id", "state", "city", "university_name", "course_name"
    ) == [("e1", "MG", "Contagem", "UFA", "Direito"), ("e3", None, None, None, None), ("e6", None, None, None, None)]


def _snapshot(spark, settings, layer, table):
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    df = delta.read_table(spark, layer, table, settings)
    maps = {f.name for f in df.schema.fields if isinstance(f.dataType, MapType)}  # no set operations on maps
    return df.select(
        *(F.to_json(c).alias(c) if c in maps else F.col(c) for c in sorted(set(df.columns) - {"run_id", "loaded_at"}))
    )


def test_refresh_builds_every_table_then_no_op_late_event_and_full_refresh(spark, settings):
    late = line(
        at="2017-10-31 23:59:59", PageName="/late", studentId_clientType="1@Website", country="ar", session_uuid="s9"
    )
    write_bronze(
        spark,
        settings,
        "events",
        event_rows(
            spark,
            in_file("2017-11-16", "p0.json", SPACED) + in_file("2017-11-16", "p1.json", SPACED, CAMEL_GLUED, ISO_ANON),
        ),
        1,
    )
    for entity, recs in {"students": STUDENTS, "courses": {"2017-11-16": [{"Id": 20, "Name": "Direito"}]}}.items():
        write_bronze(spark, settings, entity, entity_rows(spark, entity, recs), 1)
    silver.refresh(spark, settings, "r1")
    rep = gold.refresh(spark, settings, "r1")
    built = {t for t, r in rep.tables.items() if not r.skipped}
    assert {
        "fact_page_view",
        "dim_student",
        "dim_student_history",
        "mart_daily_activity",
        "dim_date",
        "page_view_enriched",
    } <= built
    assert rep.tables["fact_session"].skipped
    assert rep.tables["fact_page_view"].rows_out == 3
    # the late event of a later delivery: its own day and month
    write_bronze(
        spark,
        settings,
        "events",
        event_rows(
            spark, [(late, "2017-11-18T06:00:00", "p.json", 1), (SPACED, "2017-11-18T06:00:00", "p.json", 2)], 2
        ),
        2,
    )
    silver.refresh(spark, settings, "r2")
    rep = gold.refresh(spark, settings, "r2")
    assert rep.tables["fact_page_view"].rows_out == 1 and rep.tables["dim_student"].skipped
    read = lambda t: delta.read_table(spark, "gold", t, settings)  # noqa: E731
    assert rows_of(read("fact_page_view").where("page_name = '/late'"), "event_date") == [(date(2017, 10, 31),)]
    assert rows_of(read("mart_country_access").where("country = 'ar'"), "month", "page_views") == [
        (date(2017, 10, 1), 1)
    ]
    dd = read("dim_date")
    assert rows_of(dd.selectExpr("min(date)", "max(date)", "count(*)"), "*") == [
        (date(2017, 10, 31), date(2017, 11, 16), 17)
    ]
    before = {t: commits(spark, settings, "gold", t) for t in rep.tables if not rep.tables[t].skipped}
    again = gold.refresh(spark, settings, "r3")
    assert all(r.skipped for r in again.tables.values())
    assert {t: commits(spark, settings, "gold", t) for t in before} == before

    # a full refresh rebuilds every table from scratch (a new commit each) to the same content, and the next
    # incremental run still knows it has nothing to do
    existing = [t for t in gold.TABLES if delta.table_exists("gold", t, settings)]
    layers = {"silver": ["page_views", "students", "courses"], "gold": existing}
    tables = [(layer, t) for layer, ts in layers.items() for t in ts]
    kept = {
        (layer, t): (_snapshot(spark, settings, layer, t).collect(), commits(spark, settings, layer, t))
        for layer, t in tables
    }
    assert not silver.refresh(spark, settings, "full", full_refresh=True).tables["page_views"].skipped
    rebuilt = gold.refresh(spark, settings, "full", full_refresh=True).tables
    assert {t for t, r in rebuilt.items() if not r.skipped} == set(existing)  # those with silver inputs
    for (layer, t), (rows, n) in kept.items():
        assert commits(spark, settings, layer, t) == n + 1, (layer, t)
        assert sorted(map(repr, _snapshot(spark, settings, layer, t).collect())) == sorted(map(repr, rows)), (layer, t)
    assert all(r.skipped for r in silver.refresh(spark, settings, "r4").tables.values())
    assert all(r.skipped for r in gold.refresh(spark, settings, "r4").tables.values())


def _as_an_earlier_layout_wrote(settings, table: str) -> None:
    """Rewrite the commits of gold.<table> as layout 1 wrote them: under app id `gold.<table>`."""
    import json
    from pathlib import Path

    for log in (Path(settings.table_path("gold", table)) / "_delta_log").glob("*.json"):
        actions = [json.loads(line) for line in log.read_text().splitlines()]
        for action in actions:
            if "txn" in action:
                action["txn"]["appId"] = action["txn"]["appId"].replace(gold.app_id(table), f"gold.{table}")
        log.write_text("".join(json.dumps(a) + "\n" for a in actions))
        log.with_name(f".{log.name}.crc").unlink(missing_ok=True)  # the local filesystem's checksum of the old text


def test_tables_an_earlier_layout_wrote_are_rebuilt_once(spark, settings):
    """A gold table an earlier layout wrote is rebuilt by the next run (a commit of this layout's, even though its
    inputs did not move), to the same rows; the run after does nothing. Silver written before `student_erased` reads as no
    erased rows."""
    write_bronze(spark, settings, "events", event_rows(spark, [(SPACED, "2017-11-16", "p.json", 1)], 1), 1)
    silver.refresh(spark, settings, "r1")
    built = [t for t, r in gold.refresh(spark, settings, "r1").tables.items() if not r.skipped]
    kept = {t: (_snapshot(spark, settings, "gold", t).collect(), commits(spark, settings, "gold", t)) for t in built}
    for t in built:
        _as_an_earlier_layout_wrote(settings, t)
    assert [t for t, r in gold.refresh(spark, settings, "r2").tables.items() if not r.skipped] == built
    for t, (rows, n) in kept.items():
        assert commits(spark, settings, "gold", t) == n + 1, t
        assert sorted(map(repr, _snapshot(spark, settings, "gold", t).collect())) == sorted(map(repr, rows)), t
    assert all(r.skipped for r in gold.refresh(spark, settings, "r3").tables.values())

    earlier = delta.read_table(spark, "silver", "page_views", settings).drop("student_erased")
    assert rows_of(gold.fact_page_view(earlier), "student_erased") == [(False,)]
