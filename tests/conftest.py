"""Shared fixtures: one Spark session per test process, a temporary lake per test, a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lakehouse.security import free_port
from tests.builders import wait_port

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# every command of a test starts its own Spark and Prefect unless the test asks for the warm engines
os.environ.setdefault("LAKEHOUSE_ENGINE_IDLE", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers: each its own Prefect home (database, settings)
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix=f"prefect-{os.environ['PYTEST_XDIST_WORKER']}-"))

# fixtures that live with what they fake: the GCS emulator, the Drive fake
pytest_plugins = ["tests.gcs_emulator", "tests.fake_drive"]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings pointing at a fresh lake and data folder for this test (environment too, for subprocesses)."""
    from lakehouse import config

    data = tmp_path / "data"
    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(data))
    monkeypatch.setenv("LAKEHOUSE_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("LAKEHOUSE_SOURCE", str(tmp_path / "source"))
    monkeypatch.setenv("LAKEHOUSE_SHUFFLE_PARTITIONS", "2")
    config.get_settings.cache_clear()
    yield config.get_settings()
    config.get_settings.cache_clear()


@pytest.fixture(scope="session")
def spark():
    """The one local Spark session of the test process (2 cores, UI off, 2 shuffle partitions)."""
    from lakehouse.config import Settings
    from lakehouse.spark import build_session

    session = build_session(Settings(spark_master="local[2]", shuffle_partitions=2, spark_driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL cluster for the test session (project-managed code path, temp folder)."""
    from lakehouse.pgserver import ManagedPostgres

    home = Path(tempfile.mkdtemp(prefix="lakehouse-pg-"))  # mode 0700, as a root home folder
    server = ManagedPostgres(home / "data" / "postgres")  # the layout of a checkout's data folder
    server.start()
    yield server
    server.remove()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server, settings, monkeypatch):
    """DSN of a fresh database on the session's PostgreSQL; also set as LAKEHOUSE_PG_DSN."""
    import uuid

    import psycopg2

    from lakehouse import config

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_dsn := pg_server.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create database {name}")
    admin.close()
    pg_server.allow_bi(name)
    dsn = server_dsn.rsplit("/", 1)[0] + "/" + name
    monkeypatch.setenv("LAKEHOUSE_PG_DSN", dsn)
    config.get_settings.cache_clear()
    yield dsn
    config.get_settings.cache_clear()


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """spark://127.0.0.1:<port> of a running master with one 1-core, 1 GB worker (its `work/` folder, where each
    application it serves gets an `app-*` folder, is beside the master's log in the `standalone` temp folder)."""
    import pyspark

    home = Path(pyspark.__file__).parent
    spark_class = str(home / "bin" / "spark-class")
    root = tmp_path_factory.mktemp("standalone")
    env = dict(
        os.environ,
        SPARK_HOME=str(home),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        SPARK_WORKER_DIR=str(root / "work"),
        SPARK_LOG_DIR=str(root / "logs"),
    )
    port, ui, worker_ui = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        log = root / f"{name}.log"
        proc = subprocess.Popen(
            [spark_class, *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc, log

    try:
        master, log = start(
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            "master",
        )
        wait_port(port, master, log)
        worker, wlog = start(
            [
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                str(worker_ui),
            ],
            "worker",
        )
        wait_port(worker_ui, worker, wlog)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
