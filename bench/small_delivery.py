"""A cut in the writes of a small delivery, measured side by side: this checkout against another (`--against`, the
code before the cut, e.g. a `git worktree` of the previous commit), each in a process of its own with one warm local
Spark session, in alternating rounds on the same machine. Each process builds a lake of five generated deliveries, then
takes small deliveries of new event lines, one run (land, bronze, silver, gold) each, and reports every stage's wall
time, Delta commits and Spark jobs, and each gold table's. Both lakes then hold the same gold (DuckDB, every row).

Usage: python -m bench.small_delivery --against ../before [--events 20000] [--lines 300] [--deliveries 2]
       [--rounds 2] [--out bench/results/small_delivery.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, emit, read_result


def measure(workdir: Path, events: int, lines: int, deliveries: int) -> dict:
    """In this process: the lake of five deliveries, then `deliveries` small ones; the figures of each small run."""
    from lakehouse import bronze, gold, silver
    from lakehouse.config import Settings
    from lakehouse.landing import land
    from lakehouse.spark import build_session
    from lakehouse.tools.generate import generate

    generated = workdir / "generated"
    generate(generated, seed=13, students=max(200, events // 50), events=events, deliveries=6)
    sixth = sorted((generated / "events").iterdir())[-1]
    later = [ln for f in sorted(sixth.glob("*.json")) for ln in f.read_text().splitlines() if ln]
    source = workdir / "source"
    for kind in ("events", "transactional"):
        for folder in sorted((generated / kind).iterdir())[:-1]:
            shutil.copytree(folder, source / kind / folder.name)
    settings = Settings(
        source=str(source),
        lake=str(workdir / "lake"),
        data_dir=str(workdir / "data"),
        spark_master="local[2]",
        shuffle_partitions=2,
        _env_file=None,
    )
    spark = build_session(settings)

    def spark_jobs() -> set[int]:
        return set(spark.sparkContext.statusTracker().getJobIdsForGroup(None))

    def run(run_id: str) -> dict:
        out: dict = {}
        stages = (("bronze", bronze.ingest), ("silver", silver.refresh), ("gold", gold.refresh))
        started = time.perf_counter()
        land(settings)
        for name, stage in stages:
            jobs, begun = spark_jobs(), time.perf_counter()
            report = stage(spark, settings, run_id)
            out[name] = {
                "seconds": round(time.perf_counter() - begun, 2),
                "commits": report.commits,
                "jobs": len(spark_jobs() - jobs),
            }
            if name == "gold":
                out["gold_tables"] = {
                    t: {"seconds": r.seconds, "commits": r.commits} for t, r in report.tables.items() if not r.skipped
                }
        out["wall_s"] = round(time.perf_counter() - started, 2)
        return out

    built = run("five-deliveries")
    small = []
    for n in range(deliveries):
        folder = source / "events" / f"2017-12-{n + 1:02d}"
        folder.mkdir(parents=True)
        (folder / "part-00000.json").write_text("\n".join(later[n * lines : (n + 1) * lines]) + "\n")
        small.append(run(f"small-{n}"))
    spark.stop()
    return {"five_deliveries_s": built["wall_s"], "small": small}


def _child(checkout: Path, workdir: Path, args: argparse.Namespace) -> dict:
    """One measurement in a process of its own, importing `lakehouse` from `checkout`."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(workdir)]  # this file, their code
    command += ["--events", str(args.events), "--lines", str(args.lines), "--deliveries", str(args.deliveries)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PREFECT_"))}
    env["PYTHONPATH"] = str(checkout)
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=3600)
    result = read_result(done.stdout)
    if done.returncode or result is None:
        raise RuntimeError(f"{checkout}: {done.stderr[-2000:]}")
    return result


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="the checkout to compare this one with (the code before a cut)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--deliveries", type=int, default=2, help="small deliveries per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "small_delivery.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        emit(measure(args.child, args.events, args.lines, args.deliveries))
        return 0
    if args.against is None:
        parser.error("--against is required")
    work = Path(tempfile.mkdtemp(prefix="bench-small-"))
    sides = {"before": args.against.resolve(), "after": ROOT}
    out: dict = {"events": args.events, "lines": args.lines, "before": [], "after": []}
    try:
        for n in range(args.rounds):
            for side in ("before", "after") if n % 2 == 0 else ("after", "before"):
                out[side].append(_child(sides[side], work / f"{side}-{n}", args))
                print(side, json.dumps(out[side][-1]["small"]), flush=True)
        from lakehouse import tables
        from lakehouse.config import Settings
        from tests.builders import assert_same_rows, delta_scan_sql, duckdb_with_delta

        con = duckdb_with_delta()
        lakes = [Settings(lake=str(work / f"{side}-0" / "lake"), _env_file=None) for side in ("before", "after")]
        for table in tables.names("gold"):
            assert_same_rows(con, *(delta_scan_sql(s, "gold", table, ["*"]) for s in lakes))
        out["gold_equal"] = True
        small = {side: [r["wall_s"] for m in out[side] for r in m["small"]] for side in sides}
        gold = {side: [r["gold"]["seconds"] for m in out[side] for r in m["small"]] for side in sides}
        commits = {side: [r["gold"]["commits"] for m in out[side] for r in m["small"]] for side in sides}
        jobs = {side: [r["gold"]["jobs"] for m in out[side] for r in m["small"]] for side in sides}
        out["median"] = {
            side: {
                "small_s": _median(small[side]),
                "gold_s": _median(gold[side]),
                "gold_commits": _median(commits[side]),
            }
            | {"gold_jobs": _median(jobs[side])}
            for side in sides
        }
        out["after_vs_before"] = {
            "small": round(out["median"]["after"]["small_s"] / out["median"]["before"]["small_s"], 3),
            "gold": round(out["median"]["after"]["gold_s"] / out["median"]["before"]["gold_s"], 3),
        }
        out["load_average"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("median", "after_vs_before", "gold_equal") if k in out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
