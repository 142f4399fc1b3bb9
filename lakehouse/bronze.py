"""Bronze: landed files as Delta tables, every line or record kept as delivered, the unreadable quarantined."""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType, StringType, StructField, StructType, TimestampType

from lakehouse import faults, tables
from lakehouse import parsing as P
from lakehouse.config import Settings, join
from lakehouse.delta import Target, append_once, write_tables
from lakehouse.delta_log import last_txn_version
from lakehouse.landing import lake_fs, lake_listing, read_ledger
from lakehouse.reports import StageReport
from lakehouse.tombstones import Erased, mark_erased, scrub_landing

log = logging.getLogger(__name__)

ENTITIES = tables.ENTITIES
# Tables written together from one read of the landed files, as (layer, name).
GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (("bronze", "events"), ("quarantine", "events")),
    "transactional": (*(("bronze", e) for e in ENTITIES), ("quarantine", "transactional")),
}
SET_ASIDE = "_system/set_aside"  # one JSON record per landed file a person set aside (`lakehouse quarantine`)
# The landed file a Spark row came from: the lake-relative tail of `_metadata.file_path`.
LANDED_TAIL = r"(landing/[^/]+/[^/]+/[^/]+/[^/]+)$"

FILES_SCHEMA = StructType(
    [
        StructField("landed_path", StringType(), False),
        StructField("source_file", StringType(), False),
        StructField("entity", StringType(), True),
        StructField("delivery", StringType(), False),
        StructField("as_of", TimestampType(), False),
        StructField("batch_id", LongType(), False),
        StructField("landed_at", TimestampType(), False),
        # why landing or a person set the whole file aside (its content is not read), and the start of that content
        StructField("file_reason", StringType(), True),
        StructField("head", StringType(), True),
        # event lines landing found longer than the line cap: blank in the landed copy, kept whole beside it
        StructField(
            "long_lines",
            ArrayType(
                StructType(
                    [
                        StructField("line_number", LongType(), False),
                        StructField("bytes", LongType(), False),
                        StructField("head", StringType(), True),
                    ]
                )
            ),
            True,
        ),
    ]
)
# The fields bronze checks (events; transactional: every entity's), read by the parser silver reads them with.
EVENT_CHECKED = "at string, studentId_clientType string, country string"
RECORD_CHECKED = ", ".join(f"`{f}` string" for f in sorted({f for e in tables.EXPORTS for f in e.fields}))


def app_id(layer: str, name: str) -> str:
    """The Delta txnAppId bronze uses for one of its tables."""
    return f"bronze.{name}" if layer == "bronze" else f"bronze.quarantine.{name}"


def _columns(layer: str, name: str) -> tuple[str, ...]:
    return tables.table(layer, name).names


def event_lines(raw_lines: DataFrame, files: DataFrame) -> DataFrame:
    """One row per delivered line: exact text without its terminator, 1-based line number, file metadata; plus one
    row (no line number) per file set aside whole. A line landing found too long has its head as text."""
    # Exact line numbers without sorting a whole file in one task: a split's rows keep file order and sit together in
    # one partition, so a line's number is the lines of the file's earlier splits plus its place in its own split.
    # Only the per-split counts (a few rows per file) are aggregated; the lines themselves are never shuffled.
    split = ["file_path", "block_start"]
    earlier = Window.partitionBy("file_path").orderBy("block_start").rowsBetween(Window.unboundedPreceding, -1)
    splits = (
        raw_lines.groupBy(*split)
        .agg(F.min("seq").alias("first_seq"), F.count(F.lit(1)).alias("lines"))
        .select(*split, "first_seq", F.coalesce(F.sum("lines").over(earlier), F.lit(0)).alias("before"))
    )
    stripped = (
        raw_lines.join(F.broadcast(splits), split)
        .withColumn("line_number", (F.col("before") + F.col("seq") - F.col("first_seq") + 1).cast("long"))
        .withColumn("raw_bytes", F.col("value").cast("binary"))
        .withColumn(
            "raw_bytes",
            F.when(
                F.col("value").endswith("\r"), F.expr("substring(raw_bytes, 1, octet_length(raw_bytes) - 1)")
            ).otherwise(F.col("raw_bytes")),
        )
        .withColumn("value", F.col("raw_bytes").cast("string"))
        .withColumn("landed_path", F.regexp_extract("file_path", LANDED_TAIL, 1))
    )
    meta = files.drop("entity")
    lines = stripped.join(F.broadcast(meta.where(F.col("file_reason").isNull())), "landed_path")
    long_line = F.when(
        F.size("long_lines") > 0,
        F.get(F.filter("long_lines", lambda x: x.getField("line_number") == F.col("line_number")), 0),
    )
    lines = (
        lines.withColumn("_long", long_line)
        .withColumn("file_reason", F.when(F.col("_long").isNotNull(), F.lit("line_too_long")))
        .withColumn("value", F.coalesce(F.regexp_replace(F.col("_long").getField("head"), "\r$", ""), F.col("value")))
        .withColumn("raw_bytes", F.when(F.col("_long").isNull(), F.col("raw_bytes")))
    )
    whole = meta.where(F.col("file_reason").isNotNull()).select(
        "*",
        F.col("head").alias("value"),
        F.lit(None).cast("long").alias("line_number"),
        F.lit(None).cast("binary").alias("raw_bytes"),
    )
    return lines.unionByName(whole, allowMissingColumns=True).drop(
        "file_path", "block_start", "seq", "first_seq", "before", "_long", "long_lines", "head"
    )


def classified_events(lines: DataFrame, run_id: str, dates: tuple[date, date] | None = None) -> DataFrame:
    """Each line with its fate: `status` bronze, quarantine (with `reason`) or blank; `cleaned` marks bronze lines
    silver will remove control characters from. `dates` is the plausible range of event dates (default: the
    default settings')."""
    dates = dates or P.plausible_dates(date(2000, 1, 1), 2)
    # Each check is its own column first: inside CASE branches Spark evaluates a shared expression once per use, and
    # repeating the JSON parses and the time parse made classification 2.5x slower (bench/README.md). The fields are
    # read as silver reads them (lakehouse.parsing), so an event bronze keeps is the event silver types.
    text = F.col("_text")
    checked = (
        lines.select(
            "*",
            F.expr("is_valid_utf8(value)").alias("_valid"),
            F.col("value").rlike(r"^\s*$").alias("_blank"),
            P.json_text(F.col("value")).alias("_text"),
            P.may_hold_control(F.col("value")).alias("_control"),
        )
        .select(
            "*",
            F.json_object_keys(text).alias("_keys"),
            P.read_object(text, EVENT_CHECKED).alias("_obj"),
        )
        .select(
            "*",
            (F.col("_keys").isNotNull() & P.parsed(F.col("_obj"))).alias("_object"),
            P.field(F.col("_obj"), "at", F.col("_control")).alias("_at"),
            P.field(F.col("_obj"), "studentId_clientType", F.col("_control")).alias("_sc"),
            P.field(F.col("_obj"), "country", F.col("_control")).alias("_country"),
        )
    )
    student, client = P.student_and_client(F.col("_sc"))
    checked = checked.select(
        "*",
        P.parse_at(F.col("_at")).alias("_time"),
        F.when(~F.col("_object"), P.too_deep(text)).alias("_deep"),
        (F.size(F.array_distinct(P.cleaned_keys(F.col("_keys"), F.col("_control")))) < F.size("_keys")).alias("_dup"),
        F.when(F.col("_object"), P.value_too_large(text)).alias("_big"),
        F.when(F.col("_object"), P.changed_by_cleaning(text, F.col("_control"))).alias("_changed"),
        F.when(P.may_be_too_long(F.col("_sc"), F.col("_country")), P.too_long(student, client, F.col("_country")))
        .otherwise(F.lit(False))
        .alias("_long_id"),
    )
    valid = F.col("_valid")
    reason = (
        F.when(F.col("file_reason").isNotNull(), F.col("file_reason"))
        .when(~valid, F.lit("invalid_utf8"))
        .when(F.col("_blank"), F.lit(None))
        .when(F.col("_deep"), F.lit("nesting_too_deep"))
        .when(~F.col("_object"), F.lit("not_json_object"))
        .when(F.col("_dup"), F.lit("duplicate_key"))
        .when(F.col("_big"), F.lit("value_too_large"))
        .when(F.col("_at").isNull(), F.lit("missing_at"))
        .when(F.col("_time").isNull(), F.lit("unparseable_at"))
        .when(P.outside(F.col("_time"), *dates), F.lit("date_out_of_range"))
        .when(F.col("_long_id"), F.lit("id_too_long"))
    )
    # No second copy of the text (`raw` is derived from `value` by quarantine_events): bronze caches this frame.
    classified = checked.select(
        *(c for c in lines.columns if c not in ("raw_bytes", "file_reason")),
        F.when(valid, F.col("_at")).alias("at_raw"),
        reason.alias("reason"),
        F.when(~valid & F.col("raw_bytes").isNotNull(), F.base64("raw_bytes")).alias("raw_base64"),
        F.lit(run_id).alias("run_id"),
        "_blank",
        "_changed",
    )
    status = (
        F.when(F.col("reason").isNotNull(), F.lit("quarantine"))
        .when(F.col("_blank"), F.lit("blank"))
        .otherwise(F.lit("bronze"))
    )
    return classified.select("*", status.alias("status")).select(
        *(c for c in classified.columns if not c.startswith("_")),
        "status",
        (F.coalesce(F.col("_changed"), F.lit(False)) & (F.col("status") == "bronze")).alias("cleaned"),
    )


def bronze_events(classified: DataFrame) -> DataFrame:
    """`bronze.events`: one row per non-blank line that is a JSON object with a parseable `at`."""
    return classified.filter(F.col("status") == "bronze").select(*_columns("bronze", "events"))


def quarantine_events(classified: DataFrame) -> DataFrame:
    """`quarantine.events`: one row per event line that cannot be read, with its reason."""
    raw = F.when(F.col("reason") == "invalid_utf8", F.expr("make_valid_utf8(value)")).otherwise(F.col("value"))
    return (
        classified.filter(F.col("status") == "quarantine")
        .withColumn("raw", raw)
        .select(*_columns("quarantine", "events"))
    )


def _by_entity(make: Any) -> Column:
    """`make(entity)` for each row's entity (null for entities it gives None)."""
    out: Any = F
    for entity in ENTITIES:
        value = make(entity)
        if value is not None:
            out = out.when(F.col("entity") == entity, value)
    return out if out is not F else F.lit(None)


def transactional_records(
    contents: DataFrame, files: DataFrame, run_id: str, dates: tuple[date, date] | None = None
) -> DataFrame:
    """Each exported record (or unreadable file) with its fate; a zero-byte export is `not_json_array`. `cleaned`
    marks bronze records silver will remove control characters from; `dates` is the plausible range of dates."""
    dates = dates or P.plausible_dates(date(2000, 1, 1), 2)
    docs = files.join(
        contents.select(F.regexp_extract("file_path", LANDED_TAIL, 1).alias("landed_path"), "value"),
        "landed_path",
        "left",
    ).withColumn("value", F.coalesce("value", F.lit("")))
    valid = F.expr("is_valid_utf8(value)")
    readable_file = F.col("file_reason").isNull() & F.col("entity").isin(*ENTITIES)
    parsed = docs.select(
        "*",
        valid.alias("valid"),
        F.when(valid & readable_file, F.from_json(P.json_text(F.col("value")), "array<string>")).alias("items"),
    )
    meta = [c for c in FILES_SCHEMA.fieldNames() if c not in ("head", "long_lines")]
    record = F.col("record")
    checked = (
        parsed.filter(F.col("items").isNotNull())
        .select(
            *meta,
            F.posexplode("items").alias("pos", "record"),
        )
        .select(
            "*",
            F.json_object_keys(record).alias("_keys"),
            P.read_object(record, RECORD_CHECKED).alias("_obj"),
            P.may_hold_control(record).alias("_control"),
        )
        .select("*", (F.col("_keys").isNotNull() & P.parsed(F.col("_obj"))).alias("_object"))
    )
    obj = F.col("_obj")
    checked = checked.select(
        "*",
        (F.size(F.array_distinct(P.cleaned_keys(F.col("_keys"), F.col("_control")))) < F.size("_keys")).alias("_dup"),
        F.when(F.col("_object"), P.value_too_large(record)).alias("_big"),
        F.when(F.col("_object"), P.changed_by_cleaning(record, F.col("_control"))).alias("_changed"),
        _by_entity(
            lambda e: (
                P.parse_export_time(P.clean(obj.getField(date))) if (date := tables.EXPORT[e].date_field) else None
            )
        ).alias("_time"),
        _by_entity(lambda e: P.too_long(*(P.clean(obj.getField(f)) for f in tables.EXPORT[e].ids))).alias("_long_id"),
    )
    readable = checked.select(
        *meta,
        (F.col("pos") + 1).cast("long").alias("line_number"),
        "record",
        F.when(~F.col("_object"), F.lit("not_an_object"))
        .when(F.col("_dup"), F.lit("duplicate_key"))
        .when(F.col("_big"), F.lit("value_too_large"))
        .when(P.outside(F.col("_time"), *dates), F.lit("date_out_of_range"))
        .when(F.col("_long_id"), F.lit("id_too_long"))
        .alias("reason"),
        F.col("record").alias("raw"),
        F.lit(None).cast("string").alias("raw_base64"),
        F.coalesce(F.col("_changed"), F.lit(False)).alias("_changed"),
    )
    whole = F.col("file_reason").isNotNull()
    unreadable = parsed.filter(F.col("items").isNull()).select(
        *meta,
        F.lit(None).cast("long").alias("line_number"),
        F.lit(None).cast("string").alias("record"),
        F.when(whole, F.col("file_reason"))
        .when(~F.col("entity").isin(*ENTITIES), F.lit("unknown_entity"))
        .when(~F.col("valid"), F.lit("invalid_utf8"))
        .when(P.too_deep(P.json_text(F.col("value"))), F.lit("nesting_too_deep"))
        .otherwise(F.lit("not_json_array"))
        .alias("reason"),
        F.when(whole, F.col("head"))
        .when(F.col("valid"), F.col("value"))
        .otherwise(F.expr("make_valid_utf8(value)"))
        .alias("raw"),
        F.when(~whole & ~F.col("valid"), F.base64(F.col("value").cast("binary"))).alias("raw_base64"),
        F.lit(False).alias("_changed"),
    )
    status = F.when(F.col("reason").isNull(), F.lit("bronze")).otherwise(F.lit("quarantine"))
    return readable.unionByName(unreadable).select(
        *(c for c in readable.columns if c != "_changed"),
        status.alias("status"),
        F.lit(run_id).alias("run_id"),
        (F.col("_changed") & status.eqNullSafe("bronze")).alias("cleaned"),
    )


def bronze_entity(records: DataFrame, entity: str) -> DataFrame:
    """`bronze.<entity>`: one row per exported record of that entity."""
    return records.filter((F.col("status") == "bronze") & (F.col("entity") == entity)).select(
        *_columns("bronze", entity)
    )


def quarantine_transactional(records: DataFrame) -> DataFrame:
    """`quarantine.transactional`: exports and records that cannot be read or held, with their reason."""
    return records.filter(F.col("status") == "quarantine").select(*_columns("quarantine", "transactional"))


def _files_frame(spark: SparkSession, entries: list[dict[str, Any]]) -> DataFrame:
    rows = [
        (
            e["landed_path"],
            e["path"],
            e["entity"],
            e["delivery"],
            datetime.fromisoformat(e["as_of"]),
            int(e["batch_id"]),
            datetime.fromisoformat(e["landed_at"]),
            e.get("file_reason"),
            e.get("head"),
            [(x["line_number"], x["bytes"], x["head"]) for x in e.get("long_lines", [])],
        )
        for e in entries
    ]
    return spark.createDataFrame(rows, FILES_SCHEMA)


def _readable(settings: Settings, entries: list[dict[str, Any]]) -> list[str]:
    """The landed files bronze reads: not set aside whole, and (exports) not empty."""
    return [
        join(settings.lake_url, e["landed_path"])
        for e in entries
        if not e.get("file_reason") and (e["kind"] == "events" or e["bytes"] > 0)
    ]


def _read_event_lines(spark: SparkSession, paths: list[str]) -> DataFrame:
    if not paths:
        return spark.createDataFrame([], "value string, file_path string, block_start long, seq long")
    return spark.read.text(paths, lineSep="\n").select(
        "value",
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("seq"),
    )


def _read_documents(spark: SparkSession, paths: list[str]) -> DataFrame:
    return spark.read.text(paths, wholetext=True).select("value", F.col("_metadata.file_path").alias("file_path"))


# Every reason a bronze row can be quarantined with (docs/quarantine.md); the run report counts each.
# fmt: off
REASONS = ("line_too_long", "file_too_large", "set_aside", "unknown_entity", "invalid_utf8", "not_json_object",
           "not_json_array", "not_an_object", "nesting_too_deep", "duplicate_key", "value_too_large", "missing_at",
           "unparseable_at", "date_out_of_range", "id_too_long")
# fmt: on
TALLIES = ("lines_read", "bronze_rows", "blank_lines", "records_cleaned", "erased_dropped")


def _tallies(key: str | None, keys: list[str]) -> list[Column]:
    """The run report's accounting per `key` value (or overall) as aggregates, observed on the pass that computes the
    classified rows: lines read = bronze rows + quarantined (by reason) + blank lines, with no pass of its own."""
    status, reason = F.col("status"), F.col("reason")
    fates = {
        "lines_read": F.lit(True),
        "bronze_rows": status == "bronze",
        "blank_lines": status == "blank",
        "records_cleaned": F.col("cleaned"),
        "erased_dropped": status == "erased",
        **{r: (status == "quarantine") & (reason == r) for r in REASONS},
        "other": (status == "quarantine") & ~reason.isin(*REASONS),
    }
    return [
        F.count_if((F.col(key) == k if key else F.lit(True)) & fate).alias(f"{k}/{name}")
        for k in keys
        for name, fate in fates.items()
    ]


def _counts(observed: dict[str, int], keys: list[str]) -> dict[str, Any]:
    """The observed tallies as the report's buckets, quarantined rows by reason."""
    out: dict[str, Any] = {}
    for k in keys:
        bucket: dict[str, Any] = {t: observed[f"{k}/{t}"] for t in TALLIES}
        bucket["quarantined"] = {r: observed[f"{k}/{r}"] for r in (*REASONS, "other") if observed[f"{k}/{r}"]}
        out[k] = bucket
    return out


def _backlog(
    settings: Settings,
    group: str,
    manifests: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], int], int, list[dict[str, Any]]]:
    """Each table's watermark, the newest batch, and the new files of the group some table still lacks."""
    marks = {t: last_txn_version(settings.table_path(*t), app_id(*t)) or 0 for t in GROUPS[group]}
    low = min(marks.values())
    behind = [m for m in manifests if m["batch_id"] > low]
    aside = read_set_aside(settings)
    entries = [
        dict(e, batch_id=m["batch_id"], **aside.get((m["batch_id"], e["landed_path"]), {}))
        for m in behind
        for e in m["files"]
        if e["status"] == "new"
        and e["kind"] == group
        and any(_lacks(t, mark, m["batch_id"], e) for t, mark in marks.items())
    ]
    return marks, (behind[-1]["batch_id"] if behind else low), entries


def _lacks(table: tuple[str, str], mark: int, batch: int, entry: dict[str, Any]) -> bool:
    """Whether the table, at watermark `mark`, still lacks what a landed file of `batch` gives it. The group's
    quarantine table is written at every batch of its group (its watermark is the group's), bronze.events takes every
    events file, and an export feeds its entity's table only: a delivery without that export leaves the table as it
    is, with no commit. A table not created yet takes every file of its group."""
    if mark >= batch:
        return False
    layer, name = table
    return mark == 0 or layer == "quarantine" or name in ("events", entry["entity"])


def _classified(
    spark: SparkSession,
    settings: Settings,
    group: str,
    entries: list[dict[str, Any]],
    run_id: str,
) -> tuple[DataFrame, dict[tuple[str, str], Any]]:
    """The group's landed files, every line or record with its fate, and the function giving each table its rows."""
    files = _files_frame(spark, entries)
    paths = _readable(settings, entries)
    dates = P.plausible_dates(settings.plausible_since, settings.plausible_days_ahead)
    outputs: dict[tuple[str, str], Callable[[DataFrame], DataFrame]]
    if group == "events":
        frame = classified_events(event_lines(_read_event_lines(spark, paths), files), run_id, dates)
        outputs = {("bronze", "events"): bronze_events, ("quarantine", "events"): quarantine_events}
    else:
        contents = (
            _read_documents(spark, paths) if paths else spark.createDataFrame([], "value string, file_path string")
        )
        frame = transactional_records(contents, files, run_id, dates)
        outputs = {("bronze", e): partial(bronze_entity, entity=e) for e in ENTITIES}
        outputs[("quarantine", "transactional")] = quarantine_transactional
    return frame, outputs


def _write_group(
    spark: SparkSession,
    settings: Settings,
    group: str,
    manifests: list[dict[str, Any]],
    run_id: str,
) -> dict[str, Any] | None:
    """Read the landed files the group's tables still lack and append them, one idempotent commit per table."""
    group_tables = GROUPS[group]
    marks, version, entries = _backlog(settings, group, manifests)
    if not entries:
        return None
    frame, outputs = _classified(spark, settings, group, entries, run_id)
    erased = Erased.of(settings)
    frame = mark_erased(frame, erased, group)  # records of erased learners (tombstones): kept nowhere, counted
    # On disk, not in the heap: at 10M events the in-memory cache builder exhausted a 2.5 GB heap (bench/README.md);
    # at 1M the disk cache was faster too (42 s against 47 s for bronze).
    frame = frame.persist(StorageLevel.DISK_ONLY)
    key, keys = (None, ["all"]) if group == "events" else ("entity", sorted({e["entity"] for e in entries}))
    pending = [t for t in group_tables if any(_lacks(t, marks[t], e["batch_id"], e) for e in entries)]
    tally = Observation("bronze_accounting")
    try:
        # One pass computes the classified rows into the cache and observes the run report's accounting on them;
        # the tables are then written from the cache side by side. Written side by side straight away, each write
        # computed the rows again while the cache was still empty.
        named = F.collect_set(F.when(F.col("_erased"), F.col("landed_path"))).alias("erased_files")
        frame.observe(tally, *_tallies(key, keys), named).write.format("noop").mode("overwrite").save()
        counts = _counts(tally.get, keys)
        if tally.get["erased_files"]:  # a delivery brought erased learners back: their landed copies lose them too
            scrub_landing(settings, erased, set(tally.get["erased_files"]))

        def write(table: tuple[str, str], _session: SparkSession) -> int:
            rows = outputs[table](frame.filter(F.col("batch_id") > marks[table]))
            append_once(rows, Target(tables.table(*table), settings, app_id=app_id(*table), version=version))
            faults.point("mid_bronze")
            return version

        written = write_tables(spark, {".".join(t): partial(write, t) for t in pending})
    finally:
        frame.unpersist()
    return {
        "version": version,
        "files": len(entries),
        "deliveries": sorted({e["delivery"] for e in entries}),
        "counts": counts,
        "committed": written,
    }


class FileFailure(RuntimeError):
    """Bronze fails on one landed file, every time: the message names it, its batch, and how to set it aside."""


def _name_the_file(
    spark: SparkSession,
    settings: Settings,
    group: str,
    manifests: list[dict[str, Any]],
    run_id: str,
    error: BaseException,
) -> None:
    """After the group failed: read its pending files one by one; raise FileFailure for the first that fails alone."""
    for entry in _backlog(settings, group, manifests)[2]:
        if entry.get("file_reason"):
            continue
        try:
            _classified(spark, settings, group, [entry], run_id)[0].write.format("noop").mode("overwrite").save()
        except (PySparkException, Py4JJavaError) as exc:
            cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            log.error("bronze fails on %s of batch %s: %s", entry["path"], entry["batch_id"], exc)
            raise FileFailure(
                f"bronze cannot ingest {entry['path']} of batch {entry['batch_id']} (landed as "
                f"{entry['landed_path']}): {cause}. It fails alone, so every run would; set it aside in quarantine "
                f"with `lakehouse quarantine --batch {entry['batch_id']} {shlex.quote(entry['path'])}` and later "
                "deliveries flow"
            ) from None


def read_set_aside(settings: Settings) -> dict[tuple[int, str], dict[str, Any]]:
    """The landed files set aside, by (batch, landed path), as the fields they give their ledger entry."""
    fs, names = lake_listing(settings, SET_ASIDE)
    paths = [n for n in names if n.endswith(".json")]
    blobs = fs.cat(paths) if paths else {}
    records = [json.loads(blobs[p]) for p in paths]
    return {(r["batch_id"], r["landed_path"]): {"file_reason": "set_aside", "head": None} for r in records}


def set_aside(settings: Settings, path: str, batch: int | None = None, note: str = "") -> dict[str, Any]:
    """Set a landed file bronze has not ingested yet aside: the next run quarantines it whole (reason `set_aside`,
    content not read) and ingests the rest. `path` is its source path or landed path; `batch` picks one landing."""
    manifests = read_ledger(settings)
    found = [
        dict(e, batch_id=m["batch_id"])
        for m in manifests
        for e in m["files"]
        if e["status"] == "new" and path in (e["path"], e["landed_path"]) and (batch is None or m["batch_id"] == batch)
    ]
    if not found:
        where = f" in batch {batch}" if batch is not None else ""
        raise ValueError(f"no file {path!r} was landed{where}: name it as the error does (its source path)")
    waiting = [e for e in found if e["batch_id"] > min(_backlog(settings, e["kind"], manifests)[0].values())]
    if not waiting:
        raise ValueError(
            f"{path!r} (batch {', '.join(str(e['batch_id']) for e in found)}) is already in bronze: "
            "nothing to set aside"
        )
    if len(waiting) > 1:
        raise ValueError(
            f"{path!r} was landed in batches {', '.join(str(e['batch_id']) for e in waiting)}: name one with --batch"
        )
    entry = waiting[0]
    record = {
        "batch_id": entry["batch_id"],
        "landed_path": entry["landed_path"],
        "path": entry["path"],
        "kind": entry["kind"],
        "note": note,
        "set_aside_at": datetime.now(UTC).isoformat(),
    }
    fs, root = lake_fs(settings)
    if settings.lake_is_local:
        fs.makedirs(join(root, SET_ASIDE), exist_ok=True)
    name = hashlib.sha256(entry["landed_path"].encode()).hexdigest()[:16]
    fs.pipe_file(
        join(root, SET_ASIDE, f"batch-{entry['batch_id']:06d}-{name}.json"),
        json.dumps(record, indent=1, sort_keys=True).encode(),
    )
    return record


def pending(settings: Settings) -> bool:
    """Whether a landed batch holds files some bronze table still lacks (read from the Delta logs, no Spark)."""
    manifests = read_ledger(settings)
    return any(_backlog(settings, group, manifests)[2] for group in GROUPS)


def ingest(spark: SparkSession, settings: Settings, run_id: str) -> StageReport:
    """Append every landed batch newer than each bronze table's watermark; returns the run's accounting."""
    started = time.monotonic()
    manifests = read_ledger(settings)

    def write_group(group: str, session: SparkSession) -> dict[str, Any] | None:
        try:
            return _write_group(session, settings, group, manifests, run_id)
        except (PySparkException, Py4JJavaError) as exc:
            _name_the_file(session, settings, group, manifests, run_id, exc)
            raise

    # The groups share no table: events and exports are ingested side by side.
    groups = write_tables(spark, {group: partial(write_group, group) for group in GROUPS})
    erased = sum(b["erased_dropped"] for g in groups.values() if g for b in g["counts"].values())
    faults.point("after_bronze_commit")
    written = [g for g in groups.values() if g]
    buckets = [b for g in written for b in g["counts"].values()]
    return StageReport(
        "bronze",
        files=sum(g["files"] for g in written),
        rows_in=sum(b["lines_read"] for b in buckets),
        rows_out=sum(b["bronze_rows"] for b in buckets),
        quarantined=sum(n for b in buckets for n in b["quarantined"].values()),
        deliveries=sorted({d for g in written for d in g["deliveries"]}),
        skipped=not written,
        commits=sum(len(g["committed"]) for g in written),
        seconds=round(time.monotonic() - started, 3),
        details={"run_id": run_id, "batches": [m["batch_id"] for m in manifests], "erased_dropped": erased, **groups},
    )
