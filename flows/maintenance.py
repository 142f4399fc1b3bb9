"""Weekly Delta maintenance: compaction, then a vacuum dry run reported before the vacuum itself."""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from pyspark.sql import DataFrame

from flows.common import TASK_OPTIONS
from lakehouse.catalog import lake_tables
from lakehouse.config import DELTA_LAYERS, Settings
from lakehouse.delta import TABLE_PROPERTIES
from lakehouse.runs import settings_for, writer_lock
from lakehouse.spark import get_spark

_UNITS = {"hour": 1, "hours": 1, "day": 24, "days": 24, "week": 168, "weeks": 168}


def _hours(interval: str) -> float:
    """Hours in a Delta interval such as `interval 7 days`."""
    match = re.fullmatch(r"\s*(?:interval\s+)?(\d+)\s+(\w+)\s*", interval.lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"cannot read the Delta interval {interval!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


RETENTION_PROPERTIES = ("delta.deletedFileRetentionDuration", "delta.logRetentionDuration")


def retention_hours(properties: dict[str, str], retain_hours: float = 0) -> float:
    """The vacuum retention for a table with these properties: never shorter than its log retention, so every version
    its log still offers keeps its files, nor than its deleted-file retention."""
    return max([retain_hours, *(_hours(properties[key]) for key in RETENTION_PROPERTIES if properties.get(key))])


def min_retain_hours() -> float:
    """The shortest vacuum retention that keeps time travel whole for the lake's tables."""
    return retention_hours(TABLE_PROPERTIES)


def _sql(settings: Settings, layer: str, name: str, command: str) -> DataFrame:
    """Run `command` (with `{table}` for the table) on one lake table: SQL, so it runs over Spark Connect too."""
    path = settings.table_path(layer, name).replace("`", "``")
    return get_spark(settings).sql(command.format(table=f"delta.`{path}`"))


@task(name="compact", task_run_name="compact {layer}.{name}", **TASK_OPTIONS)
def compact(layer: str, name: str) -> dict:
    """OPTIMIZE one table: bin-pack small files."""
    metrics = _sql(settings_for(), layer, name, "OPTIMIZE {table}").collect()[0]["metrics"]
    return {
        "table": f"{layer}.{name}",
        "files removed": metrics["numFilesRemoved"],
        "files added": metrics["numFilesAdded"],
    }


@task(name="vacuum-dry-run", task_run_name="vacuum dry run {layer}.{name}", **TASK_OPTIONS)
def vacuum_dry_run(layer: str, name: str, retain_hours: float) -> dict:
    """List the files a vacuum with this retention would delete (nothing is deleted)."""
    files = _sql(settings_for(), layer, name, f"VACUUM {{table}} RETAIN {retain_hours} HOURS DRY RUN")
    sample = [row[0].rsplit("/", 1)[-1] for row in files.limit(5).collect()]
    return {"table": f"{layer}.{name}", "would delete": files.count(), "sample": ", ".join(sample)}


@task(name="vacuum", task_run_name="vacuum {layer}.{name}", **TASK_OPTIONS)
def vacuum(layer: str, name: str, retain_hours: float) -> dict:
    """VACUUM one table with a retention that keeps every version the query layer can travel to."""
    settings = settings_for()
    properties = dict(_sql(settings, layer, name, "DESCRIBE DETAIL {table}").collect()[0]["properties"] or {})
    retention = retention_hours(properties, retain_hours)
    _sql(settings, layer, name, f"VACUUM {{table}} RETAIN {retention} HOURS").collect()
    return {"table": f"{layer}.{name}", "retain hours": retention}


@flow(name="maintenance", log_prints=True)
def maintenance(
    layers: list[str] | None = None, retain_hours: float | None = None, compaction: bool = True, dry_run: bool = False
) -> dict:
    """Compact every Delta table (of `layers`, all by default), report what a vacuum would delete, then vacuum (unless
    dry_run)."""
    from prefect.artifacts import create_table_artifact

    floor = min_retain_hours()
    retain = floor if retain_hours is None else retain_hours
    if retain < floor:
        raise ValueError(f"retain_hours={retain_hours} would break time travel: at least {floor:g} hours")
    layers = list(DELTA_LAYERS) if layers is None else layers
    unknown = sorted(set(layers) - set(DELTA_LAYERS))
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; expected some of {', '.join(DELTA_LAYERS)}")
    settings = settings_for()
    log = get_run_logger()
    with writer_lock(settings, log) as lock:
        tables = [(t.layer, t.name) for t in lake_tables(settings, layers)]
        log.info("%d Delta tables under %s", len(tables), ", ".join(layers))
        compacted = [compact(layer, name) for layer, name in tables] if compaction else []
        planned = [vacuum_dry_run(layer, name, retain) for layer, name in tables]
        if planned:
            create_table_artifact(
                table=planned,
                key="maintenance-vacuum-dry-run",
                description=f"files a vacuum retaining {retain:g} h would delete",
            )
        vacuumed = [] if dry_run else [vacuum(layer, name, retain) for layer, name in tables]
    if compacted:
        create_table_artifact(table=compacted, key="maintenance-compaction", description="OPTIMIZE per table")
    return {
        "flow": "maintenance",
        "retain_hours": retain,
        "tables": len(tables),
        "compacted": compacted,
        "vacuum_dry_run": planned,
        "vacuumed": vacuumed,
        "lock": lock,
    }
