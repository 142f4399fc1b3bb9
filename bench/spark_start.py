"""Spark session start with Delta's jars resolved through Ivy at every start (`spark.jars.packages`, as
`configure_spark_with_delta_pip` does) against local jar files from the project's cache (`spark.jars`).

Each start is a fresh Python process that builds a local session (the project's settings, UI off) and runs one Delta
write and read, so the jars are really loaded; rounds alternate the two ways, and the median of each is reported.
Usage: python -m bench.spark_start [--rounds 4] [--gcs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import PYTHON, ROOT, emit, read_result

WAYS = ("ivy", "cache")

CHILD = """
import sys, time
started = time.perf_counter()
from lakehouse.config import Settings
from lakehouse import spark as lakehouse_spark
way, lake = sys.argv[1], sys.argv[2]
settings = Settings(_env_file=None, spark_master="local[2]", shuffle_partitions=2, lake=lake, data_dir=lake + "/data")
if way == "ivy":  # the former start: Delta's coordinates resolved by Ivy inside spark-submit
    from lakehouse import jars
    settings = settings.model_copy(update={"spark_conf": {"spark.jars.packages": jars.delta().coordinates}})
    jars.spark_jars = lambda gcs=False: []
spark = lakehouse_spark.build_session(settings)
ready = time.perf_counter()
spark.range(3).write.format("delta").save(lake + "/t")
assert spark.read.format("delta").load(lake + "/t").count() == 3
done = time.perf_counter()
from bench.common import emit
emit({"session_s": ready - started, "first_delta_s": done - ready, "jars": spark.conf.get("spark.jars", ""),
      "packages": spark.conf.get("spark.jars.packages", "")})
spark.stop()
"""


def start_once(way: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-spark-start-") as lake:
        started = time.perf_counter()
        done = subprocess.run(
            [str(PYTHON), "-c", CHILD, way, lake], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        wall = time.perf_counter() - started
    result = read_result(done.stdout)
    if done.returncode != 0 or result is None:
        raise RuntimeError(f"{way} start failed: {done.stderr[-2000:]}")
    if way == "ivy":
        assert result["packages"] and not result["jars"].strip(","), result
    else:
        assert not result["packages"] and result["jars"], result
    return {"process_s": wall, "session_s": result["session_s"], "first_delta_s": result["first_delta_s"]}


def measure(rounds: int) -> dict:
    from lakehouse import jars

    jars.spark_jars()  # the cache is filled once, as `make setup` does; Ivy's own cache is warm for both ways
    start_once("ivy")  # warm-up: OS file cache, bytecode
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for n in range(rounds):
        for way in WAYS if n % 2 == 0 else WAYS[::-1]:
            runs[way].append(start_once(way))
            print(
                f"round {n + 1} {way}: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[way][-1].items()), file=sys.stderr
            )
    median = {way: {k: statistics.median(r[k] for r in runs[way]) for k in runs[way][0]} for way in WAYS}
    return {
        "rounds": rounds,
        "runs": runs,
        "median": median,
        "ratio_session": median["cache"]["session_s"] / median["ivy"]["session_s"],
        "ratio_process": median["cache"]["process_s"] / median["ivy"]["process_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    result = measure(args.rounds)
    for way in WAYS:
        m = result["median"][way]
        print(
            f"{way:6} session {m['session_s']:.2f} s, process {m['process_s']:.2f} s, "
            f"first Delta write+read {m['first_delta_s']:.2f} s"
        )
    print(f"cache/ivy: session {result['ratio_session']:.2f}, process {result['ratio_process']:.2f}")
    emit(json.loads(json.dumps(result)))


if __name__ == "__main__":
    main()
