"""Hostile and broken input: each class gets its own quarantine reason or is cleaned at the edge, and bronze and
silver read the same value for every field (real Spark and Delta)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lakehouse import silver
from lakehouse.bronze import FileFailure, ingest
from lakehouse.delta import read_table
from lakehouse.landing import land, read_ledger
from lakehouse.parsing import MAX_ID_CHARS, MAX_VALUE_BYTES

AT = "2017-11-16 02:10:20"
DEEP = "[" * 1200 + "]" * 1200


def put(root: Path, path: str, data: bytes | str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)


def rows(df, *cols):
    return sorted((tuple(r) for r in df.select(*cols).collect()), key=lambda r: tuple((x is None, x) for x in r))


def test_every_event_class_gets_its_reason_and_silver_reads_what_bronze_checked(spark, settings):
    soon = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    later = (datetime.now(UTC) + timedelta(days=5)).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        ('\ufeff{"at":"%s","uuid":"bom"}' % AT, None),  # a byte-order mark before the first line
        ('{"at":"%s","at":"yesterday"}' % AT, "duplicate_key"),  # bronze read the first, silver the last
        ('{"at":"%s","zz":1,"zz":2}' % AT, "duplicate_key"),
        ('{"at":"%s","PageName":"/a\\u0000b","uuid":"nul"}' % AT, None),  # escaped NUL: removed, counted
        ('{"at":"%s","PageName":"/a\x01b"}' % AT, "not_json_object"),  # raw control character: not JSON
        ('{"at":"%s","x":%s}' % (AT, DEEP), "nesting_too_deep"),
        ('{"at":"%s","x":"%s"}' % (AT, "y" * MAX_VALUE_BYTES), None),  # at the limit
        ('{"at":"%s","x":"%s"}' % (AT, "y" * (MAX_VALUE_BYTES + 1)), "value_too_large"),
        ('{"at":"%s","studentId_clientType":"%s@Website"}' % (AT, "1" * (MAX_ID_CHARS + 1)), "id_too_long"),
        ('{"at":"%s","studentId_clientType":"7@%s"}' % (AT, "W" * (MAX_ID_CHARS + 1)), "id_too_long"),
        ('{"at":"%s","country":"%s"}' % (AT, "b" * (MAX_ID_CHARS + 1)), "id_too_long"),
        ('{"at":"2000-01-01 00:00:00","studentId_clientType":"%s@Website"}' % ("1" * MAX_ID_CHARS), None),
        ('{"at":"1999-12-31 23:59:59"}', "date_out_of_range"),
        ('{"at":"%s"}' % soon, None),
        ('{"at":"%s"}' % later, "date_out_of_range"),
        ('{"at":"%s","a\\u0000b":"v\\u0001","uuid":"key"}' % AT, None),  # control characters in a key and a value
        ('{"at":"%s","a\\u0000":1,"a":2}' % AT, "duplicate_key"),  # the same key once cleaned
        ('{"at":"2017-11-16 02:10:21\\u0000","uuid":"at"}', None),
        ('{"b":NaN,"at":"%s"}' % AT, "not_json_object"),
        ('{"at":"%s","uuid":"\\u007fx\\u001b\x7f\\u0085"}' % AT, None),  # DEL escaped and raw; C1 is kept
    ]
    src = Path(settings.source_url)
    put(src, "events/2017-11-16/part-0.json", "\n".join(text for text, _ in lines) + "\n")
    land(settings)
    report = ingest(spark, settings, "r1")

    counts = report.details["events"]["counts"]["all"]
    assert counts["records_cleaned"] == 4
    quarantine = read_table(spark, "quarantine", "events", settings)
    assert rows(quarantine, "line_number", "reason") == [(n + 1, r) for n, (_, r) in enumerate(lines) if r]
    bronze = read_table(spark, "bronze", "events", settings)
    assert sorted(r[0] for r in bronze.select("line_number").collect()) == [
        n + 1 for n, (_, r) in enumerate(lines) if r is None
    ]

    views = silver.page_views(bronze, "r1")
    assert views.where("event_at is null").count() == 0
    got = {r.line_number: r for r in views.collect()}
    assert got[1].event_at == datetime(2017, 11, 16, 2, 10, 20) and got[1].uuid == "bom"
    assert got[4].page_name == "/ab"
    assert got[16].extra_fields == {"ab": "v"}
    assert got[18].event_at == datetime(2017, 11, 16, 2, 10, 21) and got[18].at_raw == "2017-11-16 02:10:21"
    assert got[20].uuid == "x\u0085"
    assert got[12].student_id == "1" * MAX_ID_CHARS
    silver_dates = {r.event_date for r in silver.event_dates(bronze).collect()}
    assert silver_dates == {r.event_date for r in views.collect()}


def test_every_record_class_gets_its_reason(spark, settings):
    src = Path(settings.source_url)
    day = "transactional/2017-11-16"
    put(src, f"{day}/Students.json", '[{"Id":"1"}]')
    put(src, f"{day}/foo.json", "not even json")
    put(
        src,
        f"{day}/students.json",
        json.dumps(
            [
                {"Id": "1", "City": "S\u0000P\u0007", "RegisteredDate": "2017-01-01 00:00:00.000"},
                {"Id": "9", "RegisteredDate": "2017-02-01 00:00:00.000"},
                {"Id": "2", "RegisteredDate": "2017-01-01 00:00:00.000"},
                {"Id": "x" * (MAX_ID_CHARS + 1)},
                {"Id": "4", "RegisteredDate": "1899-01-01 00:00:00.000"},
                {"Id": "5", "Bio": "b" * (MAX_VALUE_BYTES + 1)},
            ]
        ).replace('"Id": "2"', '"Id": "2", "Id": "3"'),
    )
    put(
        src,
        f"{day}/sessions.json",
        json.dumps(
            [
                {"StudentId": "1", "SessionStartTime": "2017-11-16 11:30:00.000", "StudentClient": "W" * 200},
                {"StudentId": "1", "SessionStartTime": "2117-11-16 11:30:00.000", "StudentClient": "Website"},
                {"StudentId": "1\u0000", "SessionStartTime": "2017-11-16 11:30:00.000", "StudentClient": "Website"},
            ]
        ),
    )
    put(src, f"{day}/subjects.json", '[{"Id":1,"Name":%s}]' % DEEP)
    land(settings)
    report = ingest(spark, settings, "r1")

    counts = report.details["transactional"]["counts"]
    assert counts["students"]["records_cleaned"] == 1 and counts["sessions"]["records_cleaned"] == 1
    quarantine = read_table(spark, "quarantine", "transactional", settings)
    assert rows(quarantine, "entity", "line_number", "reason") == [
        ("Students", None, "unknown_entity"),
        ("foo", None, "unknown_entity"),
        ("sessions", 1, "id_too_long"),
        ("sessions", 2, "date_out_of_range"),
        ("students", 3, "duplicate_key"),
        ("students", 4, "id_too_long"),
        ("students", 5, "date_out_of_range"),
        ("students", 6, "value_too_large"),
        ("subjects", None, "nesting_too_deep"),
    ]
    assert rows(quarantine.where("entity = 'foo'"), "raw") == [("not even json",)]
    students = silver.students(read_table(spark, "bronze", "students", settings))
    assert rows(students, "student_id", "city") == [("1", "SP"), ("9", None)]
    sessions = silver.sessions(read_table(spark, "bronze", "sessions", settings))
    assert rows(sessions, "student_id", "client_type") == [("1", "Website")]


def test_line_and_file_caps_at_landing(spark, settings):
    """Over-long lines are set aside whole beside the landed copy (an empty line keeps the numbering); an event file
    over the file cap is still read line by line; an export over it is quarantined unread."""
    settings = settings.model_copy(update={"max_line_bytes": 64, "max_file_bytes": 100})
    src = Path(settings.source_url)
    long2 = '{"at":"%s","pad":"%s"}' % (AT, "p" * 100)
    long4 = '{"at":"%s","tail":"%s"}' % (AT, "q" * 70)
    events = '{"at":"%s","n":1}\n%s\r\n{"at":"%s","n":3}\n%s' % (AT, long2, AT, long4)
    put(src, "events/2017-11-16/part-0.json", events)
    put(src, "transactional/2017-11-16/students.json", "[" + " " * 120 + "this is not JSON")
    report = land(settings)
    assert (report.details["lines_too_long"], report.details["files_too_large"]) == (2, 1)

    entry = next(e for m in read_ledger(settings) for e in m["files"] if e["kind"] == "events")
    lake = Path(settings.lake_url)
    assert (lake / entry["landed_path"]).read_bytes() == b'{"at":"%s","n":1}\n\n{"at":"%s","n":3}\n\n' % (
        AT.encode(),
        AT.encode(),
    )
    kept = {x["line_number"]: (lake / x["kept_at"]).read_bytes() for x in entry["long_lines"]}
    assert kept == {2: long2.encode() + b"\r", 4: long4.encode()}

    ingest(spark, settings, "r1")
    bronze = read_table(spark, "bronze", "events", settings)
    assert rows(bronze, "line_number") == [(1,), (3,)]
    quarantine = read_table(spark, "quarantine", "events", settings)
    assert rows(quarantine, "line_number", "reason", "raw") == [
        (2, "line_too_long", long2),
        (4, "line_too_long", long4),
    ]
    exports = read_table(spark, "quarantine", "transactional", settings)
    assert rows(exports, "entity", "line_number", "reason", "raw") == [
        ("students", None, "file_too_large", "[" + " " * 120 + "this is not JSON")
    ]


def test_a_file_bronze_fails_on_is_named_and_set_aside_by_one_command(spark, settings):
    src = Path(settings.source_url)
    put(src, "events/2017-11-16/good.json", '{"at":"%s","n":1}\n' % AT)
    put(src, "events/2017-11-16/bad.json", '{"at":"%s","n":2}\n{"at":"%s","n":3}\n' % (AT, AT))
    land(settings)
    bad = next(e for m in read_ledger(settings) for e in m["files"] if e["path"].endswith("bad.json"))
    os.remove(Path(settings.lake_url) / bad["landed_path"])  # e.g. removed by a storage rule: not transient

    with pytest.raises(FileFailure) as failure:
        ingest(spark, settings, "r1")
    message = str(failure.value)
    assert "events/2017-11-16/bad.json of batch 1" in message
    assert "lakehouse quarantine --batch 1 events/2017-11-16/bad.json" in message

    from lakehouse.cli import app

    result = CliRunner().invoke(app, ["quarantine", "--batch", "1", "events/2017-11-16/bad.json"])
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, ["quarantine", "events/2017-11-16/nothing.json"])
    assert again.exit_code == 1 and "no file" in again.output

    put(src, "events/2017-11-17/later.json", '{"at":"%s","n":4}\n' % AT)
    land(settings)
    report = ingest(spark, settings, "r2")
    assert report.details["events"]["counts"]["all"]["quarantined"] == {"set_aside": 1}
    assert rows(read_table(spark, "bronze", "events", settings), "source_file") == [
        ("events/2017-11-16/good.json",),
        ("events/2017-11-17/later.json",),
    ]
    assert rows(read_table(spark, "quarantine", "events", settings), "source_file", "line_number", "reason") == [
        ("events/2017-11-16/bad.json", None, "set_aside")
    ]
    done = CliRunner().invoke(app, ["quarantine", "events/2017-11-16/bad.json"])
    assert done.exit_code == 1 and "already in bronze" in done.output
