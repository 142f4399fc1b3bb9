"""What the mirror costs for a one-student correction, side by side with a full rebuild of dw, on one lake.

Generates a source (`lakehouse generate --events N`) and runs `lakehouse run` on it; exports one delivery's
students.json again with one student moved (another state and city: the correction of docs/warehouse.md) and runs
`lakehouse run` again, then `lakehouse run --full-refresh warehouse` (each run's mirror stage timed in its report). Then
the three mirrors again, in this process, alternating for `--rounds` rounds, each on a fresh copy of the warehouse
(PostgreSQL's `create database ... template`): the correction (the warehouse as before it, gold after it), the
rebuild in place (`full_refresh`), and a mirror into an empty warehouse; medians. A mirror's seconds are its own
(migrations, fingerprints, staging, load SQL, drift check, commit). Its own data folder and PostgreSQL cluster
(removed at the end unless --keep).
Usage: python -m bench.correction [--events 1000000] [--delivery last|first] [--rounds 3] [--workdir DIR]
       [--out FILE] [--keep]   (--keep leaves the lake and a stopped warehouse in DIR: a later run on it skips
       generating and the first run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from bench.common import LAKEHOUSE, ROOT
from lakehouse.config import Settings
from lakehouse.pgserver import DATABASE, managed
from lakehouse.warehouse.mirror import mirror


def _run(env: dict[str, str], report: Path, *args: str) -> dict:
    """`lakehouse run ARGS`; (its stages' seconds, the mirror's report)."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(LAKEHOUSE), "run", "--report", str(report), *args], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"lakehouse run {' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    stages = json.loads(report.read_text())["stages"]
    mirrored = stages["mirror"]
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": {name: stage["seconds"] for name, stage in stages.items()},
        "mirror_seconds": mirrored["seconds"],
        "mirror": {
            table: {k: v for k, v in load.items() if k in ("status", "gold_version") or v not in (0, [], None)}
            for table, load in mirrored["details"]["tables"].items()
            if load["status"] == "applied"
        },
        "drifted": mirrored["details"]["drifted"],
    }


def _correct(source: Path, which: str) -> dict:
    """Export the delivery's students.json again with its first student moved (to a city never exported before:
    landing takes content it has seen at that path as nothing new); what changed."""
    deliveries = sorted(p for p in (source / "transactional").iterdir() if (p / "students.json").exists())
    path = (deliveries[-1] if which == "last" else deliveries[0]) / "students.json"
    records = json.loads(path.read_text())
    student = records[0]
    before = (student.get("State"), student.get("City"))
    student["State"], student["City"] = ("AM" if before[0] != "AM" else "PA"), f"Moved {time.time_ns()}"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return {
        "delivery": path.parent.name,
        "student": student["Id"],
        "from": before,
        "to": [student["State"], student["City"]],
    }


def _database(settings: Settings, name: str, template: str | None = None) -> str:
    """A new database on the benchmark's cluster, empty or a copy of `template`; its DSN (the cluster's superuser)."""
    admin = managed(settings).admin_dsn
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
        cur.execute(f"create database {name}" + (f" template {template}" if template else ""))
    conn.close()
    return psycopg2.extensions.make_dsn(admin, dbname=name)


def _timed_mirrors(settings: Settings, rounds: int) -> dict:
    """The three mirrors, alternating round by round (a shared machine's noise hits them alike), each on a fresh
    copy: the correction (the warehouse before it, gold after it), the rebuild in place (the warehouse after it,
    `full_refresh`), and a mirror into an empty warehouse; their seconds per round and medians."""
    seconds: dict[str, list[float]] = {"correction": [], "full_refresh": [], "into_empty": []}
    for _ in range(rounds):
        for what, template, full in (
            ("correction", "bench_before", False),
            ("full_refresh", "bench_after", True),
            ("into_empty", None, False),
        ):
            dsn = _database(settings, "bench_round", template)
            seconds[what].append(mirror(settings, dsn=dsn, full_refresh=full).seconds)
    _database(settings, "bench_round")
    medians = {what: statistics.median(values) for what, values in seconds.items()}
    return {
        "rounds": seconds,
        "median_seconds": medians,
        "full_refresh_over_correction": round(medians["full_refresh"] / medians["correction"], 1),
        "into_empty_over_correction": round(medians["into_empty"] / medians["correction"], 1),
    }


def measure(events: int, which: str, work: Path, keep: bool = False, rounds: int = 3) -> dict:
    source, data = work / "source", work / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")},
        "LAKEHOUSE_SOURCE": str(source),
        "LAKEHOUSE_LAKE": str(work / "lake"),
        "LAKEHOUSE_DATA_DIR": str(data),
    }
    settings = Settings(_env_file=None, source=str(source), lake=str(work / "lake"), data_dir=str(data))
    reused = (work / "first.json").exists()  # a workdir measured before: its lake and warehouse as they are
    if not reused:
        subprocess.run([str(LAKEHOUSE), "generate", "--out", str(source), "--events", str(events)], env=env, check=True)
    try:
        first = {"reused": str(work)} if reused else _run(env, work / "first.json")
        _database(settings, "bench_before", DATABASE)  # the warehouse before the correction
        correction = _correct(source, which)
        corrected = _run(env, work / "corrected.json")
        _database(settings, "bench_after", DATABASE)
        rebuilt = _run(env, work / "rebuilt.json", "--full-refresh", "warehouse")
        isolated = _timed_mirrors(settings, rounds)
    finally:
        if keep:
            managed(settings).stop()
        else:
            managed(settings).remove()  # the benchmark's own cluster: its data goes with it
    return {
        "benchmark": "correction",
        "events": events,
        "first_run": first,
        "correction": correction,
        "corrected_run": corrected,
        "full_refresh_run": rebuilt,
        "mirrors": isolated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--delivery", choices=("last", "first"), default="last", help="the delivery corrected")
    parser.add_argument("--workdir", type=Path, help="where the source, lake and data go (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument("--keep", action="store_true", help="keep the warehouse (stopped) to measure again later")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three mirrors timed side by side")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-correction-"))
    result = measure(args.events, args.delivery, work, args.keep, args.rounds)  # an earlier --keep workdir: again
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
