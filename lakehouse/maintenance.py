"""Delta maintenance of the lake's tables: compaction (OPTIMIZE), then a vacuum whose retention never breaks time
travel, with a dry run reported first. SQL, so it runs on a local session and over Spark Connect alike."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from lakehouse.config import DELTA_LAYERS, Settings
from lakehouse.delta import TABLE_PROPERTIES
from lakehouse.reports import LockReport

_UNITS = {"hour": 1, "hours": 1, "day": 24, "days": 24, "week": 168, "weeks": 168}
RETENTION_PROPERTIES = ("delta.deletedFileRetentionDuration", "delta.logRetentionDuration")


@dataclass
class Compaction:
    """One table's OPTIMIZE: data files it replaced and wrote."""

    table: str
    files_removed: int
    files_added: int


@dataclass
class VacuumPlan:
    """What a vacuum with `retain_hours` would delete from one table (nothing deleted): how many files, a few names."""

    table: str
    would_delete: int
    sample: str


@dataclass
class Vacuum:
    """One table's vacuum and the retention it kept."""

    table: str
    retain_hours: float


@dataclass
class MaintenanceReport:
    """A maintenance run: the retention asked for, the tables it covered, and what each step did."""

    retain_hours: float
    tables: int
    compacted: list[Compaction] = field(default_factory=list)
    planned: list[VacuumPlan] = field(default_factory=list)
    vacuumed: list[Vacuum] = field(default_factory=list)
    lock: LockReport = field(default_factory=LockReport)


def _hours(interval: str) -> float:
    """Hours in a Delta interval such as `interval 7 days`."""
    match = re.fullmatch(r"\s*(?:interval\s+)?(\d+)\s+(\w+)\s*", interval.lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"cannot read the Delta interval {interval!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def retention_hours(properties: dict[str, str], retain_hours: float = 0) -> float:
    """The vacuum retention for a table with these properties: never shorter than its log retention, so every version
    its log still offers keeps its files, nor than its deleted-file retention."""
    return max([retain_hours, *(_hours(properties[key]) for key in RETENTION_PROPERTIES if properties.get(key))])


def min_retain_hours() -> float:
    """The shortest vacuum retention that keeps time travel whole for the lake's tables."""
    return retention_hours(TABLE_PROPERTIES)


def checked_retention(retain_hours: float | None) -> float:
    """The retention a run uses: the shortest safe one by default; a shorter one asked for is refused."""
    floor = min_retain_hours()
    retain = floor if retain_hours is None else retain_hours
    if retain < floor:
        raise ValueError(f"retain_hours={retain_hours} would break time travel: at least {floor:g} hours")
    return retain


def checked_layers(layers: list[str] | None) -> list[str]:
    """The layers a run covers: every Delta layer by default; an unknown one is refused."""
    layers = list(DELTA_LAYERS) if layers is None else layers
    unknown = sorted(set(layers) - set(DELTA_LAYERS))
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; expected some of {', '.join(DELTA_LAYERS)}")
    return layers


def _sql(spark: SparkSession, settings: Settings, layer: str, name: str, command: str) -> DataFrame:
    """Run `command` (with `{table}` for the table) on one lake table."""
    path = settings.table_path(layer, name).replace("`", "``")
    return spark.sql(command.format(table=f"delta.`{path}`"))


def compact(spark: SparkSession, settings: Settings, layer: str, name: str) -> Compaction:
    """OPTIMIZE one table: bin-pack small files."""
    metrics = _sql(spark, settings, layer, name, "OPTIMIZE {table}").collect()[0]["metrics"]
    return Compaction(f"{layer}.{name}", metrics["numFilesRemoved"], metrics["numFilesAdded"])


def vacuum_plan(spark: SparkSession, settings: Settings, layer: str, name: str, retain_hours: float) -> VacuumPlan:
    """List the files a vacuum with this retention would delete (nothing is deleted)."""
    files = _sql(spark, settings, layer, name, f"VACUUM {{table}} RETAIN {retain_hours} HOURS DRY RUN")
    sample = [row[0].rsplit("/", 1)[-1] for row in files.limit(5).collect()]
    return VacuumPlan(f"{layer}.{name}", files.count(), ", ".join(sample))


def vacuum(spark: SparkSession, settings: Settings, layer: str, name: str, retain_hours: float) -> Vacuum:
    """VACUUM one table with a retention that keeps every version the query layer can travel to."""
    properties = dict(_sql(spark, settings, layer, name, "DESCRIBE DETAIL {table}").collect()[0]["properties"] or {})
    retention = retention_hours(properties, retain_hours)
    _sql(spark, settings, layer, name, f"VACUUM {{table}} RETAIN {retention} HOURS").collect()
    return Vacuum(f"{layer}.{name}", retention)
