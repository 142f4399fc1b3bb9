"""The erasure flow: erase learners everywhere (`lakehouse erase`), under the writer lock. The ids come in a file, so
Prefect stores its path, never them: flow and task parameters, logs and artifacts hold at most counts."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.common import FLOW_HOOKS, TASK_OPTIONS, publish_report
from lakehouse import erasure
from lakehouse.reports import RunReport, StageReport
from lakehouse.runs import run_stage, settings_for, writer_lock
from lakehouse.spark import get_spark


@task(name="erase", **TASK_OPTIONS)
def erase(ids_file: str) -> StageReport:
    """Erase the learners named in `ids_file` from the lake, its logs and older versions, and the warehouse."""
    settings = settings_for()
    run_id = str(flow_run.id or "local")
    ids = erasure.student_ids(Path(ids_file).read_text().splitlines())
    return run_stage("erase", settings, lambda: erasure.erase(get_spark(settings), settings, ids, run_id))


@flow(name="erase-students", log_prints=True, **FLOW_HOOKS)
def erase_students(ids_file: str | None = None) -> RunReport:
    """Erase the learners whose ids `ids_file` lists (one a line, on the machine that runs the flow) from every
    layer, every Delta log and version, the landed files and dw; idempotent."""
    if not ids_file:
        raise ValueError("give ids_file: a file of the student ids to erase, one a line (never the ids themselves)")
    with writer_lock(settings_for(), get_run_logger()) as lock:
        reports = [erase(ids_file)]
    get_run_logger().info("erased %d learner(s)", reports[0].details["students"])
    return publish_report("erase-students", reports, lock)
