"""Who a raw text names, read the same way by Python (landed files) and Spark SQL (tables, later deliveries), and the
scrub of landed files by content, piece by piece."""

from __future__ import annotations

import io
import json

import pytest

from lakehouse import tombstones as T

ERASED = T.Erased("salt", frozenset({T.hashed("salt", "15")}))

CASES = [
    ('{"studentId_clientType":"15@Website","at":"x"}', "events", {"15"}),
    ('{"studentId_clientType":"\\u0031\\u0035@Website"}', "events", {"15"}),
    ('{"studentId_clientType":"  15 @Android"}', "events", {"15"}),
    ('{"studentId_clientType": null, "Id": "15"}', "events", set()),
    ('{"at":"2017-11-16 02:10:20","studentId_clientType":"15@Web', "events", {"15"}),  # a line cut short
    ('{"StudentId": 15, "PlanType": "Anual"}', "subscriptions", {"15"}),
    ('{"StudentId": " 15", "SessionStartTime": "x"}', "sessions", {"15"}),
    ('{"Id": "15", "Name": "Curso"}', "courses", set()),
    ('{"Id": "15", "State": "SP"}', "students", {"15"}),
    ('{"Id": "15"}', None, {"15"}),  # an export under a name that is no entity: every student field counts
    ('[{"Id":"15"},{"Id":"16"},2]', None, {"15", "16"}),
    ('[{"StudentId":"\\u0031\\u0035"},{"StudentId":"7"}]', "sessions", {"15", "7"}),
    ('<html> "StudentId": "15", oops', "sessions", {"15"}),
    ('not json "Id": "\\u0031\\u0035" more', None, {"15"}),
    ("15", None, set()),
    ("\ufeff" + '{"studentId_clientType":"15@iOS"}', "events", {"15"}),
]


@pytest.mark.parametrize("text,kind,expected", CASES)
def test_python_and_spark_read_the_same_learners(spark, text, kind, expected):
    from pyspark.sql import functions as F

    assert T.learners(text, kind) == expected
    frame = spark.createDataFrame([(text,)], "t string")
    found = frame.select(T.learners_column(F.col("t"), T.keys_column(kind)).alias("c")).first()["c"]
    assert set(found) == expected


def test_erased_is_matched_by_salted_hash_only(spark):
    from pyspark.sql import functions as F

    assert "15" in ERASED and " 15 " in ERASED and "16" not in ERASED
    assert not T.Erased("salt", frozenset())
    rows = spark.createDataFrame([(["7", "15"],), (["7"],), ([],)], "c array<string>")
    assert [r[0] for r in rows.select(ERASED.any_of(F.col("c"))).collect()] == [True, False, False]


def test_a_whole_file_row_keeps_everything_but_the_learner(spark):
    from pyspark.sql import functions as F

    texts = [
        '[{"Id": "15", "City": "X"},{"Id":"16"}]',
        'oops "Id": "15", "City": "X", "Id": "16"',
        '[{"Id":"16"}]',
    ]
    frame = spark.createDataFrame([(t,) for t in texts], "t string")
    out = [r[0] for r in frame.select(T.without_learners(F.col("t"), T.keys_column(None), ERASED)).collect()]
    assert json.loads(out[0]) == [{"Id": "16"}]
    assert out[1] == f'oops "Id": "{T.REDACTED}", "City": "X", "Id": "16"'
    assert json.loads(out[2]) == [{"Id": "16"}]


def test_exports_are_scrubbed_element_by_element_and_lines_line_by_line():
    export = b'\xef\xbb\xbf[\n {"Id": "1"},\n {"Id": "\\u0031\\u0035", "N": "a,]}"},\n {"Id": "2"}\n]\n'
    out = io.BytesIO()
    assert T._scrubbed_export(io.BytesIO(export), out, "students", ERASED) == 1
    assert json.loads(out.getvalue().decode("utf-8-sig")) == [{"Id": "1"}, {"Id": "2"}]
    with pytest.raises(ValueError):
        T._scrubbed_export(io.BytesIO(b'{"Id": "15"}'), io.BytesIO(), "students", ERASED)
    lines = (
        b'{"studentId_clientType":"7@Web"}\r\n{"studentId_clientType":"15@Web"}\r\nbroken "studentId_clientType":"15@\n'
    )
    out = io.BytesIO()
    assert T._scrubbed_lines(io.BytesIO(lines), out, "events", ERASED) == 2
    assert out.getvalue() == b'{"studentId_clientType":"7@Web"}\r\n\r\n\n'


def test_a_landed_file_is_rewritten_piece_by_piece(tmp_path, settings):
    import fsspec

    fs = fsspec.filesystem("file")
    path = tmp_path / "Students (1).json"
    records = [{"Id": str(i), "City": "c" * 100} for i in range(100, 2100)] + [{"Id": "15"}]
    path.write_text(json.dumps(records))
    assert T.scrub_file(fs, settings, str(path), None, ERASED) == 1
    assert json.loads(path.read_text()) == records[:-1]
    untouched = path.read_bytes()
    assert T.scrub_file(fs, settings, str(path), None, ERASED) == 0
    assert path.read_bytes() == untouched and not list(tmp_path.glob("*.erasing-*"))
