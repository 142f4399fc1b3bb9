"""A learner's right to erasure: every layer, every readable Delta version, the landed files and the warehouse
(docs/erasure.md)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import faults
from lakehouse.config import Settings, join
from lakehouse.landing import LEDGER, lake_fs, lake_listing, read_ledger
from lakehouse.reports import StageReport
from lakehouse.schemas import ERASED

SALT_FILE = "erasure-salt"  # under the data folder, mode 0600, when LAKEHOUSE_ERASURE_SALT is unset
TOMBSTONES = "_system/tombstones"  # one JSON file per erased id, named by its salted hash
AUDIT = ("_system", "erasures")
REDACTED = "[erased]"
RECORD_ENTITIES = ("sessions", "subscriptions", "student_follow_subject")
# The field naming the student, per kind of raw record.
STUDENT_FIELD = {"events": "studentId_clientType", "students": "Id", **{e: "StudentId" for e in RECORD_ENTITIES}}
PERSON_UUIDS = ("session_uuid", "install_uuid", "uuid")
DELTA_LAYERS = ("bronze", "quarantine", "silver", "gold")


# -- salted hashes and tombstones ----------------------------------------------------------------


def salt(settings: Settings, create: bool = False) -> str | None:
    """The erasure salt: LAKEHOUSE_ERASURE_SALT, else the 0600 file under the data folder (made with `create`)."""
    from lakehouse.security import write_secret

    if settings.erasure_salt is not None and settings.erasure_salt.get_secret_value():
        return settings.erasure_salt.get_secret_value()
    path = Path(settings.data_dir).resolve() / SALT_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_secret(path, secrets.token_hex(32))
    except FileExistsError:  # a concurrent creator won
        pass
    return path.read_text().strip()


def hashed(salt_text: str, student_id: str) -> str:
    """The salted hash an erased id is kept as."""
    return hashlib.sha256((salt_text + student_id.strip()).encode()).hexdigest()


def tombstones(settings: Settings) -> set[str]:
    """The salted hashes of every erased id."""
    _, names = lake_listing(settings, TOMBSTONES)
    return {n.rsplit("/", 1)[-1][:-5] for n in names if n.endswith(".json")}


def _write_tombstones(settings: Settings, hashes: Iterable[str]) -> None:
    fs, root = lake_fs(settings)
    folder = join(root, TOMBSTONES)
    if settings.lake_is_local:
        fs.makedirs(folder, exist_ok=True)
    for h in hashes:
        fs.pipe_file(join(folder, f"{h}.json"), json.dumps({"erased_at": datetime.now(UTC).isoformat()}).encode())


# -- who a raw line or record belongs to -----------------------------------------------------------


def _clean(c: Column) -> Column:
    return F.trim(F.regexp_replace(c, r"[\x00-\x1F\x7F]", ""))


def event_student(value: Column) -> Column:
    """The student id of a raw event line (as silver reads it: the part of `studentId_clientType` before `@`)."""
    sc = _clean(F.get_json_object(value, "$.studentId_clientType"))
    return F.nullif(F.trim(F.substring_index(sc, "@", 1)), F.lit(""))


def record_student(entity: Column | str, record: Column) -> Column:
    """The student id of a raw export record of `entity` (students: Id; sessions, subscriptions, follows:
    StudentId); null for other entities."""
    entity = F.lit(entity) if isinstance(entity, str) else entity
    field = F.when(entity == "students", F.get_json_object(record, "$.Id")).when(
        entity.isin(*RECORD_ENTITIES), F.get_json_object(record, "$.StudentId")
    )
    return F.nullif(_clean(field), F.lit(""))


def id_pattern(ids: Iterable[str], kind: str) -> str:
    """A regex finding raw text of `kind` (events, or an entity) that names one of `ids` in its student field
    (number or string, any spacing); Python and Java read it alike. Empty for entities without a student."""
    field = STUDENT_FIELD.get(kind)
    if field is None:
        return ""
    alternatives = "|".join(re.escape(i) for i in sorted(ids))
    return '"' + field + r'"\s*:\s*"?\s*(?:' + alternatives + r')\s*(?:@[^"]*)?"?\s*[,}]'


def mark_erased(frame: DataFrame, settings: Settings, group: str) -> DataFrame:
    """Bronze's filter: rows of a classified frame whose student is tombstoned get status `erased` (neither bronze
    nor quarantine keeps them; the run report counts them)."""
    found = tombstones(settings)
    if not found:
        return frame
    key = salt(settings)
    if key is None:
        return frame
    student = event_student(F.col("value")) if group == "events" else record_student(F.col("entity"), F.col("record"))
    digest = F.sha2(F.concat(F.lit(key), student), 256)
    erased = student.isNotNull() & digest.isin(*sorted(found))
    return frame.withColumn("status", F.when(erased, F.lit("erased")).otherwise(F.col("status")))


# -- landed files ----------------------------------------------------------------------------------


def _value_pattern(kind: str) -> re.Pattern:
    """A regex capturing the student id (group 1) where raw text of `kind` names one in its student field."""
    return re.compile('"' + STUDENT_FIELD[kind] + r'"\s*:\s*"?\s*([^"@,}\s]+)\s*(?:@[^"]*)?"?\s*[,}]')


Erased = Callable[[str], bool]


def _redact(text: str, pattern: re.Pattern, erased: Erased) -> str:
    return pattern.sub(lambda m: f'"{REDACTED}"' if erased(m.group(1)) else m.group(0), text)


def _names(text: str, pattern: re.Pattern, erased: Erased) -> int:
    return sum(erased(m.group(1)) for m in pattern.finditer(text))


def _scrub_export(data: bytes, entity: str, erased: Erased, pattern: re.Pattern) -> bytes:
    """An export without the records of erased students; text that is not a JSON array has the ids redacted."""
    field = STUDENT_FIELD[entity]
    try:
        records = json.loads(data)
    except ValueError:
        records = None
    if not isinstance(records, list):
        return _redact(data.decode("utf-8", "replace"), pattern, erased).encode()
    kept = [r for r in records if not (isinstance(r, dict) and erased(str(r.get(field, "")).strip()))]
    if len(kept) == len(records):
        return data
    return ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in kept) + "\n]\n").encode()


def _scrub_lines(data: bytes, pattern: re.Pattern, erased: Erased) -> bytes:
    """Event lines with every line naming an erased student left blank (line numbers stay exact)."""
    return b"\n".join(b"" if _names(ln.decode("utf-8", "replace"), pattern, erased) else ln for ln in data.split(b"\n"))


def _landed_files(settings: Settings, batches: set[int] | None = None) -> list[tuple[dict[str, Any], str]]:
    """(ledger entry, lake-relative path) of every landed file (of `batches`) and every long line kept beside one."""
    out = []
    for m in read_ledger(settings):
        if batches is not None and m["batch_id"] not in batches:
            continue
        for e in m["files"]:
            if e["status"] != "new":
                continue
            out.append((e, e["landed_path"]))
            out.extend((e, x["kept_at"]) for x in e.get("long_lines", []))
    return out


def _kind(entry: dict[str, Any]) -> str:
    return "events" if entry["kind"] == "events" else entry["entity"] or ""


def scrub_landing(settings: Settings, erased: Erased, batches: set[int] | None = None) -> dict[str, int]:
    """Rewrite every landed file (of `batches`) naming an erased student without those records, and redact the
    ledger's heads; the ledger keeps each file's original content hash, so the source file is never landed again."""
    fs, root = lake_fs(settings)
    patterns = {k: _value_pattern(k) for k in STUDENT_FIELD}
    rewritten = 0
    for entry, rel in _landed_files(settings, batches):
        pattern = patterns.get(_kind(entry))
        path = join(root, rel)
        if pattern is None or not fs.exists(path):
            continue
        data = fs.cat_file(path)
        if not _names(data.decode("utf-8", "replace"), pattern, erased):
            continue
        new = (
            _scrub_lines(data, pattern, erased)
            if entry["kind"] == "events"
            else _scrub_export(data, entry["entity"], erased, pattern)
        )
        _replace(fs, settings, path, new)
        rewritten += 1
    manifests = 0
    for m in read_ledger(settings):
        changed = False
        for e in m["files"]:
            pattern = patterns.get(_kind(e))
            for holder in (e, *e.get("long_lines", [])):
                if pattern is not None and holder.get("head") and _names(holder["head"], pattern, erased):
                    holder["head"] = _redact(holder["head"], pattern, erased)
                    changed = True
        if changed:
            _replace(
                fs,
                settings,
                join(root, LEDGER, f"batch-{m['batch_id']:06d}.json"),
                json.dumps(m, indent=1, sort_keys=True).encode(),
            )
            manifests += 1
    incoming = join(root, "_system/incoming")
    if fs.exists(incoming):  # leftovers of a killed landing: copies of source files
        fs.rm(incoming, recursive=True)
    return {"landed_files": rewritten, "ledger_manifests": manifests}


def tombstoned(settings: Settings) -> Erased:
    """Whether a student id is erased, by its salted hash among the tombstones."""
    found, key = tombstones(settings), salt(settings)
    return lambda student: bool(found) and key is not None and hashed(key, student) in found


def _replace(fs: Any, settings: Settings, path: str, data: bytes) -> None:
    """Replace a file in one step: temp file + rename (local), one object put (object stores)."""
    if settings.lake_is_local:
        tmp = f"{path}.erasing-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


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
    uuids = ", ".join(f"'{u}'" for u in PERSON_UUIDS)
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
    from lakehouse.delta import is_table

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
            for e in RECORD_ENTITIES
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


def _live_files(path: str) -> tuple[Any, str, set[str]] | None:
    """(filesystem, table root, the data files the latest version reads, relative to the root), read from the Delta
    log without Spark: the latest checkpoint's adds, then the commits after it. None: no table."""
    from urllib.parse import unquote

    import pyarrow.parquet as pq

    from lakehouse.delta import _commits, _log

    fs, log, names = _log(path)
    commits = _commits(names)
    if not commits:
        return None
    root = log[: -len("/_delta_log")]
    checkpoints = sorted({int(m.group(1)) for n in names if (m := re.search(r"/(\d{20})\.checkpoint", n))})
    base = checkpoints[-1] if checkpoints else -1
    live: set[str] = set()

    def relative(file: str) -> str:
        file = unquote(file)
        return file[len(root) + 1 :] if file.startswith(root + "/") else file

    for part in sorted(n for n in names if re.search(rf"/{base:020d}\.checkpoint(\.\d+\.\d+)?\.parquet$", n)):
        with fs.open(part, "rb") as f:
            live.update(relative(a["path"]) for a in pq.read_table(f, columns=["add"]).column("add").to_pylist() if a)
    for version, name in commits:
        if version <= base:
            continue
        for line in fs.cat_file(name).splitlines():
            action = json.loads(line)
            if "add" in action:
                live.add(relative(action["add"]["path"]))
            elif "remove" in action:
                live.discard(relative(action["remove"]["path"]))
    return fs, root, live


def vacuum_all(settings: Settings) -> dict[str, int]:
    """Delete every data file no longer read by the latest version of each Delta table of the lake (what `VACUUM
    RETAIN 0 HOURS` does, from the log, without a Spark job per table): no earlier version can be read any more.
    Runs under the writer lock, so no write is under way."""
    from lakehouse.catalog import lake_tables

    deleted: dict[str, int] = {}
    for layer, name in ((t.layer, t.name) for t in lake_tables(settings, [*DELTA_LAYERS, "_system"])):
        found = _live_files(settings.table_path(layer, name))
        if found is None:
            continue
        fs, root, live = found
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
    from lakehouse.pgserver import managed, warehouse_dsn

    if settings.pg_dsn is None and not managed(settings).initialized():
        return None
    return warehouse_dsn(settings)


def _dw_mirrored(dsn: str) -> bool:
    import psycopg2

    from lakehouse.warehouse import first_value

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('dw.load_audit') is not null")
        return bool(first_value(cur))


def erase_warehouse(settings: Settings, ids: set[str]) -> dict[str, int]:
    """Mirror the erased gold (its facts of the students now point to the erased member), then drop every version of
    the students from dw's dimension and empty the stage tables; a VACUUM removes the dead row versions from disk."""
    import psycopg2

    from lakehouse import warehouse
    from lakehouse.warehouse import first_value

    dsn = _warehouse_dsn(settings)
    if dsn is None or not _dw_mirrored(dsn):
        return {}
    warehouse.mirror(settings)
    conn = psycopg2.connect(dsn)
    counts: dict[str, int] = {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", (warehouse.MIRROR_LOCK,))
            for load in warehouse.LOADS:
                if not load.is_dimension and "student_id" in load.columns:
                    # gold no longer holds the students: the mirror left none; a row that still does goes to the member
                    cur.execute(
                        f"update dw.{load.target} set student_id = %s, student_sk = %s where student_id = any(%s)",
                        (warehouse.ERASED_MEMBER, warehouse.ERASED_MEMBER_SK, sorted(ids)),
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
            cur.execute(
                "vacuum dw.dim_student, "
                + ", ".join(f"dw.{lo.target}" for lo in warehouse.LOADS if not lo.is_dimension)
            )
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
    schema = (
        "erasure_id string, run_id string, erased_at timestamp, mode string, students int, "
        "rows map<string,bigint>, seconds double"
    )
    row = [(erasure_id, run_id, datetime.now(UTC), mode, students, rows, seconds)]
    spark.createDataFrame(row, schema).write.format("delta").mode("append").save(settings.table_path(*AUDIT))


def audit_log(spark: SparkSession, settings: Settings) -> DataFrame:
    """The erasures done so far."""
    return spark.read.format("delta").load(settings.table_path(*AUDIT))


# -- erase -----------------------------------------------------------------------------------------


def erase(spark: SparkSession, settings: Settings, student_ids: Iterable[str], run_id: str = "local") -> StageReport:
    """Erase learners from every layer, every Delta version, the landed files and the warehouse. Idempotent: a run
    interrupted anywhere is completed by running it again. Call under the writer lock."""
    from lakehouse import gold, silver

    ids = {i.strip() for i in student_ids if i and i.strip()}
    if not ids:
        raise ValueError("name at least one student id to erase")
    mode = settings.erasure_mode
    started = time.monotonic()
    key = salt(settings, create=True)
    assert key is not None
    _write_tombstones(settings, (hashed(key, i) for i in ids))  # first: bronze drops them from now on
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
    from lakehouse.storage import filesystem

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
    from lakehouse.catalog import lake_tables

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
    patterns = {k: _value_pattern(k) for k in STUDENT_FIELD}
    erased: Erased = lambda student: student == student_id  # noqa: E731
    for entry, rel in _landed_files(settings):
        pattern = patterns.get(_kind(entry))
        path = join(root, rel)
        if pattern is not None and fs.exists(path):
            if n := _names(fs.cat_file(path).decode("utf-8", "replace"), pattern, erased):
                found[f"landed file {rel}"] = n
    for m in read_ledger(settings):
        for e in m["files"]:
            pattern = patterns.get(_kind(e))
            heads = [h.get("head") or "" for h in (e, *e.get("long_lines", []))]
            if pattern is not None and any(_names(h, pattern, erased) for h in heads):
                found[f"ledger batch {m['batch_id']} head of {e['landed_path']}"] = 1
    found.update(_verify_warehouse(settings, student_id))
    return found


def _verify_warehouse(settings: Settings, student_id: str) -> dict[str, int]:
    import psycopg2

    from lakehouse.warehouse import first_value

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
