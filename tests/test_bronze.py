"""Bronze over real Spark and Delta: exact lines and records, quarantine reasons, accounting, idempotent commits."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from lakehouse.bronze import ENTITIES, ingest, pending
from lakehouse.delta import read_table
from lakehouse.landing import land, read_ledger

UTC = UTC
AT = "2017-11-16 02:10:20"
BIG = "x" * (10 * 1024 * 1024)


def put(root: Path, path: str, data: bytes) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def rows(df, *cols):
    return sorted(tuple(r) for r in df.select(*cols).collect())


def versions(spark, settings, tables):
    from delta.tables import DeltaTable

    return {t: DeltaTable.forPath(spark, settings.table_path(*t)).history(1).collect()[0]["version"] for t in tables}


EVENTS = (
    (
        f'{{"at":"{AT}","a":1}}\r\n'  # 1 crlf
        "\r\n"  # 2 blank (crlf)
        "   \t\n"  # 3 blank
        "[1,2]\n"  # 4 not an object
        '"text"\n'  # 5 scalar
        '{"at":"yesterday"}\n'  # 6 bad at
        '{"b":{"c":1}}\n'  # 7 missing at
        '{"at":null}\n'  # 8 null at
        f'{{"at":"2017-11-1602:10:21","new_field":{{"deep":[1,2]}}}}\n'  # 9 glued at, unknown nested field
    ).encode()
    + b'\xff\xfe{"at":"2017-11-16 02:10:22"}\n'
    + (  # 10 invalid utf-8
        f'{{"at":"2017-11-16T02:10:23Z","big":"{BIG}"}}\n'  # 11 a 10 MB line
        f'{{"at":"{AT}", "tr'  # 12 truncated last line, no terminator
    ).encode()
)


def test_events_lines_land_or_quarantine_exactly(spark, settings):
    src = Path(settings.source_url)
    put(src, "events/2017-11-16/nested/part-0.json", EVENTS)
    put(src, "events/2017-11-16/empty.json", b"")
    assert land(settings).files == 2
    report = ingest(spark, settings, "r1")

    assert report.details["events"]["counts"] == {
        "all": {
            "lines_read": 12,
            "bronze_rows": 2,
            "blank_lines": 2,
            "records_cleaned": 0,
            "erased_dropped": 0,
            "quarantined": {
                "not_json_object": 3,
                "unparseable_at": 1,
                "missing_at": 2,
                "invalid_utf8": 1,
                "value_too_large": 1,
            },
        }
    }
    bronze = read_table(spark, "bronze", "events", settings)
    landed = bronze.select("landed_path").first()[0]
    assert landed.startswith("landing/events/2017-11-16/") and landed.endswith("/part-0.json")
    got = rows(
        bronze.filter("length(value) < 1000"),
        "line_number",
        "value",
        "at_raw",
        "source_file",
        "delivery",
        "as_of",
        "batch_id",
        "run_id",
    )
    meta = ("events/2017-11-16/nested/part-0.json", "2017-11-16", datetime(2017, 11, 16), 1, "r1")
    assert got == [
        (1, f'{{"at":"{AT}","a":1}}', AT, *meta),
        (9, '{"at":"2017-11-1602:10:21","new_field":{"deep":[1,2]}}', "2017-11-1602:10:21", *meta),
    ]

    quarantine = read_table(spark, "quarantine", "events", settings)
    big = quarantine.filter("line_number = 11").selectExpr("reason", "length(raw)").first()  # a 10 MB value, kept
    assert tuple(big) == ("value_too_large", len(f'{{"at":"2017-11-16T02:10:23Z","big":"{BIG}"}}'))
    assert rows(quarantine.filter("line_number != 11"), "line_number", "reason", "raw", "raw_base64") == [
        (4, "not_json_object", "[1,2]", None),
        (5, "not_json_object", '"text"', None),
        (6, "unparseable_at", '{"at":"yesterday"}', None),
        (7, "missing_at", '{"b":{"c":1}}', None),
        (8, "missing_at", '{"at":null}', None),
        (
            10,
            "invalid_utf8",
            '\ufffd\ufffd{"at":"2017-11-16 02:10:22"}',
            base64.b64encode(b'\xff\xfe{"at":"2017-11-16 02:10:22"}').decode(),
        ),
        (12, "not_json_object", f'{{"at":"{AT}", "tr', None),
    ]
    assert quarantine.filter("source_file != 'events/2017-11-16/nested/part-0.json' or run_id != 'r1'").count() == 0


def test_transactional_records_and_unreadable_exports(spark, settings):
    src = Path(settings.source_url)
    put(
        src,
        "transactional/2017-11-16/students.json",
        b'[{"Id":"1","City":"S\xc3\xa3o Paulo","Brand_New":{"x":1}},\r\n {"Id":"2"}, 3, null, "s"]',
    )
    put(src, "transactional/2017-11-16/courses.json", b"")
    put(src, "transactional/2017-11-16/subjects.json", b'{"Id":1,"Name":"A"}')
    put(src, "transactional/2017-11-16/universities.json", b"[]")
    put(src, "transactional/2017-11-16/sessions.json", b'[{"StudentId":"1"}, {"StudentId":')
    put(src, "transactional/2017-11-16/subscriptions.json", b'[{"PlanType":"Mensal \xff"}]')
    land(settings)
    report = ingest(spark, settings, "r1")

    counts = report.details["transactional"]["counts"]
    nothing_cleaned = {"blank_lines": 0, "records_cleaned": 0, "erased_dropped": 0}
    assert counts["students"] == {
        "lines_read": 5,
        "bronze_rows": 2,
        "quarantined": {"not_an_object": 3},
        **nothing_cleaned,
    }
    assert counts["universities"] == {"lines_read": 0, "bronze_rows": 0, "quarantined": {}, **nothing_cleaned}
    assert counts["courses"] == {
        "lines_read": 1,
        "bronze_rows": 0,
        "quarantined": {"not_json_array": 1},
        **nothing_cleaned,
    }
    students = read_table(spark, "bronze", "students", settings)
    assert rows(students, "line_number", "record", "source_file", "delivery") == [
        (
            1,
            '{"Id":"1","City":"São Paulo","Brand_New":{"x":1}}',
            "transactional/2017-11-16/students.json",
            "2017-11-16",
        ),
        (2, '{"Id":"2"}', "transactional/2017-11-16/students.json", "2017-11-16"),
    ]
    for entity in ("courses", "subjects", "universities", "sessions", "subscriptions", "student_follow_subject"):
        assert read_table(spark, "bronze", entity, settings).count() == 0
    quarantine = read_table(spark, "quarantine", "transactional", settings)
    assert rows(quarantine, "entity", "reason", "line_number", "raw", "raw_base64") == [
        ("courses", "not_json_array", None, "", None),
        ("sessions", "not_json_array", None, '[{"StudentId":"1"}, {"StudentId":', None),
        ("students", "not_an_object", 3, "3", None),
        ("students", "not_an_object", 4, None, None),
        ("students", "not_an_object", 5, "s", None),
        ("subjects", "not_json_array", None, '{"Id":1,"Name":"A"}', None),
        (
            "subscriptions",
            "invalid_utf8",
            None,
            '[{"PlanType":"Mensal \ufffd"}]',
            base64.b64encode(b'[{"PlanType":"Mensal \xff"}]').decode(),
        ),
    ]


def test_generated_source_accounting_and_nothing_new_commits_nothing(spark, settings, tmp_path):
    from lakehouse.bronze import GROUPS
    from lakehouse.tools.generate import generate

    summary = generate(Path(settings.source_url), seed=5, students=20, events=300, deliveries=2)
    land(settings)
    assert pending(settings)
    report = ingest(spark, settings, "r1")
    assert not pending(settings)
    counts = report.details["events"]["counts"]["all"]
    assert counts["lines_read"] == counts["bronze_rows"] + sum(counts["quarantined"].values()) + counts["blank_lines"]
    by_delivery = summary["events_by_delivery"].values()
    assert counts["blank_lines"] == sum(d["blank_lines"] for d in by_delivery)
    assert counts["lines_read"] == sum(d["lines"] for d in by_delivery)
    malformed = {k: sum(d["malformed"][k] for d in by_delivery) for k in next(iter(by_delivery))["malformed"]}
    assert counts["quarantined"] == {
        "not_json_object": malformed["not_json"]
        + malformed["truncated_json"]
        + malformed["json_array"]
        + malformed["json_scalar"],
        "missing_at": malformed["missing_at"],
        "unparseable_at": malformed["bad_at"],
    }
    landed = {(e["delivery"], e["entity"]): e["status"] for m in read_ledger(settings) for e in m["files"]}
    for delivery, entities in summary["transactional"].items():
        for entity, n in entities.items():
            got = read_table(spark, "bronze", entity, settings).filter(f"delivery = '{delivery}'").count()
            assert got == (n if landed[delivery, entity] == "new" else 0), (delivery, entity)
    assert "duplicate" in landed.values()  # an unchanged export (e.g. universities) is not ingested again

    tables = [t for group in GROUPS.values() for t in group]
    before = versions(spark, settings, tables)
    assert land(settings).files == 0
    again = ingest(spark, settings, "r2")
    assert again.skipped
    assert versions(spark, settings, tables) == before


def test_duplicates_new_versions_and_watermarks(spark, settings):
    src = Path(settings.source_url)
    line = f'{{"at":"{AT}","n":1}}\n'.encode()
    put(src, "events/2017-11-16/part-0.json", line)
    land(settings)
    ingest(spark, settings, "r1")

    put(src, "events/2017-11-17/copy.json", line)  # same bytes, new name: a duplicate
    put(src, "events/2017-11-16/part-0.json", line + line)  # new bytes, known name: a new version
    put(src, "transactional/2017-11-17/courses.json", b'[{"Id":1,"Name":"A"}]')
    report = land(settings)
    assert (report.files, report.details["files_duplicate"], report.details["batch_id"]) == (2, 1, 2)
    ingest(spark, settings, "r2")
    events = read_table(spark, "bronze", "events", settings)
    assert rows(events, "source_file", "line_number", "batch_id") == [
        ("events/2017-11-16/part-0.json", 1, 1),
        ("events/2017-11-16/part-0.json", 1, 2),
        ("events/2017-11-16/part-0.json", 2, 2),
    ]
    courses = read_table(spark, "bronze", "courses", settings)
    assert rows(courses, "record", "batch_id") == [('{"Id":1,"Name":"A"}', 2)]

    put(src, "events/2017-11-18/part-0.json", f'{{"at":"{AT}","n":3}}\n'.encode())  # events only: batch 3
    land(settings)
    report = ingest(spark, settings, "r3")
    assert report.details["transactional"] is None and report.details["events"]["version"] == 3
    put(src, "transactional/2017-11-19/courses.json", b'[{"Id":2,"Name":"B"}]')  # transactional only: batch 4
    land(settings)
    exports = [("bronze", e) for e in ENTITIES]
    before = versions(spark, settings, exports)
    report = ingest(spark, settings, "r4")
    assert report.details["events"] is None and report.details["transactional"]["files"] == 1
    assert rows(read_table(spark, "bronze", "courses", settings), "record", "batch_id") == [
        ('{"Id":1,"Name":"A"}', 2),
        ('{"Id":2,"Name":"B"}', 4),
    ]
    # the other entities' tables, which the delivery had no export for, got no commit, and lag nothing after
    assert set(report.details["transactional"]["committed"]) == {"bronze.courses", "quarantine.transactional"}
    after = versions(spark, settings, exports)
    assert {t for t in exports if after[t] != before[t]} == {("bronze", "courses")}
    assert not pending(settings)
    assert ingest(spark, settings, "r5").skipped


def test_line_numbers_are_exact_across_many_splits_of_one_file(spark, settings):
    """Files split into many partitions (1 KB splits here) still number every line as its place in the file."""
    src = Path(settings.source_url)
    lines = [json.dumps({"at": AT, "n": i, "pad": "y" * (i * 37 % 300)}) for i in range(400)]
    lines[17] = ""
    put(src, "events/2017-11-16/part-0.json", ("\n".join(lines) + "\n").encode())
    put(src, "events/2017-11-16/part-1.json", ("\n".join(lines[:50])).encode())
    land(settings)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1024")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        ingest(spark, settings, "r1")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")
    got = rows(read_table(spark, "bronze", "events", settings), "source_file", "line_number", "value")
    want = sorted(
        [
            (f"events/2017-11-16/part-{f}.json", n + 1, text)
            for f, texts in ((0, lines), (1, lines[:50]))
            for n, text in enumerate(texts)
            if text
        ]
    )
    assert got == want
