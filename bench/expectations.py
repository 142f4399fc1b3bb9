"""What the project's own expectations cost: silver and gold refreshed from the same bronze with none declared and
with the project's `expectations.yaml`, alternating (none, project, project, none) in one process and one Spark
session, so that a shared machine's load weighs on both alike; against the stages of a run without them. Wall time,
and the executor CPU time of each round's tasks from Spark's event log (what the load of other jobs changes least).

Configuration comes from the `LAKEHOUSE_*` environment the harness sets (source, lake, data dir).
Usage: python -m bench.expectations   (prints one BENCH_RESULT JSON line)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

from bench.common import emit
from lakehouse import bronze, gold, landing, silver
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.expectations import Expectations, load
from lakehouse.spark import get_spark

ORDER = ("none", "project", "project", "none")
COPIED = ("bronze", "quarantine")  # what silver and gold read (and drops append to)


def _copy(lake: Path, to: Path) -> None:
    """The layers silver reads, hard-linked: Delta never rewrites a file it wrote, only adds new ones."""
    for layer in COPIED:
        if (lake / layer).exists():
            shutil.copytree(lake / layer, to / layer, copy_function=os.link)


def _cpu_seconds(events: Path, windows: list[tuple[float, float]]) -> list[float]:
    """Executor CPU seconds of the tasks that finished in each (start, end) window (epoch seconds)."""
    totals = [0.0] * len(windows)
    for log in events.glob("*"):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event["Event"] != "SparkListenerTaskEnd":
                continue
            finished = event["Task Info"]["Finish Time"] / 1000
            cpu = (event.get("Task Metrics") or {}).get("Executor CPU Time", 0) / 1e9
            for k, (start, end) in enumerate(windows):
                if start <= finished <= end:
                    totals[k] += cpu
    return [round(t, 1) for t in totals]


def run() -> dict:
    base = Settings()
    events = Path(base.data_dir) / "spark-events"
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    log_conf = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.compress": "false",  # plain JSON lines, read back below
        "spark.eventLog.dir": events.resolve().as_uri(),
    }
    settings = base.model_copy(update={"spark_conf": {**base.spark_conf, **log_conf}})
    lake = Path(settings.lake_url)
    spark = get_spark(settings)
    started = time.perf_counter()
    landing.land(settings)
    landed = time.perf_counter()
    bronze.ingest(spark, settings, "bench-bronze")
    ingested = time.perf_counter()
    declared = {"none": Expectations(Path("(none)")), "project": load(PROJECT_ROOT / "expectations.yaml")}
    rounds: list[dict] = []
    windows: list[tuple[float, float]] = []
    for n, name in enumerate(ORDER):
        copy = lake.parent / f"lake-{n}-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        _copy(lake, copy)
        s = settings.model_copy(update={"lake": str(copy)})
        opened, t0 = time.time(), time.perf_counter()
        refined = silver.refresh(spark, s, f"bench-{n}", expectations=declared[name])
        t1 = time.perf_counter()
        built = gold.refresh(spark, s, f"bench-{n}", expectations=declared[name])
        t2 = time.perf_counter()
        windows.append((opened, time.time()))
        rounds.append(
            {
                "expectations": name,
                "silver_s": round(t1 - t0, 3),
                "gold_s": round(t2 - t1, 3),
                "results": [r.line for r in (*refined.expectations, *built.expectations)],
            }
        )
        shutil.rmtree(copy, ignore_errors=True)
    spark.stop()  # the event log is complete once the session ends
    try:
        for entry, seconds in zip(rounds, _cpu_seconds(events, windows)):
            entry["executor_cpu_s"] = seconds
    except (OSError, ValueError, KeyError) as exc:  # the wall times stand without it
        for entry in rounds:
            entry["executor_cpu_s"] = 0.0
        rounds[0]["cpu_error"] = f"{type(exc).__name__}: {exc}"
    refine = {
        name: statistics.mean(float(r["silver_s"]) + float(r["gold_s"]) for r in rounds if r["expectations"] == name)
        for name in declared
    }
    cpus = {
        name: statistics.mean(float(r["executor_cpu_s"]) for r in rounds if r["expectations"] == name)
        for name in declared
    }
    before = (landed - started) + (ingested - landed)
    run_without = before + refine["none"]
    cost = refine["project"] - refine["none"]
    return {
        "ok": True,
        "land_s": round(landed - started, 3),
        "bronze_s": round(ingested - landed, 3),
        "rounds": rounds,
        "refine_none_s": round(refine["none"], 3),
        "refine_project_s": round(refine["project"], 3),
        "run_without_s": round(run_without, 3),
        "cost_s": round(cost, 3),
        "cost_share": round(cost / run_without, 4),
        "executor_cpu_none_s": round(cpus["none"], 1),
        "executor_cpu_project_s": round(cpus["project"], 1),
        "executor_cpu_ratio": round(cpus["project"] / cpus["none"], 3) if cpus["none"] else None,
    }


if __name__ == "__main__":
    emit(run())
