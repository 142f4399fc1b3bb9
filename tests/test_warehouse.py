"""The PostgreSQL warehouse: migrations, SCD2 dimensions, facts, idempotent and serialized mirrors, bi_reader."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from datetime import timedelta

import psycopg2
import psycopg2.errors
import pytest

from lakehouse.config import PROJECT_ROOT
from lakehouse.warehouse import csv_copy, drift, migrations, roles
from lakehouse.warehouse.loads import LOADS, SQL_DIR
from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.mirror import MIRROR_LOCK, ArrowGold, mirror
from tests.warehouse_data import (
    DIM_ATTRS,
    canonical,
    check_invariants,
    dw_history,
    reference_history,
    sample_deliveries,
    sample_gold,
    write_delta,
)


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def reset(dsn):
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("drop schema if exists dw cascade; drop schema if exists stage cascade")


def without_audit(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("load_audit",)}


def test_migrations_apply_once_and_enforce_scd2(pg_dsn):
    first = migrate(pg_dsn)
    assert first == [p.name for _, _, p in migrations.migrations()]
    assert migrate(pg_dsn) == []
    conn = connect(pg_dsn)
    cur = conn.cursor()
    cur.execute("select count(*) from dw.schema_version")
    assert cur.fetchone()[0] == len(first)
    cur.execute(
        "select data_type from information_schema.columns where table_schema = 'dw'"
        " and table_name = 'dim_student' and column_name in ('valid_from', 'valid_to')"
    )
    assert {r[0] for r in cur.fetchall()} == {"timestamp with time zone"}

    insert = (
        "insert into dw.dim_student (student_id, is_deleted, valid_from, valid_to, is_current)"
        " values (%s, false, %s, %s, %s)"
    )
    t0 = sample_deliveries()["student"][0].as_of
    cur.execute(insert, ("1", t0, t0 + timedelta(days=1), False))
    cur.execute(insert, ("1", t0 + timedelta(days=1), None, True))
    with pytest.raises(psycopg2.IntegrityError):  # a second current row for the key
        cur.execute(insert, ("1", t0 + timedelta(days=5), None, True))
    cur.execute("select indexdef from pg_indexes where schemaname = 'dw' and indexname = 'dim_student_current_key'")
    assert cur.fetchone()[0].endswith("(student_id) WHERE is_current")
    with pytest.raises(psycopg2.errors.ExclusionViolation):  # overlapping windows
        cur.execute(insert, ("1", t0 + timedelta(hours=12), t0 + timedelta(days=2), False))
    with pytest.raises(psycopg2.errors.CheckViolation):  # empty window
        cur.execute(insert, ("2", t0, t0, False))
    with pytest.raises(psycopg2.errors.CheckViolation):  # closed but current
        cur.execute(insert, ("3", t0, t0 + timedelta(days=1), True))
    conn.close()


def test_changed_applied_migration_is_refused(pg_dsn, tmp_path, monkeypatch):
    migrate(pg_dsn)
    sql_dir = tmp_path / "warehouse_sql"
    shutil.copytree(SQL_DIR, sql_dir)
    edited = sql_dir / "003_facts.sql"
    edited.write_text(edited.read_text() + "\ncreate index fact_session_at on dw.fact_session (session_start_at);\n")
    next_version = max(v for v, _, _ in migrations.migrations()) + 1
    (sql_dir / f"{next_version:03d}_pending.sql").write_text("create table dw.pending_marker (x int);\n")
    monkeypatch.setattr(migrations, "SQL_DIR", sql_dir)
    with pytest.raises(migrations.MigrationError) as raised:
        migrate(pg_dsn)
    message = str(raised.value)
    assert "warehouse_sql/003_facts.sql was changed after it was applied" in message
    assert f"new migration, warehouse_sql/{next_version + 1:03d}_<what>.sql" in message
    with pytest.raises(migrations.MigrationError):  # the mirror refuses too, before touching anything
        mirror(dsn=pg_dsn, source=ArrowGold(sample_gold()))
    with connect(pg_dsn) as conn, conn.cursor() as cur:  # nothing applied, not even the pending migration
        cur.execute(
            "select to_regclass('dw.pending_marker'), to_regclass('dw.fact_session_at'),"
            " (select count(*) from dw.dim_student where student_sk > 0)"
        )
        assert cur.fetchone() == (None, None, 0)
    edited.write_text((PROJECT_ROOT / "warehouse_sql" / "003_facts.sql").read_text())  # restored
    assert migrate(pg_dsn) == [f"{next_version:03d}_pending.sql"]


def test_mirror_runs_as_a_non_superuser_database_owner(pg_server, pg_dsn, settings, monkeypatch):
    """The mirror needs no superuser: a database owner (with CREATEROLE, for the BI login) runs it, and keeps the
    TEMP privilege that PUBLIC loses."""
    from lakehouse import config

    owner, password = f"mirror_{uuid.uuid4().hex[:8]}", "owner-secret-for-tests"
    database = f"{owner}_db"
    admin = connect(pg_server.admin_dsn)
    admin.cursor().execute(f"create role {owner} login createrole password %s", (password,))
    admin.cursor().execute(f"create database {database} owner {owner}")
    pg_server.allow_bi(database)
    dsn = psycopg2.extensions.make_dsn(pg_server.admin_dsn, dbname=database, user=owner, password=password)
    monkeypatch.setenv("LAKEHOUSE_BI_PASSWORD", "bi-secret-for-tests")
    config.get_settings.cache_clear()
    try:
        report = mirror(config.get_settings(), ArrowGold(sample_gold()), dsn=dsn)
        assert len(report.details["applied"]) == len(LOADS)
        with connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("select rolsuper from pg_roles where rolname = current_user")
            assert cur.fetchone()[0] is False
            cur.execute("create temp table mirror_scratch (x int)")  # the mirror's role keeps TEMP
            cur.execute("select has_database_privilege('public', current_database(), 'TEMP')")
            assert cur.fetchone()[0] is False
        bi = connect(psycopg2.extensions.make_dsn(dsn, user="bi_user", password="bi-secret-for-tests"))
        with bi.cursor() as cur:
            cur.execute("set default_transaction_read_only = off")  # a default only: privileges still refuse
            cur.execute("select count(*) from dw.dim_student")
            assert cur.fetchone()[0] > 0
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("create temp table mine (x int)")
        bi.close()
    finally:
        config.get_settings.cache_clear()
        admin.cursor().execute(f"drop database if exists {database} with (force)")
        admin.cursor().execute(f"drop role if exists {owner}")
        admin.close()


def test_copy_errors_reach_the_caller_and_stop_the_render_thread(pg_dsn):
    import pyarrow as pa

    migrate(pg_dsn)
    columns = ("course_id", "course_name")

    def failing_gold():
        yield pa.record_batch({"course_id": pa.array([1], pa.int32()), "course_name": ["math"]})
        raise RuntimeError("gold read failed")

    def rejected_rows():
        for _ in range(50):  # more batches than the render thread may hold ahead
            yield pa.record_batch({"course_id": ["not a number"] * 1000, "course_name": ["x"] * 1000})

    conn = psycopg2.connect(pg_dsn)
    try:
        cases = ((failing_gold(), RuntimeError), (rejected_rows(), psycopg2.errors.InvalidTextRepresentation))
        for batches, error in cases:
            with conn.cursor() as cur, pytest.raises(error):
                csv_copy.copy_batches(cur, "stage.dim_course_history", columns, batches)
            conn.rollback()
            assert not [t for t in threading.enumerate() if t.name == "csv-stream"]
    finally:
        conn.close()


def test_mirror_builds_scd2_history_and_facts(pg_dsn, settings):
    report = mirror(settings, ArrowGold(sample_gold()), dsn=pg_dsn)
    assert len(report.details["applied"]) == len(LOADS) and not report.skipped
    exports = sample_deliveries()
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        for entity in DIM_ATTRS:
            assert dw_history(cur, entity) == reference_history(entity, exports[entity])
            check_invariants(cur, entity)
        # deletion then return: a closed version, a deleted current one, then a new one
        cur.execute("select count(*) from dw.dim_course where course_id = 2")
        assert cur.fetchone()[0] == 3
        # every fact row carries the version valid at its time (or the first version when it predates it)
        for table, time_col in (
            ("fact_session", "session_start_at"),
            ("fact_subscription", "payment_at"),
            ("fact_subject_follow", "followed_at"),
            ("fact_page_view_daily", "first_event_at"),
        ):
            cur.execute(f"""
                select count(*) from dw.{table} f join dw.dim_student d using (student_sk)
                where d.student_id <> f.student_id
                   or not ((d.valid_from <= f.{time_col} and (d.valid_to is null or f.{time_col} < d.valid_to))
                           or (f.{time_col} < d.valid_from and d.valid_from = (
                               select min(valid_from) from dw.dim_student x where x.student_id = d.student_id)))
            """)
            assert cur.fetchone()[0] == 0, table
            cur.execute(
                f"select count(*) from dw.{table} where student_id is not null and student_sk is null"
                " and student_id in (select student_id from dw.dim_student)"
            )
            assert cur.fetchone()[0] == 0, table
        cur.execute("select count(*) from dw.fact_subject_follow where subject_sk is null")
        assert cur.fetchone()[0] == 0
        gold = sample_gold()
        cur.execute("select sum(page_views), count(*) filter (where student_id is null) from dw.fact_page_view_daily")
        views, anonymous = cur.fetchone()
        assert views == gold["fact_page_view"].num_rows and anonymous > 0
        cur.execute("select count(*) from dw.fact_session")
        assert cur.fetchone()[0] == len({tuple(r.values()) for r in gold["fact_session"].to_pylist()})
        cur.execute("select table_name, gold_version, deliveries from dw.load_audit where table_name = 'dim_student'")
        assert cur.fetchall() == [("dim_student", 0, ["2017-11-16", "2017-11-17", "2017-11-18"])]
        before = canonical(cur)

    again = mirror(settings, ArrowGold(sample_gold()), dsn=pg_dsn)
    assert again.skipped and not again.details["applied"]
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        assert canonical(cur) == before


def test_run_per_delivery_equals_one_run(pg_dsn, settings):
    mirror(settings, ArrowGold(sample_gold()), dsn=pg_dsn)
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        one_run = canonical(cur)
    reset(pg_dsn)
    for k in (1, 2, 3):
        tables = sample_gold(upto=k)
        report = mirror(settings, ArrowGold(tables, {name: k for name in tables}), dsn=pg_dsn)
        assert report.details["tables"]["dim_student"].deliveries == [f"2017-11-{15 + k}"]
        with connect(pg_dsn) as conn, conn.cursor() as cur:
            for entity in DIM_ATTRS:
                check_invariants(cur, entity)
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        per_delivery = canonical(cur)
    for name in ("dim_student", "dim_course", "dim_university", "dim_subject", "load_delivery"):
        assert per_delivery[name] == one_run[name], name
    # facts differ only because gold facts grew with the deliveries: compare the last run's facts
    reset(pg_dsn)
    mirror(settings, ArrowGold(sample_gold(upto=3)), dsn=pg_dsn)
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        assert without_audit(canonical(cur)) == without_audit(per_delivery)


def test_fact_loads_rewrite_only_changed_rows(pg_dsn, settings):
    import pyarrow as pa

    gold = sample_gold()
    mirror(settings, ArrowGold(gold, {name: 1 for name in gold}), dsn=pg_dsn)
    sessions = gold["fact_session"]
    extra = pa.Table.from_pylist(
        [
            {"student_id": "999", "session_start_at": row["session_start_at"], "client_type": "iOS"}
            for row in sessions.slice(0, 3).to_pylist()
        ],
        schema=sessions.schema,
    )
    changed = {**gold, "fact_session": pa.concat_tables([sessions.slice(10), extra])}
    versions = {name: 1 for name in gold} | {"fact_session": 2}

    def rows_with_xmin():
        with connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("select student_id, session_start_at, client_type, xmin::text from dw.fact_session")
            return {r[:3]: r[3] for r in cur.fetchall()}

    before = rows_with_xmin()
    report = mirror(settings, ArrowGold(changed, versions), dsn=pg_dsn)
    assert report.details["applied"] == ["fact_session"]
    after = rows_with_xmin()
    gone = {tuple(r.values()) for r in sessions.slice(0, 10).to_pylist()} - {
        tuple(r.values()) for r in sessions.slice(10).to_pylist()
    }
    assert report.details["tables"]["fact_session"].rows_removed == len(gone)
    assert report.details["tables"]["fact_session"].rows_inserted == 3
    kept = set(before) & set(after)
    assert len(kept) == len(before) - len(gone) and all(before[k] == after[k] for k in kept)  # not rewritten
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        incremental = canonical(cur)
    reset(pg_dsn)
    mirror(settings, ArrowGold(changed, versions), dsn=pg_dsn)  # a clean load of the same gold
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        assert without_audit(canonical(cur)) == without_audit(incremental)


def test_late_delivery_rewinds_to_its_as_of(pg_dsn, settings):
    exports = sample_deliveries()
    from tests.warehouse_data import arrow_table, history_rows

    facts = {name: table for name, table in sample_gold().items() if not name.endswith("_history")}

    def source(seq, version):
        tables = {}
        for entity in DIM_ATTRS:
            key = f"{entity}_id"
            rows = history_rows(entity, [exports[entity][i] for i in seq])
            tables[f"dim_{entity}_history"] = arrow_table(
                rows, (key, *DIM_ATTRS[entity], "is_deleted", "as_of", "delivery"), key=key
            )
        return ArrowGold(tables | facts, {name: version for name in tables} | {name: 1 for name in facts})

    mirror(settings, source([0, 2], 1), dsn=pg_dsn)
    report = mirror(settings, source([0, 1, 2], 2), dsn=pg_dsn)
    assert report.details["tables"]["dim_student"].deliveries == ["2017-11-17"]
    late = report.details["tables"]["dim_student"]
    # the later delivery is re-read: its gold rows changed too (keys first seen in the late one are in it now)
    assert late.restated_from == "2017-11-17T06:00:00+00:00" and late.corrected + late.replayed == ["2017-11-18"]
    assert report.details["tables"]["fact_session"].status == "applied"  # same gold facts, re-resolved keys
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        for entity in DIM_ATTRS:
            assert dw_history(cur, entity) == reference_history(entity, exports[entity])
            check_invariants(cur, entity)
        rewound = without_audit(canonical(cur))
    reset(pg_dsn)
    mirror(settings, source([0, 1, 2], 1), dsn=pg_dsn)  # the same deliveries and facts in one clean load
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        assert without_audit(canonical(cur)) == rewound


def test_two_mirrors_serialize(pg_dsn, settings):
    migrate(pg_dsn)
    holder = connect(pg_dsn)
    holder.cursor().execute("select pg_advisory_lock(%s)", (MIRROR_LOCK,))
    results, errors = [], []

    def run():
        try:
            results.append(mirror(settings, ArrowGold(sample_gold()), dsn=pg_dsn))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        while True:  # both mirrors wait on the lock
            cur.execute(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted"
                " and database = (select oid from pg_database where datname = current_database())"
            )
            if cur.fetchone()[0] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert all(t.is_alive() for t in threads)
        cur.execute("select count(*) from dw.dim_student where student_sk > 0")
        assert cur.fetchone()[0] == 0
    holder.close()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(len(r.details["applied"]) for r in results) == [0, len(LOADS)]
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("select count(distinct load_id), count(*) from dw.load_audit")
        assert cur.fetchone() == (1, len(LOADS))
        exports = sample_deliveries()
        for entity in DIM_ATTRS:
            assert dw_history(cur, entity) == reference_history(entity, exports[entity])


def test_bi_reader_reads_dw_only(pg_dsn, settings, monkeypatch):
    from lakehouse import config

    monkeypatch.setenv("LAKEHOUSE_BI_PASSWORD", "bi-secret-for-tests")
    config.get_settings.cache_clear()
    settings = config.get_settings()
    mirror(settings, ArrowGold(sample_gold()), dsn=pg_dsn)
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("create table dw.created_later (x int)")  # default privileges cover it
        cur.execute("select table_name from information_schema.tables where table_schema = 'dw'")
        dw_tables = [r[0] for r in cur.fetchall()]
    assert "created_later" in dw_tables and "fact_page_view_daily" in dw_tables

    bi_dsn = psycopg2.extensions.make_dsn(pg_dsn, user="bi_user", password="bi-secret-for-tests")
    bi = connect(bi_dsn)
    cur = bi.cursor()
    cur.execute("set default_transaction_read_only = off")  # read-only is the login's default: privileges still refuse
    for table in dw_tables:
        cur.execute(f"select count(*) from dw.{table}")
    # fmt: off
    denied = [
        "insert into dw.dim_course (course_id, is_deleted, valid_from, is_current) values (99, false, now(), true)",
        "update dw.dim_student set state = 'XX'",
        "delete from dw.fact_session",
        "truncate dw.fact_subscription",
        "create table dw.mine (x int)",
        "create table public.mine (x int)",
        "create schema mine",
        "create table stage.mine (x int)",
        "select count(*) from stage.dim_student_history",
        "insert into stage.fact_session (student_id) values ('1')",
        "select * from dw.schema_version for update",
        "update dw.students set city = 'x'",
        "delete from dw.courses",
        "insert into dw.dim_date (date, year, quarter, month, month_name, week, weekday, weekday_name, is_weekend)"
        " values ('2000-01-01', 2000, 1, 1, 'January', 52, 6, 'Saturday', true)",
        "truncate dw.mart_daily_activity",
        "select nextval('dw.load_id_seq')",
        "create temp table mine (x int)",
        "create temporary view mine as select 1 as x",
        "select lo_create(0)",
        "select lo_from_bytea(0, 'x')",
    ]
    # fmt: on
    for sql in denied:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(sql)
    bi.close()


def test_no_bi_password_creates_no_login(pg_dsn, settings, caplog):
    assert settings.bi_password is None
    with caplog.at_level("WARNING"):
        assert roles.ensure_bi_login(pg_dsn, settings) is False
    assert "LAKEHOUSE_BI_PASSWORD is unset" in caplog.text


def test_mirror_reads_gold_delta_tables(pg_dsn, settings, spark):
    lake = settings.lake_url
    write_delta(spark, lake, sample_gold(upto=2))
    first = mirror(settings, dsn=pg_dsn)
    assert len(first.details["applied"]) == len(LOADS)
    assert first.details["tables"]["dim_student"].deliveries == ["2017-11-16", "2017-11-17"]
    write_delta(spark, lake, sample_gold(upto=3))
    second = mirror(settings, dsn=pg_dsn)
    assert second.details["tables"]["dim_student"].deliveries == ["2017-11-18"]
    assert second.details["tables"]["dim_student"].gold_version == 1
    assert mirror(settings, dsn=pg_dsn).skipped
    exports = sample_deliveries()
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        for entity in DIM_ATTRS:
            assert dw_history(cur, entity) == reference_history(entity, exports[entity])
        cur.execute("select sum(page_views) from dw.fact_page_view_daily")
        assert cur.fetchone()[0] == sample_gold(upto=3)["fact_page_view"].num_rows
        cur.execute("select gold_version from dw.load_audit where table_name = 'fact_session' order by load_id")
        assert [r[0] for r in cur.fetchall()] == [0, 1]


def test_drift_names_each_table_that_differs_from_gold(pg_dsn, settings):
    source = ArrowGold(sample_gold())
    first = mirror(settings, source, dsn=pg_dsn)
    assert first.details["drifted"] == [] and len(first.details["drift"]) == len(LOADS)
    assert drift.drift(settings, source, dsn=pg_dsn) == first.details["drift"]
    with connect(pg_dsn) as conn, conn.cursor() as cur:  # dw edited behind the mirror's back
        cur.execute("update dw.dim_student set city = 'Atlantis' where student_id = '3' and is_current")
        cur.execute("delete from dw.fact_session where ctid = (select min(ctid) from dw.fact_session)")
        cur.execute("update dw.fact_page_view_daily set page_views = page_views + 1 where student_id = '5'")
    found = {t.table: t for t in drift.drift(settings, source, dsn=pg_dsn)}
    assert sorted(t for t, d in found.items() if d.drifted) == ["dim_student", "fact_page_view_daily", "fact_session"]
    assert found["fact_session"].dw_rows == found["fact_session"].gold_rows - 1
    assert found["dim_student"].dw_rows == found["dim_student"].gold_rows  # same rows, another state
    again = mirror(settings, source, dsn=pg_dsn)  # nothing new in gold: nothing loaded, the drift reported
    assert again.skipped and sorted(again.details["drifted"]) == ["dim_student", "fact_page_view_daily", "fact_session"]


def test_full_refresh_rebuilds_dw_from_gold_in_one_transaction(pg_server, pg_dsn, settings, monkeypatch):
    """A rebuild restores what was edited behind the mirror's back; BI sessions read the previous state, unblocked,
    until it commits."""
    from lakehouse import config

    monkeypatch.setenv("LAKEHOUSE_BI_PASSWORD", "bi-secret-for-tests")
    config.get_settings.cache_clear()
    settings = config.get_settings()
    source = ArrowGold(sample_gold())
    mirror(settings, source, dsn=pg_dsn)
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        clean = canonical(cur)
        cur.execute("select student_sk from dw.dim_student where student_id = '3' and is_current")
        (sk,) = cur.fetchone()
        cur.execute("update dw.dim_student set city = 'Atlantis' where student_sk = %s", (sk,))
        cur.execute("delete from dw.fact_subscription")
    bi = connect(psycopg2.extensions.make_dsn(pg_dsn, user="bi_user", password="bi-secret-for-tests"))
    bi.cursor().execute("set statement_timeout = '5s'")  # a read the rebuild blocked would fail

    def bi_reads():
        with bi.cursor() as cur:
            cur.execute("select city from dw.dim_student where student_id = '3' and is_current")
            city = cur.fetchone()[0]
            cur.execute("select count(*) from dw.fact_subscription")
            return city, cur.fetchone()[0]

    holder = connect(pg_server.admin_dsn.rsplit("/", 1)[0] + "/" + psycopg2.extensions.parse_dsn(pg_dsn)["dbname"])
    holder.autocommit = False
    holder.cursor().execute("lock table dw.fact_page_view_daily in share mode")  # the rebuild's last table waits
    done: list = []
    rebuild = threading.Thread(target=lambda: done.append(mirror(settings, source, dsn=pg_dsn, full_refresh=True)))
    rebuild.start()
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the rebuild has restated the dimensions and waits on the last fact
            cur.execute(
                "select count(*) from pg_locks where relation = 'dw.fact_page_view_daily'::regclass and not granted"
            )
            if cur.fetchone()[0]:
                break
            time.sleep(0.05)
    assert rebuild.is_alive()
    assert bi_reads() == ("Atlantis", 0)  # the state before the rebuild, read without waiting
    holder.rollback()
    holder.close()
    rebuild.join(60)
    report = done[0]
    assert report.details["full_refresh"] and report.details["drifted"] == []
    assert report.details["tables"]["dim_student"].restated_from == "-infinity"
    assert (
        report.details["tables"]["dim_student"].rows_removed
        == 1
        == report.details["tables"]["dim_student"].rows_inserted
    )
    assert bi_reads() == ("city3", sample_gold()["fact_subscription"].num_rows)
    bi.close()
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        assert without_audit(canonical(cur)) == without_audit(clean)
        cur.execute("select count(*) from dw.dim_student where student_sk = %s", (sk,))
        assert cur.fetchone()[0] == 0  # the edited version was replaced; every other version kept its key


def test_calendar_marts_and_current_views(pg_dsn, settings):
    """dw.dim_date covers every fact's day with its derived columns, the marts hold gold's rows, and each current-state
    view is its dimension's current versions."""
    gold = sample_gold()
    mirror(settings, ArrowGold(gold), dsn=pg_dsn)
    with connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "select date, year, quarter, month, month_name, week, weekday, weekday_name, is_weekend from dw.dim_date"
        )
        days = {r[0]: r for r in cur.fetchall()}
        assert len(days) == gold["dim_date"].num_rows
        for day, row in days.items():
            iso = day.isocalendar()
            assert row[1:] == (
                day.year,
                (day.month - 1) // 3 + 1,
                day.month,
                day.strftime("%B"),
                iso.week,
                iso.weekday,
                day.strftime("%A"),
                iso.weekday >= 6,
            )
        for table, column in (
            ("fact_session", "session_date"),
            ("fact_subscription", "payment_date"),
            ("fact_subject_follow", "followed_date"),
            ("fact_page_view_daily", "event_date"),
            ("mart_daily_activity", "event_date"),
        ):
            cur.execute(
                f"select count(*), count(d.date) from dw.{table} f left join dw.dim_date d on d.date = f.{column}"
            )
            rows, dated = cur.fetchone()
            assert rows == dated > 0, table
        for mart in ("mart_country_access", "mart_users_by_type", "mart_state_activity", "mart_daily_activity"):
            names = gold[mart].column_names
            cur.execute(f"select {', '.join(names)} from dw.{mart}")
            assert sorted(cur.fetchall(), key=str) == sorted(
                (tuple(r.values()) for r in gold[mart].to_pylist()), key=str
            ), mart
        for view, dimension in (
            ("students", "student"),
            ("courses", "course"),
            ("universities", "university"),
            ("subjects", "subject"),
        ):
            cur.execute(
                f"select * from dw.{view} except all select {dimension}_sk, {dimension}_id,"
                f" {', '.join(DIM_ATTRS[dimension])}, is_deleted, valid_from from dw.dim_{dimension} where is_current"
            )
            assert cur.fetchall() == [], view
            cur.execute(f"select count(*), count(distinct {dimension}_id) from dw.{view}")
            count, keys = cur.fetchone()
            cur.execute(f"select count(distinct {dimension}_id) from dw.dim_{dimension}")
            assert count == keys == cur.fetchone()[0], view
