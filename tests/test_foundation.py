"""Foundation: settings, Spark + Delta round trip read back by DuckDB, the managed PostgreSQL lifecycle."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import duckdb
import psycopg2
import pytest

from lakehouse.config import Settings, mask_dsn
from lakehouse.pgserver import ManagedPostgres


def test_settings_read_environment_and_env_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LAKEHOUSE_SPARK_MASTER=spark://10.0.0.1:7077\nLAKEHOUSE_BI_PASSWORD=s3cret\n")
    monkeypatch.setenv("LAKEHOUSE_LAKE", "gs://bucket/lake")
    monkeypatch.setenv("LAKEHOUSE_PG_DSN", "postgresql://u:hunter2@db:5432/dw")
    s = Settings()
    assert s.spark_master == "spark://10.0.0.1:7077"
    assert s.lake_url == "gs://bucket/lake" and not s.lake_is_local
    assert s.table_path("gold", "dim_student") == "gs://bucket/lake/gold/dim_student"
    shown = s.masked()
    assert "hunter2" not in str(shown) and "s3cret" not in str(shown)
    assert shown["pg_dsn"] == "postgresql://u:********@db:5432/dw"
    assert shown["bi_password"] == "********"


def test_mask_dsn_key_value_form():
    assert mask_dsn("host=db password=abc user=u") == "user=u password=******** host=db"


def test_the_java_check_reads_the_version_past_the_options_the_jvm_echoes(monkeypatch):
    from lakehouse.spark import check_java

    plain = check_java()
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Dlakehouse.test=1")  # the JVM prints "Picked up ..." first
    assert check_java() == plain and ' version "' in plain


def test_unknown_layer_is_refused(settings):
    with pytest.raises(ValueError, match="unknown layer"):
        settings.table_path("platinum", "x")


def _duckdb_with_delta() -> duckdb.DuckDBPyConnection:
    import duckdb_extension_delta

    ext = next(Path(duckdb_extension_delta.__file__).parent.rglob("delta.duckdb_extension"))
    con = duckdb.connect()
    con.execute(f"load '{ext}'")
    return con


def test_delta_written_by_spark_reads_back_in_spark_and_duckdb(spark, settings):
    from lakehouse import delta, delta_log
    from tests.builders import target

    rows = [(1, "Curso1", dt.datetime(2017, 11, 16, 2, 10, 20), True), (2, None, None, False)]
    df = spark.createDataFrame(rows, "course_id int, course_name string, as_of timestamp, is_deleted boolean")
    delta.overwrite(df, target(settings, "gold", "t_roundtrip", df))
    once = target(settings, "gold", "t_roundtrip", df, app_id="test", version=1)
    delta.append_once(df, once)
    delta.append_once(df, once)  # skipped

    path = settings.table_path("gold", "t_roundtrip")
    back = spark.read.format("delta").load(path)
    assert back.count() == 4
    assert back.exceptAll(df.unionByName(df)).count() == 0
    assert delta_log.last_txn_version(path, "test") == 1

    got = (
        _duckdb_with_delta()
        .execute(f"select course_id, course_name, as_of, is_deleted from delta_scan('{path}') order by all")
        .fetchall()
    )
    as_of = got[0][2]
    assert as_of.utcoffset() == dt.timedelta(0) and as_of.replace(tzinfo=None) == rows[0][2]
    assert [(r[0], r[1], r[3]) for r in got] == [
        (1, "Curso1", True),
        (1, "Curso1", True),
        (2, None, False),
        (2, None, False),
    ]


def test_txn_versions_read_from_json_commits_and_checkpoints(spark, settings):
    from lakehouse import delta, delta_log
    from tests.builders import target

    df = spark.createDataFrame([(1,)], "x int")
    for version in range(1, 13):  # Delta writes a checkpoint every 10 commits
        delta.append_once(df, target(settings, "bronze", "t_txn", df, app_id="a", version=version))
    delta.append_once(df, target(settings, "bronze", "t_txn", df, app_id="b", version=7))
    path = settings.table_path("bronze", "t_txn")
    assert Path(path, "_delta_log", "_last_checkpoint").exists()
    assert delta_log.DeltaLog(path).txn_versions() == {"a": 12, "b": 7}
    assert delta_log.last_txn_version(path, "c") is None
    assert delta_log.DeltaLog(settings.table_path("bronze", "missing")).txn_versions() == {}


def test_table_writes_start_after_the_tables_they_read_and_none_after_an_error(spark):
    import threading

    from lakehouse import delta

    log: list[str] = []
    lock = threading.Lock()

    def job(name: str, fail: bool = False):
        def run(_session):
            with lock:
                log.append(f"start {name}")
            time.sleep(0.3)
            with lock:
                log.append(f"end {name}")
            if fail:
                raise ValueError(name)
            return name

        return run

    after = {"dim": ("history",), "mart": ("dim", "fact"), "enriched": ("dim", "skipped")}
    names = ("history", "fact", "other", "dim", "mart", "enriched")
    assert delta.write_tables(spark, {n: job(n) for n in names}, after=after) == {n: n for n in names}
    for name, reads in after.items():
        for read in (r for r in reads if r != "skipped"):
            assert log.index(f"end {read}") < log.index(f"start {name}"), log
    log.clear()
    jobs = {n: job(n, fail=n == "history") for n in names}
    with pytest.raises(ValueError, match="history"):
        delta.write_tables(spark, jobs, after=after)
    assert not {"start dim", "start mart", "start enriched"} & set(log), log


@pytest.fixture
def pg_root():
    root = Path(tempfile.mkdtemp(prefix="lakehouse-pgtest-"))
    yield root
    ManagedPostgres(root).remove()
    shutil.rmtree(root, ignore_errors=True)


def _postmaster_pid(server: ManagedPostgres) -> int:
    return int((server.cluster / "postmaster.pid").read_text().split()[0])


def _select_one(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select 1")
        return cur.fetchall()[0][0]


def test_managed_postgres_start_reuse_stop_and_restart_after_crash(pg_root):
    server = ManagedPostgres(pg_root)
    dsn = server.start()
    assert _select_one(dsn) == 1
    pid = _postmaster_pid(server)

    assert server.start() == dsn and _postmaster_pid(server) == pid  # reused, not restarted

    server.stop()
    assert not server.running()
    with pytest.raises(psycopg2.OperationalError):
        _select_one(dsn)

    assert server.start() == dsn and _select_one(dsn) == 1
    os.kill(_postmaster_pid(server), signal.SIGKILL)  # crash: the pid file stays behind
    deadline = time.monotonic() + 10
    while server.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (server.cluster / "postmaster.pid").exists()
    assert server.start() == dsn and _select_one(dsn) == 1


def test_managed_postgres_refuses_password_less_login(pg_root):
    dsn = ManagedPostgres(pg_root).start()
    no_password = dsn.replace(dsn.split("//")[1].split("@")[0], "lakehouse")
    with pytest.raises(psycopg2.OperationalError):
        _select_one(no_password)


def test_spark_jars_come_from_the_project_cache_without_resolution(spark):
    from lakehouse import jars

    assert spark.conf.get("spark.jars.packages", "") == ""
    listed = spark.conf.get("spark.jars").split(",")
    assert listed == jars.spark_jars() and any("delta-spark" in p for p in listed)
    assert all(Path(p).is_file() and Path(p).parent.parent == jars.CACHE for p in listed)
