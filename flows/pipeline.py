"""The pipeline flows: land → bronze → silver → gold → PostgreSQL mirror, one writer at a time."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.common import FLOW_HOOKS, TASK_OPTIONS, publish_report
from lakehouse import bronze as bronze_stage
from lakehouse import expectations, landing
from lakehouse import gold as gold_stage
from lakehouse import silver as silver_stage
from lakehouse.pgserver import warehouse_dsn
from lakehouse.reports import RunReport, StageReport
from lakehouse.runs import (
    SPARK_STAGES,
    run_stage,
    settings_for,
    skip_stage,
    source_for,
    spark_work_expected,
    spark_work_pending,
    stages_pending,
    writer_lock,
)
from lakehouse.spark import get_spark, warm_up
from lakehouse.warehouse import mirror as mirror_stage

Layer = Literal["silver", "gold"]
Rebuilt = Literal["silver", "gold", "warehouse"]  # a layer a full pipeline rebuilds, with the layers after it


def _run_id() -> str:
    return str(flow_run.id or "local")


@task(name="land", **TASK_OPTIONS)
def land(source: str | None = None, delivery: str | None = None) -> StageReport:
    """Copy new source files into the lake's landing zone."""
    settings = settings_for(source)
    return run_stage("land", settings, lambda: landing.land(settings, source_for(settings, delivery)))


@task(name="bronze", **TASK_OPTIONS)
def bronze() -> StageReport:
    """Ingest pending landing batches into bronze (and quarantine)."""
    settings = settings_for()
    return run_stage("bronze", settings, lambda: bronze_stage.ingest(get_spark(settings), settings, _run_id()))


@task(name="silver", **TASK_OPTIONS)
def silver(full_refresh: bool = False) -> StageReport:
    """Refresh silver from new bronze rows."""
    settings = settings_for()
    return run_stage(
        "silver", settings, lambda: silver_stage.refresh(get_spark(settings), settings, _run_id(), full_refresh)
    )


@task(name="gold", **TASK_OPTIONS)
def gold(full_refresh: bool = False) -> StageReport:
    """Refresh the gold star schema and marts from silver."""
    settings = settings_for()
    return run_stage(
        "gold", settings, lambda: gold_stage.refresh(get_spark(settings), settings, _run_id(), full_refresh)
    )


@task(name="mirror", **TASK_OPTIONS)
def mirror(full_refresh: bool = False) -> StageReport:
    """Bring the PostgreSQL warehouse to what gold holds (rebuilt from gold on a full refresh)."""
    settings = settings_for()
    return run_stage("mirror", settings, lambda: mirror_stage.mirror(settings, full_refresh=full_refresh))


def _refine(full_refresh: Rebuilt | None) -> list[StageReport]:
    return [silver(full_refresh=full_refresh == "silver"), gold(full_refresh=full_refresh in ("silver", "gold"))]


@flow(name="full-pipeline", log_prints=True, **FLOW_HOOKS)
def full_pipeline(
    source: str | None = None, delivery: str | None = None, full_refresh: Rebuilt | None = None
) -> RunReport:
    """Land, ingest, refine and mirror everything new in the source (what `lakehouse run` does); `full_refresh`
    rebuilds that layer and the layers after it (`warehouse`: dw alone, from gold)."""
    settings = settings_for(source)
    expectations.load(settings.expectations)  # a bad expectations file is said in one line, before anything starts
    warehouse_dsn(settings)  # so is what cannot work in PostgreSQL
    refined = full_refresh in ("silver", "gold")
    if refined or spark_work_expected(settings, delivery):
        warm_up(settings)  # Spark starts while landing copies files
    with writer_lock(settings, get_run_logger()) as lock:
        reports = [land(source, delivery)]
        if refined or spark_work_pending(reports[0], settings):
            reports += [bronze(), *_refine(full_refresh)]
        else:
            reports += [skip_stage(name, "nothing new") for name in SPARK_STAGES]
            get_run_logger().info("nothing new to process: Spark not started")
        reports.append(mirror(full_refresh=full_refresh is not None))
    return publish_report("full-pipeline", reports, lock)


@flow(name="land-bronze", log_prints=True, **FLOW_HOOKS)
def land_bronze(source: str | None = None, delivery: str | None = None) -> RunReport:
    """Land new source files and ingest them into bronze."""
    settings = settings_for(source)
    if spark_work_expected(settings, delivery):
        warm_up(settings)
    with writer_lock(settings, get_run_logger()) as lock:
        reports = [land(source, delivery)]
        reports.append(bronze() if spark_work_pending(reports[0], settings) else skip_stage("bronze", "nothing new"))
    return publish_report("land-bronze", reports, lock)


@flow(name="refine", log_prints=True, **FLOW_HOOKS)
def refine(full_refresh: Layer | None = None) -> RunReport:
    """Refine bronze into silver, then gold; optionally rebuild a layer from scratch."""
    settings = settings_for()
    expectations.load(settings.expectations)  # a bad expectations file is said in one line, before anything starts
    if full_refresh or stages_pending(settings):
        warm_up(settings)
    with writer_lock(settings, get_run_logger()) as lock:
        reports = _refine(full_refresh)
    return publish_report("refine", reports, lock)


@flow(name="mirror-warehouse", log_prints=True, **FLOW_HOOKS)
def mirror_warehouse(full_refresh: bool = False) -> RunReport:
    """Mirror gold into the PostgreSQL warehouse (SCD2 dimensions and facts); `full_refresh` rebuilds it from gold."""
    with writer_lock(settings_for(), get_run_logger()) as lock:
        reports = [mirror(full_refresh=full_refresh)]
    return publish_report("mirror-warehouse", reports, lock)
