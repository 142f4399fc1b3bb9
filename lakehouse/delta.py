"""Reading and writing the lake's Delta tables; layer-wide write policy is declared here once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pyspark.sql import DataFrame, SparkSession

from lakehouse.config import Settings, get_settings

T = TypeVar("T")

# Properties every table gets: keep features DuckDB and delta-rs read, keep history for time travel.
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 7 days",
}


# Independent table writes run side by side: at the lake's usual sizes a write is bound by driver-side planning,
# Delta log reads and commits rather than by the executors (bench/README.md).
TABLE_WRITERS = 4


def table_path(layer: str, name: str, settings: Settings | None = None) -> str:
    return (settings or get_settings()).table_path(layer, name)


def table_exists(spark: SparkSession, layer: str, name: str, settings: Settings | None = None) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(layer, name, settings))


def read_table(spark: SparkSession, layer: str, name: str, settings: Settings | None = None) -> DataFrame:
    return spark.read.format("delta").load(table_path(layer, name, settings))


def _writer(df: DataFrame, partition_by: list[str] | None):
    writer = df.write.format("delta")
    for key, value in TABLE_PROPERTIES.items():
        writer = writer.option(key, value)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    return writer


def append_once(
    df: DataFrame, layer: str, name: str, app_id: str, version: int,
    partition_by: list[str] | None = None, settings: Settings | None = None,
) -> None:
    """Append `df` unless this (app_id, version) was already committed: a crash-safe, retryable append."""
    (
        _writer(df, partition_by)
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", version)
        .save(table_path(layer, name, settings))
    )


def overwrite(
    df: DataFrame, layer: str, name: str, partition_by: list[str] | None = None,
    settings: Settings | None = None, app_id: str | None = None, version: int | None = None,
) -> None:
    """Replace the table's content in one commit (schema too); idempotent when app_id/version are given."""
    writer = _writer(df, partition_by).mode("overwrite").option("overwriteSchema", "true")
    if app_id is not None and version is not None:
        writer = writer.option("txnAppId", app_id).option("txnVersion", version)
    writer.save(table_path(layer, name, settings))


def _log(path: str):
    """(filesystem, log folder, its file names) of the Delta table at `path`; names is empty when there is no table."""
    from lakehouse.storage import filesystem

    fs, root = filesystem(path)
    log = root.rstrip("/") + "/_delta_log"
    try:
        return fs, log, fs.ls(log, detail=False, refresh=True)  # object stores: never a cached listing
    except FileNotFoundError:
        return fs, log, []


def _commits(names: list[str]) -> list[tuple[int, str]]:
    import re

    return sorted((int(m.group(1)), n) for n in names if (m := re.search(r"/(\d{20})\.json$", n)))


def txn_versions(path: str) -> dict[str, int]:
    """Every app's latest committed txnVersion in the Delta table at `path`, read from its log without Spark."""
    import json
    import re

    import pyarrow.parquet as pq

    fs, log, names = _log(path)
    versions: dict[str, int] = {}
    checkpoint = -1
    if any(n.endswith("/_last_checkpoint") for n in names):
        checkpoint = json.loads(fs.cat_file(log + "/_last_checkpoint"))["version"]
        for part in sorted(n for n in names if re.search(rf"/{checkpoint:020d}\.checkpoint(\.\d+\.\d+)?\.parquet$", n)):
            with fs.open(part, "rb") as f:
                for txn in pq.read_table(f, columns=["txn"]).column("txn").to_pylist():
                    if txn:
                        versions[txn["appId"]] = int(txn["version"])
    for version, name in _commits(names):
        if version <= checkpoint:
            continue
        for line in fs.cat_file(name).splitlines():
            if b'"txn"' in line and (txn := json.loads(line).get("txn")):
                versions[txn["appId"]] = int(txn["version"])
    return versions


def last_txn_version(path: str, app_id: str) -> int | None:
    """The highest txnVersion committed to the table at `path` by `app_id` (None: never, or no table)."""
    return txn_versions(path).get(app_id)


def merge_once(
    spark: SparkSession, source: DataFrame, layer: str, name: str, on: str, app_id: str, version: int,
    update_when: str | None = None, update_set: dict[str, str] | None = None,
    partition_by: list[str] | None = None, settings: Settings | None = None, within: DataFrame | None = None,
) -> None:
    """MERGE `source` (alias s) into the table (alias t) on `on`: insert unmatched rows, optionally update matched
    ones; committed at most once per (app_id, version). A missing table is created by an idempotent append.
    `within`: the distinct values of the partition column(s) the source's rows can match in (a few dates, say); the
    MERGE then reads and rewrites only those partitions of the table instead of all of it."""
    from delta.tables import DeltaTable

    path = table_path(layer, name, settings)
    if not DeltaTable.isDeltaTable(spark, path):
        append_once(source, layer, name, app_id, version, partition_by, settings)
        return
    done = last_txn_version(path, app_id)
    if done is not None and done >= version:
        return
    if within is not None:
        on = f"({on}) AND ({_partition_filter(within)})"
    merge = DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), on)
    if update_set:
        merge = merge.whenMatchedUpdate(condition=update_when, set=update_set)
    merge = merge.whenNotMatchedInsertAll()
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        merge.execute()
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


def _partition_filter(values: DataFrame) -> str:
    """`t.<col> IN (...)` for each column of `values`, over its distinct values (partition values: a handful of rows,
    metadata rather than data). Dates and strings only; a null value means no pruning."""
    from datetime import date

    parts = []
    for name in values.columns:
        found = [r[0] for r in values.select(name).distinct().collect()]
        if None in found:
            return "true"
        if not found:
            return "false"
        literals = ", ".join(f"DATE'{v.isoformat()}'" if isinstance(v, date) else "'" + str(v).replace("'", "''") + "'"
                             for v in sorted(found))
        parts.append(f"t.`{name}` IN ({literals})")
    return " AND ".join(parts)


def write_tables(spark: SparkSession, jobs: dict[str, Callable[[SparkSession], T]]) -> dict[str, T]:
    """Run independent table writes side by side, each on its own session of the shared Spark context (its own SQL
    conf, so one MERGE's txn settings never reach another write); every write finishes before the first error is
    raised. Spark Connect sessions cannot be forked: there they run one after another."""
    from concurrent.futures import ThreadPoolExecutor

    fork = getattr(spark, "newSession", None)
    workers = min(TABLE_WRITERS, len(jobs)) if fork else 1
    if workers <= 1:
        return {name: job(spark) for name, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delta-write") as pool:
        futures = {name: pool.submit(job, fork()) for name, job in jobs.items()}
    return {name: future.result() for name, future in futures.items()}


def rows_written(path: str) -> int:
    """Rows the table's latest commit added: a MERGE's inserted rows, or a write's output rows."""
    m = last_operation_metrics(path)
    return int(m.get("numTargetRowsInserted") or m.get("numOutputRows") or 0)


def last_operation_metrics(path: str) -> dict[str, str]:
    """Delta's operationMetrics of the table's latest commit, read from its log without Spark (empty: no table)."""
    import json

    fs, _, names = _log(path)
    commits = _commits(names)
    if not commits:
        return {}
    for line in fs.cat_file(commits[-1][1]).splitlines():
        if b'"commitInfo"' in line and (info := json.loads(line).get("commitInfo")):
            return dict(info.get("operationMetrics") or {})
    return {}
