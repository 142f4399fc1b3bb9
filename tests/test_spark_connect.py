"""The warm engine of `lakehouse up`: a Spark Connect server with the lake's settings. The pipeline's stages run on it
and equal a local run, its table writes still run side by side, and it refuses a client without its token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from lakehouse import bronze, gold, landing, silver
from lakehouse.config import Settings
from lakehouse.security import free_port
from lakehouse.spark import start_connect_server
from lakehouse.tools.generate import generate
from tests.builders import assert_same_rows, delta_scan_sql, duckdb_with_delta

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
TOKEN = "a-token-only-the-platform-has"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """sc://localhost:<port> of a running Spark Connect server (the command `lakehouse up` runs)."""
    root = tmp_path_factory.mktemp("connect")
    port = free_port()
    settings = Settings(
        data_dir=str(root / "data"), spark_master="local[2]", shuffle_partitions=2, spark_driver_memory="1g"
    )
    proc = start_connect_server(settings, port, TOKEN, root / "server.log")
    try:
        yield f"sc://localhost:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


# A process is either a classic Spark client or a Connect client (pyspark.sql.functions builds one kind of column per
# process), so the Connect side of each test runs where `lakehouse run` would: in a process of its own.
STAGES = """
import sys
from lakehouse import bronze, gold, landing, silver
from lakehouse.config import Settings
from lakehouse.spark import build_session
settings = Settings(source=sys.argv[1], lake=sys.argv[2], data_dir=sys.argv[3], spark_master=sys.argv[4],
                    shuffle_partitions=2)
spark = build_session(settings)
landing.land(settings)
for stage in (bronze.ingest, silver.refresh, gold.refresh):
    stage(spark, settings, "r")
"""

SIDE_BY_SIDE = """
import json, sys, time
from lakehouse import delta
from lakehouse.config import Settings
from lakehouse.spark import build_session

def job(session):
    started = time.monotonic()
    session.range(2_000_000).selectExpr("sum(id * id)").collect()
    return started, time.monotonic()

spark = build_session(Settings(spark_master=sys.argv[1]))
print(json.dumps(sorted(delta.write_tables(spark, {f"w{i}": job for i in range(3)}).values())))
"""


def _client(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "SPARK_CONNECT_AUTHENTICATE_TOKEN": TOKEN},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _lake(root, source, name: str) -> Settings:
    return Settings(
        source=str(source), lake=str(root / name / "lake"), data_dir=str(root / name / "data"), shuffle_partitions=2
    )


def test_stages_on_the_connect_server_equal_a_local_run(spark, server, tmp_path):
    source = tmp_path / "source"
    generate(source, seed=3, students=30, events=600, deliveries=2)
    a, b = _lake(tmp_path, source, "connect"), _lake(tmp_path, source, "local")
    _client(STAGES, str(source), a.lake_url, str(a.data_dir), server)
    landing.land(b)
    for stage in (bronze.ingest, silver.refresh, gold.refresh):
        stage(spark, b, "r")
    con = duckdb_with_delta()
    for layer, tables in (("silver", tuple(silver.BY_NAME)), ("gold", gold.TABLES)):
        for table in tables:
            columns = [
                r[0]
                for r in con.execute(f"describe {delta_scan_sql(a, layer, table, ['*'])}").fetchall()
                if r[0] not in ("run_id", "loaded_at") and not r[1].startswith("MAP")
            ]
            assert_same_rows(con, delta_scan_sql(b, layer, table, columns), delta_scan_sql(a, layer, table, columns))


def test_writes_run_side_by_side_on_the_connect_server(server):
    spans = json.loads(_client(SIDE_BY_SIDE, server))
    assert spans[1][0] < spans[0][1] and spans[2][0] < spans[0][1], spans  # each started before the first ended


def test_a_client_without_the_token_is_refused(server, monkeypatch):
    from pyspark.sql.connect.session import SparkSession

    monkeypatch.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", "not-the-token")
    stranger = SparkSession.builder.remote(server).create()
    try:
        with pytest.raises(Exception, match="(?i)unauthenticated|token|authenticat"):
            stranger.range(1).collect()
    finally:  # a client left open retries its exit-time cleanup against the stopped server for minutes
        stranger.stop()
