"""Partitioning of silver.page_views / gold.fact_page_view, measured: none vs. event month vs. event date.

For each layout: initial silver MERGE (table creation), an incremental MERGE of a later delivery (with
cross-delivery duplicates), the gold fact + daily mart rebuild, and a DuckDB `delta_scan` mart query.
Usage: python -m bench.partitioning --events 100000 [--events 1000000] [--out bench/partitioning.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

LAYOUTS = {"none": [], "event_month": ["event_month"], "event_date": ["event_date"]}


def _bronze(spark, source: Path, delivery_filter):
    """Bronze-shaped event rows straight from the generated files (stand-in for bronze.ingest, bench only)."""
    from pyspark.sql import functions as F

    from lakehouse.parsing import parse_at

    lines = spark.read.text(str(source / "events" / "*" / "*.json")).select(
        F.regexp_replace("value", "\r$", "").alias("value"), F.col("_metadata.file_path").alias("path")
    )
    delivery = F.translate(F.regexp_extract("path", r"/events/([^/]+)/", 1), "_", ":")
    at = F.get_json_object("value", "$.at")
    return (
        lines.where(F.trim("value") != "")
        .where(F.col("value").startswith("{"))
        .where(parse_at(at).isNotNull())
        .select(
            "value",
            at.alias("at_raw"),
            F.regexp_extract("path", r"(events/.*)$", 1).alias("source_file"),
            F.monotonically_increasing_id().alias("line_number"),
            delivery.alias("delivery"),
            F.to_timestamp(F.regexp_replace(delivery, "T", " ")).alias("as_of"),
            F.lit(1).cast("bigint").alias("batch_id"),
        )
        .where(delivery_filter(F.col("delivery")))
    )


TABLES = (("silver", "page_views"), ("gold", "fact_page_view"))


def _variant(spec, cols: list[str]):
    """The table's spec laid out by `cols` (an `event_month` column added when it is one of them)."""
    from dataclasses import replace

    from lakehouse import tables

    extra = (tables.own("event_month", "date", "first day of the event's month"),) if "event_month" in cols else ()
    return replace(spec, columns=spec.columns + extra, partition_by=tuple(cols))


def _files(path: Path) -> int:
    return sum(1 for _ in path.rglob("*.parquet"))


def measure(events: int, deliveries: int = 3) -> list[dict]:
    import duckdb
    from pyspark.sql import functions as F

    from lakehouse import delta, gold, silver, tables
    from lakehouse.catalog import extension_path
    from lakehouse.config import Settings
    from lakehouse.spark import get_spark
    from lakehouse.tools.generate import generate

    work = Path(tempfile.mkdtemp(prefix="bench-partitioning-"))
    try:
        source = work / "source"
        generate(source, seed=11, students=max(200, events // 50), events=events, deliveries=deliveries)
        for folder in (source / "events").iterdir():  # Hadoop paths cannot hold ':' (bench reads files directly)
            folder.rename(folder.with_name(folder.name.replace(":", "_")))
        last = sorted(p.name for p in (source / "events").iterdir())[-1].replace("_", ":")
        settings = Settings(
            lake=str(work / "lake"),
            data_dir=str(work / "data"),
            spark_master="local[2]",
            shuffle_partitions=4,
            spark_driver_memory="2g",
        )
        spark = get_spark(settings)
        results = []
        for layout, cols in LAYOUTS.items():
            pv_spec, fact_spec = (_variant(tables.table(layer, name), cols) for layer, name in TABLES)
            for table in ("silver/page_views", "gold/fact_page_view"):
                shutil.rmtree(work / "lake" / table, ignore_errors=True)
            first = _bronze(spark, source, lambda d: d != last)
            later = _bronze(spark, source, lambda d: d == last).withColumn("batch_id", F.lit(2).cast("bigint"))

            def write(df, version):
                if cols == ["event_month"]:
                    df = df.withColumn("event_month", F.trunc("event_date", "month"))
                target = delta.Target(pv_spec, settings, app_id="bench", version=version)
                delta.merge_once(
                    spark,
                    df,
                    target,
                    on="t.event_id = s.event_id",
                    update_when=silver._EARLIER,
                    update_set={c: f"s.{c}" for c in tables.PROVENANCE},
                )

            t = time.perf_counter()
            write(silver.page_views(first, "bench"), 1)
            initial = time.perf_counter() - t
            t = time.perf_counter()
            write(silver.page_views(later, "bench"), 2)
            incremental = time.perf_counter() - t
            t = time.perf_counter()
            pv = delta.read_table(spark, "silver", "page_views", settings)
            fact = gold.fact_page_view(pv)
            if cols == ["event_month"]:
                fact = fact.withColumn("event_month", F.trunc("event_date", "month"))
            delta.merge_once(
                spark,
                fact,
                delta.Target(fact_spec, settings, app_id="bench", version=1),
                on="t.event_id = s.event_id",
            )
            delta.overwrite(
                gold.mart_daily_activity(fact), delta.Target(tables.table("gold", "mart_daily_activity"), settings)
            )
            gold_s = time.perf_counter() - t
            con = duckdb.connect()
            con.execute(f"load '{extension_path()}'")
            fact_path = settings.table_path("gold", "fact_page_view")
            t = time.perf_counter()
            for _ in range(3):
                con.execute(
                    f"select country, count(*), count(distinct student_id) from delta_scan('{fact_path}') "
                    "where event_date between date '2017-11-01' and date '2017-11-30' "
                    "group by country"
                ).fetchall()
            duck = (time.perf_counter() - t) / 3
            rows = con.execute(f"select count(*) from delta_scan('{fact_path}')").fetchall()[0][0]
            results.append(
                {
                    "events": events,
                    "layout": layout,
                    "rows": rows,
                    "silver_initial_s": round(initial, 2),
                    "silver_incremental_s": round(incremental, 2),
                    "gold_fact_and_mart_s": round(gold_s, 2),
                    "duckdb_month_query_s": round(duck, 3),
                    "silver_files": _files(work / "lake" / "silver" / "page_views"),
                    "fact_files": _files(work / "lake" / "gold" / "fact_page_view"),
                }
            )
            print(json.dumps(results[-1]), flush=True)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, action="append", help="events in the generated source (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = []
    for n in args.events or [100_000]:
        results += measure(n)
    print(
        f"{'events':>9} {'layout':<12} {'silver init':>11} {'silver incr':>11} {'gold':>7} {'duckdb':>8} "
        f"{'files s/g':>10}"
    )
    for r in results:
        print(
            f"{r['events']:>9} {r['layout']:<12} {r['silver_initial_s']:>11} {r['silver_incremental_s']:>11} "
            f"{r['gold_fact_and_mart_s']:>7} {r['duckdb_month_query_s']:>8} "
            f"{r['silver_files']:>4}/{r['fact_files']:<5}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
