"""The warm engine of `lakehouse up`: a Spark Connect server with the lake's settings. Its table writes still run side
by side, and it refuses a client without its token. (That the pipeline's stages on it equal a local run is proven by
tests/test_engine.py, whose warm engine is the same server command.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from lakehouse.config import Settings
from lakehouse.security import free_port
from lakehouse.spark import start_connect_server

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
# process), so the Connect side of a test runs where `lakehouse run` would: in a process of its own.
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
