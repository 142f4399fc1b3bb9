"""The erasure flow: erase learners everywhere (`lakehouse erase`), under the writer lock."""

from __future__ import annotations

from prefect import flow, task
from prefect.runtime import flow_run

from flows.common import TASK_OPTIONS, publish_report, settings_for
from flows.common import stage as announce
from flows.common import writer_lock


@task(name="erase", **TASK_OPTIONS)
def erase(student_ids: list[str]) -> dict:
    """Erase the learners from the lake, its older versions and the warehouse (lakehouse.erasure.erase)."""
    from lakehouse import erasure
    from lakehouse.spark import get_spark

    settings = settings_for()
    with announce("erase") as out:
        out.update(erasure.erase(get_spark(settings), settings, student_ids, str(flow_run.id or "local")))
    return out


@flow(name="erase-students", log_prints=True)
def erase_students(student_ids: list[str] | None = None) -> dict:
    """Erase learners by id from every layer, every Delta version, the landed files and dw; idempotent."""
    if not student_ids:
        raise ValueError("name at least one student id to erase")
    with writer_lock(settings_for()) as lock:
        reports = {"erase": erase(student_ids)}
    return publish_report("erase-students", reports, {"lock": lock})
