"""Reading and writing the lake's Delta tables; layer-wide write policy is declared here once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql import DataFrame, DataFrameWriter, SparkSession

from lakehouse.config import Settings, get_settings

T = TypeVar("T")

# Properties every table gets: keep features DuckDB and delta-rs read, keep history for time travel. The log and the
# files it removed are kept equally long, so a version the log still offers has its files (the maintenance vacuum
# retains at least this long).
RETENTION = "interval 7 days"
TABLE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.logRetentionDuration": RETENTION,
    "delta.deletedFileRetentionDuration": RETENTION,
}


# Independent table writes run side by side: at the lake's usual sizes a write is bound by driver-side planning,
# Delta log reads and commits rather than by the executors (bench/README.md).
TABLE_WRITERS = 4


def table_path(layer: str, name: str, settings: Settings | None = None) -> str:
    return (settings or get_settings()).table_path(layer, name)


def table_exists(spark: SparkSession | None, layer: str, name: str, settings: Settings | None = None) -> bool:
    """Whether the lake holds the Delta table (a commit in its log; no Spark job)."""
    return is_table(table_path(layer, name, settings))


def is_table(path: str) -> bool:
    return bool(_commits(_log(path)[2]))


def read_table(spark: SparkSession, layer: str, name: str, settings: Settings | None = None) -> DataFrame:
    return spark.read.format("delta").load(table_path(layer, name, settings))


STATS_PROPERTY = "delta.dataSkippingStatsColumns"


@dataclass(frozen=True)
class Target:
    """A table write: where, with which layer policy (partitioning; the columns Delta keeps file statistics on, those
    reads prune by: default the first 32), and the identity that lets it commit at most once (txn app id and version;
    `user_metadata` goes into the commit for the next run to read back)."""

    layer: str
    name: str
    settings: Settings
    app_id: str | None = None
    version: int | None = None
    partition_by: tuple[str, ...] = ()
    stats: tuple[str, ...] = ()
    user_metadata: str | None = None

    @property
    def path(self) -> str:
        return self.settings.table_path(self.layer, self.name)

    @property
    def once(self) -> bool:
        return self.app_id is not None and self.version is not None


def _writer(df: DataFrame, target: Target, mode: str) -> DataFrameWriter:
    writer = df.write.format("delta").mode(mode)
    properties = {**TABLE_PROPERTIES, **({STATS_PROPERTY: ",".join(target.stats)} if target.stats else {})}
    for key, value in properties.items():
        writer = writer.option(key, value)
    if target.partition_by:
        writer = writer.partitionBy(*target.partition_by)
    if target.once:
        writer = writer.option("txnAppId", target.app_id).option("txnVersion", target.version)
    if target.user_metadata is not None:
        writer = writer.option("userMetadata", target.user_metadata)
    return writer


def append_once(df: DataFrame, target: Target) -> None:
    """Append `df` unless the target's (app_id, version) was already committed: a crash-safe, retryable append."""
    assert target.once, "append_once needs an app id and a version"
    _writer(df, target, "append").save(target.path)


def overwrite(df: DataFrame, target: Target, replace_where: str | None = None) -> None:
    """Replace the table's content in one commit (schema too), or with `replace_where` only the rows matching that
    predicate (the new rows must match it too); at most once per (app_id, version) when the target has them."""
    writer = _writer(df, target, "overwrite")
    writer = writer.option("replaceWhere", replace_where) if replace_where else writer.option("overwriteSchema", "true")
    writer.save(target.path)


def advance(spark: SparkSession, target: Target) -> None:
    """Record that the table has consumed the target's version of its input, changing no row (an empty commit)."""
    if target.once:
        append_once(spark.read.format("delta").load(target.path).limit(0), target)


def _log(path: str) -> tuple[Any, str, list[str]]:
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
    spark: SparkSession,
    source: DataFrame,
    target: Target,
    on: str,
    update_when: str | None = None,
    update_set: dict[str, str] | None = None,
    insert: bool = True,
    within: DataFrame | None = None,
) -> None:
    """MERGE `source` (alias s) into the table (alias t) on `on`: insert unmatched rows (unless `insert` is false),
    optionally update matched ones (those meeting `update_when`); committed at most once per (app_id, version). A
    missing table is created by an idempotent append. `within`: the distinct values of the partition column(s) the
    source's rows can match in (a few dates, say); the MERGE then reads and rewrites only those partitions of the table
    instead of all of it. With `update_when`, a source row matching a row it would not update is left out first: it
    changes nothing, and left in it would make the MERGE rewrite that row's file (`on` matches one row at most).
    Written in SQL, so it runs the same on a local session and over Spark Connect."""
    import uuid

    if not is_table(target.path):
        if insert:
            append_once(source, target)
        return
    done = last_txn_version(target.path, target.app_id) if target.app_id else None
    if done is not None and target.version is not None and done >= target.version:
        return
    if within is not None:
        on = f"({on}) AND ({_partition_filter(within)})"
    view = f"merge_source_{uuid.uuid4().hex}"
    clauses = []
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
    from datetime import date

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
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from lakehouse.spark import fork

    after = after or {}
    workers = min(TABLE_WRITERS, len(jobs))
    if workers <= 1:
        return {name: job(spark) for name, job in jobs.items()}
    waiting = dict(jobs)
    running: dict[Future[T], str] = {}
    finished: dict[str, Future[T]] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delta-write") as pool:
        while waiting or running:
            failed = any(f.exception() is not None for f in finished.values())
            ready = [n for n in waiting if all(d in finished or d not in jobs for d in after.get(n, ()))]
            for name in [] if failed else ready[: workers - len(running)]:
                running[pool.submit(waiting.pop(name), fork(spark))] = name
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            finished.update({running.pop(f): f for f in done})
    results = {name: finished[name].result() for name in jobs if name in finished}  # raises the first error
    if waiting:
        raise RuntimeError(f"these writes wait on each other: {', '.join(waiting)}")
    return results


def _written(metrics: dict[str, str]) -> int:
    """Rows a commit wrote: a MERGE's inserted and updated rows, or a write's output rows."""
    if "numTargetRowsInserted" in metrics:
        return int(metrics["numTargetRowsInserted"]) + int(metrics.get("numTargetRowsUpdated") or 0)
    return int(metrics.get("numOutputRows") or 0)


def rows_written(path: str) -> int:
    """Rows the table's latest commit wrote, from its operation metrics (no Spark job)."""
    import json

    fs, _, names = _log(path)
    commits = _commits(names)
    for line in fs.cat_file(commits[-1][1]).splitlines() if commits else []:
        if b'"commitInfo"' in line:
            return _written(json.loads(line)["commitInfo"].get("operationMetrics") or {})
    return 0


@dataclass(frozen=True)
class Commit:
    """What one commit of a table says about itself: its version, an app's txn version, metrics, user metadata, and
    whether it added or removed data files (an empty commit only records progress)."""

    version: int
    txn: int
    metrics: dict[str, str]
    user_metadata: str | None
    touches_data: bool = True


def _commit(fs: Any, version: int, name: str, app_id: str) -> Commit | None:
    """The commit in file `name` if it carries an `app_id` txn."""
    import json

    info: dict = {}
    txn = None
    touches_data = False
    for line in fs.cat_file(name).splitlines():
        if line.startswith((b'{"add"', b'{"remove"')):
            touches_data = True
        elif b'"commitInfo"' in line:
            info = json.loads(line).get("commitInfo") or {}
        elif b'"txn"' in line and (action := json.loads(line).get("txn")) and action["appId"] == app_id:
            txn = int(action["version"])
    if txn is None:
        return None
    return Commit(version, txn, dict(info.get("operationMetrics") or {}), info.get("userMetadata"), touches_data)


def app_commits(path: str, app_id: str, floor: int | None = None) -> Iterator[Commit]:
    """The table's commits carrying an `app_id` txn, newest first, read from its log without Spark; stops after the
    first at or below txn version `floor`."""
    fs, _, names = _log(path)
    for version, name in reversed(_commits(names)):
        commit = _commit(fs, version, name, app_id)
        if commit is not None:
            yield commit
            if floor is not None and commit.txn <= floor:
                return


def data_changed(path: str, app_id: str, after: int | None, upto: int) -> bool:
    """Whether `app_id`'s commits to the table at `path` with txn versions in (after, upto] added or removed data:
    batches that brought nothing for this table leave it, and whatever is built from it, as it was."""
    floor = -1 if after is None else after
    return any(c.touches_data for c in app_commits(path, app_id, floor) if floor < c.txn <= upto)


def rows_committed(path: str, app_id: str, after: int | None, upto: int) -> int:
    """Rows `app_id` wrote to the table at `path` in its commits with txn versions in (after, upto]: the rows of those
    input batches, counted from the commits' metrics instead of by reading them again."""
    floor = -1 if after is None else after
    return sum(_written(c.metrics) for c in app_commits(path, app_id, floor) if floor < c.txn <= upto)


def oldest_readable_version(path: str) -> int | None:
    """The oldest version of the Delta table at `path` whose data files all still exist (None: none, or no table),
    read from its log without Spark: the log can still list versions whose removed files a vacuum deleted."""
    import json
    import re
    from urllib.parse import unquote

    import pyarrow.parquet as pq

    fs, log, names = _log(path)
    commits = dict(_commits(names))
    if not commits:
        return None
    root = log[: -len("/_delta_log")]
    existing = {f[len(root) + 1 :] for f in fs.find(root) if "/_delta_log/" not in f}

    def relative(file: str) -> str:
        file = unquote(file)
        return file[len(root) + 1 :] if file.startswith(root + "/") else file

    latest = max(commits)
    active: set[str] = set()
    base = -1
    if any(v not in commits for v in range(latest + 1)):  # the log was cleaned: start from a checkpoint
        checkpoints = sorted({int(m.group(1)) for n in names if (m := re.search(r"/(\d{20})\.checkpoint", n))})
        usable = [c for c in checkpoints if all(v in commits for v in range(c + 1, latest + 1))]
        if not usable:
            return None
        base = usable[0]
        for part in sorted(n for n in names if re.search(rf"/{base:020d}\.checkpoint(\.\d+\.\d+)?\.parquet$", n)):
            with fs.open(part, "rb") as f:
                active.update(
                    relative(a["path"]) for a in pq.read_table(f, columns=["add"]).column("add").to_pylist() if a
                )
        if active <= existing:
            return base
    for version in range(base + 1, latest + 1):
        for line in fs.cat_file(commits[version]).splitlines():
            action = json.loads(line)
            if "add" in action:
                active.add(relative(action["add"]["path"]))
            elif "remove" in action:
                active.discard(relative(action["remove"]["path"]))
        if active <= existing:
            return version
    return None
