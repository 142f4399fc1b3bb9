"""`make bench`: the pipeline against the alternatives, on the same generated source, one process per contender.

Usage: python -m bench.run [--events 100000,1000000] [--quick] [--only duckdb,casestudy,...]
Writes bench/results/<UTC timestamp>.json, regenerates docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import LAKEHOUSE, PYTHON, ROOT, fresh_database, machine, mask, run_measured, server_dsn

RESULTS = ROOT / "bench" / "results"
DEFAULT_EVENTS = (100_000, 1_000_000)
QUICK_EVENTS = (20_000,)
# fmt: off
CONTENDERS = ("pipeline_stages", "lakehouse_run", "duckdb", "casestudy", "incremental", "mirror", "dashboard",
              "erasure", "expectations", "six_deliveries", "six_deliveries_dv", "growth")
# fmt: on
# The delivery-series scenarios run once, at their own size: deliveries fed one `lakehouse run` at a time.
SERIES_EVENTS = 600_000
# name -> (deliveries, settings of its runs): the same six deliveries with Delta deletion vectors, side by side
SERIES: dict[str, tuple[int, dict[str, str]]] = {
    "six_deliveries": (6, {}),
    "six_deliveries_dv": (6, {"LAKEHOUSE_DELETION_VECTORS": "true"}),
    "growth": (12, {}),
}
SEED = 7
DELIVERIES = 3
EXTRA_DELIVERY = "2017-11-19T06:00:00"
EXTRA_SHARE = 10  # the new delivery holds events // EXTRA_SHARE events


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def students_for(events: int) -> int:
    return max(2000, events // 50)


# -- the sources: generated once per scale, cached by their arguments -------------------------------------


def _generator_digest() -> str:
    return hashlib.sha256((ROOT / "lakehouse" / "tools" / "generate.py").read_bytes()).hexdigest()[:16]


def _cached(folder: Path, key: dict, make) -> tuple[Path, dict]:
    marker = folder / ".bench-source.json"
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        return folder, {**json.loads(marker.read_text()), "cached": True}
    if folder.exists():
        shutil.rmtree(folder)
    start = time.perf_counter()
    summary = make(folder)
    info = {"key": key, "seconds": round(time.perf_counter() - start, 3), **summary}
    marker.write_text(json.dumps(info, default=str))
    return folder, {**info, "cached": False}


def ensure_source(
    scale_dir: Path, events: int, deliveries: int = DELIVERIES, name: str = "source"
) -> tuple[Path, dict]:
    """The scale's source (`deliveries` daily deliveries), generated unless an identical one is cached."""
    from lakehouse.tools.generate import generate

    key = {
        "seed": SEED,
        "students": students_for(events),
        "events": events,
        "deliveries": deliveries,
        "generator": _generator_digest(),
    }

    def make(folder: Path) -> dict:
        summary = generate(folder, seed=SEED, students=students_for(events), events=events, deliveries=deliveries)
        return {
            "event_lines": summary["totals"]["event_lines"],
            "events": summary["totals"]["events"],
            "deliveries": summary["deliveries"],
            "events_by_delivery": {d: i["events"] for d, i in summary["events_by_delivery"].items()},
        }

    return _cached(scale_dir / name, key, make)


def ensure_source_plus(scale_dir: Path, source: Path, events: int) -> tuple[Path, dict]:
    """The source plus one new delivery of about 10% more events (and that day's transactional exports)."""
    from lakehouse.tools.generate import generate

    key = {
        "base": json.loads((source / ".bench-source.json").read_text())["key"],
        "extra_share": EXTRA_SHARE,
        "delivery": EXTRA_DELIVERY,
    }

    def make(folder: Path) -> dict:
        shutil.copytree(source, folder, copy_function=os.link, ignore=shutil.ignore_patterns(".bench-source.json"))
        scratch = scale_dir / "extra-scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        # transactional: the 4th export of the same world (same seed and size, one delivery more)
        world = generate(
            scratch / "world", seed=SEED, students=students_for(events), events=1000, deliveries=DELIVERIES + 1
        )
        shutil.copytree(
            scratch / "world" / "transactional" / world["deliveries"][-1], folder / "transactional" / EXTRA_DELIVERY
        )
        # events: a new day's traffic, another seed so that no event repeats the base source
        extra = generate(
            scratch / "events",
            seed=SEED + 1,
            students=students_for(events),
            events=max(1000, events // EXTRA_SHARE),
            deliveries=1,
        )
        shutil.copytree(scratch / "events" / "events" / extra["deliveries"][0], folder / "events" / EXTRA_DELIVERY)
        shutil.rmtree(scratch, ignore_errors=True)
        return {
            "extra_events": extra["totals"]["events"],
            "extra_event_lines": extra["totals"]["event_lines"],
            "delivery": EXTRA_DELIVERY,
        }

    return _cached(scale_dir / "source_plus", key, make)


# -- contenders ------------------------------------------------------------------------------------------


class Scale:
    """One scale's folders, database server and timeout."""

    def __init__(self, events: int, bench_dir: Path, server: str | None, server_error: str | None, timeout: float):
        self.events = events
        self.dir = bench_dir / str(events)
        self.logs = self.dir / "logs"
        self.server = server
        self.server_error = server_error
        self.timeout = timeout

    def database(self, name: str) -> tuple[str | None, str | None]:
        if self.server is None:
            return None, self.server_error or "no PostgreSQL server"
        try:
            return fresh_database(self.server, f"bench_{name}_{self.events}"), None
        except Exception as exc:  # noqa: BLE001
            return None, mask(f"cannot create database bench_{name}_{self.events}: {exc}".strip())

    def workspace(self, name: str, keep: bool = False) -> Path:
        folder = self.dir / "runs" / name
        if folder.exists() and not keep:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def lakehouse_env(self, source: Path, folder: Path, dsn: str | None) -> dict:
        env = {
            "LAKEHOUSE_SOURCE": str(source),
            "LAKEHOUSE_LAKE": str(folder / "lake"),
            "LAKEHOUSE_DATA_DIR": str(folder / "data"),
            "PREFECT_HOME": str(self.dir.parent / "prefect"),
            "BENCH_EVENTS": str(self.events),
        }
        if dsn:
            env["LAKEHOUSE_PG_DSN"] = dsn
        return env


def _with_db_error(result: dict, db_error: str | None) -> dict:
    if db_error:
        result["database_error"] = db_error
    return result


def pipeline_stages(scale: Scale, source: Path) -> dict:
    folder = scale.workspace("pipeline_stages")
    dsn, db_error = scale.database("stages")
    progress = folder / "progress.json"
    env = {**scale.lakehouse_env(source, folder, dsn), "BENCH_PROGRESS": str(progress)}
    result = run_measured(
        [str(PYTHON), "-m", "bench.pipeline_stages"],
        env=env,
        timeout=scale.timeout,
        log=scale.logs / "pipeline_stages.log",
    )
    if "report" not in result and progress.exists():  # stopped (timeout, crash): keep the stages it finished
        partial = json.loads(progress.read_text())
        running = partial.get("running")
        if running:
            partial["stages"][running] = {
                "ok": False,
                "error": f"still running when the process ended "
                f"({result.get('error', 'exit ' + str(result['returncode']))})",
            }
        result["report"] = {"ok": False, "partial": True, "failed_stage": running, "stages": partial["stages"]}
    report = result.get("report") or {}
    if report:
        result["ok"] = result["ok"] and report.get("ok", False)
        if not report.get("ok") and report.get("failed_stage"):
            stage = report["stages"][report["failed_stage"]]
            result["error"] = f"stage {report['failed_stage']}: {stage.get('error')}"
    return _with_db_error(result, db_error)


def stop_engines(env: dict[str, str]) -> None:
    """Stop the warm engines of a run's data folder."""
    subprocess.run([str(LAKEHOUSE), "engine", "stop"], env={**os.environ, **env}, capture_output=True, timeout=300)


def lakehouse_run(
    scale: Scale,
    source: Path,
    name: str = "lakehouse_run",
    keep: bool = False,
    dsn: str | None = None,
    settings: dict[str, str] | None = None,
) -> dict:
    folder = scale.workspace(name, keep=keep)
    db_error = None
    if dsn is None:
        dsn, db_error = scale.database(name)
    tag = f"{name}-{len(list(folder.glob('run-report*.json')))}"
    report_file = folder / f"run-report-{tag}.json"
    result = run_measured(
        [str(LAKEHOUSE), "run", "--report", str(report_file)],
        env={**scale.lakehouse_env(source, folder, dsn), **(settings or {})},
        timeout=scale.timeout,
        log=scale.logs / f"{tag}.log",
    )
    if report_file.exists():
        result["run_report"] = str(report_file.relative_to(ROOT) if report_file.is_relative_to(ROOT) else report_file)
    result["_dsn"] = dsn
    return _with_db_error(result, db_error)


def baseline(name: str, module: str, scale: Scale, source: Path) -> dict:
    """A baseline script (`python -m MODULE`) over the same source, in its own workspace and database."""
    folder = scale.workspace(name)
    dsn, db_error = scale.database(name)
    env = {"BENCH_PG_DSN": dsn} if dsn else {}
    result = run_measured(
        [str(PYTHON), "-m", module, "--source", str(source), "--workdir", str(folder)],
        env=env,
        timeout=scale.timeout,
        log=scale.logs / f"{name}.log",
    )
    return _with_db_error(result, db_error)


def incremental(scale: Scale, source: Path, first_run: dict | None) -> dict:
    """Re-run with nothing new; then one new delivery, incrementally and as a full rebuild on a fresh lake."""
    out: dict = {}
    if not first_run or not first_run.get("ok"):
        return {"ok": False, "error": "needs a completed `lakehouse run` first (the lakehouse_run contender failed)"}
    dsn = first_run.get("_dsn")
    out["rerun_nothing_new"] = lakehouse_run(scale, source, keep=True, dsn=dsn)
    plus, plus_info = ensure_source_plus(scale.dir, source, scale.events)
    out["source_plus"] = plus_info
    inc = lakehouse_run(scale, plus, keep=True, dsn=dsn)
    out["new_delivery"] = inc
    out["full_rebuild"] = lakehouse_run(scale, plus, name="full_rebuild")
    for part in ("rerun_nothing_new", "new_delivery", "full_rebuild"):
        out[part].pop("_dsn", None)
    out["ok"] = all(out[p]["ok"] for p in ("rerun_nothing_new", "new_delivery", "full_rebuild"))
    if out["new_delivery"]["ok"] and out["full_rebuild"]["ok"]:
        out["new_delivery_vs_full"] = round(out["new_delivery"]["wall_s"] / out["full_rebuild"]["wall_s"], 3)
    errors = [
        f"{p}: {out[p]['error']}" for p in ("rerun_nothing_new", "new_delivery", "full_rebuild") if out[p].get("error")
    ]
    if errors:
        out["error"] = " ; ".join(errors)
    return out


ERASED_STUDENTS = 10


def erasure(scale: Scale, source: Path, first_run: dict | None, dsn: str | None) -> dict:
    """Erase students who have page views from the `lakehouse_run` contender's lake and warehouse (`lakehouse
    erase`), then scan everything for one of them (`lakehouse erase --verify`); each against that lake's first run."""
    import duckdb

    from lakehouse.catalog import extension_path

    if not first_run or not first_run.get("ok"):
        return {"ok": False, "error": "needs a completed `lakehouse run` first (the lakehouse_run contender failed)"}
    folder = scale.dir / "runs" / "lakehouse_run"
    gold = folder / "lake" / "gold"
    con = duckdb.connect()
    con.execute(f"load '{extension_path()}'")
    ids = [
        row[0]
        for row in con.execute(
            f"select distinct student_id from delta_scan('{gold / 'fact_page_view'}') where student_id is not null"
            f" order by hash(student_id) limit {ERASED_STUDENTS}"
        ).fetchall()
    ]
    con.close()
    env = scale.lakehouse_env(source, folder, dsn)
    students = [arg for i in ids for arg in ("--student", i)]
    out: dict = {"students": len(ids)}
    out["erase"] = run_measured(
        [str(LAKEHOUSE), "erase", *students], env=env, timeout=scale.timeout, log=scale.logs / "erase.log"
    )
    out["verify"] = run_measured(
        [str(LAKEHOUSE), "erase", "--verify", ids[0]], env=env, timeout=scale.timeout, log=scale.logs / "verify.log"
    )
    out["ok"] = out["erase"]["ok"] and out["verify"]["ok"]
    out["wall_s"] = out["erase"]["wall_s"]
    out["erase_vs_first_run"] = round(out["erase"]["wall_s"] / first_run["wall_s"], 3)
    out["verify_vs_first_run"] = round(out["verify"]["wall_s"] / first_run["wall_s"], 3)
    return out


def delivery_series(scale: Scale, deliveries: int, settings: dict[str, str], name: str) -> dict:
    """Feed `deliveries` daily deliveries to one lake, one `lakehouse run` each (on the data folder's warm engines,
    as a day's runs go), timing every run; then build a fresh lake from all of them in one run, and compare the two
    lakes' gold tables (DuckDB, every row). `settings`: environment of every run."""
    source, info = ensure_source(scale.dir, scale.events, deliveries, name=f"source-{deliveries}")
    staged = scale.workspace(f"{name}-source")
    dsn, db_error = scale.database(name)
    runs: list[dict] = []
    for delivery in info["deliveries"]:
        for kind in ("transactional", "events"):
            shutil.copytree(source / kind / delivery, staged / kind / delivery, copy_function=os.link)
        run = lakehouse_run(scale, staged, name=name, keep=bool(runs), dsn=dsn, settings=settings)
        run.pop("_dsn", None)
        runs.append({"delivery": delivery, "events": info["events_by_delivery"][delivery], **run})
        log(f"  {name}: delivery {len(runs)}/{deliveries} {run.get('wall_s', '-')} s")
        if not run["ok"]:
            return _with_db_error(
                {"ok": False, "source": info, "runs": runs, "error": f"delivery {delivery}: {run.get('error')}"},
                db_error,
            )
    full = lakehouse_run(scale, staged, name=f"{name}-full", settings=settings)
    full.pop("_dsn", None)
    for folder in (name, f"{name}-full"):  # their engines go now, not after their idle time
        stop_engines(scale.lakehouse_env(staged, scale.dir / "runs" / folder, None))
    out = {"ok": full["ok"], "source": info, "runs": runs, "full": full}
    if full["ok"]:
        out["differences"] = gold_differences(
            scale.dir / "runs" / name / "lake", scale.dir / "runs" / f"{name}-full" / "lake"
        )
        out["ok"] = not out["differences"]
        out["last_vs_full"] = round(runs[-1]["wall_s"] / full["wall_s"], 3)
    if len(runs) >= 3:
        out["last_vs_third"] = round(runs[-1]["wall_s"] / runs[2]["wall_s"], 3)
    if not out["ok"]:
        out["error"] = full.get("error") or f"gold differs: {out.get('differences')}"
    return _with_db_error(out, db_error)


def expectations_cost(scale: Scale, source: Path) -> dict:
    """What the project's own expectations cost (bench/expectations.py): silver and gold from one bronze, with none
    and with the project's file, alternating in one process; the difference as a share of the run without them."""
    folder = scale.workspace("expectations")
    result = run_measured(
        [str(PYTHON), "-m", "bench.expectations"],
        env=scale.lakehouse_env(source, folder, None),
        timeout=scale.timeout,
        log=scale.logs / "expectations.log",
    )
    report = result.pop("report", None) or {}
    result["ok"] = result["ok"] and report.get("ok", False)
    result.update({k: v for k, v in report.items() if k != "ok"})
    return result


def gold_differences(a: Path, b: Path) -> dict[str, int]:
    """Rows each gold table of lake `a` has and `b` has not, or the reverse."""
    import duckdb

    from lakehouse.catalog import extension_path

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"load '{extension_path()}'")
    out = {}
    for table in sorted(p.name for p in (a / "gold").iterdir() if (p / "_delta_log").is_dir()):
        x, y = (f"delta_scan('{lake / 'gold' / table}')" for lake in (a, b))
        diff = con.execute(
            f"select (select count(*) from (from {x} except all from {y})) + "
            f"(select count(*) from (from {y} except all from {x}))"
        ).fetchall()[0][0]
        if diff:
            out[table] = diff
    con.close()
    return out


def external(scale: Scale, module: str, source: Path, lake_folder: Path, quick: bool) -> dict:
    dsn, db_error = (None, None)
    if module == "mirror":
        dsn, db_error = scale.database("mirror")
    context = {
        "lake": str(lake_folder / "lake"),
        "source": str(source),
        "data_dir": str(lake_folder / "data"),
        "dsn": dsn,
        "events": scale.events,
        "workdir": str(scale.workspace(module)),
        "quick": quick,
        "repeat": 5 if quick else 30,
    }
    env = scale.lakehouse_env(source, lake_folder, dsn)
    result = run_measured(
        [str(PYTHON), "-m", "bench.external", module, json.dumps(context)],
        env=env,
        timeout=scale.timeout,
        log=scale.logs / f"{module}.log",
    )
    result["cmd"] = f"python -m bench.external {module} <context>"
    report = result.pop("report", None) or {}
    result["ok"] = result["ok"] and report.get("ok", False)
    for key in ("missing", "error", "function", "traceback"):
        if key in report:
            result[key] = report[key]
    if "report" in report:
        result["report"] = report["report"]
    return _with_db_error(result, db_error)


def bench_scale(
    events: int,
    bench_dir: Path,
    wanted: set[str],
    server: str | None,
    server_error: str | None,
    timeout: float,
    quick: bool,
    out: dict,
    save,
    casestudy_max: int,
) -> dict:
    scale = Scale(events, bench_dir, server, server_error, timeout)
    log(f"{events:,} events: source")
    source, info = ensure_source(scale.dir, events)
    out.update({"events": events, "source": info, "contenders": {}})
    c = out["contenders"]

    def step(name: str, fn, *args):
        if name not in wanted:
            return None
        log(f"{events:,} events: {name}")
        try:
            c[name] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - a broken contender never stops the others
            c[name] = {"ok": False, "error": mask(f"harness: {type(exc).__name__}: {exc}")[:600]}
        status = "ok" if c[name].get("ok") else f"FAILED: {c[name].get('error', '')[:200]}"
        log(f"{events:,} events: {name} {c[name].get('wall_s', '-')} s, {status}")
        save()
        return c[name]

    step("pipeline_stages", pipeline_stages, scale, source)
    first = step("lakehouse_run", lakehouse_run, scale, source)
    step("duckdb", baseline, "duckdb", "bench.duckdb_pipeline", scale, source)
    if events <= casestudy_max:
        step("casestudy", baseline, "casestudy", "bench.casestudy", scale, source)
    elif "casestudy" in wanted:
        c["casestudy"] = {
            "ok": False,
            "skipped": True,
            "error": f"skipped above {casestudy_max:,} events (--casestudy-max-events): toPandas() of "
            "the whole dataset and one INSERT per row take hours at this scale",
        }
    step("incremental", incremental, scale, source, first)
    first_dsn = first.pop("_dsn", None) if first is not None else None
    lake_folder = scale.dir / "runs" / "lakehouse_run"
    step("mirror", external, scale, "mirror", source, lake_folder, quick)
    step("dashboard", external, scale, "dashboard", source, lake_folder, quick)
    step("expectations", expectations_cost, scale, source)
    step("erasure", erasure, scale, source, first, first_dsn)  # last: it rewrites the first run's lake
    for folder in (scale.dir / "runs").glob("*"):
        stop_engines(scale.lakehouse_env(source, folder, None))
    return out


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of the lakehouse against the alternatives.")
    parser.add_argument(
        "--events",
        default=None,
        help="comma-separated scales (default 100000,1000000; --quick: 20000); 10000000 on request",
    )
    parser.add_argument("--quick", action="store_true", help="a small scale and fewer query repetitions")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CONTENDERS)}")
    parser.add_argument("--skip", default="", help="comma-separated contenders to leave out")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed to each contender process")
    parser.add_argument(
        "--casestudy-max-events", type=int, default=1_000_000, help="largest scale the case study's way is run at"
    )
    parser.add_argument(
        "--series-events",
        type=int,
        default=SERIES_EVENTS,
        help="events in all of a delivery-series scenario (six_deliveries, growth)",
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--no-docs", action="store_true", help="do not regenerate docs/benchmarks.md")
    args = parser.parse_args(argv)

    scales = (
        [int(x.replace("_", "")) for x in args.events.split(",")]
        if args.events
        else list(QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    )
    wanted = set(args.only.split(",")) if args.only else set(CONTENDERS)
    wanted -= set(filter(None, args.skip.split(",")))
    unknown = wanted - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")

    signal.signal(signal.SIGTERM, _interrupted)
    started = datetime.now(UTC)
    result: dict = {
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "args": {"events": scales, "quick": args.quick, "contenders": sorted(wanted)},
        "scales": {},
    }
    args.workdir.mkdir(parents=True, exist_ok=True)
    server, server_error = None, None
    if wanted & {"pipeline_stages", "lakehouse_run", "duckdb", "casestudy", "incremental", "mirror"}:
        try:
            server = server_dsn(args.workdir.resolve())
        except Exception as exc:  # noqa: BLE001
            server_error = mask(f"PostgreSQL unavailable: {exc}")
            log(server_error)
    from bench import report

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"

    def save() -> None:
        """Write the results so far (a run cut short still leaves its figures)."""
        result["targets"] = report.targets(result)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        tmp.replace(path)

    for events in scales if wanted - set(SERIES) else []:
        result["scales"][str(events)] = {}
        bench_scale(
            events,
            args.workdir.resolve(),
            wanted,
            server,
            server_error,
            args.timeout,
            args.quick,
            result["scales"][str(events)],
            save,
            args.casestudy_max_events,
        )
    series = [n for n in SERIES if n in wanted]
    if series:
        key = str(args.series_events)
        result["scales"].setdefault(key, {"events": args.series_events, "contenders": {}})
        contenders = result["scales"][key].setdefault("contenders", {})
        scale = Scale(args.series_events, args.workdir.resolve(), server, server_error, args.timeout)
        for name in series:
            deliveries, settings = SERIES[name]
            log(f"{args.series_events:,} events: {name} ({deliveries} deliveries, one run each)")
            try:
                contenders[name] = delivery_series(scale, deliveries, settings, name)
            except Exception as exc:  # noqa: BLE001 - a broken contender never stops the others
                contenders[name] = {"ok": False, "error": mask(f"harness: {type(exc).__name__}: {exc}")[:600]}
            save()
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    log(f"results: {path.relative_to(ROOT)}")
    if not args.no_docs:
        report.write_docs(result, path)
    report.print_tables(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
