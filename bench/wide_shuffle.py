"""Silver built whole from an existing lake's bronze, with shuffles started in N partitions and merged back to the
data's size by adaptive execution (`spark.sql.adaptive.coalescePartitions.initialPartitionNum`). A session's shuffle
settings are fixed at its start, so each variant is its own process: run the script once per N, alternating. It
deletes the lake's silver tables first (bronze is left as it is), so point it at a copy or a benchmark lake.
Spark's event log goes to `<data>/events-<N>`, and is read back for the tasks, executor time and disk spill of the
heaviest stages.
Usage: python -m bench.wide_shuffle LAKE --initial 64 [--data bench-data] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import defaultdict
from pathlib import Path


def build(lake: str, initial: int, data: Path) -> dict:
    from lakehouse import silver
    from lakehouse.config import Settings
    from lakehouse.spark import build_session

    events = data / f"events-{initial}"
    events.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        lake=lake,
        data_dir=str(data),
        spark_conf={
            "spark.sql.adaptive.coalescePartitions.initialPartitionNum": str(initial),
            "spark.eventLog.enabled": "true",
            "spark.eventLog.compress": "false",  # plain JSON lines, read back below
            "spark.eventLog.dir": events.resolve().as_uri(),
        },
    )
    for table in silver.TABLES:
        shutil.rmtree(settings.table_path("silver", table.name), ignore_errors=True)
    spark = build_session(settings)
    started = time.monotonic()
    report = silver.refresh(spark, settings, f"wide-shuffle-{initial}")
    seconds = round(time.monotonic() - started, 1)
    spark.stop()
    return {
        "initial_partitions": initial,
        "seconds": seconds,
        "tables": {name: t.get("seconds") for name, t in report.details["tables"].items()},
        "stages": heaviest_stages(events),
    }


def heaviest_stages(events: Path, top: int = 3) -> list[dict]:
    """Tasks, executor seconds and bytes spilled to disk of the stages with the most executor time."""
    log = next(events.glob("*/events_*"))
    stages: dict[int, dict] = defaultdict(lambda: {"tasks": 0, "executor_s": 0.0, "spilled_bytes": 0, "name": ""})
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerTaskEnd":
            metrics, stage = event.get("Task Metrics") or {}, stages[event["Stage ID"]]
            stage["tasks"] += 1
            stage["executor_s"] += metrics.get("Executor Run Time", 0) / 1000
            stage["spilled_bytes"] += metrics.get("Disk Bytes Spilled", 0)
        elif event["Event"] == "SparkListenerStageCompleted":
            stages[event["Stage Info"]["Stage ID"]]["name"] = event["Stage Info"]["Stage Name"][:60]
    heaviest = sorted(stages.values(), key=lambda s: -s["executor_s"])[:top]
    return [{**s, "executor_s": round(s["executor_s"], 1)} for s in heaviest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake")
    parser.add_argument("--initial", type=int, required=True, help="partitions a shuffle starts in")
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="the session's data folder")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = build(args.lake, args.initial, args.data)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
