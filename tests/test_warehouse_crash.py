"""kill -9 of the mirror at 20 seeded points: the warehouse is entirely before or entirely after the load, and a
re-run reaches the clean result.

Each killed mirror is a separate process with its own PostgreSQL session: a helper process imports the mirror's
modules once and forks one child per run (a fresh interpreter per run would spend most of the test importing).
Every run starts from a copy of the same "before" database (CREATE DATABASE ... TEMPLATE) on the session's server.
Gold is a real Delta lake written without Spark (`write_delta_files`) so the test needs no Spark session."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import psycopg2
import pytest

from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.warehouse.loads import LOADS
from lakehouse.warehouse.mirror import mirror
from tests.warehouse_data import canonical, sample_gold, write_delta_files

pytestmark = pytest.mark.e2e


SEED = 20171116
POINTS = [
    "mirror.locked",
    *(f"mirror.{load.target}.{step}" for load in LOADS for step in ("copying", "staged", "applied")),
    "mirror.before_commit",
    "mirror.committed",
]

# Reads "<fault or ->\t<lake>\t<dsn>" lines; forks a child that runs the mirror with that environment, as
# `lakehouse run` would (settings from the environment), and answers with the child's wait status.
FORKER = r"""
import os, sys, traceback
import duckdb, pandas, psycopg2, pyarrow, pyarrow.csv  # imported once, before forking
from lakehouse import config
from lakehouse.warehouse.mirror import mirror
print("ready", flush=True)
for line in sys.stdin:
    fault, lake, dsn = line.rstrip("\n").split("\t")
    pid = os.fork()
    if pid == 0:
        os.environ.update(LAKEHOUSE_LAKE=lake, LAKEHOUSE_PG_DSN=dsn)
        if fault != "-":
            os.environ["LAKEHOUSE_FAULT"] = fault
        config.get_settings.cache_clear()
        try:
            mirror()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


class Forker:
    """The helper process that forks one mirror process per run."""

    def __init__(self, log_path):
        env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_FAULT"}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORKER],
            env=env,
            cwd=PROJECT_ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdout.readline().strip() == "ready", self.errors()

    def run(self, lake: str, dsn: str, fault: str | None) -> int:
        """Run one mirror; returns -N when a signal N ended it, else its exit code."""
        self.proc.stdin.write(f"{fault or '-'}\t{lake}\t{dsn}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the forking helper stopped: {self.errors()}"
        status = int(answer)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def errors(self) -> str:
        self.log.flush()
        return open(self.log.name).read()[-2000:]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.log.close()


def state(dsn: str) -> dict:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            return canonical(cur)
    finally:
        conn.close()


def copy_database(server_dsn: str, template: str, name: str) -> str:
    """A new database `name` copied from `template`; returns its DSN."""
    conn = psycopg2.connect(server_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"create database {name} template {template}")
    conn.close()
    return psycopg2.extensions.make_dsn(server_dsn, dbname=name)


def drop_database(server_dsn: str, name: str) -> None:
    conn = psycopg2.connect(server_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
    conn.close()


def test_kill_at_any_point_is_all_or_nothing(pg_server, pg_dsn, tmp_path):
    before_lake, after_lake = str(tmp_path / "lake_a"), str(tmp_path / "lake_b")
    write_delta_files(before_lake, sample_gold(upto=2))  # gold version 0: two deliveries
    write_delta_files(after_lake, sample_gold(upto=2))
    write_delta_files(after_lake, sample_gold(upto=3))  # gold version 1: a third delivery, more facts

    template = psycopg2.extensions.parse_dsn(pg_dsn)["dbname"]
    mirror(Settings(lake=before_lake, pg_dsn=pg_dsn), dsn=pg_dsn)  # the "before" database, copied for every run
    before = state(pg_dsn)
    server = pg_server.admin_dsn
    forker = Forker(tmp_path / "mirrors.log")
    try:
        clean_dsn = copy_database(server, template, f"{template}_clean")
        assert forker.run(after_lake, clean_dsn, None) == 0, forker.errors()
        after = state(clean_dsn)
        drop_database(server, f"{template}_clean")
        assert before != after

        points = random.Random(SEED).sample(POINTS, 20)
        for i, point in enumerate(points):
            name = f"{template}_{i}"
            dsn = copy_database(server, template, name)
            assert forker.run(after_lake, dsn, point) == -9, f"{point} not reached: {forker.errors()}"
            seen = state(dsn)
            assert seen in (before, after), f"partial warehouse after a kill at {point}"
            assert seen == (after if point == "mirror.committed" else before), point
            mirror(Settings(lake=after_lake, pg_dsn=dsn), dsn=dsn)  # the re-run
            assert state(dsn) == after, f"re-run after a kill at {point} differs from a clean run"
            drop_database(server, name)
    finally:
        forker.close()
