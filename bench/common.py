"""What the benchmark contenders share: child-process protocol, memory sampling, PostgreSQL databases, machine facts."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
LAKEHOUSE = ROOT / ".venv" / "bin" / "lakehouse"
RESULT_PREFIX = "BENCH_RESULT "
MIB = 1024 * 1024


def emit(result: dict) -> None:
    """Print a contender's result as the one line the harness reads back."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def baseline_parser(doc: str) -> argparse.ArgumentParser:
    """The command line every baseline script takes: --source, --dsn (default $BENCH_PG_DSN), --workdir."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument(
        "--dsn", default=os.environ.get("BENCH_PG_DSN"), help="PostgreSQL DSN (default: $BENCH_PG_DSN); none: no load"
    )
    parser.add_argument("--workdir", type=Path, required=True)
    return parser


def read_result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def _resident(proc: psutil.Process) -> int:
    """Proportional set size where the kernel gives it (shared pages split among their sharers), else RSS. With RSS
    a child the JVM forks to run a command shows the JVM's whole heap for a moment, and the tree's sum doubles."""
    try:
        return proc.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return proc.memory_info().rss


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """Resident memory of a process and of all its descendants (bytes; PSS on Linux)."""
    try:
        own = _resident(proc)
        kids = proc.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0, 0
    rest = 0
    for kid in kids:
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # exited meanwhile, or not ours
            rest += _resident(kid)
    return own, rest


class PeakSampler:
    """Samples the RSS of a process tree every `interval` seconds in a thread; keeps the peaks. Once a second: the
    kernel walks a process's page tables to give its PSS, about 60 ms of CPU for a 2 GiB JVM, so sampling 10 times a
    second took 28 % of a core from the run it measured (on 2 cores), against 7 % once a second."""

    def __init__(self, pid: int | None = None, interval: float = 1.0):
        self.proc = psutil.Process(pid or os.getpid())
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.reset()

    def reset(self) -> None:
        self.peak_total = self.peak_root = self.peak_children = 0

    def sample(self) -> None:
        own, rest = tree_rss(self.proc)
        self.peak_root = max(self.peak_root, own)
        self.peak_children = max(self.peak_children, rest)
        self.peak_total = max(self.peak_total, own + rest)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> PeakSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def figures(self) -> dict:
        return {
            "peak_rss_mib": round(self.peak_total / MIB, 1),
            "peak_rss_python_mib": round(self.peak_root / MIB, 1),
            "peak_rss_children_mib": round(self.peak_children / MIB, 1),
        }


def run_measured(
    cmd: list[str], env: dict | None = None, timeout: float | None = None, log: Path | None = None
) -> dict:
    """Run `cmd` as a subprocess; wall time, peak RSS of its process tree, its BENCH_RESULT (if any), errors."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    sampler = PeakSampler(proc.pid).start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        stdout, stderr = proc.communicate()
        timed_out = True
    except BaseException:  # interrupted: leave no JVM behind
        _kill_tree(proc)
        sampler.stop()
        raise
    wall = time.perf_counter() - start
    sampler.stop()
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(map(str, cmd))}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    out = {
        "cmd": mask(" ".join(str(c) for c in cmd)),
        "returncode": proc.returncode,
        "wall_s": round(wall, 3),
        **sampler.figures(),
        "ok": proc.returncode == 0 and not timed_out,
    }
    result = read_result(stdout)
    if result is not None:
        out["report"] = result
    if timed_out:
        out["error"] = f"timed out after {timeout:.0f} s"
    elif proc.returncode != 0:
        out["error"] = mask(last_error(stderr or stdout))
    if log is not None:
        out["log"] = str(log.relative_to(ROOT)) if log.is_relative_to(ROOT) else str(log)
    return out


def mask(text: str) -> str:
    """Hide DSN passwords in text that goes into results."""
    from lakehouse.config import mask_dsn

    return mask_dsn(text)


def _kill_tree(proc: subprocess.Popen) -> None:
    with suppress(psutil.NoSuchProcess):  # already gone
        parent = psutil.Process(proc.pid)
        for kid in parent.children(recursive=True):
            kid.kill()
        parent.kill()


def last_error(text: str, lines: int = 3) -> str:
    """The most telling lines of a failed process's output."""
    rows = [r.rstrip() for r in text.strip().splitlines() if r.strip() and not r.strip().startswith("at ")]
    errors = [r for r in rows if re.search(r"(Error|Exception|error:|No such|not found)", r)]
    picked = errors[-lines:] if errors else rows[-lines:]
    return " | ".join(p.strip() for p in picked)[:600]


@contextmanager
def stopwatch(into: dict, key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - start, 3)


# -- PostgreSQL: one database per contender ---------------------------------------------------------------


def server_dsn(bench_dir: Path) -> str:
    """DSN of the server the benchmarks use: `LAKEHOUSE_PG_DSN`, else a managed cluster of their own."""
    dsn = os.environ.get("LAKEHOUSE_PG_DSN")
    if dsn:
        return dsn
    from lakehouse.pgserver import ManagedPostgres

    server = ManagedPostgres(bench_dir / "postgres")
    server.start()
    return server.admin_dsn  # the benchmarks create and drop databases


def with_database(dsn: str, database: str) -> str:
    """The same server, another database."""
    if "://" in dsn:
        head, _, tail = dsn.rpartition("/")
        query = ("?" + tail.split("?", 1)[1]) if "?" in tail else ""
        return f"{head}/{database}{query}"
    parts = [p for p in dsn.split() if not p.startswith("dbname=")]
    return " ".join([*parts, f"dbname={database}"])


def fresh_database(dsn: str, database: str) -> str:
    """Drop and create `database` on the server of `dsn`; return its DSN."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{database}" with (force)')
            cur.execute(f'create database "{database}"')
    finally:
        conn.close()
    return with_database(dsn, database)


# -- the machine ------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with suppress(OSError):  # no /proc (not Linux): the fallback below
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        return (out.stderr or out.stdout).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unavailable"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def fresh_schema(dsn: str, schema: str):
    """A PostgreSQL connection whose open transaction has dropped `schema` and created it again, empty."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"drop schema if exists {schema} cascade; create schema {schema}")
    except BaseException:
        conn.close()
        raise
    return conn


def machine() -> dict:
    """What the figures were measured on."""
    vm = psutil.virtual_memory()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(vm.total / 1024**3, 1),
        "memory_available_gib": round(vm.available / 1024**3, 1),
        "load_average_at_start": [round(x, 2) for x in load] if load[0] is not None else None,
        "python": platform.python_version(),
        "java": _java_version(),
        "spark": _version("pyspark"),
        "delta_spark": _version("delta-spark"),
        "duckdb": _version("duckdb"),
        "prefect": _version("prefect"),
        "psycopg2": _version("psycopg2-binary"),
    }
