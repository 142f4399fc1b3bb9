"""Writing the lake's Delta tables: the policy every table gets, each table's layout from its spec in the catalogue,
commits at most once per input version, independent writes side by side."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import date
from typing import TypeVar

from pyspark.sql import DataFrame, DataFrameWriter, SparkSession

from lakehouse import tables
from lakehouse.config import Settings, get_settings
from lakehouse.delta_log import DeltaLog, is_table, last_txn_version
from lakehouse.spark import fork, release

T = TypeVar("T")

# Properties every table gets: keep features DuckDB and delta-rs read, keep history for time travel. The log and the
# files it removed are kept equally long, so a version the log still offers has its files (the maintenance vacuum
# retains at least this long).
RETENTION = "interval 7 days"
DELETION_VECTORS = "delta.enableDeletionVectors"
CHANGE_FEED = "delta.enableChangeDataFeed"  # the tables the catalogue says the mirror reads the changes of  # LAKEHOUSE_DELETION_VECTORS: off unless every reader has them
TABLE_PROPERTIES = {
    "delta.logRetentionDuration": RETENTION,
    "delta.deletedFileRetentionDuration": RETENTION,
}


# Independent table writes run side by side: at the lake's usual sizes a write is bound by driver-side planning,
# Delta log reads and commits rather than by the executors (bench/README.md).
TABLE_WRITERS = 4


def table_path(layer: str, name: str, settings: Settings | None = None) -> str:
    return (settings or get_settings()).table_path(layer, name)


def table_exists(layer: str, name: str, settings: Settings | None = None) -> bool:
    """Whether the lake holds the Delta table (a commit in its log; no Spark job)."""
    return is_table(table_path(layer, name, settings))


def read_table(spark: SparkSession, layer: str, name: str, settings: Settings | None = None) -> DataFrame:
    return spark.read.format("delta").load(table_path(layer, name, settings))


STATS_PROPERTY = "delta.dataSkippingStatsColumns"
NO_STATS_PROPERTY = "delta.dataSkippingNumIndexedCols"
CHECKPOINT_INTERVAL = "delta.checkpointInterval"


class SchemaMismatch(ValueError):
    """A write's columns differ from its table's spec in the catalogue (lakehouse/tables.py)."""


@dataclass(frozen=True)
class Target:
    """A table write: the table's spec (its layout: partitioning, the columns Delta keeps file statistics on), and the
    identity that lets it commit at most once (txn app id and version; `user_metadata` goes into the commit for the
    next run to read back). `expect` checks the rows about to be written against the table's declared expectations:
    it returns the rows to write, or raises to write none."""

    table: tables.Table
    settings: Settings
    app_id: str | None = None
    version: int | None = None
    user_metadata: str | None = None
    expect: Callable[[DataFrame], DataFrame] | None = None

    @property
    def path(self) -> str:
        return self.settings.table_path(self.table.layer, self.table.name)

    @property
    def once(self) -> bool:
        return self.app_id is not None and self.version is not None


def check_schema(df: DataFrame, table: tables.Table) -> None:
    """Refuse rows whose columns (names, order, types) are not the table's in the catalogue."""
    found = [(f.name, f.dataType.simpleString()) for f in df.schema.fields]
    wanted = [(c.name, c.type) for c in table.columns]
    if found == wanted:
        return
    have, want = dict(found), dict(wanted)
    problems = [f"missing {', '.join(n for n in want if n not in have)}"] if set(want) - set(have) else []
    problems += (
        [f"not in the catalogue: {', '.join(n for n in have if n not in want)}"] if set(have) - set(want) else []
    )
    problems += [f"{n} is {have[n]}, the catalogue says {t}" for n, t in wanted if n in have and have[n] != t]
    if not problems:
        problems = [f"columns in another order than the catalogue's: {', '.join(want)}"]
    raise SchemaMismatch(f"{table.key}: the rows to write do not match lakehouse/tables.py: {'; '.join(problems)}")


def _admitted(df: DataFrame, target: Target) -> DataFrame:
    """The rows to write: of the catalogue's schema, and those the table's expectations keep."""
    check_schema(df, target.table)
    return target.expect(df) if target.expect is not None else df


def _writer(df: DataFrame, target: Target, mode: str, check: bool = True) -> DataFrameWriter:
    if check:
        df = _admitted(df, target)
    writer = df.write.format("delta").mode(mode)
    for key, value in _properties(target.table, target.settings).items():
        writer = writer.option(key, value)
    if target.table.partition_by:
        writer = writer.partitionBy(*target.table.partition_by)
    if target.once:
        writer = writer.option("txnAppId", target.app_id).option("txnVersion", target.version)
    if target.user_metadata is not None:
        writer = writer.option("userMetadata", target.user_metadata)
    return writer


def append_once(df: DataFrame, target: Target) -> None:
    """Append `df` unless the target's (app_id, version) was already committed: a crash-safe, retryable append."""
    assert target.once, "append_once needs an app id and a version"
    _writer(df, target, "append").save(target.path)


def append(df: DataFrame, target: Target) -> None:
    """Append `df`; at most once per (app_id, version) when the target has them."""
    _writer(df, target, "append").save(target.path)


def overwrite(df: DataFrame, target: Target, replace_where: str | None = None) -> None:
    """Replace the table's content in one commit (schema too), or with `replace_where` only the rows matching that
    predicate (the new rows must match it too); at most once per (app_id, version) when the target has them."""
    writer = _writer(df, target, "overwrite")
    writer = writer.option("replaceWhere", replace_where) if replace_where else writer.option("overwriteSchema", "true")
    writer.save(target.path)


def advance(spark: SparkSession, target: Target) -> None:
    """Record that the table has consumed the target's version of its input, changing no row (an empty commit)."""
    if target.once:  # the table's own (empty) rows: its schema as stored
        _writer(spark.read.format("delta").load(target.path).limit(0), target, "append", check=False).save(target.path)


def merge_once(
    spark: SparkSession,
    source: DataFrame,
    target: Target,
    on: str,
    update_when: str | None = None,
    update_set: dict[str, str] | None = None,
    insert: bool = True,
    within: DataFrame | None = None,
    delete_when: str | None = None,
) -> None:
    """MERGE `source` (alias s) into the table (alias t) on `on`: insert unmatched rows (unless `insert` is false),
    optionally update matched ones (those meeting `update_when`); committed at most once per (app_id, version). A
    missing table is created by an idempotent append. `within`: the distinct values of the partition column(s) the
    source's rows can match in (a few dates, say); the MERGE then reads and rewrites only those partitions of the table
    instead of all of it. `delete_when`: matched rows meeting it are deleted instead (a predicate over s and t, so
    values to match stay in the source, never literals in the commit). With `update_when`, a source row matching a
    row it would not update is left out first: it
    changes nothing, and left in it would make the MERGE rewrite that row's file (`on` matches one row at most).
    Written in SQL, so it runs the same on a local session and over Spark Connect."""
    exists = is_table(target.path)
    done = last_txn_version(target.path, target.app_id) if exists and target.app_id else None
    if done is not None and target.version is not None and done >= target.version:
        return
    if insert:
        source = _admitted(source, target)
    if not exists:
        if insert:
            append_once(source, replace(target, expect=None))  # admitted above
        return
    if within is not None:
        on = f"({on}) AND ({_partition_filter(within)})"
    view = f"merge_source_{uuid.uuid4().hex}"
    clauses = [f"WHEN MATCHED AND ({delete_when}) THEN DELETE"] if delete_when else []
    if update_set:
        condition = f" AND ({update_when})" if update_when else ""
        assignments = ", ".join(f"`{column}` = {value}" for column, value in update_set.items())
        clauses.append(f"WHEN MATCHED{condition} THEN UPDATE SET {assignments}")
    if insert:
        clauses.append("WHEN NOT MATCHED THEN INSERT *")
    path = target.path.replace("`", "``")
    using = view
    if update_when:
        unchanged = f"SELECT 1 FROM delta.`{path}` AS t WHERE ({on}) AND NOT ({update_when})"
        using = f"(SELECT * FROM {view} AS s WHERE NOT EXISTS ({unchanged}))"
    confs = {"spark.databricks.delta.commitInfo.userMetadata": target.user_metadata}
    if target.once:
        confs.update(
            {
                "spark.databricks.delta.write.txnAppId": target.app_id,
                "spark.databricks.delta.write.txnVersion": str(target.version),
            }
        )
    source.createOrReplaceTempView(view)
    for key, value in confs.items():
        if value is not None:
            spark.conf.set(key, value)
    try:
        spark.sql(f"MERGE INTO delta.`{path}` AS t USING {using} AS s ON {on} {' '.join(clauses)}")
    finally:
        for key in confs:
            spark.conf.unset(key)
        spark.catalog.dropTempView(view)


def _partition_filter(values: DataFrame) -> str:
    """`t.<col> IN (...)` for each column of `values`, over its distinct values (partition values: a handful of rows,
    metadata rather than data). Dates and strings only; a null value means no pruning."""
    parts = []
    for name in values.columns:
        found = [r[0] for r in values.select(name).distinct().collect()]
        if None in found:
            return "true"
        if not found:
            return "false"
        literals = ", ".join(
            f"DATE'{v.isoformat()}'" if isinstance(v, date) else "'" + str(v).replace("'", "''") + "'"
            for v in sorted(found)
        )
        parts.append(f"t.`{name}` IN ({literals})")
    return " AND ".join(parts)


def write_tables(
    spark: SparkSession,
    jobs: Mapping[str, Callable[[SparkSession], T]],
    after: Mapping[str, tuple[str, ...]] | None = None,
) -> dict[str, T]:
    """Run independent table writes side by side, each on its own session of the same Spark (its own SQL conf, so one
    MERGE's txn settings never reach another write; over Spark Connect, its own server session). `after` names, per
    job, the jobs it reads the tables of: it starts once those among `jobs` have finished, others start in `jobs`'
    order as writers free up. After an error no job starts; those running finish before the first error is raised."""
    after = after or {}
    workers = min(TABLE_WRITERS, len(jobs))
    if workers <= 1:
        return {name: job(spark) for name, job in jobs.items()}
    waiting = dict(jobs)
    running: dict[Future[T], str] = {}
    finished: dict[str, Future[T]] = {}
    sessions: dict[str, SparkSession] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delta-write") as pool:
        while waiting or running:
            failed = any(f.exception() is not None for f in finished.values())
            ready = [n for n in waiting if all(d in finished or d not in jobs for d in after.get(n, ()))]
            for name in [] if failed else ready[: workers - len(running)]:
                session = fork(spark)
                running[pool.submit(waiting.pop(name), session)] = name
                sessions[name] = session
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                finished[name] = future
                release(sessions.pop(name))
    results = {name: finished[name].result() for name in jobs if name in finished}  # raises the first error
    if waiting:
        raise RuntimeError(f"these writes wait on each other: {', '.join(waiting)}")
    return results


def _properties(table: tables.Table, settings: Settings) -> dict[str, str]:
    """The table properties a table of this spec carries: the lake's, deletion vectors as the settings say, its
    statistics columns, and its change data feed when the catalogue says the mirror reads it."""
    stats = {STATS_PROPERTY: ",".join(table.stats)} if table.stats else {NO_STATS_PROPERTY: "0"}
    vectors = {DELETION_VECTORS: str(settings.deletion_vectors).lower()}
    changes = {CHANGE_FEED: "true"} if table.change_feed else {}
    return {**TABLE_PROPERTIES, **vectors, **stats, **changes}


def align_properties(spark: SparkSession, target: Target) -> bool:
    """Bring an existing table's properties to its spec (a table created by an earlier layout keeps its own: Delta
    takes them only at creation), so its next files keep statistics only where the catalogue says. Whether it
    committed a change (an ALTER TABLE, read back from the log first: no commit when they agree)."""
    log = DeltaLog(target.path, target.settings)
    if not log.exists:
        return False
    have = log.configuration()
    wanted = _properties(target.table, target.settings)
    stale = [k for k in (STATS_PROPERTY, NO_STATS_PROPERTY) if k in have and k not in wanted]
    changed = {k: v for k, v in wanted.items() if have.get(k) != v}
    if not changed and not stale:
        return False
    table = "delta.`" + target.path.replace("`", "``") + "`"
    if stale:
        spark.sql(f"ALTER TABLE {table} UNSET TBLPROPERTIES ({', '.join(repr(k) for k in stale)})")
    if changed:
        pairs = ", ".join(f"{k!r} = {v!r}" for k, v in changed.items())
        spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({pairs})")
    return True


def compact_history(spark: SparkSession, path: str, keep: dict[str, str] | None = None) -> int:
    """Make the table's current state its first readable version and delete every log file before it: a checkpoint
    is written at a commit that changes no data, then the older commits, checksums and checkpoints go. Time travel to
    older versions ends (their data files must already be vacuumed); `keep` are table properties set in that commit
    (what later runs read from commits that are gone). Call under the writer lock. The log files deleted."""
    table = "delta.`" + path.replace("`", "``") + "`"
    properties = {CHECKPOINT_INTERVAL: "1", **(keep or {})}
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({', '.join(f'{k!r} = {v!r}' for k, v in properties.items())})")
    spark.sql(f"ALTER TABLE {table} UNSET TBLPROPERTIES ({CHECKPOINT_INTERVAL!r})")
    log = DeltaLog(path)
    base = max(log.checkpoints)  # the commit that set the interval
    return log.remove_before(base)


def purge(spark: SparkSession, path: str) -> None:
    """Rewrite the files of a table that hold rows its deletion vectors hide (a MERGE or DELETE with deletion vectors
    only marks them), so the next vacuum removes every byte of them; nothing to do without deletion vectors."""
    if DeltaLog(path).configuration().get(DELETION_VECTORS) == "true":
        spark.sql("REORG TABLE delta.`" + path.replace("`", "``") + "` APPLY (PURGE)")
