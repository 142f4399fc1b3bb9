"""VACUUM of small tables: Spark's default listing and deletion parallelism (10,000 tasks) against the session's
(`spark.sql.sources.parallelPartitionDiscovery.parallelism` = shuffle partitions), side by side.

One process, one local Spark session; each round rewrites every table three times (so each vacuum has files to
delete), then vacuums it under one setting, alternating the settings table by table; a warm-up round is thrown away
and the median seconds per vacuum is reported with the ratio.
Usage: python -m bench.vacuum [--tables 4] [--rounds 3] [--out bench/results/vacuum-<time>.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SPARK_DEFAULT = "10000"
CONF = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def measure(n_tables: int, rounds: int) -> dict:
    from lakehouse.config import Settings
    from lakehouse.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench-vacuum-"))
    try:
        settings = Settings(lake=str(work / "lake"), data_dir=str(work / "data"))
        spark = get_spark(settings)
        ours = str(spark.conf.get(CONF))
        variants = {f"Spark's default ({SPARK_DEFAULT} tasks)": SPARK_DEFAULT, f"the session's ({ours} tasks)": ours}
        df = spark.createDataFrame([(n, f"row {n}") for n in range(100)], "id int, name string")
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(rounds + 1):
            for t in range(n_tables):
                name, value = list(variants.items())[(t + round_) % len(variants)]
                path = str(work / "lake" / f"t{t}")
                for _ in range(3):
                    df.write.format("delta").mode("overwrite").save(path)
                spark.conf.set(CONF, value)
                started = time.perf_counter()
                spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS").collect()
                if round_:  # round 0 warms the JVM up
                    seconds[name].append(time.perf_counter() - started)
        spark.conf.set(CONF, ours)
        medians = {name: round(statistics.median(values), 2) for name, values in seconds.items()}
        default, session = medians.values()
        return {"seconds_per_vacuum": medians, "ratio": round(session / default, 3), "samples": seconds}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.tables, args.rounds)
    out = args.out or Path("bench/results") / f"vacuum-{time.strftime('%Y%m%dT%H%MZ', time.gmtime())}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
