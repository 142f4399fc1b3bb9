"""A learner's right to erasure, end to end on a multi-delivery generated source against real Spark, Delta and
PostgreSQL. The learner (a distinctive id) is named in every form a source can name them: exports, event lines in
both spellings, an id written with JSON escapes and with spaces, a quarantined line, a line cut for its length, an
export under a name that is no entity, an export that is not JSON, a lake whose older commits carry the id in their
conditions and statistics, and a later delivery that brings them back. After `lakehouse erase` (killed once with
SIGKILL mid-way, then run again from an ids file), an independent scan of every byte under the lake, of the data
folder's Prefect database and logs, and of dw (tables and pg_stats) finds the id nowhere, and `--verify` agrees; with
the id planted back in each place, `--verify` finds each."""

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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse import bronze, catalog, erasure, gold, silver, tables, tombstones
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.delta_log import DeltaLog
from lakehouse.landing import land
from lakehouse.reports import StageReport
from lakehouse.tools.generate import generate
from lakehouse.verify import Needle, verify
from lakehouse.warehouse.loads import ERASED_MEMBER, ERASED_MEMBER_SK
from lakehouse.warehouse.mirror import first_value, mirror
from tests.builders import assert_same_rows, cli, comparable, delta_scan_sql, duckdb_with_delta, new_database, target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

LEARNER = "80513927"  # distinctive: a byte scan for it finds nothing by chance
ESCAPED = "".join(f"\\u{ord(c):04x}" for c in LEARNER)
MAX_LINE = 4096
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


def _events(folder: Path) -> list[str]:
    return [ln for f in sorted(folder.iterdir()) for ln in f.read_text().splitlines()]


def _append(path: Path, *lines: str) -> None:
    text = path.read_text() if path.exists() else ""
    path.write_text(text + ("" if not text or text.endswith("\n") else "\n") + "".join(ln + "\n" for ln in lines))


def _cut_short(table: str, name: str) -> Path:
    """What a writer killed mid-file leaves behind: a data file of the table cut short, in no log (the first half of
    one of its files)."""
    whole = next(Path(table).rglob("*.parquet"))
    cut = whole.parent / name
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def _inject(generated: Path, deliveries: list[str]) -> str:
    """Give the learner a life in the source; returns the existing student whose days they copy."""
    first = _events(generated / "events" / deliveries[0])
    model = Counter(s for s in map(_student_of, first) if s).most_common(1)[0][0]
    for n, delivery in enumerate(deliveries):
        exports = generated / "transactional" / delivery
        students = _records(exports / "students.json")
        profile = next(r for r in students if r["Id"] == model)
        (exports / "students.json").write_text(json.dumps([*students, {**profile, "Id": LEARNER}]))
        for entity, extra in (
            ("sessions", {}),
            ("student_follow_subject", {}),
            ("subscriptions", {"PlanType": "Anual"}),
        ):
            records = _records(exports / f"{entity}.json")
            models = [r for r in records if str(r.get("StudentId")) == model]
            mine = [{**r, "StudentId": int(LEARNER) if i % 2 else LEARNER, **extra} for i, r in enumerate(models)]
            (exports / f"{entity}.json").write_text(json.dumps(records + mine))
        lines = [ln for ln in _events(generated / "events" / delivery) if _student_of(ln) == model]
        part = sorted((generated / "events" / delivery).iterdir())[0]
        events = [json.loads(ln) for ln in lines]
        for e in events:
            e["studentId_clientType"] = e["studentId_clientType"].replace(f"{model}@", f"{LEARNER}@")
        _append(part, *map(json.dumps, events))
        if n == 0:
            one = events[0]
            _append(
                part,
                json.dumps({**one, "nth": 901}).replace(f'"{LEARNER}@', f'"{ESCAPED}@'),  # escaped
                json.dumps({**one, "nth": 902, "studentId_clientType": f"  {LEARNER} @iOS"}),  # spaced
                json.dumps({**one, "at": "not a time"}),  # quarantined: unparseable_at
                json.dumps({**one, "nth": 903, "custom_3": "x" * (MAX_LINE + 10)}),  # cut: line_too_long
            )
            (exports / "Students (1).json").write_text(json.dumps([{**profile, "Id": LEARNER}, profile]))
        if n == 1:  # an export that is not JSON, naming the learner
            (exports / "subscriptions.json").write_text(f'[{{"StudentId": "{LEARNER}", "PlanType": "Anual"}}, oops')
    return model


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
        "LAKEHOUSE_MAX_LINE_BYTES": str(MAX_LINE),
    }


def _dsn(settings):
    return settings.pg_dsn.get_secret_value()


def byte_scan(settings, needle=LEARNER):
    """Every place the id is, found independently of lakehouse.verify: raw bytes of every file under the lake and of
    the data folder's Prefect home, logs and Spark scratch, every value of every Parquet file decoded, every dw and
    stage row as text, and pg_stats."""
    spellings = {needle, "".join(f"\\u{ord(c):04x}" for c in needle), "".join(f"\\u{ord(c):04X}" for c in needle)}
    places = set()
    data = Path(settings.data_dir)
    roots = [Path(settings.lake), data / "prefect", data / "logs", data / "spark-scratch"]
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()) if root.exists() else ():
            raw = path.read_bytes()
            if any(s.encode() in raw for s in spellings):
                places.add(str(path))
            elif path.suffix == ".parquet" and path.stat().st_size:
                try:
                    text = json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
                except pa.ArrowInvalid:  # not a whole Parquet file: what it holds cannot be told
                    text = needle
                if any(s in text for s in spellings):
                    places.add(str(path))
    with psycopg2.connect(_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("select schemaname, tablename from pg_tables where schemaname in ('dw', 'stage')")
        for schema, table in cur.fetchall():
            cur.execute(f'select count(*) from "{schema}"."{table}" t where t::text like %s', (f"%{needle}%",))
            if first_value(cur):
                places.add(f"pg {schema}.{table}")
        cur.execute(
            "select schemaname, tablename, attname from pg_stats where schemaname in ('dw', 'stage')"
            " and coalesce(most_common_vals::text, '') || coalesce(histogram_bounds::text, '') like %s",
            (f"%{needle}%",),
        )
        places |= {f"pg_stats {s}.{t}.{c}" for s, t, c in cur.fetchall()}
    conn.close()
    return places


@pytest.fixture(scope="module")
def world(spark, pg_server, tmp_path_factory):
    """A lake and warehouse fed two deliveries naming the learner in every form; its older commits carry the id in a
    condition and in file statistics (as an earlier version of the code and the table layout left them)."""
    root = tmp_path_factory.mktemp("erasure")
    generated = root / "generated"
    generate(generated, seed=5, students=20, events=300, deliveries=3)
    assert not any(LEARNER.encode() in p.read_bytes() for p in generated.rglob("*") if p.is_file())
    deliveries = sorted(p.name for p in (generated / "events").iterdir())
    model = _inject(generated, deliveries)
    source = root / "source"
    settings = Settings(
        source=str(source),
        lake=str(root / "lake"),
        data_dir=str(root / "data"),
        pg_dsn=new_database(pg_server),
        spark_master="local[2]",
        shuffle_partitions=2,
        max_line_bytes=MAX_LINE,
    )
    for n, delivery in enumerate(deliveries[:2]):
        for kind in ("transactional", "events"):
            shutil.copytree(generated / kind / delivery, source / kind / delivery)
        _run(spark, settings, f"delivery-{n}")
    pv = f"delta.`{settings.table_path('silver', 'page_views')}`"
    enriched = settings.table_path("gold", "page_view_enriched")
    spark.sql(f"UPDATE {pv} SET student_id = student_id WHERE student_id = '{LEARNER}'")  # a literal condition
    spark.sql(f"ALTER TABLE delta.`{enriched}` SET TBLPROPERTIES ('delta.dataSkippingStatsColumns' = 'student_id')")
    spark.sql(f"INSERT INTO delta.`{enriched}` SELECT * FROM delta.`{enriched}` WHERE student_id = '{LEARNER}' LIMIT 1")
    with psycopg2.connect(_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("analyze")
    conn.close()
    before = byte_scan(settings)
    assert {p for p in before if "/_delta_log/" in p}, "the log names the learner before the erasure"
    change_data = sorted(p for p in Path(settings.lake).rglob("*") if p.is_file() and "_change_data" in p.parts)
    assert change_data, "gold's change data feed kept the rows its MERGEs changed"
    assert {p for p in before if "/landing/" in p and "Students" in p}, "the mis-named export names the learner"
    assert {p for p in before if p.startswith("pg_stats")}, "dw's statistics name the learner"
    totals = _totals(spark, settings)
    return {
        "settings": settings,
        "generated": generated,
        "deliveries": deliveries,
        "model": model,
        "before": totals,
        "change_data": change_data,
    }


def _totals(spark, settings):
    out = {
        name: spark.read.format("delta").load(settings.table_path("gold", name)).agg({column: "sum"}).first()[0]
        for name, column in MARTS.items()
    }
    out["fact_page_view"] = spark.read.format("delta").load(settings.table_path("gold", "fact_page_view")).count()
    for name in ("fact_session", "fact_subject_follow"):
        out[name] = spark.read.format("delta").load(settings.table_path("gold", name)).count()
    with psycopg2.connect(_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("select sum(page_views) from dw.fact_page_view_daily")
        out["dw.fact_page_view_daily"] = int(cur.fetchone()[0])
    conn.close()
    return out


def _spark_temp() -> set[str]:
    return {p.name for p in Path("/tmp").iterdir() if p.name.startswith(("spark-", "blockmgr-", "pyspark-"))}


@pytest.fixture(scope="module")
def erased(world, tmp_path_factory):
    """The erasure killed with SIGKILL after its first table rewrite, then run again by `lakehouse erase --ids-file`."""
    settings = world["settings"]
    env = _env(settings)
    run = (
        "from lakehouse import erasure; from lakehouse.config import get_settings; "
        f"from lakehouse.spark import get_spark; erasure.erase(get_spark(), get_settings(), [{LEARNER!r}])"
    )
    temp_before = _spark_temp()
    killed = subprocess.run(
        [sys.executable, "-c", run],
        env={**env, "LAKEHOUSE_FAULT": "mid_erasure"},
        cwd=PROJECT_ROOT,
        timeout=900,
        capture_output=True,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert _spark_temp() <= temp_before, "a killed run left Spark's scratch files in /tmp"
    scratch = Path(settings.data_dir) / "spark-scratch"
    assert [p.name for p in scratch.iterdir() if p.name.split("-")[0].isdigit()], "the killed JVM's scratch is here"
    assert verify(settings, LEARNER), "killed mid-way: the learner is still found somewhere"
    _cut_short(settings.table_path("silver", "page_views"), "part-killed-mid-file.parquet")  # the re-run vacuums it
    ids = tmp_path_factory.mktemp("request") / "ids.txt"
    ids.write_text(f"{LEARNER}\n\n")
    done = cli("erase", "--ids-file", str(ids), env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "erased 1 student(s) (anonymize)" in done.stdout
    assert LEARNER not in done.stdout + done.stderr
    return world


def test_no_byte_anywhere_holds_the_learner_and_verify_agrees(erased):
    settings = erased["settings"]
    assert not list(Path(settings.lake).rglob("part-killed-mid-file.parquet"))  # the vacuum deleted it
    assert byte_scan(settings) == set()
    assert verify(settings, LEARNER) == []
    assert [p for p in erased["change_data"] if p.exists()] == []  # the change feed's old rows went too
    assert not list((Path(settings.data_dir) / "requests").iterdir())  # the request file went with the run
    # the killed JVM's scratch folder went at the next start, the finished ones' at their exit
    assert not list((Path(settings.data_dir) / "spark-scratch").iterdir())


def test_every_history_starts_after_the_erasure(erased, spark):
    settings = erased["settings"]
    for spec in tables.LAKE:
        log = DeltaLog(settings.table_path(spec.layer, spec.name))
        if not log.exists:
            continue
        if spec.key != "_system.erasures":  # the erasure's own audit row comes after the compaction
            assert log.commits[0][0] == max(log.checkpoints), spec.key  # nothing before the compacting checkpoint
        configuration = log.configuration()
        personal = set(configuration.get("delta.dataSkippingStatsColumns", "").split(",")) & set(spec.personal)
        assert not personal, spec.key
    with pytest.raises(catalog.CatalogError, match="can no longer be read|has no Delta version"):
        catalog.query("select count(*) from silver.page_views", settings, version=0)


def test_marts_and_facts_keep_their_totals(erased, spark):
    assert _totals(spark, erased["settings"]) == erased["before"]


def test_anonymized_events_and_records_keep_nothing_that_singles_the_learner_out(erased, spark):
    settings = erased["settings"]
    views = spark.read.format("delta").load(settings.table_path("silver", "page_views")).where("student_erased")
    assert views.count() > 0
    for row in views.collect():
        assert row["student_id"] is None and row["client_type"]
        assert row["event_at"].minute == 0 and row["event_at"].second == 0
        assert all(row[c] is None for c in ("city_name", "region", "browser", "platform", "page_name", "custom_1"))
        assert row["country"] and row["user_type"]
    sessions = spark.read.format("delta").load(settings.table_path("silver", "sessions")).where("student_erased")
    assert sessions.count() > 0
    assert all(r["session_start_at"].minute == 0 for r in sessions.collect())


def test_the_warehouse_holds_no_version_and_its_facts_point_to_the_erased_member(erased):
    settings = erased["settings"]
    with psycopg2.connect(_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from dw.dim_student where student_sk <> %s", (ERASED_MEMBER_SK,))
        assert first_value(cur) > 0
        cur.execute("select student_sk, is_current from dw.dim_student where student_id = %s", (ERASED_MEMBER,))
        assert cur.fetchall() == [(ERASED_MEMBER_SK, True)]
        for table in ("fact_session", "fact_subject_follow", "fact_page_view_daily"):
            cur.execute(f"select count(*) from dw.{table} where student_sk = %s", (ERASED_MEMBER_SK,))
            assert first_value(cur) > 0, table
            cur.execute(
                f"select count(*) from dw.{table} f where student_sk is not null and not exists"
                " (select from dw.dim_student d where d.student_sk = f.student_sk)"
            )
            assert first_value(cur) == 0, table
        cur.execute("select count(*) from pg_tables where schemaname = 'stage'")
        assert first_value(cur) > 0  # made again, empty
    conn.close()


def test_the_audit_log_counts_rows_without_the_id(erased, spark):
    settings = erased["settings"]
    rows = erasure.audit_log(spark, settings).collect()
    assert len(rows) == 1  # the killed run wrote none; the run that completed it, one
    row = rows[0].asDict()
    assert row["mode"] == "anonymize" and row["students"] == 1 and row["run_id"]
    # the killed run had rewritten some tables already: the run that completed it counts what was left, and every table
    assert {"bronze.students", "quarantine.transactional", "dw.dim_student"} <= set(row["rows"])
    assert row["rows"]["files_vacuumed"] > 0 and row["rows"]["log_files_removed"] > 0
    # tombstones hold salted hashes only; the salt is a 0600 secret
    names = [p.name for p in (Path(settings.lake) / "_system" / "tombstones").iterdir()]
    salt_file = Path(settings.data_dir) / tombstones.SALT_FILE
    assert names == [tombstones.hashed(salt_file.read_text().strip(), LEARNER) + ".json"]
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600


def test_verify_exits_non_zero_for_a_learner_still_there(erased, spark):
    settings = erased["settings"]
    env = _env(settings)
    found = cli("erase", "--verify", erased["model"], env=env, timeout=300)
    assert found.returncode == 1 and "silver/page_views" in found.stdout, found.stdout + found.stderr
    clean = cli("erase", "--verify", LEARNER, env=env, timeout=300)
    assert clean.returncode == 0 and "found nowhere" in clean.stdout, clean.stdout + clean.stderr


def test_a_later_delivery_stays_erased_and_incremental_equals_a_rebuild(erased, spark, tmp_path):
    settings = erased["settings"]
    for kind in ("transactional", "events"):
        later = erased["deliveries"][2]
        shutil.copytree(erased["generated"] / kind / later, Path(settings.source) / kind / later)
    report = _run(spark, settings, "delivery-2")
    assert report.details["erased_dropped"] >= 1
    assert byte_scan(settings) == set() and verify(settings, LEARNER) == []
    # the lake kept incrementally equals the same lake with silver and gold rebuilt from bronze
    copy = settings.model_copy(update={"lake": str(tmp_path / "lake")})
    shutil.copytree(settings.lake, copy.lake)
    silver.refresh(spark, copy, "rebuild", full_refresh=True)
    gold.refresh(spark, copy, "rebuild", full_refresh=True)
    con = duckdb_with_delta()  # an independent reader of both lakes
    for layer in ("silver", "gold"):
        for table in tables.names(layer):
            types = dict(
                r[:2] for r in con.execute(f"describe {delta_scan_sql(settings, layer, table, ['*'])}").fetchall()
            )
            kept = comparable(types, IGNORED)
            assert_same_rows(
                con, delta_scan_sql(settings, layer, table, kept), delta_scan_sql(copy, layer, table, kept)
            )


def test_verify_finds_the_id_planted_back_in_each_place(erased, spark, tmp_path):
    """Last in this module: it writes the id back. Each place a byte scan finds it, verify names too."""
    settings = erased["settings"]
    lake, data = Path(settings.lake), Path(settings.data_dir)
    planted = {}
    # a table of the lake's own (its log statistics, a checkpoint, a data file) and change-data files
    plant = str(lake / "_system" / "plant")
    spark.createDataFrame([(LEARNER, 1)], "who string, n int").write.format("delta").option(
        "delta.checkpointInterval", "1"
    ).option("delta.enableChangeDataFeed", "true").save(plant)
    spark.sql(f"UPDATE delta.`{plant}` SET n = 2 WHERE who = '{LEARNER}'")
    planted["log"] = "_system/plant/_delta_log/00000000000000000001.json"
    planted["checkpoint"] = "_system/plant/_delta_log/00000000000000000001.checkpoint.parquet"
    planted["change data"] = "_system/plant/_change_data/"
    # a landed event line, a ledger head, a silver row
    landed = next(p for p in (lake / "landing" / "events").rglob("*.json"))
    _append(landed, '{"at": "2017-11-16 10:00:00", "studentId_clientType": "' + ESCAPED + '@Website"}')
    planted["landing"] = str(landed.relative_to(lake))
    views = settings.table_path("silver", "page_views")
    row = spark.read.format("delta").load(views).where("student_id is not null").limit(1)
    row.selectExpr(*(f"'{LEARNER}' as student_id" if c == "student_id" else c for c in row.columns)).write.format(
        "delta"
    ).mode("append").save(views)
    planted["silver"] = "silver/page_views/"
    # Prefect: a flow run with the id as a parameter; a log line
    flow = (
        "import os\nfrom lakehouse.config import get_settings\nfrom lakehouse.platform import client_env\n"
        "os.environ.update(client_env(get_settings()))\nfrom prefect import flow\n"
        f"@flow\ndef planted(x: str) -> str:\n    return x\n\nplanted({LEARNER!r})\n"
    )
    subprocess.run([sys.executable, "-c", flow], env=_env(settings), cwd=PROJECT_ROOT, timeout=300, check=True)
    planted["prefect"] = "prefect"
    _append(data / "logs" / "planted.log", f'something "Id": "{LEARNER}" said')
    planted["logs"] = "logs/planted.log"
    # dw: a row, and its statistics
    with psycopg2.connect(_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("insert into dw.fact_session (student_id, client_type) values (%s, 'Website')", (LEARNER,))
        cur.execute("analyze dw.fact_session")
    conn.close()
    planted["dw"] = "dw.fact_session"
    # a data file cut short: its bytes may hide the id, so it is not clean
    cut = _cut_short(views, "part-cut-short.parquet")
    planted["cut short"] = str(cut.relative_to(lake))

    scanned = byte_scan(settings)
    places = [f.place for f in verify(settings, LEARNER)]
    for what, where in planted.items():
        assert any(where in p for p in scanned), (what, scanned)
        assert any(where in p for p in places), (what, places)
    assert f"lake {cut.relative_to(lake)} (not readable as Parquet, so not shown clean)" in places
    assert any(p.startswith("warehouse pg_stats dw.fact_session") for p in places), places
    found = cli("erase", "--verify", LEARNER, env=_env(settings), timeout=300)
    assert found.returncode == 1 and found.stdout.count("found") >= len(planted)


def test_anonymized_lines_keep_sessions_and_delete_mode_removes(spark, settings):
    """Unit level, on a hand-made bronze: anonymize keeps the client type and each session as one session under a
    new uuid, distinct events distinct; delete removes the rows; other learners are untouched; no commit of the
    rewrite names anyone."""
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
                "city_name": "Campinas",
                "nth": n,
            }
        )

    lines = [line("7", "s1", 1), line("7", "s1", 2), line("7", "s2", 3), line("17", "s3", 4)]
    rows = [
        (v, None, "f", "landing/events/d/x/f", i + 1, "d1", datetime(2017, 11, 17), 1, datetime(2017, 11, 17), "r")
        for i, v in enumerate(lines)
    ]
    events = spark.createDataFrame(rows, tables.table("bronze", "events").ddl.replace("`", ""))
    delta.overwrite(events, target(settings, "bronze", "events"))
    key = tombstones.salt(settings, create=True)

    def erased(*ids: str) -> tombstones.Erased:
        return tombstones.Erased(key, frozenset(tombstones.hashed(key, i) for i in ids))

    counts = erasure.erase_lake(spark, settings, erased("7"), "anonymize")
    assert counts["bronze.events"] == 3
    views = silver.page_views(delta.read_table(spark, "bronze", "events", settings), "t").collect()
    anonymous = [v for v in views if v["student_id"] is None]
    assert len(anonymous) == 3 and {v["client_type"] for v in anonymous} == {"Android"}
    assert all(v["student_erased"] and v["city_name"] is None for v in anonymous)
    assert len({v["session_uuid"] for v in anonymous}) == 2
    assert not {"s1", "s2", "i-7", "u-7"} & {v[c] for v in anonymous for c in ("session_uuid", "install_uuid", "uuid")}
    assert [v["student_id"] for v in views if v["student_id"]] == ["17"]
    path = settings.table_path("bronze", "events")
    assert erasure.erase_lake(spark, settings, erased("17"), "delete")["bronze.events"] == 1
    assert delta.read_table(spark, "bronze", "events", settings).count() == 3
    log = DeltaLog(path)
    merges = [a["commitInfo"] for _, n in log.commits for a in log.actions(n) if "commitInfo" in a]
    assert [c["operation"] for c in merges][-2:] == ["MERGE", "MERGE"]
    assert not any(Needle("17").in_text(json.dumps(c.get("operationParameters"))) for c in merges)
    assert any(f.place.startswith("lake bronze/events/part-") for f in verify(settings, "17"))  # version 0's file
    assert erasure.vacuum_all(settings)["bronze.events"] > 0
    assert verify(settings, "17") == []
    assert delta_log.oldest_readable_version(path) == 2
