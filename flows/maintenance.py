"""Weekly Delta maintenance (lakehouse.maintenance): compaction, a vacuum dry run reported, then the vacuum."""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.common import FLOW_HOOKS, TASK_OPTIONS
from lakehouse import maintenance as M
from lakehouse.catalog import lake_tables
from lakehouse.runs import settings_for, writer_lock
from lakehouse.spark import get_spark


@task(name="compact", task_run_name="compact {layer}.{name}", **TASK_OPTIONS)
def compact(layer: str, name: str) -> M.Compaction:
    """OPTIMIZE one table: bin-pack small files."""
    settings = settings_for()
    return M.compact(get_spark(settings), settings, layer, name)


@task(name="vacuum-dry-run", task_run_name="vacuum dry run {layer}.{name}", **TASK_OPTIONS)
def vacuum_dry_run(layer: str, name: str, retain_hours: float) -> M.VacuumPlan:
    """List the files a vacuum with this retention would delete (nothing is deleted)."""
    settings = settings_for()
    return M.vacuum_plan(get_spark(settings), settings, layer, name, retain_hours)


@task(name="vacuum", task_run_name="vacuum {layer}.{name}", **TASK_OPTIONS)
def vacuum(layer: str, name: str, retain_hours: float) -> M.Vacuum:
    """VACUUM one table with a retention that keeps every version the query layer can travel to."""
    settings = settings_for()
    return M.vacuum(get_spark(settings), settings, layer, name, retain_hours)


@flow(name="maintenance", log_prints=True, **FLOW_HOOKS)
def maintenance(
    layers: list[str] | None = None, retain_hours: float | None = None, compaction: bool = True, dry_run: bool = False
) -> M.MaintenanceReport:
    """Compact every Delta table (of `layers`, all by default), report what a vacuum would delete, then vacuum (unless
    dry_run)."""
    retain = M.checked_retention(retain_hours)
    layers = M.checked_layers(layers)
    settings = settings_for()
    log = get_run_logger()
    with writer_lock(settings, log) as lock:
        tables = [(t.layer, t.name) for t in lake_tables(settings, layers)]
        log.info("%d Delta tables under %s", len(tables), ", ".join(layers))
        report = M.MaintenanceReport(retain, len(tables), lock=lock)
        report.compacted = [compact(layer, name) for layer, name in tables] if compaction else []
        report.planned = [vacuum_dry_run(layer, name, retain) for layer, name in tables]
        if report.planned:
            create_table_artifact(
                table=[dataclasses.asdict(p) for p in report.planned],
                key="maintenance-vacuum-dry-run",
                description=f"files a vacuum retaining {retain:g} h would delete",
            )
        report.vacuumed = [] if dry_run else [vacuum(layer, name, retain) for layer, name in tables]
    if report.compacted:
        create_table_artifact(
            table=[dataclasses.asdict(c) for c in report.compacted],
            key="maintenance-compaction",
            description="OPTIMIZE per table",
        )
    return report
