"""The erasure flow: erase learners everywhere (`lakehouse erase`), under the writer lock."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.common import FLOW_HOOKS, TASK_OPTIONS, publish_report
from lakehouse import erasure
from lakehouse.reports import RunReport, StageReport
from lakehouse.runs import run_stage, settings_for, writer_lock
from lakehouse.spark import get_spark


@task(name="erase", **TASK_OPTIONS)
def erase(student_ids: list[str]) -> StageReport:
    """Erase the learners from the lake, its older versions and the warehouse (lakehouse.erasure.erase)."""
    settings = settings_for()
    run_id = str(flow_run.id or "local")
    return run_stage("erase", settings, lambda: erasure.erase(get_spark(settings), settings, student_ids, run_id))


@flow(name="erase-students", log_prints=True, **FLOW_HOOKS)
def erase_students(student_ids: list[str] | None = None) -> RunReport:
    """Erase learners by id from every layer, every Delta version, the landed files and dw; idempotent."""
    if not student_ids:
        raise ValueError("name at least one student id to erase")
    with writer_lock(settings_for(), get_run_logger()) as lock:
        reports = [erase(student_ids)]
    return publish_report("erase-students", reports, lock)
