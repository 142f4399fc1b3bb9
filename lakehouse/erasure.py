"""A learner's right to erasure, above the layers it rewrites: every layer, every Delta log and version, the landed
files, and the warehouse with its statistics (docs/erasure.md). What later runs need of an erasure (tombstones, who
a raw text names, the filter of later deliveries, the landing scrub) is in `lakehouse.tombstones`; `lakehouse.verify`
looks for what is left."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial

import psycopg2
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import delta, faults, gold, silver, tables
from lakehouse import parsing as P
from lakehouse.catalog import lake_tables
from lakehouse.config import DELTA_LAYERS, Settings
from lakehouse.delta_log import DeltaLog
from lakehouse.pgserver import managed, warehouse_dsn
from lakehouse.reports import StageReport
from lakehouse.tombstones import (
    Erased,
    hashed,
    keys_column,
    learners_column,
    salt,
    scrub_landing,
    without_learners,
    write_tombstones,
)
from lakehouse.warehouse.loads import ERASED_MEMBER, ERASED_MEMBER_SK
from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.mirror import MIRROR_LOCK, first_value, mirror

AUDIT = tables.table("_system", "erasures")
LAKE_LAYERS = (*DELTA_LAYERS, "_system")
KEY = "t.landed_path <=> s.landed_path AND t.line_number <=> s.line_number"  # a bronze or quarantine row


def student_ids(given: Iterable[str]) -> set[str]:
    """The ids to erase, trimmed, blanks left out; ValueError (naming no id) when none is left."""
    ids = {i.strip() for i in given if i and i.strip()}
    if not ids:
        raise ValueError("name at least one student id to erase")
    return ids


# -- bronze and quarantine: the rows naming the learners, rewritten by key ------------------------------------------


def _hour(when: Column, pattern: str) -> Column:
    """A time read as silver reads it, kept to its hour (the day and the hour stay, the minutes go)."""
    return F.date_format(F.date_trunc("hour", P.parse_at(when)), pattern)


def anonymized_event(value: Column, event_id: Column, nonce: str) -> Column:
    """A raw event line without its learner: the student part of `studentId_clientType` removed (the client type
    kept), the per-person ids replaced by hashes of a value never stored (one per erasure: a session stays one
    session), the quasi-identifiers blanked, `at` kept to the hour, and the erasure's mark with a token of the event's
    identity (distinct events stay distinct, duplicates stay duplicates)."""
    fields = F.from_json(P.json_text(value), "map<string,string>")
    blanked = F.array(*(F.lit(k) for k in tables.EVENT_QUASI_IDENTIFIERS))
    person = F.array(*(F.lit(k) for k in tables.EVENT_PERSON_FIELDS))

    def rewritten(k: Column, v: Column) -> Column:
        return (
            F.when(
                k == tables.EVENT_STUDENT_FIELD,
                F.when(v.contains("@"), F.concat(F.lit("@"), F.substring_index(v, "@", -1))),
            )
            .when(
                F.array_contains(person, k) & v.isNotNull(), F.substring(F.sha2(F.concat(F.lit(nonce), v), 256), 1, 32)
            )
            .when(F.array_contains(blanked, k), F.lit(None))
            .when(k == "at", _hour(v, "yyyy-MM-dd HH:mm:ss"))
            .otherwise(v)
        )

    kept = F.map_filter(F.transform_values(fields, rewritten), lambda k, _: ~k.isin(tables.ERASED, tables.ERASED_ID))
    mark = F.create_map(
        F.lit(tables.ERASED), F.lit("true"), F.lit(tables.ERASED_ID), F.sha2(F.concat(F.lit(nonce), event_id), 256)
    )
    return F.to_json(F.map_concat(kept, mark))


def anonymized_record(record: Column, entity: str, record_id: Column, nonce: str) -> Column:
    """A raw export record without its learner: no student field, its time kept to the hour, and the erasure's mark
    with a token of the record's identity."""
    export = tables.EXPORT[entity]
    fields = F.from_json(record, "map<string,string>")
    dated = F.transform_values(
        fields, lambda k, v: F.when(k == F.lit(export.date_field), _hour(v, "yyyy-MM-dd HH:mm:ss.SSS")).otherwise(v)
    )
    kept = F.map_filter(dated, lambda k, _: ~k.isin(export.student_field, tables.ERASED, tables.ERASED_ID))
    mark = F.create_map(
        F.lit(tables.ERASED), F.lit("true"), F.lit(tables.ERASED_ID), F.sha2(F.concat(F.lit(nonce), record_id), 256)
    )
    return F.to_json(F.map_concat(kept, mark))


def _named(rows: DataFrame, text: str, keys: Column, erased: Erased) -> DataFrame:
    return rows.where(erased.any_of(learners_column(F.col(text), keys)))


def _bronze_rewrites(
    spark: SparkSession, settings: Settings, name: str, erased: Erased, mode: str, nonce: str
) -> DataFrame | None:
    """The rows of bronze.<name> naming an erased learner, keyed, with `_delete` or their rewritten text."""
    rows = delta.read_table(spark, "bronze", name, settings)
    if name == "events":
        named = _named(rows, "value", keys_column("events"), erased)
        if mode == "delete":
            return named.select("landed_path", "line_number", F.lit(True).alias("_delete"), "value", "at_raw")
        ids = silver.identified_events(named, "").select("source_file", "line_number", "batch_id", "event_id")
        out = named.join(ids, ["source_file", "line_number", "batch_id"])
        value = anonymized_event(F.col("value"), F.col("event_id"), nonce)
        at = F.get_json_object(value, "$.at")
        return out.select(
            "landed_path", "line_number", F.lit(False).alias("_delete"), value.alias("value"), at.alias("at_raw")
        )
    export = tables.EXPORT[name]
    if export.student_field is None:
        return None
    named = _named(rows, "record", keys_column(name), erased)
    if mode == "delete" or export.is_snapshot:  # a learner's profile goes, whatever the mode
        return named.select("landed_path", "line_number", F.lit(True).alias("_delete"), "record")
    ids = silver.identified_records(named, name)
    record = anonymized_record(F.col("record"), name, F.col("record_id"), nonce)
    return named.join(ids, ["landed_path", "line_number"]).select(
        "landed_path", "line_number", F.lit(False).alias("_delete"), record.alias("record")
    )


def _quarantine_rewrites(spark: SparkSession, settings: Settings, name: str, erased: Erased) -> DataFrame:
    """The rows of quarantine.<name> naming an erased learner: a line or record goes; a file quarantined whole keeps
    its row without the learner's records (and without its original bytes, which hold them)."""
    rows = delta.read_table(spark, "quarantine", name, settings)
    keys = keys_column("events") if name == "events" else keys_column(F.col("entity"))
    named = rows.where(erased.any_of(learners_column(F.col("raw"), keys)))
    return named.select(
        "landed_path",
        "line_number",
        F.col("line_number").isNotNull().alias("_delete"),
        without_learners(F.col("raw"), keys, erased).alias("raw"),
        F.lit(None).cast("string").alias("raw_base64"),
    )


def erase_lake(spark: SparkSession, settings: Settings, erased: Erased, mode: str) -> dict[str, int]:
    """Rewrite bronze and quarantine without the erased learners, by `mode` (anonymize or delete): each table's rows
    naming them are computed apart and merged back by their key, so no commit records who they were."""
    nonce = secrets.token_hex(16)

    def rewrites(layer: str, name: str, session: SparkSession) -> DataFrame | None:
        if layer == "bronze":
            return _bronze_rewrites(session, settings, name, erased, mode, nonce)
        return _quarantine_rewrites(session, settings, name, erased)

    def rewrite(layer: str, name: str, session: SparkSession) -> int:
        found = rewrites(layer, name, session)
        if found is None:
            return 0
        found = found.cache()
        try:
            changed = found.count()
            if changed:
                columns = [c for c in found.columns if c not in ("landed_path", "line_number", "_delete")]
                delta.merge_once(
                    session,
                    found,
                    delta.Target(tables.table(layer, name), settings),
                    on=KEY,
                    update_set={c: f"s.{c}" for c in columns},
                    insert=False,
                    delete_when="s._delete",
                )
        finally:
            found.unpersist()
        delta.purge(session, settings.table_path(layer, name))  # rows deletion vectors hide, out of the files
        faults.point("mid_erasure")
        return changed

    names = [("bronze", n) for n in ("events", *tables.ENTITIES)] + [
        ("quarantine", n) for n in ("events", "transactional")
    ]
    present = [(layer, n) for layer, n in names if delta.table_exists(layer, n, settings)]
    return delta.write_tables(spark, {f"{layer}.{n}": partial(rewrite, layer, n) for layer, n in present})


# -- every Delta table: layout, vacuum, history ------------------------------------------------------------------------


def _lake_tables(settings: Settings) -> list[tables.Table]:
    """The catalogue's specs of the Delta tables the lake holds."""
    found = {t.key for t in lake_tables(settings, LAKE_LAYERS)}
    return [t for t in tables.LAKE if t.key in found]


def align_layouts(spark: SparkSession, settings: Settings) -> int:
    """Every table's properties as the catalogue says (statistics never on personal columns): the files the
    erasure writes carry no learner's id in their statistics. The tables changed."""

    def align(spec: tables.Table, session: SparkSession) -> bool:
        return delta.align_properties(session, delta.Target(spec, settings))

    return sum(delta.write_tables(spark, {s.key: partial(align, s) for s in _lake_tables(settings)}).values())


def _stale(file: str, live: set[str], names: set[str]) -> bool:
    """Whether a file of a table is read by no current data file: not one of them, nor a hidden checksum of one."""
    base = file.rsplit("/", 1)[-1]
    return file not in live and not (base.startswith(".") and base.endswith(".crc") and base[1:-4] in names)


def vacuum_all(settings: Settings) -> dict[str, int]:
    """Delete every file of each Delta table that its latest version does not read, outside its log (what `VACUUM
    RETAIN 0 HOURS` does, from the log, without a Spark job per table; change-data files included): no earlier
    version can be read any more. Runs under the writer lock, so no write is under way."""
    deleted: dict[str, int] = {}
    for layer, name in ((t.layer, t.name) for t in lake_tables(settings, LAKE_LAYERS)):
        log = DeltaLog(settings.table_path(layer, name), settings)
        if not log.exists:
            continue
        live = log.live_files()
        names = {f.rsplit("/", 1)[-1] for f in live}
        gone = sorted(f for f in log.files_on_disk() if _stale(f, live, names))
        for file in gone:
            log.fs.rm(f"{log.root}/{file}")
        deleted[f"{layer}.{name}"] = len(gone)
    return deleted


def compact_histories(spark: SparkSession, settings: Settings) -> int:
    """Every table's history compacted to its current state (delta.compact_history): no commit before it, whose
    conditions or statistics could name an erased learner, stays; gold's marks are kept beside it. The log files
    deleted."""

    def compact(spec: tables.Table, session: SparkSession) -> int:
        keep = {}
        if spec.layer == "gold" and (marks := gold.seen_marks(settings, spec.name)) is not None:
            keep[gold.MARKS_PROPERTY] = json.dumps({"app_id": gold.app_id(spec.name), "marks": marks})
        return delta.compact_history(session, settings.table_path(spec.layer, spec.name), keep)

    return sum(delta.write_tables(spark, {s.key: partial(compact, s) for s in _lake_tables(settings)}).values())


# -- the warehouse ---------------------------------------------------------------------------------------------------


def _warehouse_dsn(settings: Settings) -> str | None:
    """The warehouse DSN when a warehouse exists (configured, or the managed cluster was created), else None."""
    if settings.pg_dsn is None and not managed(settings).initialized():
        return None
    return warehouse_dsn(settings)


def _dw_mirrored(dsn: str) -> bool:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('dw.load_audit') is not null")
        found = bool(first_value(cur))
    conn.close()
    return found


def erase_warehouse(settings: Settings, ids: set[str]) -> dict[str, int]:
    """Mirror the erased gold (its facts of the learners now point to the erased member), drop every version of the
    learners from dw's dimension, drop the stage tables (with their statistics; the next migration makes them
    again), then vacuum and analyse dw, so no row and no statistic of `pg_stats` holds them."""
    dsn = _warehouse_dsn(settings)
    if dsn is None or not _dw_mirrored(dsn):
        return {}
    mirror(settings)
    conn = psycopg2.connect(dsn)
    counts: dict[str, int] = {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", (MIRROR_LOCK,))
            cur.execute(
                "select table_name from information_schema.columns where table_schema = 'dw'"
                " and column_name = 'student_id' and table_name <> 'dim_student'"
                " and table_name in (select table_name from information_schema.tables"
                " where table_schema = 'dw' and table_type = 'BASE TABLE')"
            )
            for (table,) in cur.fetchall():  # gold no longer holds them: a row that still does goes to the member
                sk = ", student_sk = %s" if table.startswith("fact_") else ""
                cur.execute(
                    f"update dw.{table} set student_id = %s{sk} where student_id = any(%s)",
                    (ERASED_MEMBER, *((ERASED_MEMBER_SK,) if sk else ()), sorted(ids)),
                )
                counts[f"dw.{table}"] = cur.rowcount
            cur.execute("delete from dw.dim_student where student_id = any(%s)", (sorted(ids),))
            counts["dw.dim_student"] = cur.rowcount
            cur.execute(  # stage.load_replay stays: table names and as-ofs, which migrations alone create
                "select string_agg(format('stage.%I', tablename), ', ') from pg_tables where schemaname = 'stage'"
                " and tablename <> 'load_replay'"
            )
            staged = first_value(cur)
            if staged:
                cur.execute(f"drop table {staged}")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select string_agg(format('dw.%I', tablename), ', ') from pg_tables where schemaname = 'dw'")
            cur.execute(f"vacuum (analyze) {first_value(cur)}")
    finally:
        conn.close()
    migrate(dsn)  # the stage tables again, empty and without statistics
    return counts


# -- the audit log ---------------------------------------------------------------------------------------------------


def _audit(
    spark: SparkSession,
    settings: Settings,
    erasure_id: str,
    run_id: str,
    mode: str,
    students: int,
    rows: dict[str, int],
    seconds: float,
) -> None:
    """Append the erasure's row to `_system.erasures` (no id: only how many learners and rows)."""
    row = [(erasure_id, run_id, datetime.now(UTC), mode, students, rows, seconds)]
    target = delta.Target(AUDIT, settings, app_id=f"erasure.{erasure_id}", version=0)
    delta.append_once(spark.createDataFrame(row, AUDIT.ddl), target)


def audit_log(spark: SparkSession, settings: Settings) -> DataFrame:
    """The erasures done so far."""
    return delta.read_table(spark, AUDIT.layer, AUDIT.name, settings)


# -- erase -----------------------------------------------------------------------------------------------------------


def erase(spark: SparkSession, settings: Settings, ids: Iterable[str], run_id: str = "local") -> StageReport:
    """Erase learners from every layer, every Delta log and version, the landed files and the warehouse. Idempotent:
    a run interrupted anywhere is completed by running it again. Call under the writer lock. Neither its report nor
    its errors carry an id."""
    wanted = student_ids(ids)
    mode = settings.erasure_mode
    started = time.monotonic()
    key = salt(settings, create=True)
    assert key is not None
    hashes = frozenset(hashed(key, i) for i in wanted)
    write_tombstones(settings, hashes)  # first: bronze drops them from now on
    erased = Erased(key, hashes)
    rows: dict[str, int] = {"tables_realigned": align_layouts(spark, settings)}
    rows.update(scrub_landing(settings, erased, hint=wanted))
    rows.update(erase_lake(spark, settings, erased, mode))
    faults.point("erasure_after_bronze")
    # silver and gold are rebuilt from the rewritten bronze: they equal what a full build gives, and each gold
    # table's commit records the silver marks it has consumed, so later incremental runs stay consistent
    silver.refresh(spark, settings, run_id, full_refresh=True)
    gold.refresh(spark, settings, run_id, full_refresh=True)
    rows["files_vacuumed"] = sum(vacuum_all(settings).values())
    rows["log_files_removed"] = compact_histories(spark, settings)
    rows.update(erase_warehouse(settings, wanted))
    seconds = round(time.monotonic() - started, 3)
    erasure_id = uuid.uuid4().hex
    _audit(spark, settings, erasure_id, run_id, mode, len(wanted), rows, seconds)
    return StageReport(
        "erase",
        rows_out=sum(n for name, n in rows.items() if "." in name),
        seconds=seconds,
        details={"erasure_id": erasure_id, "run_id": run_id, "mode": mode, "students": len(wanted), "rows": rows},
    )
