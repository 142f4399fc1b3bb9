"""A learner's right to erasure, above the layers it rewrites: every layer, every readable Delta version, the landed
files and the warehouse (docs/erasure.md). What later runs need of an erasure (tombstones, the filter of later
deliveries, the landing scrub) is in `lakehouse.tombstones`."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg2
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import delta, faults, gold, silver, tables
from lakehouse.catalog import lake_tables
from lakehouse.config import Settings, join
from lakehouse.delta_log import DeltaLog, is_table
from lakehouse.landing import lake_fs, read_ledger
from lakehouse.pgserver import managed, warehouse_dsn
from lakehouse.reports import StageReport
from lakehouse.storage import filesystem
from lakehouse.tombstones import (
    REDACTED,
    STUDENT_FIELD,
    Erased,
    event_student,
    hashed,
    id_pattern,
    kind_of,
    landed_files,
    names_erased,
    record_student,
    salt,
    scrub_landing,
    value_pattern,
    write_tombstones,
)
from lakehouse.warehouse.loads import ERASED_MEMBER, ERASED_MEMBER_SK, LOADS
from lakehouse.warehouse.mirror import MIRROR_LOCK, first_value, mirror

AUDIT = tables.table("_system", "erasures")
DELTA_LAYERS = ("bronze", "quarantine", "silver", "gold")
ERASED = tables.ERASED


# -- Delta tables ----------------------------------------------------------------------------------


def _sql_list(ids: Iterable[str]) -> str:
    return ", ".join("'" + i.replace("\\", "\\\\").replace("'", "\\'") + "'" for i in sorted(ids))


def _table(settings: Settings, layer: str, name: str) -> str:
    return "delta.`" + settings.table_path(layer, name).replace("`", "``") + "`"


def _affected(spark: SparkSession, statement: str) -> int:
    """Run an UPDATE or DELETE; the rows it changed."""
    rows = spark.sql(statement).collect()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _sql_text(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quarantined(ids: set[str], table: str) -> tuple[str, str]:
    """SQL over a quarantine table's row: (whether its raw text names one of `ids`, that text with them redacted)."""
    kinds = ["events"] if table == "events" else list(STUDENT_FIELD)[1:]
    found, redacted = [], "raw"
    for kind in kinds:
        pattern = _sql_text(id_pattern(ids, kind))
        scope = "" if table == "events" else f"entity = '{kind}' AND "
        found.append(f"({scope}(raw RLIKE {pattern} OR cast(unbase64(raw_base64) AS string) RLIKE {pattern}))")
        redacted = f"regexp_replace({redacted}, {pattern}, {_sql_text(chr(34) + REDACTED + chr(34))})"
    return "(" + " OR ".join(found) + ")", redacted


def _anonymized_event(nonce: str) -> str:
    """SQL rewriting a raw event line (`value`): no student (its client type kept), per-person uuids replaced by a
    hash of a nonce that is never stored (one nonce per erasure: the same session stays one session), and the
    erasure's mark."""
    uuids = ", ".join(f"'{u}'" for u in tables.EVENT_PERSON_FIELDS)
    return (
        "to_json(map_concat(map_filter(transform_values(from_json(value, 'map<string,string>'), (k, v) -> CASE "
        f"WHEN k = 'studentId_clientType' THEN CASE WHEN v LIKE '%@%' THEN concat('@', substring_index(v, '@', -1)) "
        "END "
        f"WHEN k IN ({uuids}) AND v IS NOT NULL THEN substr(sha2(concat('{nonce}', v), 256), 1, 32) "
        f"ELSE v END), (k, v) -> k != '{ERASED}'), map('{ERASED}', 'true')))"
    )


def _anonymized_record() -> str:
    """SQL rewriting a raw export record (`record`) without its StudentId, with the erasure's mark."""
    return (
        "to_json(map_concat(map_filter(from_json(record, 'map<string,string>'), "
        f"(k, v) -> k NOT IN ('StudentId', '{ERASED}')), map('{ERASED}', 'true')))"
    )


def erase_lake(spark: SparkSession, settings: Settings, ids: set[str], mode: str) -> dict[str, int]:
    """Rewrite bronze and quarantine without `ids` (Delta UPDATE/DELETE), by `mode` (anonymize or delete)."""
    nonce = secrets.token_hex(16)
    listed = _sql_list(ids)
    event = (
        "nullif(trim(substring_index(trim(regexp_replace(get_json_object(value, '$.studentId_clientType'), "
        "'[\\\\x00-\\\\x1F\\\\x7F]', '')), '@', 1)), '')"
    )

    def record(field: str) -> str:
        return f"nullif(trim(regexp_replace(get_json_object(record, '$.{field}'), '[\\\\x00-\\\\x1F\\\\x7F]', '')), '')"

    raw = {"events": quarantined(ids, "events")[0], "transactional": quarantined(ids, "transactional")[0]}
    statements: dict[str, list[str]] = {
        "bronze.events": [
            f"DELETE FROM {{t}} WHERE {event} IN ({listed})"
            if mode == "delete"
            else f"UPDATE {{t}} SET value = {_anonymized_event(nonce)} WHERE {event} IN ({listed})"
        ],
        "bronze.students": [f"DELETE FROM {{t}} WHERE {record('Id')} IN ({listed})"],
        **{
            f"bronze.{e}": [
                f"DELETE FROM {{t}} WHERE {record('StudentId')} IN ({listed})"
                if mode == "delete"
                else f"UPDATE {{t}} SET record = {_anonymized_record()} WHERE {record('StudentId')} IN ({listed})"
            ]
            for e in tables.RECORDS
        },
        # a quarantined line or record naming the student goes; a whole quarantined file has the ids redacted
        **{
            f"quarantine.{q}": [
                f"DELETE FROM {{t}} WHERE line_number IS NOT NULL AND {raw[q]}",
                f"UPDATE {{t}} SET raw = {quarantined(ids, q)[1]}, raw_base64 = NULL "
                f"WHERE line_number IS NULL AND {raw[q]}",
            ]
            for q in ("events", "transactional")
        },
    }
    counts: dict[str, int] = {}
    for name, sqls in statements.items():
        layer, table = name.split(".")
        if not is_table(settings.table_path(layer, table)):
            continue
        counts[name] = sum(_affected(spark, s.replace("{t}", _table(settings, layer, table))) for s in sqls)
        faults.point("mid_erasure")
    return counts


def vacuum_all(settings: Settings) -> dict[str, int]:
    """Delete every data file no longer read by the latest version of each Delta table of the lake (what `VACUUM
    RETAIN 0 HOURS` does, from the log, without a Spark job per table): no earlier version can be read any more.
    Runs under the writer lock, so no write is under way."""
    deleted: dict[str, int] = {}
    for layer, name in ((t.layer, t.name) for t in lake_tables(settings, [*DELTA_LAYERS, "_system"])):
        log = DeltaLog(settings.table_path(layer, name), settings)
        if not log.exists:
            continue
        fs, root, live = log.fs, log.root, log.live_files()
        stale = [
            f
            for f in fs.find(root)
            if "/_delta_log/" not in f
            and f[len(root) + 1 :] not in live
            and not f[len(root) + 1 :].split("/")[-1].startswith(("_", "."))
        ]
        stale += [
            f
            for f in fs.find(root)
            if f.endswith(".crc")
            and "/_delta_log/" not in f
            and f[len(root) + 1 :].split("/")[-1][1:-4] not in {x.split("/")[-1] for x in live}
        ]
        for f in sorted(set(stale)):
            fs.rm(f)
        deleted[f"{layer}.{name}"] = len(set(stale))
    return deleted


# -- the warehouse --------------------------------------------------------------------------------


def _warehouse_dsn(settings: Settings) -> str | None:
    """The warehouse DSN when a warehouse exists (configured, or the managed cluster was created), else None."""
    if settings.pg_dsn is None and not managed(settings).initialized():
        return None
    return warehouse_dsn(settings)


def _dw_mirrored(dsn: str) -> bool:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('dw.load_audit') is not null")
        return bool(first_value(cur))


def erase_warehouse(settings: Settings, ids: set[str]) -> dict[str, int]:
    """Mirror the erased gold (its facts of the students now point to the erased member), then drop every version of
    the students from dw's dimension and empty the stage tables; a VACUUM removes the dead row versions from disk."""
    dsn = _warehouse_dsn(settings)
    if dsn is None or not _dw_mirrored(dsn):
        return {}
    mirror(settings)
    conn = psycopg2.connect(dsn)
    counts: dict[str, int] = {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", (MIRROR_LOCK,))
            for load in LOADS:
                if not load.is_dimension and "student_id" in load.columns:
                    # gold no longer holds the students: the mirror left none; a row that still does goes to the member
                    cur.execute(
                        f"update dw.{load.target} set student_id = %s, student_sk = %s where student_id = any(%s)",
                        (ERASED_MEMBER, ERASED_MEMBER_SK, sorted(ids)),
                    )
                    counts[f"dw.{load.target}"] = cur.rowcount
            cur.execute("delete from dw.dim_student where student_id = any(%s)", (sorted(ids),))
            counts["dw.dim_student"] = cur.rowcount
            cur.execute(
                "select string_agg(format('%I.%I', schemaname, tablename), ', ') from pg_tables"
                " where schemaname = 'stage'"
            )
            staged = first_value(cur)
            if staged:
                cur.execute(f"truncate {staged}")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("vacuum dw.dim_student, " + ", ".join(f"dw.{lo.target}" for lo in LOADS if not lo.is_dimension))
    finally:
        conn.close()
    return counts


# -- the audit log ---------------------------------------------------------------------------------


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
    """Append the erasure's row to `_system.erasures` (no id: only how many students and rows)."""
    row = [(erasure_id, run_id, datetime.now(UTC), mode, students, rows, seconds)]
    target = delta.Target(AUDIT, settings, app_id=f"erasure.{erasure_id}", version=0)
    delta.append_once(spark.createDataFrame(row, AUDIT.ddl), target)


def audit_log(spark: SparkSession, settings: Settings) -> DataFrame:
    """The erasures done so far."""
    return delta.read_table(spark, AUDIT.layer, AUDIT.name, settings)


# -- erase -----------------------------------------------------------------------------------------


def erase(spark: SparkSession, settings: Settings, student_ids: Iterable[str], run_id: str = "local") -> StageReport:
    """Erase learners from every layer, every Delta version, the landed files and the warehouse. Idempotent: a run
    interrupted anywhere is completed by running it again. Call under the writer lock."""
    ids = {i.strip() for i in student_ids if i and i.strip()}
    if not ids:
        raise ValueError("name at least one student id to erase")
    mode = settings.erasure_mode
    started = time.monotonic()
    key = salt(settings, create=True)
    assert key is not None
    write_tombstones(settings, (hashed(key, i) for i in ids))  # first: bronze drops them from now on
    rows: dict[str, int] = {}
    rows.update(scrub_landing(settings, lambda student: student in ids))
    rows.update(erase_lake(spark, settings, ids, mode))
    faults.point("erasure_after_bronze")
    # silver and gold are rebuilt from the rewritten bronze: they equal what a full build gives, and each gold
    # table's commit records the silver marks it has consumed, so later incremental runs stay consistent
    silver.refresh(spark, settings, run_id, full_refresh=True)
    gold.refresh(spark, settings, run_id, full_refresh=True)
    rows["files_vacuumed"] = sum(vacuum_all(settings).values())
    rows.update(erase_warehouse(settings, ids))
    seconds = round(time.monotonic() - started, 3)
    erasure_id = uuid.uuid4().hex
    _audit(spark, settings, erasure_id, run_id, mode, len(ids), rows, seconds)
    return StageReport(
        "erase",
        rows_out=sum(n for table, n in rows.items() if table != "files_vacuumed"),
        seconds=seconds,
        details={"erasure_id": erasure_id, "run_id": run_id, "mode": mode, "students": len(ids), "rows": rows},
    )


# -- verify ---------------------------------------------------------------------------------------


def _data_files(settings: Settings, layer: str, name: str) -> list[str]:
    """Every data file of a Delta table still on disk: together they hold every version that can still be read."""
    fs, root = filesystem(settings.table_path(layer, name), settings)
    prefix = settings.table_path(layer, name)[: -len(root)] if not settings.lake_is_local else ""
    return [prefix + f for f in fs.find(root) if f.endswith(".parquet") and "/_delta_log/" not in f]


def _naming(layer: str, name: str, columns: list[str], student_id: str) -> Column | None:
    """A predicate: the row names the student (a student_id column, a raw line or record, a quarantined raw text)."""
    ids = {student_id}
    found = []
    if "student_id" in columns:
        found.append(F.col("student_id").cast("string") == student_id)
    if "value" in columns:
        found.append(event_student(F.col("value")) == student_id)
    if "record" in columns and name in STUDENT_FIELD:
        found.append(record_student(name, F.col("record")) == student_id)
    if "raw" in columns:
        found.append(F.expr(quarantined(ids, "events" if name == "events" else "transactional")[0]))
    if not found:
        return None
    out = found[0]
    for f in found[1:]:
        out = out | f
    return F.coalesce(out, F.lit(False))


def verify(spark: SparkSession, settings: Settings, student_id: str) -> dict[str, int]:
    """Where a student id is still found: rows of every Delta table (every file still on disk, so every readable
    version), landed files, ledger heads, and dw. Empty after an erasure."""
    student_id = student_id.strip()
    found: dict[str, int] = {}
    for layer, name in ((t.layer, t.name) for t in lake_tables(settings, [*DELTA_LAYERS, "_system"])):
        files = _data_files(settings, layer, name)
        if not files:
            continue
        rows = spark.read.option("mergeSchema", "true").parquet(*files)
        predicate = _naming(layer, name, rows.columns, student_id)
        if predicate is not None and (n := rows.where(predicate).count()):
            found[f"{layer}.{name} (any version still readable)"] = n
    fs, root = lake_fs(settings)
    patterns = {k: value_pattern(k) for k in STUDENT_FIELD}
    erased: Erased = lambda student: student == student_id  # noqa: E731
    for entry, rel in landed_files(settings):
        pattern = patterns.get(kind_of(entry))
        path = join(root, rel)
        if pattern is not None and fs.exists(path):
            if n := names_erased(fs.cat_file(path).decode("utf-8", "replace"), pattern, erased):
                found[f"landed file {rel}"] = n
    for m in read_ledger(settings):
        for e in m["files"]:
            pattern = patterns.get(kind_of(e))
            heads = [h.get("head") or "" for h in (e, *e.get("long_lines", []))]
            if pattern is not None and any(names_erased(h, pattern, erased) for h in heads):
                found[f"ledger batch {m['batch_id']} head of {e['landed_path']}"] = 1
    found.update(_verify_warehouse(settings, student_id))
    return found


def _verify_warehouse(settings: Settings, student_id: str) -> dict[str, int]:
    dsn = _warehouse_dsn(settings)
    if dsn is None or not _dw_mirrored(dsn):
        return {}
    found = {}
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "select table_schema, table_name from information_schema.columns where column_name = 'student_id'"
            " and table_schema in ('dw', 'stage') order by 1, 2"
        )
        for schema, table in cur.fetchall():
            cur.execute(f'select count(*) from "{schema}"."{table}" where student_id = %s', (student_id,))
            if n := first_value(cur):
                found[f"warehouse {schema}.{table}"] = n
    conn.close()
    return found
