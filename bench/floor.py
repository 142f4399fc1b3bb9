"""What a small delivery costs: a lake built from five daily deliveries, then a sixth of a few hundred event lines,
run by `lakehouse run` side by side on two copies of that lake: with the engines off (every run starts its JVM and a
temporary Prefect server, LAKEHOUSE_ENGINE_IDLE=0) and on the data folder's warm engines (started by a run before,
as the day's earlier run would have). Both copies then hold the same gold (DuckDB, every row).

Usage: python -m bench.floor [--events 100000] [--lines 300] [--rounds 2] [--out bench/results/floor.json]
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

LAKEHOUSE = Path(sys.executable).with_name("lakehouse")


def _run(env: dict[str, str], timeout: float = 3600) -> dict:
    started = time.perf_counter()
    done = subprocess.run([str(LAKEHOUSE), "run"], env=env, capture_output=True, text=True, timeout=timeout)
    seconds = round(time.perf_counter() - started, 2)
    if done.returncode:
        raise RuntimeError(f"lakehouse run failed: {done.stderr[-2000:]}")
    last = json.loads((Path(env["LAKEHOUSE_DATA_DIR"]) / "last-run.json").read_text())
    stages = {name: {k: s[k] for k in ("seconds", "commits", "jobs")} for name, s in last["stages"].items()}
    return {"wall_s": seconds, "stages": stages}


def _small_delivery(source: Path, later: list[str], day: str, round_: int, lines: int) -> None:
    """A delivery folder dated `day` of `lines` event lines the lake has not seen: the round's slice of the generated
    sixth delivery (events of students the lake knows, pages it knows, new moments)."""
    folder = source / "events" / day
    folder.mkdir(parents=True)
    (folder / "part-00000.json").write_text("\n".join(later[round_ * lines : (round_ + 1) * lines]) + "\n")


def measure(events: int, lines: int, rounds: int) -> dict:
    import psycopg2

    from lakehouse.pgserver import ManagedPostgres
    from lakehouse.tools.generate import generate
    from tests.builders import assert_same_rows, delta_scan_sql, duckdb_with_delta

    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    generated = work / "generated"
    generate(generated, seed=13, students=max(200, events // 50), events=events, deliveries=6)
    sixth = sorted((generated / "events").iterdir())[-1]
    later = [ln for f in sorted(sixth.glob("*.json")) for ln in f.read_text().splitlines() if ln]
    for kind in ("events", "transactional"):
        shutil.rmtree(generated / kind / sixth.name)
    if len(later) < rounds * lines:
        raise ValueError(f"the sixth delivery has {len(later)} event lines, fewer than {rounds} x {lines}")
    cluster = ManagedPostgres(work / "pg")
    cluster.start()
    admin = cluster.admin_dsn
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PREFECT_"))}

    def env_of(name: str, idle: str) -> dict[str, str]:
        return {
            **base,
            "LAKEHOUSE_SOURCE": str(work / "source"),
            "LAKEHOUSE_LAKE": str(work / name / "lake"),
            "LAKEHOUSE_DATA_DIR": str(work / name / "data"),
            "LAKEHOUSE_PG_DSN": admin.rsplit("/", 1)[0] + "/" + name,
            "LAKEHOUSE_ENGINE_IDLE": idle,
        }

    try:
        shutil.copytree(generated, work / "source")
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("create database cold")
        built = _run(env_of("cold", "0"))
        with conn.cursor() as cur:
            cur.execute("create database warm template cold")
        conn.close()
        shutil.copytree(work / "cold", work / "warm", symlinks=True)
        _run(env_of("warm", "30m"))  # nothing new: starts the warm copy's engines, as an earlier run would have
        out: dict = {"events": events, "lines": lines, "five_deliveries": built, "cold": [], "warm": []}
        for n in range(rounds):
            _small_delivery(work / "source", later, f"2017-12-{n + 1:02d}", n, lines)
            out["cold"].append(_run(env_of("cold", "0")))
            out["warm"].append(_run(env_of("warm", "30m")))
        con = duckdb_with_delta()
        from lakehouse import tables
        from lakehouse.config import Settings

        lakes = [Settings(lake=str(work / n / "lake"), _env_file=None) for n in ("cold", "warm")]
        for table in tables.names("gold"):
            assert_same_rows(con, *(delta_scan_sql(s, "gold", table, ["*"]) for s in lakes))
        out["gold_equal"] = True
        out["load_average"] = os.getloadavg()
        cold = sorted(r["wall_s"] for r in out["cold"])[len(out["cold"]) // 2]
        warm = sorted(r["wall_s"] for r in out["warm"])[len(out["warm"]) // 2]
        out["median_s"] = {"cold": cold, "warm": warm}
        out["warm_vs_cold"] = round(warm / cold, 3)
        return out
    finally:
        subprocess.run([str(LAKEHOUSE), "engine", "stop"], env=env_of("warm", "30m"), capture_output=True)
        cluster.remove()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/floor.json"))
    args = parser.parse_args(argv)
    result = measure(args.events, args.lines, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
