"""Benchmark: the mirror's COPY load of dim_student history versus a row-by-row INSERT load of the same rows."""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pyarrow as pa

from lakehouse.config import get_settings
from lakehouse.pgserver import warehouse_logins
from lakehouse.warehouse import loads, migrations
from lakehouse.warehouse import mirror as warehouse

# fmt: off
COLUMNS = ("student_id", "registered_at", "state", "city", "university_id", "university_name", "course_id",
           "course_name", "signup_source", "is_deleted", "as_of", "delivery")
# fmt: on


def history(students: int, deliveries: int, seed: int = 7) -> pa.Table:
    """Gold-shaped dim_student history: every student in every delivery, ~5% changed, ~2% absent per delivery."""
    rnd = random.Random(seed)
    start = datetime(2017, 11, 16, 6, tzinfo=UTC)
    state = {s: ["SP", "RJ", "MG", "BA"][s % 4] for s in range(students)}
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for d in range(deliveries):
        as_of = start + timedelta(days=d)
        for s in range(students):
            if d and rnd.random() < 0.05:
                state[s] = rnd.choice(["SP", "RJ", "MG", "BA"])
            row = (
                str(s),
                start - timedelta(minutes=s),
                state[s],
                f"city {s % 97}",
                s % 50,
                f"University {s % 50}",
                s % 300,
                f"Course {s % 300}",
                "web" if s % 3 else "app",
                d > 0 and rnd.random() < 0.02,
                as_of,
                as_of.date().isoformat(),
            )
            for c, v in zip(COLUMNS, row):
                cols[c].append(v)
    ts = pa.timestamp("us", tz="UTC")
    types = {
        "registered_at": ts,
        "as_of": ts,
        "university_id": pa.int32(),
        "course_id": pa.int32(),
        "is_deleted": pa.bool_(),
    }
    return pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in cols.items()})


def _database(admin_dsn: str, name: str, drop: bool = False) -> str:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"drop database if exists {name}" if drop else f"create database {name}")
    conn.close()
    return psycopg2.extensions.make_dsn(admin_dsn, dbname=name)


def load_with_copy(dsn: str, table: pa.Table) -> dict:
    """Stage with COPY (the mirror's path) and apply the SCD2 SQL, in one transaction."""
    duck = warehouse.duckdb_connection()
    source = warehouse.ArrowGold({"dim_student_history": table})
    load = next(ld for ld in loads.LOADS if ld.target == "dim_student")
    conn = psycopg2.connect(dsn)
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        warehouse.load_session(cur)
        warehouse.replay_from(cur, "dim_student", None)
        rows = warehouse._stage(cur, duck, load, source.relation(duck, load.gold, 0))
        staged = time.perf_counter()
        warehouse._apply(cur, "dim_student")
    done = time.perf_counter()
    conn.close()
    return _figures(rows, started, staged, done)


def load_with_inserts(dsn: str, table: pa.Table) -> dict:
    """Stage with one INSERT per row and apply the same SCD2 SQL, in one transaction."""
    conn = psycopg2.connect(dsn)
    sql = f"insert into stage.dim_student_history ({', '.join(COLUMNS)}) values ({', '.join(['%s'] * len(COLUMNS))})"
    started = time.perf_counter()
    rows = 0
    with conn, conn.cursor() as cur:
        warehouse.load_session(cur)
        warehouse.replay_from(cur, "dim_student", None)
        cur.execute("truncate stage.dim_student_history, stage.dim_student_version, stage.dim_student_changed")
        for batch in table.to_batches(10_000):
            for row in zip(*(batch.column(c).to_pylist() for c in COLUMNS)):
                cur.execute(sql, row)
                rows += 1
        staged = time.perf_counter()
        warehouse._apply(cur, "dim_student")
    done = time.perf_counter()
    conn.close()
    return _figures(rows, started, staged, done)


def _figures(rows: int, started: float, staged: float, done: float) -> dict:
    return {
        "rows": rows,
        "stage_seconds": round(staged - started, 3),
        "seconds": round(done - started, 3),
        "stage_rows_per_second": round(rows / (staged - started)),
        "rows_per_second": round(rows / (done - started)),
    }


def _versions(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("select count(*) from dw.dim_student")
        n = cur.fetchall()[0][0]
    conn.close()
    return n


def _median(figures: list[dict]) -> dict:
    """The round with the median rows/s (rounds run alternately, so machine noise hits both methods alike)."""
    ordered = sorted(figures, key=lambda f: f["rows_per_second"])
    return {**ordered[len(ordered) // 2], "rounds_rows_per_second": [f["rows_per_second"] for f in figures]}


def run(dsn: str | None = None, students: int = 20_000, deliveries: int = 5, rounds: int = 3) -> dict:
    """Load the same history with COPY and with row-by-row INSERT, alternately `rounds` times, each in a scratch
    database of the server at `dsn` (default: the warehouse), plus whole mirror runs on a migrated scratch
    database; returns the median figures."""
    settings = get_settings()
    admin = dsn or warehouse_logins(settings)[1]  # creates scratch databases
    table = history(students, deliveries)
    result: dict = {
        "benchmark": "mirror",
        "table": "dim_student",
        "students": students,
        "deliveries": deliveries,
        "history_rows": table.num_rows,
        "rounds": rounds,
    }
    suffix = uuid.uuid4().hex[:8]
    figures: dict[str, list[dict]] = {"copy": [], "insert": [], "mirror": []}
    for _ in range(rounds):
        for method, loader in (("copy", load_with_copy), ("insert", load_with_inserts), ("mirror", None)):
            name = f"bench_mirror_{method}_{suffix}"
            scratch = _database(admin, name)
            try:
                migrations.migrate(scratch)
                if loader is None:  # the whole mirror (gold version check, deliveries, COPY, SCD2, audit)
                    report = warehouse.mirror(
                        settings, warehouse.ArrowGold({"dim_student_history": table}), dsn=scratch
                    )
                    figures[method].append(
                        {
                            "rows": report.rows_in,
                            "seconds": report.seconds,
                            "rows_per_second": report.details["rows_per_second"],
                        }
                    )
                else:
                    figures[method].append({**loader(scratch, table), "versions": _versions(scratch)})
            finally:
                _database(admin, name, drop=True)
    for method, runs in figures.items():
        result[method] = _median(runs)
    versions = {f["versions"] for m in ("copy", "insert") for f in figures[m]}
    assert len(versions) == 1, f"every load must give the same history, got {sorted(versions)} versions"
    result["copy_scd2"] = {"rows_per_s": result["copy"]["rows_per_second"]}
    result["row_by_row"] = {"rows_per_s": result["insert"]["rows_per_second"]}
    result["speedup"] = round(result["copy"]["rows_per_second"] / result["insert"]["rows_per_second"], 1)
    result["speedup_stage"] = round(
        result["copy"]["stage_rows_per_second"] / result["insert"]["stage_rows_per_second"], 1
    )
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line: print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--deliveries", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternate rounds; the median is reported")
    parser.add_argument("--dsn", default=None, help="a server to make scratch databases on (default: the warehouse)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.dsn, args.students, args.deliveries, args.rounds)))


if __name__ == "__main__":
    main()
