"""Silver transformations on tiny inline bronze-shaped rows, and the incremental refresh against a temp lake."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import TimestampType

from lakehouse import delta, delta_log, silver
from tests.builders import (
    CAMEL_GLUED,
    ISO_ANON,
    SPACED,
    STUDENTS,
    as_of,
    commits,
    entity_rows,
    event_rows,
    in_file,
    line,
    rows_of,
    srt,
    write_bronze,
)


def test_page_views_fold_spellings_parse_all_at_formats_split_student(spark):
    bronze = event_rows(
        spark, in_file("2017-11-16", "p0.json", SPACED, CAMEL_GLUED) + in_file("2017-11-16", "p1.json", ISO_ANON)
    )
    out = silver.page_views(bronze, "run-1")
    assert out.columns == list(silver.PAGE_VIEW_COLUMNS)
    # the three at formats, the student id and client split from one field (the anonymous line has neither)
    assert rows_of(out, "event_at", "event_date", "student_id", "client_type", "line_number") == [
        (datetime(2017, 11, 16, 2, 10, 20), date(2017, 11, 16), "12", "Website", 1),
        (datetime(2017, 11, 16, 2, 30, 0), date(2017, 11, 16), None, None, 1),
        (datetime(2017, 11, 16, 3, 0, 0), date(2017, 11, 16), "7", "Android", 2),
    ]
    # the page fields, whichever way the line spells their keys
    pages = ("page_name", "page_category", "page_category_1", "last_accessed_url", "first_accessed_page")
    assert rows_of(out, "event_at", *pages) == [
        (datetime(2017, 11, 16, 2, 10, 20), "/busca", "busca", "busca", "/x", "home"),
        (datetime(2017, 11, 16, 2, 30, 0), "/home", None, None, None, None),
        (datetime(2017, 11, 16, 3, 0, 0), "/arquivo/1", "arquivo", "arquivo", "/y", None),
    ]
    # the rest cast, renamed, and the fields silver does not know kept as their JSON text
    rest = ("user_type", "visitor_type", "nth", "is_device_new", "country", "extra_fields")
    assert rows_of(out, "event_at", *rest) == [
        (datetime(2017, 11, 16, 2, 10, 20), "CoreUser", "known", 3, False, "br", {}),
        (datetime(2017, 11, 16, 2, 30, 0), None, "anonymous", None, None, "br", {}),
        (datetime(2017, 11, 16, 3, 0, 0), "NewUser", None, 4, None, "us", {"shiny_new_field": '{"a":1}'}),
    ]
    assert out.schema["event_at"].dataType == TimestampType()


def test_duplicates_within_file_across_files_and_spellings_are_one_event(spark):
    # the same event with its keys spelt without spaces, in another order, and its time glued to its date
    fields = json.loads(SPACED)
    respelled = line(**{k.replace(" ", ""): v for k, v in reversed(fields.items())} | {"at": "2017-11-1602:10:20"})
    other = SPACED.replace('"nth": 3', '"nth": 4')
    bronze = event_rows(
        spark,
        [
            (SPACED, "2017-11-17", "p0.json", 5),
            (SPACED, "2017-11-17", "p0.json", 9),
            (SPACED, "2017-11-16", "p3.json", 2),
            (respelled, "2017-11-18", "q.json", 1),
            (other, "2017-11-16", "p0.json", 1),
        ],
    )
    out = silver.page_views(bronze, "r")
    assert rows_of(out, "nth", "delivery", "source_file", "line_number") == [
        (3, "2017-11-16", "events/2017-11-16/p3.json", 2),
        (4, "2017-11-16", "events/2017-11-16/p0.json", 1),
    ]


def test_event_id_depends_on_values_not_on_delivery(spark):
    a = silver.page_views(event_rows(spark, [(SPACED, "2017-11-16", "a.json", 1)]), "r").select("event_id")
    b = silver.page_views(event_rows(spark, [(SPACED, "2017-11-20", "b.json", 7)]), "r").select("event_id")
    c = silver.page_views(event_rows(spark, [(SPACED.replace("s1", "s9"), "2017-11-16", "a.json", 1)]), "r")
    assert a.collect() == b.collect()
    assert a.collect() != c.select("event_id").collect()
    assert len(a.first()[0]) == 64


def test_refresh_page_views_incremental_dedup_and_no_op(spark, settings):
    write_bronze(
        spark,
        settings,
        "events",
        event_rows(spark, in_file("2017-11-17", "p0.json", SPACED, SPACED, ISO_ANON), batch=1),
        1,
    )
    rep = silver.refresh(spark, settings, "run-1")
    table = rep.tables["page_views"]
    assert table.seconds > 0 and (table.skipped, table.version, table.rows_in, table.rows_out) == (False, 1, 3, 2)
    # batch 2: one known event again (delivered earlier: its provenance moves), one new event
    write_bronze(
        spark,
        settings,
        "events",
        event_rows(spark, [(SPACED, "2017-11-16", "old.json", 4), (CAMEL_GLUED, "2017-11-18", "p.json", 1)], batch=2),
        2,
    )
    rep = silver.refresh(spark, settings, "run-2")
    assert rep.tables["page_views"].rows_in == 2
    table = delta.read_table(spark, "silver", "page_views", settings)
    assert rows_of(table, "student_id", "delivery", "source_file", "line_number", "batch_id") == srt(
        [
            ("12", "2017-11-16", "events/2017-11-16/old.json", 4, 2),
            ("7", "2017-11-18", "events/2017-11-18/p.json", 1, 2),
            (None, "2017-11-17", "events/2017-11-17/p0.json", 3, 1),
        ]
    )
    # batch 3: the same event delivered again later (nothing moves, its file is not rewritten), one new event
    write_bronze(
        spark,
        settings,
        "events",
        event_rows(
            spark,
            [(SPACED, "2017-11-19", "late.json", 9), (ISO_ANON.replace("s3", "s4"), "2017-11-19", "late.json", 10)],
            batch=3,
        ),
        3,
    )
    silver.refresh(spark, settings, "run-3")
    table = delta.read_table(spark, "silver", "page_views", settings)
    assert rows_of(table, "student_id", "delivery", "source_file", "line_number", "batch_id") == srt(
        [
            ("12", "2017-11-16", "events/2017-11-16/old.json", 4, 2),
            ("7", "2017-11-18", "events/2017-11-18/p.json", 1, 2),
            (None, "2017-11-17", "events/2017-11-17/p0.json", 3, 1),
            (None, "2017-11-19", "events/2017-11-19/late.json", 10, 3),
        ]
    )
    metrics = next(delta_log.app_commits(settings.table_path("silver", "page_views"), "silver.page_views")).metrics
    assert (metrics["numTargetRowsInserted"], metrics["numTargetFilesRemoved"]) == ("1", "0")
    before = commits(spark, settings, "silver", "page_views")
    rep = silver.refresh(spark, settings, "run-4")
    assert rep.tables["page_views"].skipped is True
    assert commits(spark, settings, "silver", "page_views") == before


D1, D2, D3 = (datetime.fromisoformat(d) for d in STUDENTS)
R1, R2, R3 = datetime(2017, 8, 22, 13, 37, 20), datetime(2017, 9, 1), datetime(2017, 10, 1)
EXPECTED_STUDENTS = srt(
    [
        ("1", R1, "SP", "Campinas", 10, 20, "Google", False, "2017-11-16", D1),
        ("1", R1, "MG", "Contagem", 10, 20, "Google", False, "2017-11-17", D2),
        ("1", R1, "MG", "Contagem", 10, 20, "Google", False, "2017-11-18T06:00:00", D3),
        ("2", R2, "SP", "Santos", 11, 21, None, False, "2017-11-16", D1),
        ("2", R2, "SP", "Santos", 11, 21, None, True, "2017-11-17", D2),
        ("2", R2, "SP", "Santos", 11, 22, None, False, "2017-11-18T06:00:00", D3),
        ("3", R3, "RJ", None, 10, 20, None, False, "2017-11-16", D1),
        ("3", R3, "RJ", None, 10, 20, None, False, "2017-11-17", D2),
        ("3", R3, "RJ", None, 10, 20, None, True, "2017-11-18T06:00:00", D3),
        ("4", datetime(2017, 11, 17, 10), None, "Natal", 11, 22, "Email", False, "2017-11-18T06:00:00", D3),
    ]
)


# fmt: off
STUDENT_COLUMNS = ["student_id", "registered_at", "state", "city", "university_id", "course_id", "signup_source",
                   "is_deleted", "delivery", "as_of"]
# fmt: on


def test_students_history_deletion_return_casts_and_duplicates(spark):
    out = silver.students(entity_rows(spark, "students", STUDENTS))
    assert out.columns == [*STUDENT_COLUMNS, "changed_batch_id"]
    assert rows_of(out, *STUDENT_COLUMNS) == EXPECTED_STUDENTS


def _step(spark, history, deliveries, batch):
    """The history after one more batch: the rows before its first delivery kept, the rest from the transform."""
    new = silver.students(entity_rows(spark, "students", deliveries, batch=batch), history)
    first = min(as_of(d) for d in deliveries)
    return history.where(F.col("as_of") < F.lit(first)).unionByName(new)


def test_students_incremental_equals_all_at_once(spark):
    ds = list(STUDENTS)
    step = _step(
        spark, silver.students(entity_rows(spark, "students", {ds[0]: STUDENTS[ds[0]]})), {ds[1]: STUDENTS[ds[1]]}, 2
    )
    step = _step(spark, step, {ds[2]: STUDENTS[ds[2]]}, 3)
    assert rows_of(step, *STUDENT_COLUMNS) == EXPECTED_STUDENTS
    assert rows_of(step, "delivery", "changed_batch_id") == srt(
        [(d, b) for d, n, b in ((ds[0], 3, 1), (ds[1], 3, 2), (ds[2], 4, 3)) for _ in range(n)]
    )
    # the middle delivery arriving last gives the same history too
    late = silver.students(entity_rows(spark, "students", {d: STUDENTS[d] for d in (ds[0], ds[2])}))
    late = _step(spark, late, {ds[1]: STUDENTS[ds[1]]}, 2)
    assert rows_of(late, *STUDENT_COLUMNS) == EXPECTED_STUDENTS
    # and the middle delivery landed again, changed, replaces its first version
    changed = _step(spark, late, {ds[1]: STUDENTS[ds[1]][:1]}, 3)
    assert rows_of(changed.where(F.col("student_id") == "3"), "delivery", "is_deleted") == [
        (ds[0], False),
        (ds[1], True),
        (ds[2], True),
    ]


def test_courses_cast_string_ids_and_rename(spark):
    out = silver.courses(
        entity_rows(
            spark,
            "courses",
            {
                "2017-11-16": [{"Id": 1, "Name": "Direito"}, {"Id": "2", "Name": "Medicina"}],
                "2017-11-17": [{"Id": "1", "Name": "Direito (Bacharelado)"}, {"Id": 2, "Name": "Medicina"}],
            },
        )
    )
    assert rows_of(out, "course_id", "course_name", "is_deleted", "delivery", "as_of") == [
        (1, "Direito", False, "2017-11-16", datetime(2017, 11, 16)),
        (1, "Direito (Bacharelado)", False, "2017-11-17", datetime(2017, 11, 17)),
        (2, "Medicina", False, "2017-11-16", datetime(2017, 11, 16)),
        (2, "Medicina", False, "2017-11-17", datetime(2017, 11, 17)),
    ]


def test_sessions_distinct_over_deliveries_with_deletions(spark):
    s1 = {"StudentId": "1", "SessionStartTime": "2017-11-15 10:00:00.000", "StudentClient": "Website"}
    s2 = {"StudentId": "2", "SessionStartTime": "2017-11-15 11:00:00.000", "StudentClient": None}
    s3 = {"StudentId": "1", "SessionStartTime": "2017-11-16 09:00:00.000", "StudentClient": "iOS"}
    out = silver.sessions(entity_rows(spark, "sessions", {"2017-11-16": [s1, s2, s2], "2017-11-17": [s1, s3]}))
    assert rows_of(
        out, "student_id", "session_start_at", "client_type", "first_delivery", "last_delivery", "is_deleted"
    ) == [
        ("1", datetime(2017, 11, 15, 10), "Website", "2017-11-16", "2017-11-17", False),
        ("1", datetime(2017, 11, 16, 9), "iOS", "2017-11-17", "2017-11-17", False),
        ("2", datetime(2017, 11, 15, 11), None, "2017-11-16", "2017-11-16", True),
    ]


def test_follows_cast_subject_id_strings_and_collapse(spark):
    f = {"StudentId": "1", "SubjectId": 5, "FollowDate": "2017-11-15 10:00:00.0000"}
    out = silver.student_follow_subject(
        entity_rows(
            spark,
            "student_follow_subject",
            {"2017-11-16": [f, dict(f, SubjectId="5"), {"StudentId": "2", "SubjectId": "6", "FollowDate": None}]},
        )
    )
    assert rows_of(out, "student_id", "subject_id", "followed_at") == [
        ("1", 5, datetime(2017, 11, 15, 10)),
        ("2", 6, None),
    ]


def test_refresh_entities_incremental_and_no_op(spark, settings):
    ds = list(STUDENTS)
    write_bronze(spark, settings, "students", entity_rows(spark, "students", {ds[0]: STUDENTS[ds[0]]}), 1)
    write_bronze(
        spark, settings, "students", entity_rows(spark, "students", {d: STUDENTS[d] for d in ds[1:]}, batch=3), 3
    )
    rep = silver.refresh(spark, settings, "r")
    assert rep.tables["students"].version == 3 and rep.tables["sessions"].skipped
    hist = delta.read_table(spark, "silver", "students", settings)
    assert rows_of(hist, *STUDENT_COLUMNS) == EXPECTED_STUDENTS
    assert delta_log.last_txn_version(settings.table_path("silver", "students"), "silver.students") == 3
    before = commits(spark, settings, "silver", "students")
    assert silver.refresh(spark, settings, "r").tables["students"].skipped
    assert commits(spark, settings, "silver", "students") == before
    # a batch with no students record (a delivery without that export): no Spark job, no commit, no lag left
    write_bronze(spark, settings, "students", entity_rows(spark, "students", {}, batch=4), 4)
    assert silver.refresh(spark, settings, "r").tables["students"].skipped
    assert commits(spark, settings, "silver", "students") == before and not silver.pending(settings)


@pytest.mark.parametrize(
    "raw,code",
    [
        ("SP", "SP"),
        (" sp ", "SP"),
        ("São Paulo", "SP"),
        ("SAO PAULO", "SP"),
        ("Amapá", "AP"),
        ("Atlantis", "Atlantis"),
        ("", None),
        (None, None),
    ],
)
def test_conform_state(spark, raw, code):
    df = spark.createDataFrame([(raw,)], "s string")
    assert df.select(silver.conform_state(F.col("s"))).first()[0] == code
