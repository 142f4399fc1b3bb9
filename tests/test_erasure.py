"""A learner's right to erasure, end to end on a multi-delivery generated source against real Spark, Delta and
PostgreSQL: after `lakehouse erase` (killed once with SIGKILL mid-way, then run again) the student is found nowhere,
not in landed files, quarantine raw lines, older Delta versions or dw; the marts keep their page-view totals; a later
delivery holding the student does not bring them back, and the lake kept incrementally equals a rebuild."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg2
import pytest

from lakehouse import bronze, catalog, erasure, gold, silver, tombstones
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.landing import land
from lakehouse.reports import StageReport
from lakehouse.tools.generate import generate
from lakehouse.warehouse.loads import ERASED_MEMBER, ERASED_MEMBER_SK
from lakehouse.warehouse.mirror import first_value, mirror
from tests.builders import cli, new_database, target

pytestmark = pytest.mark.timeout(1200)

MARTS = {
    "mart_daily_activity": "page_views",
    "mart_country_access": "page_views",
    "mart_users_by_type": "page_views",
    "mart_state_activity": "page_views",
    "activity_by_student": "page_views",
    "activity_by_country_student": "page_views",
}
IGNORED = {"run_id", "loaded_at", "batch_id", "landed_at", "changed_batch_id"}


def _run(spark, settings: Settings, run_id: str) -> StageReport:
    land(settings)
    report = bronze.ingest(spark, settings, run_id)
    silver.refresh(spark, settings, run_id)
    gold.refresh(spark, settings, run_id)
    mirror(settings)
    return report


def _student_of(line: str) -> str | None:
    try:
        return json.loads(line).get("studentId_clientType", "").split("@")[0].strip() or None
    except (ValueError, AttributeError):
        return None


def _pick_student(generated: Path, deliveries: list[str]) -> tuple[str, str]:
    """The student with the most events in the first delivery who also has sessions and follows there; one of
    their event lines."""
    lines = [ln for f in sorted((generated / "events" / deliveries[0]).iterdir()) for ln in f.read_text().splitlines()]
    counts = Counter(s for s in map(_student_of, lines) if s)
    exports = generated / "transactional" / deliveries[0]
    with_sessions = {str(r["StudentId"]) for r in json.loads((exports / "sessions.json").read_text())}
    with_follows = {str(r["StudentId"]) for r in json.loads((exports / "student_follow_subject.json").read_text())}
    student = next(s for s, _ in counts.most_common() if s in with_sessions and s in with_follows)
    return student, next(ln for ln in lines if _student_of(ln) == student)


def _append_line(folder: Path, line: str) -> None:
    target = sorted(folder.iterdir())[0]
    text = target.read_text()
    target.write_text(text + ("" if text.endswith("\n") else "\n") + line + "\n")


def _names_raw(student: str) -> str:
    """SQL: a quarantined raw text naming the student (as this test's injected line and record do)."""
    return f'raw rlike \'"studentId_clientType": *"{student}@\' or raw rlike \'"StudentId": *"{student}"\''


def _env(settings):
    return {
        **os.environ,
        "LAKEHOUSE_SOURCE": settings.source,
        "LAKEHOUSE_LAKE": settings.lake,
        "LAKEHOUSE_DATA_DIR": str(settings.data_dir),
        "LAKEHOUSE_PG_DSN": settings.pg_dsn.get_secret_value(),
        "LAKEHOUSE_SPARK_MASTER": "local[1]",
        "LAKEHOUSE_SPARK_DRIVER_MEMORY": "1g",
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
    }


def _dw_rows(settings, student: str) -> dict[str, int]:
    """Per dw fact, the rows of `student` (page views: their sum)."""
    with psycopg2.connect(settings.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
        out = {}
        for table in ("fact_session", "fact_subject_follow", "fact_page_view_daily"):
            measure = "sum(page_views)" if table == "fact_page_view_daily" else "count(*)"
            cur.execute(f"select coalesce({measure}, 0) from dw.{table} where student_id = %s", (student,))
            out[table] = int(first_value(cur))
        return out


def _totals(spark, settings):
    out = {
        name: spark.read.format("delta").load(settings.table_path("gold", name)).agg({column: "sum"}).first()[0]
        for name, column in MARTS.items()
    }
    out["fact_page_view"] = spark.read.format("delta").load(settings.table_path("gold", "fact_page_view")).count()
    with psycopg2.connect(settings.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute("select sum(page_views) from dw.fact_page_view_daily")
        out["dw.fact_page_view_daily"] = int(cur.fetchone()[0])
    return out


@pytest.fixture(scope="module")
def world(spark, pg_server, tmp_path_factory):
    """A lake and warehouse fed two deliveries; the student to erase (with events, a session, a follow, a
    quarantined event line and a quarantined session record), the totals and per-person uuids before the erasure."""
    root = tmp_path_factory.mktemp("erasure")
    generated = root / "generated"
    generate(generated, seed=5, students=20, events=300, deliveries=3)
    deliveries = sorted(p.name for p in (generated / "events").iterdir())
    student, line = _pick_student(generated, deliveries)
    event = json.loads(line)
    _append_line(generated / "events" / deliveries[1], json.dumps({**event, "at": "not a time"}))  # quarantined
    sessions = generated / "transactional" / deliveries[1] / "sessions.json"
    records = json.loads(sessions.read_text())
    records.append({"StudentId": student, "SessionStartTime": "1900-01-01 00:00:00.000", "StudentClient": "Android"})
    sessions.write_text(json.dumps(records))  # date_out_of_range: a quarantined record
    _append_line(generated / "events" / deliveries[2], line)  # the next delivery brings the student back
    source = root / "source"
    settings = Settings(
        source=str(source),
        lake=str(root / "lake"),
        data_dir=str(root / "data"),
        pg_dsn=new_database(pg_server),
        spark_master="local[2]",
        shuffle_partitions=2,
    )
    for n, delivery in enumerate(deliveries[:2]):
        for kind in ("transactional", "events"):
            shutil.copytree(generated / kind / delivery, source / kind / delivery)
        _run(spark, settings, f"delivery-{n}")
    pv = spark.read.format("delta").load(settings.table_path("silver", "page_views")).where(f"student_id = '{student}'")
    uuids = {v for r in pv.select("session_uuid", "install_uuid", "uuid").collect() for v in r if v}
    quarantined = [
        spark.read.format("delta").load(settings.table_path("quarantine", t)).where(_names_raw(student)).count()
        for t in ("events", "transactional")
    ]
    assert all(quarantined), "the student's quarantined line and record are in quarantine before the erasure"
    return {
        "settings": settings,
        "student": student,
        "generated": generated,
        "deliveries": deliveries,
        "uuids": uuids,
        "before": _totals(spark, settings),
        "dw_before": _dw_rows(settings, student),
    }


@pytest.fixture(scope="module")
def erased(world, spark):
    """The erasure killed with SIGKILL after its first table commit, then run again by `lakehouse erase`."""
    settings, student = world["settings"], world["student"]
    env = _env(settings)
    run = (
        f"from lakehouse import erasure; from lakehouse.config import get_settings; "
        f"from lakehouse.spark import get_spark; erasure.erase(get_spark(), get_settings(), [{student!r}])"
    )
    killed = subprocess.run(
        [sys.executable, "-c", run],
        env={**env, "LAKEHOUSE_FAULT": "mid_erasure"},
        cwd=PROJECT_ROOT,
        timeout=900,
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert erasure.verify(spark, settings, student), "killed mid-way: the student is still found somewhere"
    done = cli("erase", "--student", student, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "erased 1 student(s) (anonymize)" in done.stdout
    return world


def test_the_student_is_found_nowhere(erased, spark):
    settings, student = erased["settings"], erased["student"]
    assert erasure.verify(spark, settings, student) == {}
    # the per-person uuids of their events are gone from every landed file and every quarantine row
    lake = Path(settings.lake)
    landed = [p for p in (lake / "landing").rglob("*") if p.is_file()] + list((lake / "_system").rglob("*.json"))
    assert erased["uuids"]
    for path in landed:
        text = path.read_text(errors="replace")
        assert not any(u in text for u in erased["uuids"]), path
    for table in ("events", "transactional"):
        raw = spark.read.format("delta").load(settings.table_path("quarantine", table))
        assert raw.where(_names_raw(student)).count() == 0, table
    events = spark.read.format("delta").load(settings.table_path("silver", "page_views"))
    assert (
        events.where(
            events.session_uuid.isin(*erased["uuids"])
            | events.install_uuid.isin(*erased["uuids"])
            | events.uuid.isin(*erased["uuids"])
        ).count()
        == 0
    )
    # tombstones hold salted hashes only; the salt is a 0600 secret
    names = [p.name for p in (lake / "_system" / "tombstones").iterdir()]
    salt_file = Path(settings.data_dir) / tombstones.SALT_FILE
    assert names == [tombstones.hashed(salt_file.read_text().strip(), student) + ".json"]
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600


def test_older_versions_cannot_reveal_the_student(erased, spark):
    settings = erased["settings"]
    with pytest.raises(catalog.CatalogError, match="version 0 can no longer be read"):
        catalog.query("select count(*) from silver.page_views", settings, version=0)
    # bronze.events at version 0: gone, or (its files untouched by the rewrite) without the student
    try:
        _, rows, _ = catalog.query(
            f'select count(*) from bronze.events where value like \'%"studentId_clientType":"{erased["student"]}@%\'',
            settings,
            version=0,
        )
        assert rows == [(0,)]
    except catalog.CatalogError as refused:
        assert "version 0 can no longer be read" in str(refused)


def test_marts_keep_their_page_view_totals(erased, spark):
    assert _totals(spark, erased["settings"]) == erased["before"]


def test_the_warehouse_holds_no_version_of_the_student(erased):
    settings, student = erased["settings"], erased["student"]
    with psycopg2.connect(settings.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from dw.dim_student where student_id = %s", (student,))
        assert cur.fetchone()[0] == 0
        cur.execute("select count(*) from dw.dim_student where student_sk <> %s", (ERASED_MEMBER_SK,))
        assert cur.fetchone()[0] > 0
        for table in ("fact_session", "fact_subject_follow", "fact_page_view_daily"):
            cur.execute(f"select count(*) from dw.{table} where student_id = %s", (student,))
            assert cur.fetchone()[0] == 0, table
            cur.execute(
                f"select count(*) from dw.{table} f where student_sk is not null and not exists"
                " (select from dw.dim_student d where d.student_sk = f.student_sk)"
            )
            assert cur.fetchone()[0] == 0, table


def test_the_students_facts_point_to_the_erased_member(erased):
    """What dw held of the student (sessions, follows, page views) is still counted, under the erased member: not
    under the anonymous (null) student."""
    settings = erased["settings"]
    with psycopg2.connect(settings.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute("select student_sk, is_current from dw.dim_student where student_id = %s", (ERASED_MEMBER,))
        assert cur.fetchall() == [(ERASED_MEMBER_SK, True)]
        cur.execute(
            "select count(*) from dw.fact_page_view_daily where (student_sk = %s) <> (student_id = %s)",
            (ERASED_MEMBER_SK, ERASED_MEMBER),
        )
        assert cur.fetchone()[0] == 0
    assert all(erased["dw_before"].values())
    assert _dw_rows(settings, ERASED_MEMBER) == erased["dw_before"]


def test_verify_exits_non_zero_when_it_finds_the_student(erased, spark):
    from typer.testing import CliRunner

    from lakehouse import config
    from lakehouse.cli import app

    settings, student = erased["settings"], erased["student"]
    other = (
        spark.read.format("delta")
        .load(settings.table_path("silver", "page_views"))
        .where("student_id is not null")
        .first()["student_id"]
    )
    env = {k: v for k, v in _env(settings).items() if k.startswith("LAKEHOUSE_") and "SPARK" not in k}
    config.get_settings.cache_clear()
    try:
        found = CliRunner().invoke(app, ["erase", "--verify", other], env=env)
        config.get_settings.cache_clear()
        clean = CliRunner().invoke(app, ["erase", "--verify", student], env=env)
    finally:
        config.get_settings.cache_clear()
    assert found.exit_code == 1, found.output
    assert "found" in found.output and "silver.page_views" in found.output
    assert clean.exit_code == 0 and "found nowhere" in clean.output, clean.output


def test_the_audit_log_counts_rows_without_the_id(erased, spark):
    settings, student = erased["settings"], erased["student"]
    rows = erasure.audit_log(spark, settings).collect()
    assert len(rows) == 1  # the killed run wrote none; the run that completed it, one
    row = rows[0].asDict()
    assert row["mode"] == "anonymize" and row["students"] == 1 and row["run_id"]
    assert row["rows"]["bronze.students"] + row["rows"]["bronze.student_follow_subject"] > 0
    assert student not in {v for v in row.values() if isinstance(v, str)}
    assert set(erasure.audit_log(spark, settings).columns) == {
        "erasure_id",
        "run_id",
        "erased_at",
        "mode",
        "students",
        "rows",
        "seconds",
    }


def test_a_later_delivery_stays_erased_and_incremental_equals_a_rebuild(erased, spark, tmp_path):
    settings, student = erased["settings"], erased["student"]
    for kind in ("transactional", "events"):
        shutil.copytree(
            erased["generated"] / kind / erased["deliveries"][2], Path(settings.source) / kind / erased["deliveries"][2]
        )
    report = _run(spark, settings, "delivery-2")
    assert report.details["erased_dropped"] >= 1
    assert erasure.verify(spark, settings, student) == {}
    # the lake kept incrementally equals the same lake with silver and gold rebuilt from bronze
    copy = settings.model_copy(update={"lake": str(tmp_path / "lake")})
    shutil.copytree(settings.lake, copy.lake)
    silver.refresh(spark, copy, "rebuild", full_refresh=True)
    gold.refresh(spark, copy, "rebuild", full_refresh=True)
    from pyspark.sql import functions as F

    for layer, tables in (("silver", tuple(silver.BY_NAME)), ("gold", gold.TABLES)):
        for table in tables:
            a, b = (spark.read.format("delta").load(s.table_path(layer, table)) for s in (settings, copy))
            cols = [F.to_json(c).alias(c) if t.startswith("map") else F.col(c) for c, t in a.dtypes if c not in IGNORED]
            a, b = a.select(*cols), b.select(*cols)
            assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, f"{layer}.{table}"


def test_anonymized_lines_keep_sessions_and_delete_mode_removes(spark, settings):
    """Unit level, on a hand-made bronze: anonymize keeps the client type and each session as one session under a
    new uuid; delete removes the rows; other students are untouched."""
    from datetime import datetime

    from lakehouse import delta, delta_log

    def line(student: str, session: str, n: int) -> str:
        return json.dumps(
            {
                "at": f"2017-11-16T08:1{n}:00-03:00",
                "studentId_clientType": f"{student}@Android",
                "session_uuid": session,
                "install_uuid": f"i-{student}",
                "uuid": f"u-{student}",
                "custom_4": "NewUser",
                "nth": n,
            }
        )

    lines = [line("7", "s1", 1), line("7", "s1", 2), line("7", "s2", 3), line("17", "s3", 4)]
    rows = [
        (v, None, "f", i + 1, "d1", datetime(2017, 11, 17), 1, datetime(2017, 11, 17), "r") for i, v in enumerate(lines)
    ]
    events = spark.createDataFrame(
        rows,
        "value string, at_raw string, source_file string, line_number long, "
        "delivery string, as_of timestamp, batch_id long, landed_at timestamp, run_id string",
    )
    delta.overwrite(events, target(settings, "bronze", "events", events))
    sessions = spark.createDataFrame(
        [('{"StudentId": "7", "SessionStartTime": "2017-11-10 00:40:41.000"}', 1)], "record string, batch_id long"
    )
    delta.overwrite(sessions, target(settings, "bronze", "sessions", sessions))

    counts = erasure.erase_lake(spark, settings, {"7"}, "anonymize")
    assert counts["bronze.events"] == 3 and counts["bronze.sessions"] == 1
    views = silver.page_views(delta.read_table(spark, "bronze", "events", settings), "t").collect()
    anonymous = [v for v in views if v["student_id"] is None]
    assert len(anonymous) == 3 and {v["client_type"] for v in anonymous} == {"Android"}
    assert all(v["student_erased"] for v in anonymous) and not any(
        v["student_erased"] for v in views if v["student_id"]
    )
    assert len({v["session_uuid"] for v in anonymous}) == 2
    assert not {"s1", "s2", "i-7", "u-7"} & {v[c] for v in anonymous for c in ("session_uuid", "install_uuid", "uuid")}
    assert [v["student_id"] for v in views if v["student_id"]] == ["17"]
    record = json.loads(delta.read_table(spark, "bronze", "sessions", settings).first()["record"])
    assert "StudentId" not in record and record["SessionStartTime"] == "2017-11-10 00:40:41.000"
    assert record["erased"] == "true"  # the mark: the session's fact points to the erased member

    assert erasure.erase_lake(spark, settings, {"17"}, "delete")["bronze.events"] == 1
    assert delta.read_table(spark, "bronze", "events", settings).count() == 3
    assert "bronze.events (any version still readable)" in erasure.verify(spark, settings, "17")  # version 0
    assert erasure.vacuum_all(settings)["bronze.events"] > 0
    assert erasure.verify(spark, settings, "17") == {}
    assert delta_log.oldest_readable_version(settings.table_path("bronze", "events")) == 2
