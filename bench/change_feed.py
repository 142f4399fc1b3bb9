"""What the mirror stages and costs after a 1 % change of a gold fact: read from gold's change data feed, side by side
with a full read of the same change.

Spark writes a gold.fact_session of `--rows` rows with the catalogue's layout (change data feed on) and a calendar
covering its days; the mirror loads them into a scratch warehouse; then a MERGE (as gold's incremental refresh writes
one) changes `--percent` % of the rows (the client type of some sessions updated, as many new sessions inserted).
Then, alternating for `--rounds` rounds, each on a fresh copy of the warehouse as it was before the change
(PostgreSQL's `create database ... template`): the mirror reading the changes, and the mirror reading gold.fact_session
whole (`full_refresh`). Rows staged and changed are the mirror's report of dw.fact_session; seconds are the whole
mirror's (migrations, staging, load SQL, the drift check, commit); medians. Its own temporary lake and PostgreSQL
cluster, removed at the end.
Usage: python -m bench.change_feed [--rows 200000] [--percent 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import psycopg2
from pyspark.sql import functions as F

from lakehouse import delta, tables
from lakehouse.config import Settings
from lakehouse.pgserver import ManagedPostgres
from lakehouse.spark import build_session
from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.mirror import mirror


def _sessions(spark, first: int, rows: int):
    return spark.range(first, first + rows).selectExpr(
        "concat('s', id) as session_id",
        "cast(id % 20000 as string) as student_id",
        "false as student_erased",
        "timestamp_seconds(1510000000 + id * 37) as session_start_at",
        "to_date(timestamp_seconds(1510000000 + id * 37)) as session_date",
        "element_at(array('Website', 'Android', 'iOS'), cast(id % 3 as int) + 1) as client_type",
        "timestamp'2017-11-18 06:00:00' as first_as_of",
        "false as is_deleted",
    )


def _database(admin: str, sql: str) -> None:
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _fact(dsn: str) -> tuple[int, str]:
    """dw.fact_session's rows and a hash of them (both mirrors must give the same)."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("select count(*), md5(string_agg(f::text, ',' order by f::text)) from dw.fact_session as f")
        rows, digest = cur.fetchone()  # type: ignore[misc]
    conn.close()
    return rows, digest


def run(rows: int = 200_000, percent: float = 1.0, rounds: int = 3) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-change-feed-"))
    settings = Settings(
        source=str(work / "source"),
        lake=str(work / "lake"),
        data_dir=str(work / "data"),
        spark_master="local[2]",
        shuffle_partitions=2,
    )
    spark = build_session(settings)
    server = ManagedPostgres(work / "data" / "postgres")
    server.start()
    admin = server.admin_dsn
    base = admin.rsplit("/", 1)[0]
    try:
        calendar = spark.sql("select explode(sequence(date'2017-11-01', date'2018-03-31')) as date").selectExpr(
            "date",
            "year(date) as year",
            "month(date) as month",
            "day(date) as day",
            "weekday(date) + 1 as weekday",
            "date_format(date, 'EEEE') as weekday_name",
            "trunc(date, 'MM') as month_start_date",
        )
        delta.overwrite(calendar.coalesce(1), delta.Target(tables.table("gold", "dim_date"), settings))
        target = delta.Target(tables.table("gold", "fact_session"), settings)
        delta.overwrite(_sessions(spark, 0, rows).coalesce(1), target)
        _database(admin, "create database before_change")
        migrate(f"{base}/before_change")
        first = mirror(settings, dsn=f"{base}/before_change")
        assert first.details["tables"]["fact_session"].rows_staged == rows
        changed = int(rows * percent / 100) // 2  # half updated, half inserted: `percent` % of the rows
        updates = _sessions(spark, 0, changed).withColumn("client_type", F.lit("Webapp"))
        delta.merge_once(
            spark,
            updates.unionByName(_sessions(spark, rows, changed)).coalesce(1),
            target,
            on="t.session_id = s.session_id",
            update_set={"client_type": "s.client_type"},
        )
        figures: dict[str, list[dict]] = {"changes": [], "full": []}
        states = set()
        for n in range(rounds):
            for read in ("changes", "full"):
                name = f"round_{n}_{read}"
                _database(admin, f"create database {name} template before_change")
                report = mirror(settings, dsn=f"{base}/{name}", full_refresh=read == "full")
                load = report.details["tables"]["fact_session"]
                assert load.read == read, (read, load)
                figures[read].append(
                    {"rows_staged": load.rows_staged, "rows_changed": load.rows_changed, "seconds": report.seconds}
                )
                states.add(_fact(f"{base}/{name}"))
                _database(admin, f"drop database {name}")
        assert len(states) == 1, "both mirrors must give the same dw.fact_session"
        result: dict = {"benchmark": "change_feed", "gold_rows": rows, "percent": percent, "rounds": rounds}
        for read, runs in figures.items():
            result[read] = {
                "rows_staged": runs[0]["rows_staged"],
                "rows_changed": runs[0]["rows_changed"],
                "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
                "rounds_seconds": [r["seconds"] for r in runs],
            }
        result["staged_per_changed_row"] = round(
            result["changes"]["rows_staged"] / result["changes"]["rows_changed"], 2
        )
        result["speedup"] = round(result["full"]["seconds"] / result["changes"]["seconds"], 1)
        return result
    finally:
        spark.stop()
        server.remove()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--percent", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternate rounds; the median is reported")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.rows, args.percent, args.rounds)))


if __name__ == "__main__":
    main()
