"""Silver: typed, conformed, deduplicated page views and the snapshot history of the transactional exports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse import bronze, delta, quality, tables
from lakehouse import parsing as P
from lakehouse.config import Settings
from lakehouse.delta_log import (
    commits_since,
    data_changed,
    is_table,
    last_txn_version,
    latest_version,
    rows_committed,
    rows_written,
)
from lakehouse.expectations import Expectations, load
from lakehouse.parsing import parse_at, parse_export_time
from lakehouse.reports import StageReport, TableReport
from lakehouse.schemas import BR_STATES, ENTITY_RAW, PAGE_VIEW_RAW

SPECS = {t.name: t for t in tables.layer("silver")}
SNAPSHOT_KEYS = {e: SPECS[e].keys[0] for e in tables.SNAPSHOTS}
_ORIGIN = ("source_file", "line_number", "delivery", "as_of", "batch_id")  # where a bronze line came from
# Every silver table carries `changed_batch_id`: the bronze batch in which what gold reads of the row last changed (a
# page view: the first batch holding the event; a snapshot row: the batch whose delivery rewrote it). Gold reads the
# rows changed since its own watermark by this column, so Delta statistics are kept on it (the catalogue's stats).
CHANGED = "changed_batch_id"

# silver column <- raw field, for the fields that keep their meaning under a new name or as is
_RENAMED = {
    "first_accessed_page": "first-accessed-page",
    "user_type": "custom_4",
    "visitor_type": "user_type",
    "event_name": "name",
    "event_type": "type",
    "is_device_new": "device_new",
}
# fmt: off
_PLAIN = ("browser", "carrier", "city_name", "clv_total", "country", "custom_1", "custom_2", "custom_3",
          "install_uuid", "language", "library_ver", "marketing_campaign", "marketing_medium", "marketing_source",
          "model", "nth", "os_ver", "platform", "region", "session_uuid", "uuid", "studentId_clientType")
# fmt: on


def _blank_to_null(c: Column) -> Column:
    """Exported text as silver holds it: control characters removed, trimmed, null when blank."""
    return P.nonblank(P.clean(c))


_ACCENTED, _PLAIN_CHARS = "áàâãäéèêëíìîïóòôõöúùûüç", "aaaaaeeeeiiiiooooouuuuc"


def _unaccent(c: Column) -> Column:
    return F.translate(F.lower(F.trim(c)), _ACCENTED, _PLAIN_CHARS)


def conform_state(raw: Column) -> Column:
    """A Brazilian state as its two-letter code when given as code or name (any case, accents); else trimmed text."""
    plain = str.maketrans(_ACCENTED, _PLAIN_CHARS)
    lookup = {name.lower().translate(plain): code for code, name in BR_STATES.items()}
    lookup.update({code.lower(): code for code in BR_STATES})
    states = F.create_map(*(F.lit(x) for item in sorted(lookup.items()) for x in item))
    return F.coalesce(F.try_element_at(states, _unaccent(raw)), _blank_to_null(raw))


# --------------------------------------------------------------------------------------------------
# page views
# --------------------------------------------------------------------------------------------------


def _erased(r: Column) -> Column:
    """Whether an erasure anonymized this raw event or record (its mark): its student was erased."""
    return F.coalesce(P.nonblank(P.clean(r.getField(tables.ERASED))) == "true", F.lit(False))


def _erased_mark(erased: Column, token: Column | None = None) -> Column:
    """What an erased event or record adds to the text its id hashes: the mark and the erasure's token of the
    identity it had (so distinct records stay distinct once anonymized); nothing for the others, whose ids stay as
    they were before ids knew of erasure."""
    mark = F.lit(tables.ERASED) if token is None else F.concat(F.lit(tables.ERASED), F.coalesce(token, F.lit("")))
    return F.when(erased, mark).otherwise(F.lit(""))


def _encoded(c: Column) -> Column:
    """`<length>:<text>`, or `~` for null: a concatenation of these is unambiguous (and cheap, unlike to_json)."""
    return F.coalesce(F.concat(F.length(c).cast("string"), F.lit(":"), c), F.lit("~"))


def identified_events(bronze_events: DataFrame, run_id: str) -> DataFrame:
    """Every bronze event line typed, with its `event_id` and where it was delivered (before duplicates collapse)."""
    # Fields are read as bronze checked them (lakehouse.parsing): the same parser, control characters removed.
    text, control = F.col("_text"), F.col("_control")
    r = F.col("r")
    folded: dict[str, Column] = {
        name: F.coalesce(*(r.getField(s) for s in spellings)) for name, spellings in tables.EVENT_SPELLINGS.items()
    }
    folded.update({name: r.getField(raw) for name, raw in _RENAMED.items()})
    folded.update({name: r.getField(name) for name in _PLAIN})
    # Fields outside the known set are rare: the line is parsed into a map for them only when its keys show one.
    known = F.array(*(F.lit(f) for f in tables.EVENT_FIELDS))
    unknown = F.array_except(F.json_object_keys(text), known)
    everything = P.all_fields(text)
    everything = F.when(
        control, F.transform_values(F.transform_keys(everything, lambda k, _v: P.clean(k)), lambda _k, v: P.clean(v))
    ).otherwise(everything)
    extra = F.when(
        F.size(unknown) > 0,
        F.map_from_entries(
            F.array_sort(F.map_entries(F.map_filter(everything, lambda k, _v: ~F.array_contains(known, k))))
        ),
    ).otherwise(F.create_map().cast("map<string,string>"))
    event_at = parse_at(r.getField("at"))
    parsed = F.from_json(text, PAGE_VIEW_RAW)
    cleaned = F.struct(*(P.field(parsed, f, control).alias(f) for f in tables.EVENT_FIELDS))
    raw = (
        bronze_events.select(
            P.json_text(F.col("value")).alias("_text"),
            P.may_hold_control(F.col("value")).alias("_control"),
            *_ORIGIN,
        )
        .select(
            F.when(control, cleaned).otherwise(parsed).alias("r"),
            "_text",
            "_control",
            *_ORIGIN,
        )
        .select(
            event_at.alias("event_at"),
            r.getField("at").alias("at_raw"),
            *(c.alias(k) for k, c in folded.items()),
            _erased(r).alias("student_erased"),
            extra.alias("extra_fields"),
            *_ORIGIN,
        )
    )
    # The identity of an event is its values (spellings folded, `at` as an instant), not where it was delivered.
    values = [
        F.unix_micros("event_at").cast("string"),
        *(F.col(k) for k in sorted(folded)),
        F.when(F.size("extra_fields") > 0, F.to_json("extra_fields")),
    ]
    student_id, client_type = P.student_and_client(F.col("studentId_clientType"))
    rows = raw.select(
        F.sha2(F.concat(*(_encoded(v) for v in values), _erased_mark(F.col("student_erased"))), 256).alias("event_id"),
        "event_at",
        F.to_date("event_at").alias("event_date"),
        student_id.alias("student_id"),
        "student_erased",
        client_type.alias("client_type"),
        *(_typed(k) for k in folded if k != tables.EVENT_STUDENT_FIELD),
        "extra_fields",
        "at_raw",
        *_ORIGIN,
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("loaded_at"),
    )
    return rows


def page_views(bronze_events: DataFrame, run_id: str) -> DataFrame:
    """Typed page views from bronze event rows, one row per event_id (its earliest delivered occurrence)."""
    rows = identified_events(bronze_events, run_id)
    # One sort by event id serves both windows: the earliest delivered occurrence, and the first batch holding one.
    same = Window.partitionBy("event_id")
    first = same.orderBy("as_of", "delivery", "source_file", "line_number")
    return (
        rows.withColumn("_n", F.row_number().over(first))
        .withColumn(CHANGED, F.min("batch_id").over(same))
        .where("_n = 1")
        .select(*SPECS["page_views"].names)
    )


def _typed(name: str) -> Column:
    """A page-view field read as text, cast to its column's type in the catalogue."""
    kind = SPECS["page_views"].column(name).type
    return (F.col(name) if kind == "string" else F.col(name).try_cast(kind)).alias(name)


def event_dates(bronze_events: DataFrame) -> DataFrame:
    """The `event_date` of each bronze event row, as `page_views` computes it (only `at` is parsed)."""
    value = F.col("value")
    at = P.field(F.from_json(P.json_text(value), "at string"), "at", P.may_hold_control(value))
    return bronze_events.select(F.to_date(parse_at(at)).alias("event_date"))


# An occurrence replaces the stored provenance only when it was delivered earlier: history is order-free.
_EARLIER = (
    "struct(s.as_of, s.delivery, s.source_file, s.line_number) "
    "< struct(t.as_of, t.delivery, t.source_file, t.line_number)"
)


# --------------------------------------------------------------------------------------------------
# transactional entities
# --------------------------------------------------------------------------------------------------


def _record_id(entity: str, r: Column) -> Column:
    """The identity of a parsed export record: a hash of its values (and, once anonymized, the erasure's mark)."""
    cols = _RECORD_COLUMNS[entity](r)
    values = F.to_json(F.struct(*(c.alias(k) for k, c in cols.items() if k != "student_erased")))
    return F.sha2(F.concat(values, _erased_mark(cols["student_erased"], r.getField(tables.ERASED_ID))), 256)


def identified_records(bronze: DataFrame, entity: str) -> DataFrame:
    """Every bronze record of `entity` with its `record_id`, keyed as bronze keys it (landed_path, line_number)."""
    return bronze.select(
        "landed_path", "line_number", _record_id(entity, F.from_json("record", ENTITY_RAW[entity])).alias("record_id")
    )


def _records(bronze: DataFrame, entity: str) -> DataFrame:
    """Parsed export records; a delivery landed again (changed content) counts only in its latest batch."""
    latest = Window.partitionBy("delivery")
    return (
        bronze.withColumn("_latest", F.max("batch_id").over(latest))
        .where("batch_id = _latest")
        .select(F.from_json("record", ENTITY_RAW[entity]).alias("r"), "delivery", "as_of", "line_number", "batch_id")
    )


def _int(c: Column) -> Column:
    return _blank_to_null(c).try_cast("int")


_SNAPSHOT_ATTRS = {
    "students": lambda r: {
        "registered_at": parse_export_time(P.clean(r.RegisteredDate)),
        "state": conform_state(P.clean(r.State)),
        "city": _blank_to_null(r.City),
        "university_id": _int(r.UniversityId),
        "course_id": _int(r.CourseId),
        "signup_source": _blank_to_null(r.SignupSource),
    },
    "courses": lambda r: {"course_name": _blank_to_null(r.Name)},
    "universities": lambda r: {"university_name": _blank_to_null(r.Name)},
    "subjects": lambda r: {"subject_name": _blank_to_null(r.Name)},
}


def _present(records: DataFrame, entity: str) -> DataFrame:
    """One row per (key, delivery) the key appears in; duplicates in an export collapse (last line wins)."""
    key = SNAPSHOT_KEYS[entity]
    r = F.col("r")
    key_col = _blank_to_null(r.Id) if entity == "students" else _int(r.Id)
    attrs = _SNAPSHOT_ATTRS[entity](r)
    rows = records.select(
        key_col.alias(key),
        *(c.alias(k) for k, c in attrs.items()),
        "delivery",
        "as_of",
        "line_number",
    ).where(F.col(key).isNotNull())
    last = Window.partitionBy(key, "delivery").orderBy(F.desc("line_number"))
    return rows.withColumn("_n", F.row_number().over(last)).where("_n = 1").drop("_n", "line_number")


# The prior state enters the history computation as one more delivery, ordered before every real one; never output.
_PRIOR_DELIVERY, _PRIOR_AS_OF = "", "0001-01-01 00:00:00"


def snapshot_history(present: DataFrame, key: str, prior: DataFrame | None = None) -> DataFrame:
    """Every key at every delivery of `present` from the key's first one: present rows, or deletion markers carrying
    the last state. `prior`: each key's row just before the first of these deliveries (deleted or not), the state
    they are compared with; keys it holds are carried into every delivery."""
    attrs = [c for c in present.columns if c not in (key, "delivery", "as_of")]
    seen = present.select(key, "delivery", "as_of", F.struct(*attrs).alias("_state"))
    deliveries = present.select("delivery", "as_of").distinct()
    if prior is not None:
        seed = prior.select(
            key,
            F.lit(_PRIOR_DELIVERY).alias("delivery"),
            F.lit(_PRIOR_AS_OF).cast("timestamp").alias("as_of"),
            F.struct(*attrs).alias("_state"),
        )
        seen = seen.unionByName(seed)
        deliveries = deliveries.unionByName(seed.select("delivery", "as_of").limit(1))
    first = seen.groupBy(key).agg(F.min("as_of").alias("_first"))
    grid = first.join(F.broadcast(deliveries), F.col("as_of") >= F.col("_first")).drop("_first")
    upto = (
        Window.partitionBy(key).orderBy("as_of", "delivery").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return (
        grid.join(seen, [key, "delivery", "as_of"], "left")
        .withColumn("is_deleted", F.col("_state").isNull())
        .withColumn("_state", F.last("_state", ignorenulls=True).over(upto))
        .where(F.col("_state").isNotNull() & (F.col("delivery") != _PRIOR_DELIVERY))
        .select(key, *(F.col("_state").getField(a).alias(a) for a in attrs), "is_deleted", "delivery", "as_of")
    )


def _snapshot_table(entity: str, bronze: DataFrame, previous: DataFrame | None = None) -> DataFrame:
    """The table's rows from the first delivery in `bronze` on. `previous`: the table as it was, or just its rows from
    the latest delivery before that one on (all a new export is compared with)."""
    key = SNAPSHOT_KEYS[entity]
    records = _records(bronze, entity)
    bounds = records.agg(F.min("as_of").alias("_from"), F.max("batch_id").alias(CHANGED))
    present = _present(records, entity)
    prior = None
    if previous is not None:
        previous = previous.crossJoin(F.broadcast(bounds.select("_from")))
        latest = Window.partitionBy(key).orderBy(F.desc("as_of"), F.desc("delivery"))
        prior = (
            previous.where(F.col("as_of") < F.col("_from"))
            .withColumn("_n", F.row_number().over(latest))
            .where("_n = 1")
        )
        later = previous.where((F.col("as_of") >= F.col("_from")) & ~F.col("is_deleted")).join(
            records.select("delivery").distinct(), "delivery", "left_anti"
        )
        present = present.unionByName(later.select(*present.columns))
    history = snapshot_history(present, key, prior)
    return history.crossJoin(F.broadcast(bounds.select(CHANGED)))


# silver.students, courses, universities, subjects: one row per key per delivery of its entity from the key's first,
# with deletion markers; each takes the bronze rows and, for an incremental refresh, the previous silver rows
students = partial(_snapshot_table, "students")
courses = partial(_snapshot_table, "courses")
universities = partial(_snapshot_table, "universities")
subjects = partial(_snapshot_table, "subjects")


_RECORD_COLUMNS = {
    "sessions": lambda r: {
        "student_id": _blank_to_null(r.StudentId),
        "student_erased": _erased(r),
        "session_start_at": parse_export_time(P.clean(r.SessionStartTime)),
        "client_type": _blank_to_null(r.StudentClient),
    },
    "subscriptions": lambda r: {
        "student_id": _blank_to_null(r.StudentId),
        "student_erased": _erased(r),
        "payment_at": parse_export_time(P.clean(r.PaymentDate)),
        "plan_type": _blank_to_null(r.PlanType),
    },
    "student_follow_subject": lambda r: {
        "student_id": _blank_to_null(r.StudentId),
        "student_erased": _erased(r),
        "subject_id": _int(r.SubjectId),
        "followed_at": parse_export_time(P.clean(r.FollowDate)),
    },
}


def _record_table(entity: str, bronze: DataFrame, current: DataFrame | None = None) -> DataFrame:
    cols = _RECORD_COLUMNS[entity](F.col("r"))
    records = _records(bronze, entity)
    batch = records.agg(F.max("batch_id").alias("_batch"))
    seen = records.select(
        _record_id(entity, F.col("r")).alias("record_id"),
        *(c.alias(k) for k, c in cols.items()),
        F.struct("as_of", "delivery").alias("_first"),
        F.struct("as_of", "delivery").alias("_last"),
        F.lit(None)
        .cast("struct<first_as_of:timestamp,first_delivery:string,is_deleted:boolean,batch:bigint>")
        .alias("_was"),
    )
    if current is not None:
        seen = seen.unionByName(
            current.select(
                "record_id",
                *cols,
                F.struct(F.col("first_as_of").alias("as_of"), F.col("first_delivery").alias("delivery")).alias(
                    "_first"
                ),
                F.struct(F.col("last_as_of").alias("as_of"), F.col("last_delivery").alias("delivery")).alias("_last"),
                F.struct("first_as_of", "first_delivery", "is_deleted", F.col(CHANGED).alias("batch")).alias("_was"),
            )
        )
    merged = seen.groupBy("record_id", *cols).agg(
        F.min("_first").alias("_first"), F.max("_last").alias("_last"), F.max("_was").alias("_was")
    )
    latest = merged.agg(F.max("_last.as_of").alias("_latest"))
    out = (
        merged.crossJoin(F.broadcast(latest))
        .crossJoin(F.broadcast(batch))
        .select(
            "record_id",
            *cols,
            F.col("_first.delivery").alias("first_delivery"),
            F.col("_first.as_of").alias("first_as_of"),
            F.col("_last.delivery").alias("last_delivery"),
            F.col("_last.as_of").alias("last_as_of"),
            (F.col("_last.as_of") < F.col("_latest")).alias("is_deleted"),
            "_was",
            "_batch",
        )
    )
    # what gold reads of a record (its first sighting, whether it is deleted) changed: new, or moved
    same = F.col("_was").isNotNull() & F.col("_was").eqNullSafe(
        F.struct("first_as_of", "first_delivery", "is_deleted", F.col("_was.batch").alias("batch"))
    )
    return out.select("*", F.when(same, F.col("_was.batch")).otherwise(F.col("_batch")).alias(CHANGED)).drop(
        "_was", "_batch"
    )


# silver.sessions, subscriptions, student_follow_subject: one row per distinct record over all deliveries, first and
# last seen, is_deleted; each takes the bronze rows and, for an incremental refresh, the current silver rows
sessions = partial(_record_table, "sessions")
subscriptions = partial(_record_table, "subscriptions")
student_follow_subject = partial(_record_table, "student_follow_subject")
TRANSFORMS = {
    "students": students,
    "courses": courses,
    "universities": universities,
    "subjects": subjects,
    "sessions": sessions,
    "subscriptions": subscriptions,
    "student_follow_subject": student_follow_subject,
}


# --------------------------------------------------------------------------------------------------
# the tables, and how each is kept (the I/O edge)
# --------------------------------------------------------------------------------------------------


def app_id(table: str) -> str:
    """The Delta txn app id silver.<table>'s refreshes commit under (their version: the bronze batch reached)."""
    return f"silver.{table}"


@dataclass(frozen=True)
class Refresh:
    """One silver table's refresh: the bronze rows of the batches it folds in, the table as it is, where it writes."""

    session: SparkSession
    rows: DataFrame
    current: DataFrame
    target: delta.Target
    run_id: str


@dataclass(frozen=True)
class SilverTable:
    """How one silver table is kept: the bronze table it reads, its whole content from bronze rows (and the run's
    id), and what a refresh does with the rows of new batches."""

    name: str
    source: str
    transform: Callable[[DataFrame, str], DataFrame]
    update: Callable[[Refresh], None]

    @property
    def spec(self) -> tables.Table:
        return SPECS[self.name]


def _merge_page_views(r: Refresh) -> None:
    """New events are inserted; an event seen again keeps its earliest delivered occurrence's provenance."""
    delta.merge_once(
        r.session,
        page_views(r.rows, r.run_id),
        r.target,
        on="t.event_id = s.event_id",
        update_when=_EARLIER,
        update_set={c: f"s.{c}" for c in tables.PROVENANCE},
        within=event_dates(r.rows),  # an event's date is part of its identity: only its day can hold it
    )


def _replace_deliveries(transform: Callable[..., DataFrame]) -> Callable[[Refresh], None]:
    """A snapshot: the deliveries from the first new one on are rewritten, compared with the state just before."""

    def update(r: Refresh) -> None:
        first = _as_of(r.rows, F.min)
        if first is None:  # the new batches hold no record of this entity
            delta.advance(r.session, r.target)
            return
        rows = transform(r.rows, _previous(r.current, first))
        delta.overwrite(rows, r.target, replace_where=f"as_of >= TIMESTAMP'{first}'")

    return update


def _refold(transform: Callable[..., DataFrame]) -> Callable[[Refresh], None]:
    """A record table: the new exports are folded into the rows it holds, and the table rewritten."""
    return lambda r: delta.overwrite(transform(r.rows, r.current), r.target)


def _snapshot_model(entity: str) -> SilverTable:
    transform = TRANSFORMS[entity]
    return SilverTable(entity, entity, lambda rows, _run_id: transform(rows), _replace_deliveries(transform))


def _record_model(entity: str) -> SilverTable:
    transform = TRANSFORMS[entity]
    return SilverTable(entity, entity, lambda rows, _run_id: transform(rows), _refold(transform))


TABLES: tuple[SilverTable, ...] = (
    SilverTable("page_views", "events", page_views, _merge_page_views),
    *(_snapshot_model(e) for e in tables.SNAPSHOTS),
    *(_record_model(e) for e in tables.RECORDS),
)
BY_NAME = {t.name: t for t in TABLES}
assert tuple(BY_NAME) == tuple(SPECS), "every silver table of the catalogue has a model here, in its order"


_EMPTY_SOURCE = {"events": "value string, at_raw string", "record": "record string"}


def empty(spark: SparkSession, table: str) -> DataFrame:
    """An empty silver.<table> with its columns (for a table no delivery has fed yet)."""
    model = BY_NAME[table]
    return model.transform(spark.createDataFrame([], tables.table("bronze", model.source).ddl), "")


def _lag(settings: Settings, table: SilverTable) -> tuple[int | None, int] | None:
    """(batch silver.<table> has consumed, bronze batch it must reach), or None when it is up to date: bronze holds
    no later batch, or none with rows for it (a delivery without this entity: no Spark job, no commit)."""
    bronze_path, watermark = settings.table_path("bronze", table.source), bronze.app_id("bronze", table.source)
    target = last_txn_version(bronze_path, watermark)
    if target is None:
        return None
    done = last_txn_version(settings.table_path("silver", table.name), app_id(table.name))
    if done is not None and (done >= target or not data_changed(bronze_path, watermark, done, target)):
        return None
    return done, target


def pending(settings: Settings) -> bool:
    """Whether some silver table lags bronze (read from the Delta logs, without Spark)."""
    return any(_lag(settings, table) is not None for table in TABLES)


def lagging(settings: Settings) -> set[str]:
    """The silver tables that lag bronze (read from the Delta logs, without Spark)."""
    return {table.name for table in TABLES if _lag(settings, table) is not None}


def _as_of(rows: DataFrame, bound: Callable[[str], Column]) -> str | None:
    """`min`/`max` of `as_of` over `rows` as exact text in the session's time zone (None: no rows)."""
    return rows.agg(bound("as_of").alias("b")).select(F.date_format("b", "yyyy-MM-dd HH:mm:ss.SSSSSS")).collect()[0][0]


def latest_as_of(rows: DataFrame, moment: str | None = None, inclusive: bool = False) -> str | None:
    """The latest `as_of` of snapshot rows (before `moment`, or at it too when `inclusive`), as exact text; for a whole
    table usually answered from Delta's file statistics, without reading it."""
    latest = _as_of(rows, F.max)
    if moment is None or latest is None or latest < moment or (inclusive and latest == moment):
        return latest
    at = F.lit(moment).cast("timestamp")
    return _as_of(rows.where(F.col("as_of") <= at if inclusive else F.col("as_of") < at), F.max)


def _previous(rows: DataFrame, first: str) -> DataFrame:
    """A snapshot table's rows from the latest delivery before `first` on: the state a new export is compared with."""
    return rows.where(F.col("as_of") >= F.lit(latest_as_of(rows, first) or first).cast("timestamp"))


def _current(session: SparkSession, settings: Settings, table: SilverTable) -> DataFrame | None:
    """silver.<table> to build on, or None when it must be built from the whole of bronze: missing, or written with
    other columns than the catalogue's (an earlier layout)."""
    if not is_table(settings.table_path("silver", table.name)):
        return None
    current = delta.read_table(session, "silver", table.name, settings)
    return current if tuple(current.columns) == table.spec.names else None


def _place(rows: DataFrame, table: SilverTable) -> quality.Place:
    """Where the table's rows come from: the bronze rows read, and the quarantine table of their group."""
    if table.source == "events":
        return quality.Place(rows, tables.table("quarantine", "events"), "value")
    return quality.Place(rows, tables.table("quarantine", "transactional"), "record", table.source)


def _write(
    session: SparkSession,
    settings: Settings,
    table: SilverTable,
    run_id: str,
    full_refresh: bool,
    checks: quality.Checks,
) -> TableReport:
    """Bring one silver table up to date on `session`: built whole when new, of an earlier layout or on a full
    refresh; otherwise its model's update folds in the new batches. The rows written are checked against the table's
    expectations on the way."""
    started = time.monotonic()
    bronze_path, watermark = settings.table_path("bronze", table.source), bronze.app_id("bronze", table.source)
    lag = _lag(settings, table)
    if lag is None and full_refresh:
        reached = last_txn_version(bronze_path, watermark)
        lag = None if reached is None else (reached, reached)
    if lag is None:
        return TableReport(skipped=True)
    done, upto = lag
    before = latest_version(settings.table_path("silver", table.name))
    current = None if full_refresh else _current(session, settings, table)
    since = -1 if current is None or done is None else done
    rows = delta.read_table(session, "bronze", table.source, settings).where(
        (F.col("batch_id") > F.lit(since)) & (F.col("batch_id") <= F.lit(upto))
    )
    version = upto if done is None or upto > done else None  # a rebuild at the batch reached: no new txn
    guard = checks.guard(session, table.spec, version, _place(rows, table))
    target = delta.Target(table.spec, settings, app_id=app_id(table.name), version=version, expect=guard)
    try:
        if current is None:
            delta.overwrite(table.transform(rows, run_id), target)
        else:
            table.update(Refresh(session, rows, current, target, run_id))
    finally:
        if guard is not None:
            guard.close()
    return TableReport(
        rows_in=rows_committed(bronze_path, watermark, since, upto),
        rows_out=rows_written(target.path),
        seconds=round(time.monotonic() - started, 3),  # side by side with the layer's other writes
        version=upto,
        commits=commits_since(target.path, before),
    )


def refresh(
    spark: SparkSession,
    settings: Settings,
    run_id: str,
    full_refresh: bool = False,
    expectations: Expectations | None = None,
) -> StageReport:
    """Bring every silver table up to date with bronze, side by side; no commit for a table that has nothing new.
    `full_refresh` rebuilds every table from the whole of bronze (one overwrite commit each). The rows written are
    checked against `expectations` (default: the file of `settings.expectations`); what they found is recorded in
    quality.expectation_results, also when a `fail` rule stops the stage."""
    started = time.monotonic()
    checks = quality.Checks(settings, expectations or load(settings.expectations), run_id)
    try:
        reports = delta.write_tables(
            spark,
            {
                table.name: partial(
                    _write, settings=settings, table=table, run_id=run_id, full_refresh=full_refresh, checks=checks
                )
                for table in TABLES
            },
        )
    except BaseException:
        checks.record(spark, quiet=True)
        raise
    checks.record(spark)
    return StageReport.of_tables(
        "silver",
        reports,
        time.monotonic() - started,
        expectations=checks.results,
        quarantined=checks.dropped,
        run_id=run_id,
        full_refresh=full_refresh,
    )
