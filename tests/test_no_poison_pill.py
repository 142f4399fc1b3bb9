"""Property: whatever mix of valid events and hostile input a source holds, land -> bronze -> silver -> gold -> mirror
completes (real Spark, Delta and PostgreSQL); every non-blank line is one silver event or one quarantine row with the
reason its class gets; and a later clean delivery still flows through to `dw`."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lakehouse import gold, silver
from lakehouse.bronze import ingest
from lakehouse.config import Settings
from lakehouse.delta import read_table
from lakehouse.landing import land
from lakehouse.parsing import MAX_ID_CHARS, MAX_VALUE_BYTES
from lakehouse.warehouse.mirror import mirror

pytestmark = pytest.mark.e2e


AT = "2017-11-16 02:10:20"
MAX_LINE = 2 * MAX_VALUE_BYTES  # room for a value over its limit on a line under the line cap
MAX_FILE = 64 * 1024
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # type: ignore[arg-type]
PAGE = TEXT.map(lambda t: "/" + t)  # a page name is never blank (expectation page_name_present)

# class -> (line, the reason bronze must give it; None: a silver event; "blank": ignored)
BAD: dict[str, Callable[[int], tuple[bytes | str, str | None]]] = {
    "duplicate_key": lambda n: ('{"at":"%s","uuid":"d%d","uuid":"e%d"}' % (AT, n, n), "duplicate_key"),
    "raw_control": lambda n: ('{"at":"%s","uuid":"c%d","PageName":"a\x00b"}' % (AT, n), "not_json_object"),
    "deep": lambda n: ('{"at":"%s","x":%s}' % (AT, "[" * 1001 + "]" * 1001), "nesting_too_deep"),
    "value_too_large": lambda n: ('{"at":"%s","x":"%s"}' % (AT, "v" * (MAX_VALUE_BYTES + 1)), "value_too_large"),
    "student_too_long": lambda n: (
        '{"at":"%s","studentId_clientType":"%s@Website"}' % (AT, "9" * (MAX_ID_CHARS + 1)),
        "id_too_long",
    ),
    "country_too_long": lambda n: ('{"at":"%s","country":"%s"}' % (AT, "x" * 3000), "id_too_long"),
    "date_past": lambda n: ('{"at":"1970-01-01 00:00:00","uuid":"p%d"}' % n, "date_out_of_range"),
    "date_future": lambda n: ('{"at":"9999-12-31T23:59:59Z","uuid":"f%d"}' % n, "date_out_of_range"),
    "not_json": lambda n: ("this is not JSON", "not_json_object"),
    "array": lambda n: ("[1,2]", "not_json_object"),
    "nan": lambda n: ('{"at":"%s","b":NaN}' % AT, "not_json_object"),
    "missing_at": lambda n: ('{"uuid":"m%d"}' % n, "missing_at"),
    "bad_at": lambda n: ('{"at":"yesterday"}', "unparseable_at"),
    "invalid_utf8": lambda n: (b'\xff{"at":"%s"}' % AT.encode(), "invalid_utf8"),
    "long_line": lambda n: ('{"at":"%s","pad":"%s"}' % (AT, "p" * MAX_LINE), "line_too_long"),
    "blank": lambda n: (" \t", "blank"),
}


@st.composite
def valid_event(draw) -> dict:
    """The fields of a valid event (its `uuid` is given when the file is written: every event is distinct); valid for
    the project's own expectations too: dated up to its delivery's day, a page named, a known client."""
    at = draw(st.datetimes(datetime(2017, 11, 1), datetime(2017, 11, 16, 23, 59, 59))).replace(microsecond=0)
    fields = {
        "at": at.strftime(draw(st.sampled_from(["%Y-%m-%d %H:%M:%S", "%Y-%m-%d%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"]))),
        "studentId_clientType": draw(st.sampled_from(["1@Website", "2@Android", " 3 @iOS", None])),
        "country": draw(st.sampled_from(["br", "us", None])),
        draw(st.sampled_from(["PageName", "Page Name"])): draw(PAGE),
    }
    if draw(st.booleans()):  # control characters (escaped), C1 and a lone surrogate: cleaned, still an event
        fields["custom_1"] = draw(TEXT) + "\u0000\u001f\u007f\u0085" + draw(TEXT)
    return fields


@st.composite
def event_file(draw) -> list[str | dict]:
    """Every bad class once, valid events and more bad lines, in a random order (class names or event fields)."""
    specs: list[str | dict] = [*sorted(BAD), *draw(st.lists(st.sampled_from(sorted(BAD)), max_size=6))]
    specs += draw(st.lists(valid_event(), min_size=1, max_size=8))
    return draw(st.permutations(specs))


def render(spec: str | dict, n: int, ascii_only: bool) -> tuple[bytes | str, str | None]:
    """The line for a spec, and the reason bronze must give it (None: a silver event; "blank": ignored)."""
    if isinstance(spec, str):
        return BAD[spec](n)
    text = json.dumps({**spec, "uuid": f"u{n}"}, ensure_ascii=ascii_only)
    return text.replace("\\u0085", "\\ud800\\u0085"), None


def encode(lines: list[tuple[bytes | str, str | None]], crlf: bool, bom: bool, last_newline: bool) -> bytes:
    raw = [t if isinstance(t, bytes) else t.encode() for t, _ in lines]
    data = (b"\r\n" if crlf else b"\n").join(raw) + (b"\n" if last_newline else b"")
    return (b"\xef\xbb\xbf" if bom and lines[0][1] is None else b"") + data


def student(k: int) -> dict:
    return {"Id": str(k), "City": "Recife", "State": "PE", "RegisteredDate": "2017-01-01 00:00:00.000"}


STUDENT_RECORDS = [  # (record, reason)
    (student(1), None),
    (student(2), None),
    (student(3), None),
    ({**student(4), "City": "S\u0000P\u0007"}, None),
    ({**student(5), "RegisteredDate": "1899-01-01 00:00:00.000"}, "date_out_of_range"),
    ({**student(6), "Id": "6" * (MAX_ID_CHARS + 1)}, "id_too_long"),
    (7, "not_an_object"),
]


def put(root: Path, path: str, data: bytes | str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)


def run_all(spark, s: Settings, dsn: str, run: str) -> dict:
    report = {"land": land(s), "bronze": ingest(spark, s, run)}
    silver.refresh(spark, s, run)
    gold.refresh(spark, s, run)
    report["mirror"] = mirror(s, dsn=dsn)
    return report


def dw(dsn: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def cleaned(text: bytes | str) -> bool:
    """Whether silver removes a control character from this valid event's values."""
    return any(ord(ch) < 0x20 or ch == "\x7f" for v in json.loads(text).values() if isinstance(v, str) for ch in v)


# Each example runs the whole pipeline twice (minutes): a few examples, each holding every class; no shrinking.
@hsettings(
    max_examples=2,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(
    specs=st.lists(event_file(), min_size=1, max_size=2),
    crlf=st.booleans(),
    bom=st.booleans(),
    last_newline=st.booleans(),
    ascii_only=st.booleans(),
    order=st.permutations(range(len(STUDENT_RECORDS))),
)
def test_no_input_wedges_the_pipeline_and_every_line_is_accounted_for(
    spark, pg_server, specs, crlf, bom, last_newline, ascii_only, order
):
    base = Path(tempfile.mkdtemp(prefix="poison-"))
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(pg_server.admin_dsn)
    admin.autocommit = True
    admin.cursor().execute(f"create database {name}")
    admin.close()
    pg_server.allow_bi(name)
    dsn = pg_server.admin_dsn.rsplit("/", 1)[0] + "/" + name
    files = [[render(spec, i * 1000 + n, ascii_only) for n, spec in enumerate(file)] for i, file in enumerate(specs)]
    order = [STUDENT_RECORDS[k] for k in order]
    s = Settings(
        _env_file=None,
        source=str(base / "source"),
        lake=str(base / "lake"),
        data_dir=base / "data",
        shuffle_partitions=2,
        max_line_bytes=MAX_LINE,
        max_file_bytes=MAX_FILE,
    )
    src = base / "source"
    try:
        expected: dict[tuple[str, int], str | None] = {}
        for i, lines in enumerate(files):
            path = f"events/2017-11-16/part-{i}.json"
            put(src, path, encode(lines, crlf, bom, last_newline))
            expected.update({(path, n): reason for n, (_, reason) in enumerate(lines, 1) if reason != "blank"})
        day = "transactional/2017-11-16"
        put(src, f"{day}/students.json", json.dumps([r for r, _ in order]))
        put(
            src,
            f"{day}/sessions.json",
            json.dumps(
                [
                    {"StudentId": "1", "SessionStartTime": "2017-11-16 11:30:00.000", "StudentClient": "Website"},
                    {"StudentId": "2", "SessionStartTime": "2017-11-16 12:30:00.000", "StudentClient": "C" * 3000},
                ]
            ),
        )
        put(src, f"{day}/Students.json", json.dumps([student(8)]))
        put(src, f"{day}/subjects.json", json.dumps([{"Id": k, "Name": "s" * 100} for k in range(MAX_FILE // 100)]))
        put(src, "events/latest/part-0.json", json.dumps({"at": AT}))
        (base / "secret.json").write_text(json.dumps({"at": AT, "secret": True}))
        (src / "events" / "2017-11-16" / "link.json").symlink_to(base / "secret.json")

        report = run_all(spark, s, dsn, "r1")  # completes: nothing raises

        assert {(e["path"], e["why"].split(":")[0]) for e in report["land"].details["not_landed_files"]} == {
            ("events/latest", "delivery folder name is not an ISO date or timestamp"),
            ("events/2017-11-16/link.json", "symbolic link to outside the source folder"),
        }
        bronze = read_table(spark, "bronze", "events", s)
        quarantine = read_table(spark, "quarantine", "events", s)
        got = {(r.source_file, r.line_number): None for r in bronze.select("source_file", "line_number").collect()}
        kept = {
            (r.source_file, r.line_number): r.reason
            for r in quarantine.select("source_file", "line_number", "reason").collect()
        }
        assert not set(got) & set(kept) and bronze.count() + quarantine.count() == len(got) + len(kept)
        assert {**got, **kept} == expected  # each non-blank line exactly once, with its class's reason
        views = read_table(spark, "silver", "page_views", s)
        assert views.where("event_at is null").count() == 0
        assert views.count() == sum(r is None for r in expected.values())  # every valid event is distinct
        assert report["bronze"].details["events"]["counts"]["all"]["records_cleaned"] == sum(
            cleaned(t) for lines in files for t, r in lines if r is None
        )

        records = read_table(spark, "quarantine", "transactional", s)
        assert sorted((r.entity, r.reason) for r in records.collect()) == sorted(
            [("students", r) for _, r in order if r]
            + [("sessions", "id_too_long"), ("Students", "unknown_entity"), ("subjects", "file_too_large")]
        )

        daily = dw(dsn, "select coalesce(sum(page_views), 0) from dw.fact_page_view_daily")[0][0]
        assert daily == views.count()  # the mirror loaded every event
        assert dw(
            dsn, "select student_id, city from dw.dim_student where is_current and student_sk > 0 order by student_id"
        ) == [
            ("1", "Recife"),
            ("2", "Recife"),
            ("3", "Recife"),
            ("4", "SP"),
        ]

        # a later, clean delivery flows through to dw
        later = "2017-11-20"
        put(
            src,
            f"events/{later}/part-0.json",
            "\n".join(
                json.dumps(
                    {
                        "at": f"{later} 10:00:0{k}",
                        "uuid": f"later{k}",
                        "studentId_clientType": "1@Website",
                        "PageName": "/",
                    }
                )
                for k in range(3)
            )
            + "\n",
        )
        put(src, f"transactional/{later}/students.json", json.dumps([student(1), student(2)]))
        again = run_all(spark, s, dsn, "r2")
        assert again["mirror"].details["applied"]
        assert dw(dsn, "select coalesce(sum(page_views), 0) from dw.fact_page_view_daily")[0][0] == daily + 3
        assert dw(
            dsn,
            "select student_id, is_deleted from dw.dim_student where is_current and student_sk > 0 order by student_id",
        ) == [
            ("1", False),
            ("2", False),
            ("3", True),
            ("4", True),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
