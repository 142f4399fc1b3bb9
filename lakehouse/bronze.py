"""Bronze: landed files as Delta tables, every line or record kept as delivered, the unreadable quarantined."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from lakehouse import faults
from lakehouse.config import Settings, join
from lakehouse.delta import Target, append_once, last_txn_version, write_tables
from lakehouse.landing import read_ledger
from lakehouse.parsing import parse_at

ENTITIES = ("students", "courses", "universities", "subjects", "sessions", "subscriptions", "student_follow_subject")
# Tables written together from one read of the landed files, as (layer, name).
GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (("bronze", "events"), ("quarantine", "events")),
    "transactional": (*(("bronze", e) for e in ENTITIES), ("quarantine", "transactional")),
}
# Every bronze and quarantine table is read by batch (silver, the accounting): statistics on these columns only.
STATS_COLUMNS = ("batch_id", "as_of")
# The landed file a Spark row came from: the lake-relative tail of `_metadata.file_path`.
LANDED_TAIL = r"(landing/[^/]+/[^/]+/[^/]+/[^/]+)$"

FILES_SCHEMA = StructType([
    StructField("landed_path", StringType(), False),
    StructField("source_file", StringType(), False),
    StructField("entity", StringType(), True),
    StructField("delivery", StringType(), False),
    StructField("as_of", TimestampType(), False),
    StructField("batch_id", LongType(), False),
    StructField("landed_at", TimestampType(), False),
])
META = ["source_file", "landed_path", "line_number", "delivery", "as_of", "batch_id", "landed_at", "run_id"]
BRONZE_EVENTS_COLUMNS = ["value", "at_raw", *META]
QUARANTINE_EVENTS_COLUMNS = ["reason", "raw", "raw_base64", *META]
BRONZE_ENTITY_COLUMNS = ["record", *META]
QUARANTINE_TRANSACTIONAL_COLUMNS = ["entity", "reason", "raw", "raw_base64", *META]


def app_id(layer: str, name: str) -> str:
    """The Delta txnAppId bronze uses for one of its tables."""
    return f"bronze.{name}" if layer == "bronze" else f"bronze.quarantine.{name}"


def _without_bom(value: Column) -> Column:
    """The text without a leading UTF-8 byte-order mark."""
    return F.regexp_replace(value, "^\ufeff", "")


def event_lines(raw_lines: DataFrame, files: DataFrame) -> DataFrame:
    """One row per delivered line: exact text without its terminator, 1-based line number, file metadata."""
    # Exact line numbers without sorting a whole file in one task: a split's rows keep file order and sit together in
    # one partition, so a line's number is the lines of the file's earlier splits plus its place in its own split.
    # Only the per-split counts (a few rows per file) are aggregated; the lines themselves are never shuffled.
    split = ["file_path", "block_start"]
    earlier = Window.partitionBy("file_path").orderBy("block_start").rowsBetween(Window.unboundedPreceding, -1)
    splits = (raw_lines.groupBy(*split).agg(F.min("seq").alias("first_seq"), F.count(F.lit(1)).alias("lines"))
              .select(*split, "first_seq", F.coalesce(F.sum("lines").over(earlier), F.lit(0)).alias("before")))
    stripped = (
        raw_lines.join(F.broadcast(splits), split)
        .withColumn("line_number", (F.col("before") + F.col("seq") - F.col("first_seq") + 1).cast("long"))
        .withColumn("raw_bytes", F.col("value").cast("binary"))
        .withColumn("raw_bytes", F.when(
            F.col("value").endswith("\r"), F.expr("substring(raw_bytes, 1, octet_length(raw_bytes) - 1)")
        ).otherwise(F.col("raw_bytes")))
        .withColumn("value", F.col("raw_bytes").cast("string"))
        .withColumn("landed_path", F.regexp_extract("file_path", LANDED_TAIL, 1))
    )
    return stripped.join(F.broadcast(files.drop("entity")), "landed_path").drop(
        "file_path", "block_start", "seq", "first_seq", "before")


def classified_events(lines: DataFrame, run_id: str) -> DataFrame:
    """Each line with its fate: `status` bronze, quarantine (with `reason`) or blank."""
    # Each check is its own column first: inside CASE branches Spark evaluates a shared expression once per use, and
    # repeating the JSON parses and the time parse made classification 2.5x slower (bench/README.md).
    text = F.when(F.col("line_number") == 1, _without_bom(F.col("value"))).otherwise(F.col("value"))
    checked = lines.select(
        "*",
        F.expr("is_valid_utf8(value)").alias("_valid"),
        F.col("value").rlike(r"^\s*$").alias("_blank"),
        F.json_object_keys(text).isNull().alias("_not_object"),
        F.get_json_object(text, "$.at").alias("_at"),
    ).select("*", parse_at(F.col("_at")).isNull().alias("_bad_at"))
    valid = F.col("_valid")
    reason = (
        F.when(~valid, F.lit("invalid_utf8"))
        .when(F.col("_blank"), F.lit(None))
        .when(F.col("_not_object"), F.lit("not_json_object"))
        .when(F.col("_at").isNull(), F.lit("missing_at"))
        .when(F.col("_bad_at"), F.lit("unparseable_at"))
    )
    status = (
        F.when(~valid, F.lit("quarantine"))
        .when(F.col("_blank"), F.lit("blank"))
        .when(F.col("_not_object") | F.col("_at").isNull() | F.col("_bad_at"), F.lit("quarantine"))
        .otherwise(F.lit("bronze"))
    )
    # No second copy of the text (`raw` is derived from `value` by quarantine_events): bronze caches this frame.
    return checked.select(
        *(c for c in lines.columns if c != "raw_bytes"),
        F.when(valid, F.col("_at")).alias("at_raw"),
        reason.alias("reason"),
        status.alias("status"),
        F.when(~valid, F.base64("raw_bytes")).alias("raw_base64"),
        F.lit(run_id).alias("run_id"),
    )


def bronze_events(classified: DataFrame) -> DataFrame:
    """`bronze.events`: one row per non-blank line that is a JSON object with a parseable `at`."""
    return classified.filter(F.col("status") == "bronze").select(*BRONZE_EVENTS_COLUMNS)


def quarantine_events(classified: DataFrame) -> DataFrame:
    """`quarantine.events`: one row per event line that cannot be read, with its reason."""
    raw = F.when(F.col("reason") == "invalid_utf8", F.expr("make_valid_utf8(value)")).otherwise(F.col("value"))
    return classified.filter(F.col("status") == "quarantine").withColumn("raw", raw).select(*QUARANTINE_EVENTS_COLUMNS)


def transactional_records(contents: DataFrame, files: DataFrame, run_id: str) -> DataFrame:
    """Each exported record (or unreadable file) with its fate; a zero-byte export is `not_json_array`."""
    docs = files.join(
        contents.select(F.regexp_extract("file_path", LANDED_TAIL, 1).alias("landed_path"), "value"),
        "landed_path", "left",
    ).withColumn("value", F.coalesce("value", F.lit("")))
    valid = F.expr("is_valid_utf8(value)")
    parsed = docs.select(
        "*",
        valid.alias("valid"),
        F.when(valid, F.from_json(_without_bom(F.col("value")), "array<string>")).alias("items"),
    )
    readable = parsed.filter(F.col("items").isNotNull()).select(
        *FILES_SCHEMA.fieldNames(), F.posexplode("items").alias("pos", "record"),
    ).select(
        *FILES_SCHEMA.fieldNames(),
        (F.col("pos") + 1).cast("long").alias("line_number"),
        "record",
        F.when(F.json_object_keys("record").isNull(), F.lit("not_an_object")).alias("reason"),
        F.col("record").alias("raw"),
        F.lit(None).cast("string").alias("raw_base64"),
    )
    unreadable = parsed.filter(F.col("items").isNull()).select(
        *FILES_SCHEMA.fieldNames(),
        F.lit(None).cast("long").alias("line_number"),
        F.lit(None).cast("string").alias("record"),
        F.when(F.col("valid"), F.lit("not_json_array")).otherwise(F.lit("invalid_utf8")).alias("reason"),
        F.when(F.col("valid"), F.col("value")).otherwise(F.expr("make_valid_utf8(value)")).alias("raw"),
        F.when(~F.col("valid"), F.base64(F.col("value").cast("binary"))).alias("raw_base64"),
    )
    return readable.unionByName(unreadable).select(
        "*",
        F.when(F.col("reason").isNull(), F.lit("bronze")).otherwise(F.lit("quarantine")).alias("status"),
        F.lit(run_id).alias("run_id"),
    )


def bronze_entity(records: DataFrame, entity: str) -> DataFrame:
    """`bronze.<entity>`: one row per exported record of that entity."""
    return records.filter((F.col("status") == "bronze") & (F.col("entity") == entity)).select(*BRONZE_ENTITY_COLUMNS)


def quarantine_transactional(records: DataFrame) -> DataFrame:
    """`quarantine.transactional`: exports that are not JSON arrays, and records that are not objects."""
    return records.filter(F.col("status") == "quarantine").select(*QUARANTINE_TRANSACTIONAL_COLUMNS)


def _files_frame(spark: SparkSession, entries: list[dict[str, Any]]) -> DataFrame:
    from datetime import datetime

    rows = [
        (e["landed_path"], e["path"], e["entity"], e["delivery"], datetime.fromisoformat(e["as_of"]),
         int(e["batch_id"]), datetime.fromisoformat(e["landed_at"]))
        for e in entries
    ]
    return spark.createDataFrame(rows, FILES_SCHEMA)


def _read_event_lines(spark: SparkSession, paths: list[str]) -> DataFrame:
    return spark.read.text(paths, lineSep="\n").select(
        "value",
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("seq"),
    )


def _read_documents(spark: SparkSession, paths: list[str]) -> DataFrame:
    return spark.read.text(paths, wholetext=True).select(
        "value", F.col("_metadata.file_path").alias("file_path")
    )


def _counts(frame: DataFrame, key: str | None, keys: list[str]) -> dict[str, Any]:
    """Accounting per `key` value (or overall): lines read = bronze rows + quarantined (by reason) + blank lines."""
    out: dict[str, Any] = {
        k: {"lines_read": 0, "bronze_rows": 0, "quarantined": {}, "blank_lines": 0} for k in keys
    }
    for row in frame.groupBy(*([key] if key else []), "status", "reason").count().collect():
        bucket = out[row[key] if key else "all"]
        bucket["lines_read"] += row["count"]
        if row["status"] == "quarantine":
            bucket["quarantined"][row["reason"]] = bucket["quarantined"].get(row["reason"], 0) + row["count"]
        else:
            bucket["bronze_rows" if row["status"] == "bronze" else "blank_lines"] += row["count"]
    return out


def _backlog(
    settings: Settings, group: str, manifests: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], int], int, list[dict[str, Any]]]:
    """Each table's watermark, the newest batch, and the new files of the group some table still lacks."""
    marks = {t: last_txn_version(settings.table_path(*t), app_id(*t)) or 0 for t in GROUPS[group]}
    low = min(marks.values())
    behind = [m for m in manifests if m["batch_id"] > low]
    entries = [dict(e, batch_id=m["batch_id"]) for m in behind for e in m["files"]
               if e["status"] == "new" and e["kind"] == group]
    return marks, (behind[-1]["batch_id"] if behind else low), entries


def _write_group(
    spark: SparkSession, settings: Settings, group: str, manifests: list[dict[str, Any]], run_id: str,
) -> dict[str, Any] | None:
    """Read the landed files the group's tables still lack and append them, one idempotent commit per table."""
    tables = GROUPS[group]
    marks, version, entries = _backlog(settings, group, manifests)
    if not entries:
        return None
    files = _files_frame(spark, entries)
    paths = [join(settings.lake_url, e["landed_path"]) for e in entries]
    if group == "events":
        frame = classified_events(event_lines(_read_event_lines(spark, paths), files), run_id)
        outputs = {("bronze", "events"): bronze_events, ("quarantine", "events"): quarantine_events}
    else:
        nonempty = [p for p, e in zip(paths, entries) if e["bytes"] > 0]
        contents = _read_documents(spark, nonempty) if nonempty else spark.createDataFrame(
            [], "value string, file_path string")
        frame = transactional_records(contents, files, run_id)
        outputs = {("bronze", e): (lambda df, e=e: bronze_entity(df, e)) for e in ENTITIES}
        outputs[("quarantine", "transactional")] = quarantine_transactional
    # On disk, not in the heap: at 10M events the in-memory cache builder exhausted a 2.5 GB heap (bench/README.md);
    # at 1M the disk cache was faster too (42 s against 47 s for bronze).
    frame = frame.persist(StorageLevel.DISK_ONLY)
    try:
        if group == "events":
            counts = _counts(frame, None, ["all"])
        else:
            counts = _counts(frame, "entity", sorted({e["entity"] for e in entries}))

        def write(table: tuple[str, str], _session: SparkSession) -> int:
            rows = outputs[table](frame.filter(F.col("batch_id") > marks[table]))
            append_once(rows, Target(*table, settings, app_id=app_id(*table), version=version, stats=STATS_COLUMNS))
            faults.point("mid_bronze")
            return version

        written = write_tables(spark, {".".join(t): partial(write, t) for t in tables if marks[t] < version})
    finally:
        frame.unpersist()
    return {"version": version, "files": len(entries), "deliveries": sorted({e["delivery"] for e in entries}),
            "counts": counts, "committed": written}


def pending(settings: Settings) -> bool:
    """Whether a landed batch holds files some bronze table still lacks (read from the Delta logs, no Spark)."""
    manifests = read_ledger(settings)
    return any(_backlog(settings, group, manifests)[2] for group in GROUPS)


def ingest(spark: SparkSession, settings: Settings, run_id: str) -> dict[str, Any]:
    """Append every landed batch newer than each bronze table's watermark; returns the run's accounting."""
    started = time.monotonic()
    manifests = read_ledger(settings)
    report: dict[str, Any] = {"run_id": run_id, "batches": [m["batch_id"] for m in manifests]}
    for group in GROUPS:
        report[group] = _write_group(spark, settings, group, manifests, run_id)
    report["deliveries"] = sorted({d for group in GROUPS for d in (report[group] or {}).get("deliveries", [])})
    faults.point("after_bronze_commit")
    report["seconds"] = round(time.monotonic() - started, 3)
    return report
