"""The warm engines: `lakehouse run` starts a Spark Connect server and a Prefect server for its data folder in the
background and later runs reuse them; a run on them gives the tables a cold build gives, and a run with nothing new
commits nothing; a killed engine is replaced without a hung or failed run; an idle one stops by itself;
`lakehouse engine status|stop`."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from lakehouse import bronze, engine, gold, silver, tables
from lakehouse.config import Settings
from lakehouse.delta_log import latest_version
from lakehouse.landing import land
from lakehouse.tools.generate import generate
from tests.builders import assert_same_rows, cli, comparable, delta_scan_sql, duckdb_with_delta, new_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
IDLE = 45  # seconds: long enough for the runs below, short enough to see it stop
RUN_COLUMNS = {"run_id", "loaded_at"}  # a run's own id and load time


@pytest.fixture(scope="module")
def world(pg_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    generate(root / "generated", seed=9, students=30, events=400, deliveries=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PREFECT_", "SPARK_CONNECT"))}
    env.update(
        LAKEHOUSE_SOURCE=str(root / "source"),
        LAKEHOUSE_LAKE=str(root / "lake"),
        LAKEHOUSE_DATA_DIR=str(root / "data"),
        LAKEHOUSE_PG_DSN=new_database(pg_server),
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        LAKEHOUSE_SPARK_DRIVER_MEMORY="1g",
        LAKEHOUSE_ENGINE_IDLE=f"{IDLE}s",
    )
    settings = Settings(data_dir=env["LAKEHOUSE_DATA_DIR"], lake=env["LAKEHOUSE_LAKE"], _env_file=None)
    yield {"root": root, "env": env, "settings": settings}
    cli("engine", "stop", env=env, timeout=120)


def _deliver(world, n: int) -> None:
    generated = world["root"] / "generated"
    for kind in ("events", "transactional"):
        delivery = sorted(p.name for p in (generated / kind).iterdir())[n]
        shutil.copytree(generated / kind / delivery, world["root"] / "source" / kind / delivery)


def _run(env: dict[str, str]) -> None:
    done = cli("run", env=env, timeout=1800)  # a bound, not a budget: alone it takes 1-3 minutes
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _versions(settings: Settings) -> dict[str, int | None]:
    return {t.key: latest_version(settings.table_path(t.layer, t.name)) for t in tables.LAKE if t.layer != "_system"}


def test_runs_on_the_warm_engines_equal_a_cold_build_and_reuse_them(world, spark):
    env, settings = world["env"], world["settings"]
    _deliver(world, 0)
    # a cold build of the same source in this process, first (the engines' idle time runs between commands)
    cold = settings.model_copy(update={"lake": str(world["root"] / "cold-lake"), "source": env["LAKEHOUSE_SOURCE"]})
    land(cold)
    bronze.ingest(spark, cold, "cold")
    silver.refresh(spark, cold, "cold")
    gold.refresh(spark, cold, "cold")
    _run(env)
    first = {kind: engine.read(settings, kind) for kind in engine.KINDS}
    assert all(first.values()), first
    # nothing new: the same engines answer, and no table gets a commit
    before = _versions(settings)
    _run(env)
    assert {kind: engine.read(settings, kind) for kind in engine.KINDS} == first
    assert _versions(settings) == before
    assert cli("engine", "status", env=env, timeout=60).stdout.count("running at") == 2
    # every silver and gold table as the in-process build wrote it (the warm engine is the Spark Connect server
    # `lakehouse up` runs: the same command), but for the run's own id and load time; maps compared as JSON text
    con = duckdb_with_delta()
    for layer in ("silver", "gold"):
        for table in tables.names(layer):
            types = dict(r[:2] for r in con.execute(f"describe {delta_scan_sql(cold, layer, table, ['*'])}").fetchall())
            kept = comparable(types, RUN_COLUMNS)
            assert_same_rows(
                con, delta_scan_sql(cold, layer, table, kept), delta_scan_sql(settings, layer, table, kept)
            )


def test_a_killed_engine_is_replaced_and_an_idle_one_stops(world):
    env, settings = world["env"], world["settings"]
    killed = engine.read(settings, "spark")
    assert killed is not None
    for proc in [psutil.Process(killed.server), *psutil.Process(killed.server).children(recursive=True)]:
        proc.send_signal(signal.SIGKILL)
    _deliver(world, 1)
    _run(env)  # the dead engine is detected and a new one serves the run
    replaced = engine.read(settings, "spark")
    assert replaced is not None and replaced.server != killed.server

    def running() -> bool:
        try:
            server = psutil.Process(replaced.server).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            server = False
        return server or any(engine.read(settings, k) for k in engine.KINDS)

    deadline = time.monotonic() + IDLE + 120  # unused past its idle time, with no command holding it: it stops
    while time.monotonic() < deadline and running():
        time.sleep(2)
    assert not running()
    assert cli("engine", "status", env=env, timeout=60).stdout.count("stopped") == 2
    assert not list((Path(env["LAKEHOUSE_DATA_DIR"]) / "spark-scratch").glob("connect-*/*"))
