"""The whole pipeline on a gs:// lake, against the GCS emulator: `lakehouse run` writes it through Hadoop's GCS
connector with gold equal to the same source on a local lake, the mirror, `lakehouse query` and the dashboard's
queries read it, a re-run commits nothing, a standalone cluster writes it (silver and gold equal the local lake's),
and Delta's put-if-absent commits keep two racing writers from losing a commit. Every test here is marked `gcs`
(`pytest -m gcs`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse import bronze, catalog, gold, silver
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.landing import land, read_ledger
from lakehouse.tools.generate import generate
from tests.builders import comparable, new_database
from tests.gcs_emulator import emulator_fs

pytestmark = [pytest.mark.e2e, pytest.mark.gcs, pytest.mark.timeout(1800)]

BUCKET = "gcs-lake-test"
IGNORED = {"run_id", "loaded_at", "batch_id", "landed_at", "changed_batch_id"}
LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))


class GcsLake:
    """A gs:// lake on the emulator, fed from the module's source uploaded to the same bucket."""

    def __init__(self, endpoint: str, root: Path, prefix: str, pg_dsn: str) -> None:
        self.endpoint, self.root, self.pg_dsn = endpoint, root, pg_dsn
        self.settings = Settings(
            _env_file=None,
            source=f"gs://{BUCKET}/source",
            lake=f"gs://{BUCKET}/{prefix}",
            data_dir=str(root / "data"),
            gcs_token="anon",
            gcs_endpoint=endpoint,
            shuffle_partitions=2,
        )

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "LAKEHOUSE_SOURCE": s.source_url,
            "LAKEHOUSE_LAKE": s.lake_url,
            "LAKEHOUSE_DATA_DIR": str(s.data_dir),
            "LAKEHOUSE_GCS_TOKEN": "anon",
            "LAKEHOUSE_GCS_ENDPOINT": self.endpoint,
            "LAKEHOUSE_PG_DSN": self.pg_dsn,
            "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
            "LAKEHOUSE_SPARK_MASTER": "local[2]",
            "LAKEHOUSE_SPARK_DRIVER_MEMORY": "1500m",
            "SPARK_LOCAL_IP": "127.0.0.1",
            **extra,
        }

    def run(self, **extra: str) -> dict:
        """`lakehouse run` on this lake in its own process; its JSON report."""
        report = self.root / f"report-{uuid.uuid4().hex[:6]}.json"
        done = subprocess.run(
            [LAKEHOUSE, "run", "--report", str(report)],
            env=self.env(**extra),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
        return json.loads(report.read_text())

    def versions(self) -> dict[str, int | None]:
        """The latest Delta version of every table of the lake."""
        return {t.key: (catalog.last_commit(t, self.settings) or (None,))[0] for t in catalog.discover(self.settings)}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gcs-source") / "source"
    generate(out, seed=11, students=30, events=1200, deliveries=2)
    return out


@pytest.fixture(scope="module")
def bucket(gcs_emulator, source) -> Iterator[str]:
    """The emulator with the module's bucket holding the source under `source/`; GCS clients pointed at it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LAKEHOUSE_GCS_ENDPOINT", gcs_emulator)
    mp.setenv("LAKEHOUSE_GCS_TOKEN", "anon")
    fs = emulator_fs(gcs_emulator)
    fs.mkdir(BUCKET)
    for kind in ("transactional", "events"):
        fs.put(str(source / kind), f"{BUCKET}/source/{kind}", recursive=True)
    yield gcs_emulator
    mp.undo()


@pytest.fixture(scope="module")
def local_lake(spark, source, tmp_path_factory) -> Settings:
    """The same source on a local lake, through the same stages."""
    root = tmp_path_factory.mktemp("gcs-local")
    settings = Settings(
        _env_file=None, source=str(source), lake=str(root / "lake"), data_dir=str(root / "data"), shuffle_partitions=2
    )
    land(settings)
    bronze.ingest(spark, settings, "local")
    silver.refresh(spark, settings, "local")
    gold.refresh(spark, settings, "local")
    return settings


@pytest.fixture(scope="module")
def gcs_lake(bucket, pg_server, tmp_path_factory) -> tuple[GcsLake, dict]:
    """`lakehouse run` (local Spark) once on a fresh gs:// lake; the lake and the run's report."""
    lake = GcsLake(bucket, tmp_path_factory.mktemp("gcs-lake"), "lake", new_database(pg_server))
    return lake, lake.run()


def _duckdb(settings: Settings):
    con = catalog._open(settings)  # delta and httpfs loaded, the GCS secret for the emulator created
    con.execute("set TimeZone = 'UTC'")
    return con


def _assert_same(local: Settings, remote: Settings, layers: tuple[str, ...] = ("gold",)) -> None:
    """Every table of the layers holds the same rows in both lakes (DuckDB reads both), but for run-bound columns."""
    con = _duckdb(remote)
    tables = [(t.layer, t.name) for t in catalog.discover(local) if t.layer in layers]
    assert len(tables) >= 10 and {(t.layer, t.name) for t in catalog.discover(remote) if t.layer in layers} == set(
        tables
    )
    different = []
    for layer, table in tables:
        a = f"delta_scan('{local.table_path(layer, table)}')"
        b = f"delta_scan('{remote.table_path(layer, table)}')"
        types = {r[0]: r[1] for r in con.execute(f"describe select * from {a}").fetchall()}
        assert types == {r[0]: r[1] for r in con.execute(f"describe select * from {b}").fetchall()}, table
        cols = ", ".join(comparable(types, IGNORED))
        rows = con.execute(f"select count(*) from {a}").fetchone()[0]
        diff = con.execute(
            f"select (select count(*) from (select {cols} from {a} except all select {cols} from {b})),"
            f" (select count(*) from (select {cols} from {b} except all select {cols} from {a}))"
        ).fetchone()
        if diff != (0, 0) or con.execute(f"select count(*) from {b}").fetchone()[0] != rows:
            different.append((table, rows, diff))
    con.close()
    assert not different


def test_pipeline_on_gcs_lake_equals_local_lake(gcs_lake, local_lake):
    lake, report = gcs_lake
    assert {row["stage"] for row in report["summary"]} >= {"land", "bronze", "silver", "gold", "mirror"}
    fs = emulator_fs(lake.endpoint)
    assert fs.exists(f"{BUCKET}/lake/gold/fact_page_view/_delta_log/00000000000000000000.json")
    assert fs.exists(f"{BUCKET}/lake/landing")
    _assert_same(local_lake, lake.settings)


def test_mirror_loads_the_warehouse_from_the_gcs_lake(gcs_lake, local_lake):
    import psycopg2

    lake, _ = gcs_lake
    con = _duckdb(lake.settings)
    scan = "select count(*) from delta_scan('{}')"
    expected = {
        t: con.execute(scan.format(lake.settings.table_path("gold", t))).fetchone()[0]
        for t in ("fact_session", "fact_subscription", "fact_subject_follow")
    }
    con.close()
    with psycopg2.connect(lake.pg_dsn) as pg, pg.cursor() as cur:
        for table, rows in expected.items():
            cur.execute(f"select count(*) from dw.{table}")
            assert cur.fetchone()[0] == rows > 0, table
        cur.execute("select count(*) from dw.dim_student where is_current")
        assert cur.fetchone()[0] > 0


def test_query_and_dashboard_read_the_gcs_lake(gcs_lake, local_lake):
    from apps.queries import Filters, Gold

    lake, _ = gcs_lake
    sql = "select country, sum(page_views) as views from gold.mart_country_access group by 1 order by 1"
    done = subprocess.run(
        [LAKEHOUSE, "query", "--format", "json", sql],
        env=lake.env(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names, rows, _ = catalog.query(sql, local_lake, refresh=False)
    assert json.loads(done.stdout) == [dict(zip(names, row)) for row in rows] and rows

    remote, local = Gold(lake.settings), Gold(local_lake)
    start, end = local.bounds()
    assert remote.bounds() == (start, end)
    ours, theirs = remote.overview(Filters(start, end)), local.overview(Filters(start, end))
    assert ours["headline"] == theirs["headline"] and ours["headline"]["page_views"] > 0
    for key in ("states", "universities", "courses", "user_types", "daily"):
        assert ours[key].equals(theirs[key]), key
    assert remote.freshness()["gold_as_of"] == local.freshness()["gold_as_of"]


def test_rerun_on_gcs_lake_commits_nothing(gcs_lake):
    lake, _ = gcs_lake
    before, batches = lake.versions(), len(read_ledger(lake.settings))
    assert len(before) > 20 and all(v is not None for v in before.values())
    lake.run()
    assert lake.versions() == before
    assert len(read_ledger(lake.settings)) == batches


def test_standalone_cluster_writes_the_gcs_lake(
    bucket,
    standalone,
    local_lake,
    pg_server,
    tmp_path_factory,  # noqa: F811
):
    """The whole run with its stages' work on the cluster's worker: silver and gold equal the local lake's."""
    work = Path(tmp_path_factory.getbasetemp())
    apps_before = set(work.glob("standalone*/work/app-*"))
    lake = GcsLake(bucket, tmp_path_factory.mktemp("gcs-cluster"), "cluster-lake", new_database(pg_server))
    lake.run(LAKEHOUSE_SPARK_MASTER=standalone)
    ran = set(work.glob("standalone*/work/app-*")) - apps_before
    assert [log for app in ran for log in app.glob("*/stderr")], "no executor of the run on the worker"
    _assert_same(local_lake, lake.settings, ("silver", "gold"))


# --- two writers, one table: Delta's commits are put-if-absent on GCS ------------------------------------------------

WRITER = """
import json, sys, time
from pathlib import Path
from pyspark.sql import functions as F
from lakehouse.config import get_settings
from lakehouse.spark import get_spark

name, table, barrier, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
spark = get_spark(get_settings())
out = {}
if name == "a":
    # What GCSLogStore relies on: a create that must not overwrite is refused when another create of the same object
    # completed first, even though both passed the existence check.
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(table + "-probe/00000000000000000000.json")
    fs = path.getFileSystem(conf)
    first, second = fs.create(path, False), fs.create(path, False)
    first.write(bytearray(b"first"))
    second.write(bytearray(b"second"))
    first.close()
    try:
        second.close()
        out["second_create"] = "accepted"
    except Exception as exc:
        out["second_create"] = "refused: " + ("412" if "412" in str(exc) else str(exc).splitlines()[0])
    stream = fs.open(path)
    out["probe"] = bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode()
    stream.close()
    spark.range(0).withColumn("writer", F.lit("setup")).withColumn("round", F.lit(0)) \\
        .write.format("delta").save(table)
    out["log_store"] = spark.conf.get("spark.delta.logStore.gs.impl")
deadline = time.monotonic() + 600
for n in range(count):  # each round starts in both writers at once, so both read the same version
    (barrier / f"{name}.{n}").touch()
    while len(list(barrier.glob(f"*.{n}"))) < 2:
        if time.monotonic() > deadline:
            sys.exit("the other writer never reached round %d" % n)
        time.sleep(0.02)
    spark.range(3).withColumn("writer", F.lit(name)).withColumn("round", F.lit(n)) \\
        .write.format("delta").mode("append").option("userMetadata", name).save(table)
print("WRITER " + json.dumps(out))
spark.stop()
"""
APPENDS = 8


@pytest.fixture(scope="module")
def racing_writers(bucket, tmp_path_factory) -> tuple[GcsLake, str, dict]:
    """Two processes, each with its own Spark session, appending to one gs:// table at the same time."""
    root = tmp_path_factory.mktemp("gcs-race")
    lake = GcsLake(bucket, root, "race-lake", "")
    table = lake.settings.table_path("bronze", "race")
    barrier = root / "barrier"
    barrier.mkdir()
    env = lake.env(LAKEHOUSE_SPARK_MASTER="local[1]", LAKEHOUSE_SPARK_DRIVER_MEMORY="1g")
    procs = {}
    for name in ("a", "b"):
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", WRITER, name, table, str(barrier), str(APPENDS)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if name == "a":  # b starts once the table exists
            deadline = time.monotonic() + 600
            while not (barrier / "a.0").exists() and procs["a"].poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
    results = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, (name, stderr[-3000:])
            results[name] = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("WRITER "))[7:])
    finally:
        for proc in procs.values():  # a writer left waiting for a failed one
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return lake, table, results["a"]


def test_put_if_absent_refuses_the_second_create(racing_writers):
    _, _, probe = racing_writers
    assert probe["log_store"] == "io.delta.storage.GCSLogStore"
    assert probe["second_create"] == "refused: 412"
    assert probe["probe"] == "first"


def test_two_racing_writers_lose_no_commit(racing_writers):
    lake, table, _ = racing_writers
    fs = emulator_fs(lake.endpoint)
    log = table.split("://", 1)[1] + "/_delta_log"
    commits = {}
    for path in fs.find(log):
        if path.endswith(".json") and "/_staged_commits/" not in path:
            info = next(json.loads(ln)["commitInfo"] for ln in fs.cat(path).splitlines() if b'"commitInfo"' in ln)
            commits[int(path.rsplit("/", 1)[-1][:20])] = info
    assert sorted(commits) == list(range(2 * APPENDS + 1))  # the table's creation, then every append once
    writers = [commits[v].get("userMetadata") for v in range(1, 2 * APPENDS + 1)]
    assert writers.count("a") == writers.count("b") == APPENDS
    # A writer whose commit file was taken retried at the next version: races were refused, and survived.
    retried = [v for v in range(1, 2 * APPENDS + 1) if v > commits[v]["readVersion"] + 1]
    assert retried, commits
    con = _duckdb(lake.settings)
    rows = con.execute(
        f"select writer, count(*), count(distinct round) from delta_scan('{table}') group by 1 order by 1"
    ).fetchall()
    assert rows == [("a", 3 * APPENDS, APPENDS), ("b", 3 * APPENDS, APPENDS)]


# --- settings derived from LAKEHOUSE_GCS_TOKEN and LAKEHOUSE_GCS_ENDPOINT ------------------------------------------


def test_connector_settings_from_token_and_endpoint(tmp_path, monkeypatch):
    from lakehouse.storage import spark_gcs_conf

    for name in ("LAKEHOUSE_GCS_TOKEN", "LAKEHOUSE_GCS_ENDPOINT"):  # the emulator tests' module may have set them
        monkeypatch.delenv(name, raising=False)

    def auth(**given) -> dict:
        conf = spark_gcs_conf(Settings(_env_file=None, **given))
        return {k.removeprefix("spark.hadoop."): v for k, v in conf.items() if "auth" in k or "root.url" in k}

    assert auth() == {"fs.gs.auth.type": "APPLICATION_DEFAULT"}
    assert auth(gcs_token="cloud") == {"fs.gs.auth.type": "COMPUTE_ENGINE"}
    assert auth(gcs_token="anon", gcs_endpoint="http://127.0.0.1:9/") == {
        "fs.gs.auth.type": "UNAUTHENTICATED",
        "fs.gs.storage.root.url": "http://127.0.0.1:9/",
    }
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "client_email": "x@y"}))
    assert auth(gcs_token=str(key)) == {
        "fs.gs.auth.type": "SERVICE_ACCOUNT_JSON_KEYFILE",
        "fs.gs.auth.service.account.json.keyfile": str(key),
    }
    key.write_text(
        json.dumps({"type": "authorized_user", "client_id": "i", "client_secret": "s", "refresh_token": "r"})
    )
    assert auth(gcs_token=str(key))["fs.gs.auth.type"] == "USER_CREDENTIALS"
    with pytest.raises(ValueError, match="LAKEHOUSE_GCS_TOKEN='browser'"):
        auth(gcs_token="browser")
    conf = spark_gcs_conf(Settings(_env_file=None, gcs_token="anon"))
    assert conf["spark.delta.logStore.gs.impl"] == "io.delta.storage.GCSLogStore"
