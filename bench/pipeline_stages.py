"""Our pipeline stage by stage in one process and one Spark session: wall time and peak memory of each stage.

Configuration comes from the `LAKEHOUSE_*` environment the harness sets (source, lake, data dir, PostgreSQL DSN).
Usage: python -m bench.pipeline_stages   (prints one BENCH_RESULT JSON line)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from bench.common import PeakSampler, emit, mask
from lakehouse import bronze, gold, landing, silver
from lakehouse.reports import StageReport
from lakehouse.warehouse import mirror as warehouse

STAGES: tuple[tuple[str, Callable[..., StageReport], bool], ...] = (  # name, stage, needs spark
    ("land", landing.land, False),
    ("bronze", bronze.ingest, True),
    ("silver", silver.refresh, True),
    ("gold", gold.refresh, True),
    ("mirror", warehouse.mirror, False),
)
MAX_REPORT_CHARS = 20_000


def _short(report: StageReport) -> dict:
    """The report as data, its details cut short when they are long."""
    text = json.dumps(report.details, default=str)
    details = report.details if len(text) <= MAX_REPORT_CHARS else {"truncated": text[:MAX_REPORT_CHARS]}
    return dataclasses.replace(report, details=details).as_dict()


def _error(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return mask(f"{type(exc).__name__}: {first}")[:600]


def _progress(stages: dict, running: str | None = None) -> None:
    """Stage figures so far, to `$BENCH_PROGRESS`: what the harness keeps when it has to stop this process."""
    path = os.environ.get("BENCH_PROGRESS")
    if path:
        with open(path + ".tmp", "w") as handle:
            json.dump({"stages": stages, "running": running, "at": time.time()}, handle, default=str)
        os.replace(path + ".tmp", path)


def run() -> dict:
    """Every stage in order; a stage that cannot run is recorded and the ones after it are skipped."""
    from lakehouse.config import Settings

    settings = Settings()
    run_id = "bench-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    sampler = PeakSampler().start()
    stages: dict[str, dict] = {}
    spark = None
    failed = None
    start = time.perf_counter()
    for name, stage, needs_spark in (("spark_start", None, False), *STAGES):
        if failed:
            stages[name] = {"ok": False, "skipped": True, "error": f"not run: {failed} failed"}
            continue
        sampler.reset()
        sampler.sample()
        t = time.perf_counter()
        entry: dict = {}
        _progress(stages, running=name)
        try:
            if name == "spark_start":
                from lakehouse.spark import get_spark

                spark = get_spark(settings)
                entry.update(ok=True, report={"master": settings.spark_master})
            else:
                assert stage is not None
                report = stage(spark, settings, run_id) if needs_spark else stage(settings)
                entry.update(ok=True, report=_short(report))
        except Exception as exc:  # noqa: BLE001 - recorded, the harness goes on
            entry.update(ok=False, error=_error(exc), traceback=mask(traceback.format_exc()[-2000:]))
        entry["wall_s"] = round(time.perf_counter() - t, 3)
        sampler.sample()
        entry.update(sampler.figures())
        stages[name] = entry
        if not entry["ok"]:
            failed = name
        _progress(stages)
    total = round(time.perf_counter() - start, 3)
    sampler.stop()
    if spark is not None:
        spark.stop()
    return {"run_id": run_id, "ok": failed is None, "failed_stage": failed, "stages": stages, "total_s": total}


if __name__ == "__main__":
    emit(run())
