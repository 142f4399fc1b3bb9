"""What the project's own expectations cost: silver and gold refreshed from the same bronze with none declared and
with the project's `expectations.yaml`, alternating (none, project, project, none) in one process and one Spark
session, so that a shared machine's load weighs on both alike; against the stages of a run without them.

Configuration comes from the `LAKEHOUSE_*` environment the harness sets (source, lake, data dir).
Usage: python -m bench.expectations   (prints one BENCH_RESULT JSON line)
"""

from __future__ import annotations

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


def run() -> dict:
    settings = Settings()
    lake = Path(settings.lake_url)
    spark = get_spark(settings)
    started = time.perf_counter()
    landing.land(settings)
    landed = time.perf_counter()
    bronze.ingest(spark, settings, "bench-bronze")
    ingested = time.perf_counter()
    declared = {"none": Expectations(Path("(none)")), "project": load(PROJECT_ROOT / "expectations.yaml")}
    rounds: list[dict] = []
    for n, name in enumerate(ORDER):
        copy = lake.parent / f"lake-{n}-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        _copy(lake, copy)
        s = settings.model_copy(update={"lake": str(copy)})
        t0 = time.perf_counter()
        refined = silver.refresh(spark, s, f"bench-{n}", expectations=declared[name])
        t1 = time.perf_counter()
        built = gold.refresh(spark, s, f"bench-{n}", expectations=declared[name])
        t2 = time.perf_counter()
        rounds.append(
            {
                "expectations": name,
                "silver_s": round(t1 - t0, 3),
                "gold_s": round(t2 - t1, 3),
                "results": [r.line for r in (*refined.expectations, *built.expectations)],
            }
        )
        shutil.rmtree(copy, ignore_errors=True)
    refine = {
        name: statistics.mean(float(r["silver_s"]) + float(r["gold_s"]) for r in rounds if r["expectations"] == name)
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
    }


if __name__ == "__main__":
    emit(run())
