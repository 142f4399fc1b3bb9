"""What a partitioned write costs with and without a sort by partition first (the plans of the heavy reads are
asserted by tests/test_plans.py: one exchange and one sort for silver's deduplication, a broadcast enrichment join).

Writes the same unsorted rows (page views spread over 30 days, as a first delivery's are) to a Delta table
partitioned by day, alternating two settings in one process: `spark.sql.maxConcurrentOutputFileWriters` 0 (Delta's
writer sorts each task's rows by partition first) and the session's value (a file open per partition, no sort).
A warm-up round is thrown away; the median of each is reported, and their ratio.
Usage: python -m bench.plans [--rows 1000000] [--rounds 3] [--out bench/plans.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def measure(rows: int, rounds: int) -> dict:
    from lakehouse.config import Settings
    from lakehouse.spark import SQL_CONF, get_spark

    work = Path(tempfile.mkdtemp(prefix="bench-plans-"))
    spark = get_spark(Settings(data_dir=str(work / "data")))
    key = "spark.sql.maxConcurrentOutputFileWriters"
    variants = {"sort by partition first (0 writers)": "0", f"{SQL_CONF[key]} files open per task": SQL_CONF[key]}
    data = spark.range(rows).selectExpr(
        "sha2(cast(id as string), 256) as event_id",
        "date_add(date'2017-10-17', cast(rand(7) * 30 as int)) as event_date",
        "cast(rand(8) * 1e6 as bigint) as n",
        "repeat('x', 200) as payload",
    )
    data = data.persist()
    data.count()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for round_ in range(rounds + 1):
            for name, value in variants.items():
                spark.conf.set(key, value)
                target = work / f"t-{round_}-{value}"
                started = time.perf_counter()
                data.write.format("delta").partitionBy("event_date").save(str(target))
                if round_:  # round 0 warms up
                    seconds[name].append(time.perf_counter() - started)
                shutil.rmtree(target)
    finally:
        spark.conf.set(key, SQL_CONF[key])
        data.unpersist()
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: round(statistics.median(s), 2) for name, s in seconds.items()}
    sorted_first, concurrent = medians.values()
    return {
        "rows": rows,
        "rounds": rounds,
        "seconds": seconds,
        "median_s": medians,
        "ratio": round(sorted_first / concurrent, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.rows, args.rounds)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
