"""The warm engines: `lakehouse run` starts a Spark Connect server and a Prefect server for its data folder in the
background and later runs reuse them; a run on them gives the tables a cold run gives; a killed engine is replaced
without a hung or failed run; an idle one stops by itself; `lakehouse engine status|stop`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from lakehouse import engine
from lakehouse.config import Settings
from lakehouse.tools.generate import generate
from tests.builders import assert_same_rows, cli, delta_scan_sql, duckdb_with_delta

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
GOLD = ("fact_page_view", "dim_student_history", "mart_daily_activity", "fact_session")


def _env(root: Path, source: Path, dsn: str, idle: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PREFECT_", "SPARK_CONNECT"))}
    return {
        **env,
        "LAKEHOUSE_SOURCE": str(source),
        "LAKEHOUSE_LAKE": str(root / "lake"),
        "LAKEHOUSE_DATA_DIR": str(root / "data"),
        "LAKEHOUSE_PG_DSN": dsn,
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
        "LAKEHOUSE_SPARK_DRIVER_MEMORY": "1g",
        "LAKEHOUSE_ENGINE_IDLE": idle,
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(data_dir=env["LAKEHOUSE_DATA_DIR"], lake=env["LAKEHOUSE_LAKE"], _env_file=None)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine-source")
    generate(root, seed=9, students=30, events=400, deliveries=2)
    return root


@pytest.fixture(scope="module")
def dsn(pg_server):
    from tests.builders import new_database

    return new_database(pg_server)


def _run(env: dict[str, str]) -> None:
    done = cli("run", env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_a_run_on_the_warm_engines_equals_a_cold_run_and_reuses_them(source, dsn, pg_server, tmp_path):
    from tests.builders import new_database

    cold = _env(tmp_path / "cold", source, new_database(pg_server), "0")
    warm = _env(tmp_path / "warm", source, dsn, "10m")
    _run(cold)
    assert engine.read(_settings(cold), "spark") is None  # no engine when they are off
    try:
        _run(warm)
        settings = _settings(warm)
        first = {kind: engine.read(settings, kind) for kind in engine.KINDS}
        assert all(first.values()), first
        status = cli("engine", "status", env=warm, timeout=60)
        assert status.stdout.count("running at") == 2, status.stdout
        _run(warm)  # nothing new: the same engines answer, and nothing is committed
        assert {kind: engine.read(settings, kind) for kind in engine.KINDS} == first
        con = duckdb_with_delta()
        for table in GOLD:
            columns = ["*"]
            assert_same_rows(
                con,
                delta_scan_sql(_settings(cold), "gold", table, columns),
                delta_scan_sql(settings, "gold", table, columns),
            )
    finally:
        cli("engine", "stop", env=warm, timeout=120)
    assert all(engine.read(_settings(warm), kind) is None for kind in engine.KINDS)


def test_a_killed_engine_is_replaced_and_an_idle_one_stops(source, pg_server, tmp_path):
    from tests.builders import new_database

    env = _env(tmp_path, source, new_database(pg_server), "20s")
    settings = _settings(env)
    try:
        _run(env)
        killed = engine.read(settings, "spark")
        assert killed is not None
        for proc in [psutil.Process(killed.server), *psutil.Process(killed.server).children(recursive=True)]:
            proc.send_signal(signal.SIGKILL)
        _run(env)  # the dead engine is detected and a new one serves the run
        replaced = engine.read(settings, "spark")
        assert replaced is not None and replaced.server != killed.server
        deadline = time.monotonic() + 120  # idle past 20 s with no command holding it: it stops by itself
        while time.monotonic() < deadline and any(engine.read(settings, k) for k in engine.KINDS):
            time.sleep(2)
        assert not any(engine.read(settings, k) for k in engine.KINDS)
        assert not psutil.pid_exists(replaced.server)
    finally:
        cli("engine", "stop", env=env, timeout=120)
