"""Builders the tests share: bronze-shaped rows, sample lines and records, ports, DuckDB over Delta."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from lakehouse import delta, tables
from lakehouse.config import PROJECT_ROOT
from lakehouse.security import wait_listening

_BRONZE_META = (
    "source_file string, landed_path string, line_number bigint, delivery string, as_of timestamp, batch_id bigint,"
    " landed_at timestamp, run_id string"
)
EVENTS_BRONZE = f"value string, at_raw string, {_BRONZE_META}"
ENTITY_BRONZE = f"record string, {_BRONZE_META}"
T0 = datetime(2020, 1, 1)


def as_of(delivery: str) -> datetime:
    """The as-of time of a delivery folder name."""
    return datetime.fromisoformat(delivery)


def event_rows(spark, lines, batch=1):
    """lines: (json_text, delivery, source_file, line_number)."""
    rows = [
        (text, json.loads(text).get("at"), f"events/{d}/{f}", f"landing/{f}", n, d, as_of(d), batch, T0, "r")
        for text, d, f, n in lines
    ]
    return spark.createDataFrame(rows, EVENTS_BRONZE)


def in_file(delivery, file, *texts):
    """Event lines delivered one after another in one file, numbered from 1, as event_rows takes them."""
    return [(text, delivery, file, n) for n, text in enumerate(texts, 1)]


def entity_rows(spark, entity, deliveries, batch=1):
    """deliveries: {delivery: [record dict, ...]} -> bronze.<entity> rows."""
    rows = [
        (json.dumps(rec), f"transactional/{d}/{entity}.json", "x", i + 1, d, as_of(d), batch, T0, "r")
        for d, recs in deliveries.items()
        for i, rec in enumerate(recs)
    ]
    return spark.createDataFrame(rows, ENTITY_BRONZE)


def names(spark, entity, deliveries):
    """Silver snapshot rows of a named entity: {delivery: [(id, name, is_deleted), ...]}."""
    rows = [(*row, d, as_of(d)) for d, recs in deliveries.items() for row in recs]
    return spark.createDataFrame(
        rows, f"{entity}_id int, {entity}_name string, is_deleted boolean, delivery string, as_of timestamp"
    )


def _null_safe(row):
    return tuple((x is not None, x) for x in row)


def srt(rows):
    """Rows sorted with nulls first, whatever the column types."""
    return sorted(rows, key=_null_safe)


def rows_of(df, *cols):
    """The rows of these columns, sorted with nulls first."""
    return srt(tuple(r) for r in df.select(*cols).collect())


def line(**fields):
    """One raw event line."""
    return json.dumps(fields, ensure_ascii=False)


SPACED = line(
    at="2017-11-16 02:10:20",
    **{
        "Page Name": "/busca",
        "Page Category": "busca",
        "Page Category 1": "busca",
        "Last Accessed Url": "/x",
        "first-accessed-page": "home",
    },
    studentId_clientType="12@Website",
    custom_4="CoreUser",
    user_type="known",
    nth=3,
    device_new=False,
    country="br",
    session_uuid="s1",
)
CAMEL_GLUED = line(
    at="2017-11-1603:00:00",
    PageName="/arquivo/1",
    PageCategory="arquivo",
    PageCategory1="arquivo",
    LastAccessedUrl="/y",
    studentId_clientType="7@Android",
    custom_4="NewUser",
    nth="4",
    country="us",
    session_uuid="s2",
    shiny_new_field={"a": 1},
)
ISO_ANON = line(
    at="2017-11-15T23:30:00-03:00",
    PageName="/home",
    user_type="anonymous",
    studentId_clientType=None,
    country="br",
    session_uuid="s3",
)


def target(settings, layer: str, name: str, shape=None, **identity) -> delta.Target:
    """A write to `<layer>.<name>`: the catalogue's table, or with `shape` a table shaped like that DataFrame (a test's
    own table, or an older lake's layout), with the catalogue's layout where its columns allow."""
    spec = tables.BY_KEY.get(f"{layer}.{name}")
    if shape is not None:
        names = [f.name for f in shape.schema.fields]
        columns = tuple(tables.own(f.name, f.dataType.simpleString(), "a test column") for f in shape.schema.fields)
        partition = () if spec is None else tuple(c for c in spec.partition_by if c in names)
        stats = () if spec is None else tuple(c for c in spec.stats if c in names)
        spec = tables.Table(layer, name, "a test table", (), columns, tables.Kept.APPENDED, partition, stats)
    assert spec is not None, f"{layer}.{name} is not in the catalogue: give its shape"
    return delta.Target(spec, settings, **identity)


def write_bronze(spark, settings, table, df, batch):
    """Append rows to bronze.<table> as landing batch `batch`."""
    delta.append_once(df, target(settings, "bronze", table, app_id=f"bronze.{table}", version=batch))


def commits(spark, settings, layer, table):
    """How many commits a lake table has."""
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, settings.table_path(layer, table)).history().count()


# student 1 after moving to Contagem (MG): unchanged in the last two deliveries
STUDENT_1_MOVED = {
    "Id": "1",
    "RegisteredDate": "2017-08-22 13:37:20.000",
    "State": "MG",
    "City": "Contagem",
    "UniversityId": 10,
    "CourseId": 20,
    "SignupSource": "Google",
}
STUDENT_2 = {
    "Id": "2",
    "RegisteredDate": "2017-09-01 00:00:00.000",
    "State": "São Paulo",
    "City": "Santos",
    "UniversityId": "11",
    "CourseId": 21,
    "SignupSource": None,
}
STUDENTS = {
    "2017-11-16": [
        {
            "Id": "1",
            "RegisteredDate": "2017-08-22 13:37:20.000",
            "State": "SP",
            "City": "Campinas",
            "UniversityId": 10,
            "CourseId": "20",
            "SignupSource": "Google",
        },
        STUDENT_2,
        STUDENT_2,  # the same record twice in one delivery
        {
            "Id": "3",
            "RegisteredDate": "2017-10-01 00:00:00.000",
            "State": "rio de janeiro",
            "UniversityId": 10,
            "CourseId": 20,
        },
    ],
    "2017-11-17": [
        STUDENT_1_MOVED,
        {"Id": "3", "RegisteredDate": "2017-10-01 00:00:00.000", "State": "RJ", "UniversityId": 10, "CourseId": 20},
    ],
    "2017-11-18T06:00:00": [
        STUDENT_1_MOVED,
        {
            "Id": "2",
            "RegisteredDate": "2017-09-01 00:00:00.000",
            "State": "SP",
            "City": "Santos",
            "UniversityId": 11,
            "CourseId": 22,
            "SignupSource": None,
        },
        {
            "Id": "4",
            "RegisteredDate": "2017-11-17 10:00:00.000",
            "State": None,
            "City": "Natal",
            "UniversityId": 11,
            "CourseId": 22,
            "SignupSource": "Email",
        },
    ],
}


def cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `lakehouse ARGS` as a user would, in its own Python process from the checkout; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "lakehouse.cli", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    """Wait until `proc` listens on `port`; its log tail says why when it exits or times out."""
    try:
        wait_listening(port, proc, seconds)
    except (RuntimeError, TimeoutError) as exc:
        raise type(exc)(f"{exc}: {log.read_text()[-2000:]}") from None


def delta_scan_sql(settings, layer, table, columns: list[str]) -> str:
    """DuckDB SQL selecting `columns` of one lake table."""
    return f"select {', '.join(columns)} from delta_scan('{settings.table_path(layer, table)}')"


def comparable(types: dict[str, str], ignored: set[str]) -> list[str]:
    """DuckDB select expressions to compare two lakes' rows of a table with these column types: `ignored` left out,
    maps as JSON text (sorted keys), so set operations compare them by content."""
    return [
        f'to_json("{c}")' if t.startswith("MAP") else f'"{c}"' for c, t in sorted(types.items()) if c not in ignored
    ]


def duckdb_with_delta():
    """An in-memory DuckDB connection with the delta extension loaded and UTC as its time zone."""
    import duckdb

    from lakehouse.catalog import extension_path

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"load '{extension_path()}'")
    con.execute("set TimeZone = 'UTC'")
    return con


def assert_same_rows(con, expected: str, actual: str) -> None:
    """Both queries give the same rows, as multisets."""
    missing = con.execute(f"select count(*) from (({expected}) except all ({actual}))").fetchone()[0]
    extra = con.execute(f"select count(*) from (({actual}) except all ({expected}))").fetchone()[0]
    assert (missing, extra) == (0, 0), (expected, con.execute(f"({expected}) except all ({actual}) limit 5").fetchall())


def new_database(pg_server: Any) -> str:
    """A fresh database on the session's PostgreSQL, open to bi_user; its DSN (the cluster's administrator)."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(pg_server.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create database {name}")
    admin.close()
    pg_server.allow_bi(name)
    return str(pg_server.admin_dsn.rsplit("/", 1)[0] + "/" + name)


class WebhookReceiver:
    """A local HTTP endpoint that keeps every JSON body POSTed to it and answers `status` (alert tests' webhook)."""

    def __init__(self, status: int = 200):
        import http.server
        import threading

        self.bodies: list[dict] = []
        self.status = status
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                receiver.bodies.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="webhook")
        self.thread.start()

    def kinds(self) -> list[str]:
        return [b["kind"] for b in self.bodies]

    def wait(self, count: int, seconds: float = 30.0) -> list[dict]:
        """The bodies, once at least `count` arrived (or `seconds` passed)."""
        import time

        deadline = time.monotonic() + seconds
        while len(self.bodies) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ledger(settings, deliveries: list[tuple[str, str, int, datetime]]) -> None:
    """Landing manifests (the ledger's own format, design notes) for `(group, delivery, lines, landed_at)`: one batch
    per delivery, one file each; a group is `events` or an export's entity."""
    root = Path(settings.lake_url) / "_system" / "ledger"
    root.mkdir(parents=True, exist_ok=True)
    start = len(list(root.glob("batch-*.json")))
    for n, (group, delivery, lines, landed_at) in enumerate(deliveries, start + 1):
        kind = "events" if group == "events" else "transactional"
        path = f"events/{delivery}/part-0.json" if kind == "events" else f"transactional/{delivery}/{group}.json"
        entry = {
            "path": path,
            "kind": kind,
            "entity": None if kind == "events" else group,
            "delivery": delivery,
            "as_of": datetime.fromisoformat(delivery).isoformat(),
            "size": lines * 10,
            "fingerprint": f"f{n}",
            "bytes": lines * 10,
            "lines": lines,
            "sha256": uuid.uuid4().hex * 2,
            "landed_path": f"landing/{kind}/{delivery}/{n:016x}/{path.rsplit('/', 1)[-1]}",
            "landed_at": landed_at.isoformat(),
            "batch_id": n,
            "status": "new",
        }
        manifest = {"batch_id": n, "created_at": landed_at.isoformat(), "source": "test", "files": [entry]}
        (root / f"batch-{n:06d}.json").write_text(json.dumps(manifest))
