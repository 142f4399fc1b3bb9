"""Per-write overhead of bronze, silver and gold at demo and test sizes, measured: Delta's snapshot partitions
(Spark's default 50, the session's shuffle partitions, one) and table writes one after another against
`delta.TABLE_WRITERS` side by side.

One process, one Spark session, the same generated source; each variant builds a fresh lake, rounds alternate
the variants, a warm-up round is thrown away, and the median per stage is reported.
Usage: python -m bench.small_writes [--events 3000] [--rounds 2] [--out bench/small_writes.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

STAGES = ("bronze", "silver", "gold")


def _variants(shuffle: int, writers: int) -> dict[str, dict]:
    return {
        "spark default (50 snapshot partitions), one write at a time": {"snapshot_partitions": 50, "writers": 1},
        f"{shuffle} snapshot partitions, one write at a time": {"snapshot_partitions": shuffle, "writers": 1},
        f"{shuffle} snapshot partitions, {writers} writes side by side": {
            "snapshot_partitions": shuffle,
            "writers": writers,
        },
        f"1 snapshot partition, {writers} writes side by side": {"snapshot_partitions": 1, "writers": writers},
    }


def _run_stages(spark, settings) -> dict[str, float]:
    from lakehouse import bronze, gold, landing, silver

    landing.land(settings)
    seconds = {}
    for name, stage in (("bronze", bronze.ingest), ("silver", silver.refresh), ("gold", gold.refresh)):
        started = time.perf_counter()
        stage(spark, settings, "bench")
        seconds[name] = time.perf_counter() - started
    return seconds


def measure(events: int, rounds: int) -> dict:
    from lakehouse import delta
    from lakehouse.config import Settings
    from lakehouse.spark import get_spark
    from lakehouse.tools.generate import generate

    work = Path(tempfile.mkdtemp(prefix="bench-small-writes-"))
    try:
        source = work / "source"
        generate(source, seed=3, students=100, events=events, deliveries=3)
        base = Settings(source=str(source), lake=str(work / "lake"), data_dir=str(work / "data"))
        spark = get_spark(base)
        shuffle = base.effective_shuffle_partitions()
        variants = _variants(shuffle, delta.TABLE_WRITERS)
        default_writers = delta.TABLE_WRITERS
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        try:
            for round_no in range(rounds + 1):  # round 0 warms the JVM up and is not kept
                for n, (name, variant) in enumerate(variants.items()):
                    lake = work / f"lake-{round_no}-{n}"
                    settings = base.model_copy(update={"lake": str(lake)})
                    spark.conf.set("spark.databricks.delta.snapshotPartitions", str(variant["snapshot_partitions"]))
                    delta.TABLE_WRITERS = variant["writers"]
                    seconds = _run_stages(spark, settings)
                    shutil.rmtree(lake, ignore_errors=True)
                    if round_no:
                        samples[name].append(seconds)
                    print(json.dumps({"round": round_no, "variant": name, **seconds}), flush=True)
        finally:
            delta.TABLE_WRITERS = default_writers
        results = {
            name: {stage: round(statistics.median(s[stage] for s in runs), 2) for stage in STAGES}
            for name, runs in samples.items()
        }
        baseline = results[next(iter(variants))]
        for figures in results.values():
            total = sum(figures[s] for s in STAGES)
            figures["total"] = round(total, 2)
            figures["speedup"] = round(sum(baseline[s] for s in STAGES) / total, 2)
        return {"events": events, "rounds": rounds, "shuffle_partitions": shuffle, "results": results}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="events in the generated source")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (after one warm-up round)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    out = measure(args.events, args.rounds)
    print(f"{'variant':<62} {'bronze':>7} {'silver':>7} {'gold':>7} {'total':>7} {'speedup':>8}")
    for name, r in out["results"].items():
        print(f"{name:<62} {r['bronze']:>7} {r['silver']:>7} {r['gold']:>7} {r['total']:>7} {r['speedup']:>7}x")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
