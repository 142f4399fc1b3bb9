"""kill -9 of the mirror at 20 seeded points: the warehouse is entirely before or entirely after the load, and a
re-run reaches the clean result."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import psycopg2
import pytest

from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.warehouse import LOADS, mirror
from tests.warehouse_data import canonical, sample_gold, write_delta

SEED = 20171116
POINTS = ["mirror.locked", *(f"mirror.{load.target}.{step}" for load in LOADS
                             for step in ("copying", "staged", "applied")),
          "mirror.before_commit", "mirror.committed"]


def state(dsn: str) -> dict:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            return canonical(cur)
    finally:
        conn.close()


def reset(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("drop schema if exists dw cascade; drop schema if exists stage cascade")
    conn.close()


def run_mirror(lake: str, dsn: str, fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_FAULT"}
    env.update(LAKEHOUSE_LAKE=lake, LAKEHOUSE_PG_DSN=dsn)
    if fault:
        env["LAKEHOUSE_FAULT"] = fault
    code = "from lakehouse.warehouse import mirror; mirror()"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_kill_at_any_point_is_all_or_nothing(pg_dsn, settings, spark, tmp_path):
    before_lake, after_lake = str(tmp_path / "lake_a"), str(tmp_path / "lake_b")
    write_delta(spark, before_lake, sample_gold(upto=2))  # gold version 0: two deliveries
    write_delta(spark, after_lake, sample_gold(upto=2))
    write_delta(spark, after_lake, sample_gold(upto=3))  # gold version 1: a third delivery, more facts

    def prepare() -> None:
        reset(pg_dsn)
        mirror(Settings(lake=before_lake, pg_dsn=pg_dsn), dsn=pg_dsn)

    prepare()
    before = state(pg_dsn)
    clean = run_mirror(after_lake, pg_dsn, None)
    assert clean.returncode == 0, clean.stderr[-2000:]
    after = state(pg_dsn)
    assert before != after

    points = random.Random(SEED).sample(POINTS, 20)
    for point in points:
        prepare()
        killed = run_mirror(after_lake, pg_dsn, point)
        assert killed.returncode == -9, f"{point} not reached: {killed.stderr[-2000:]}"
        seen = state(pg_dsn)
        assert seen in (before, after), f"partial warehouse after a kill at {point}"
        assert seen == (after if point == "mirror.committed" else before), point
        mirror(Settings(lake=after_lake, pg_dsn=pg_dsn), dsn=pg_dsn)  # the re-run
        assert state(pg_dsn) == after, f"re-run after a kill at {point} differs from a clean run"
