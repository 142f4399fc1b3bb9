"""Gold: the star schema, the marts and the SCD2-ready dimension histories, each table kept up to date from the silver
rows that changed since its own watermark (docs/incremental.md says which table is kept how, and why that equals a
rebuild)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse import delta, quality, silver, tables
from lakehouse.config import Settings
from lakehouse.delta_log import (
    DeltaLog,
    app_commits,
    commits_since,
    data_changed,
    is_table,
    last_txn_version,
    latest_version,
    oldest_readable_version,
    rows_committed,
    rows_written,
)
from lakehouse.expectations import Expectations, load
from lakehouse.reports import StageReport, TableReport
from lakehouse.silver import latest_as_of

SPECS = {t.name: t for t in tables.layer("gold")}
FACT_PAGE_VIEW_COLUMNS = SPECS["fact_page_view"].names
STUDENT_COLUMNS = SPECS["dim_student"].names
# The student attributes page_view_enriched carries: a change to one of them re-enriches that student's events.
ENRICHMENT = tuple(c for c in SPECS["page_view_enriched"].names if c not in FACT_PAGE_VIEW_COLUMNS)


# --------------------------------------------------------------------------------------------------
# dimensions
# --------------------------------------------------------------------------------------------------


def _history(silver_entity: DataFrame, key: str, name: str) -> DataFrame:
    return silver_entity.select(key, name, "is_deleted", "as_of", "delivery")


def dim_course_history(courses: DataFrame) -> DataFrame:
    """gold.dim_course_history: one row per (course_id, courses delivery from its first)."""
    return _history(courses, "course_id", "course_name")


def dim_university_history(universities: DataFrame) -> DataFrame:
    """gold.dim_university_history: one row per (university_id, universities delivery from its first)."""
    return _history(universities, "university_id", "university_name")


def dim_subject_history(subjects: DataFrame) -> DataFrame:
    """gold.dim_subject_history: one row per (subject_id, subjects delivery from its first)."""
    return _history(subjects, "subject_id", "subject_name")


def _name_as_of(rows: DataFrame, names: DataFrame, key: str, name: str) -> DataFrame:
    """Add `name` of `key` as of each row's as_of: the names delivery at or before it, latest first."""
    ref = names.select(F.col(key).alias("_k"), F.col(name), F.col("as_of").alias("_at"), F.col("delivery").alias("_d"))
    pick = Window.partitionBy("student_id", "delivery").orderBy(F.desc_nulls_last("_at"), F.desc_nulls_last("_d"))
    return (
        rows.join(ref, (F.col(key) == F.col("_k")) & (F.col("_at") <= F.col("as_of")), "left")
        .withColumn("_n", F.row_number().over(pick))
        .where("_n = 1")
        .drop("_n", "_k", "_at", "_d")
    )


def dim_student_history(students: DataFrame, universities: DataFrame, courses: DataFrame) -> DataFrame:
    """gold.dim_student_history: one row per (student_id, students delivery from its first), names as of then."""
    rows = _name_as_of(students, dim_university_history(universities), "university_id", "university_name")
    rows = _name_as_of(rows, dim_course_history(courses), "course_id", "course_name")
    return rows.select(*STUDENT_COLUMNS, "delivery")


def _current(history: DataFrame, key: str) -> DataFrame:
    latest = Window.partitionBy(key).orderBy(F.desc("as_of"), F.desc("delivery"))
    return history.withColumn("_n", F.row_number().over(latest)).where("_n = 1").drop("_n", "delivery")


def dim_student(history: DataFrame) -> DataFrame:
    """gold.dim_student: one row per student ever seen, its latest delivered state."""
    return _current(history, "student_id")


def dim_course(history: DataFrame) -> DataFrame:
    """gold.dim_course: one row per course id, its latest delivered state."""
    return _current(history, "course_id")


def dim_university(history: DataFrame) -> DataFrame:
    """gold.dim_university: one row per university id, its latest delivered state."""
    return _current(history, "university_id")


def dim_subject(history: DataFrame) -> DataFrame:
    """gold.dim_subject: one row per subject id, its latest delivered state."""
    return _current(history, "subject_id")


def dim_date(*fact_dates: DataFrame) -> DataFrame:
    """gold.dim_date: one row per calendar day from the first to the last fact date (single-column inputs)."""
    dates = reduce(DataFrame.unionByName, [df.select(F.col(df.columns[0]).alias("date")) for df in fact_dates])
    day = F.col("date")
    return (
        dates.agg(F.min("date").alias("lo"), F.max("date").alias("hi"))
        .where("lo is not null")
        .select(F.explode(F.sequence("lo", "hi")).alias("date"))
        .select(
            "date",
            F.year(day).alias("year"),
            F.month(day).alias("month"),
            F.dayofmonth(day).alias("day"),
            (((F.dayofweek(day) + 5) % 7) + 1).alias("weekday"),
            F.date_format(day, "EEEE").alias("weekday_name"),
            F.trunc(day, "month").alias("month_start_date"),
        )
    )


# --------------------------------------------------------------------------------------------------
# facts
# --------------------------------------------------------------------------------------------------


def _with_erased(silver: DataFrame) -> DataFrame:
    """A silver fact input with `student_erased` (a table written before silver carried it: false)."""
    return silver if "student_erased" in silver.columns else silver.withColumn("student_erased", F.lit(False))


def fact_page_view(page_views: DataFrame) -> DataFrame:
    """gold.fact_page_view: one row per distinct event, dated by the event (late events land in their day)."""
    return _with_erased(page_views).select(*FACT_PAGE_VIEW_COLUMNS)


def _per_record(records: DataFrame, record: str, *columns: str | Column) -> DataFrame:
    """One row per distinct record ever exported (kept if later exports omit it): `<record>_id`, its student
    (`student_id`, `student_erased`), the columns, when it was first seen and whether it is deleted."""
    return _with_erased(records).select(
        F.col("record_id").alias(f"{record}_id"), "student_id", "student_erased", *columns, "first_as_of", "is_deleted"
    )


def _dated(time: str, date: str) -> tuple[str, Column]:
    """A time column and its day."""
    return time, F.to_date(time).alias(date)


def fact_session(sessions: DataFrame) -> DataFrame:
    """gold.fact_session: one row per distinct session record ever exported."""
    return _per_record(sessions, "session", *_dated("session_start_at", "session_date"), "client_type")


def fact_subscription(subscriptions: DataFrame) -> DataFrame:
    """gold.fact_subscription: one row per distinct payment record ever exported."""
    return _per_record(subscriptions, "subscription", *_dated("payment_at", "payment_date"), "plan_type")


def fact_subject_follow(follows: DataFrame) -> DataFrame:
    """gold.fact_subject_follow: one row per distinct follow record ever exported."""
    return _per_record(follows, "follow", "subject_id", *_dated("followed_at", "followed_date"))


# --------------------------------------------------------------------------------------------------
# marts, and the partial aggregates they are kept from
# --------------------------------------------------------------------------------------------------


def activity_by_student(facts: DataFrame) -> DataFrame:
    """gold.activity_by_student: page views per (student_id, user_type); a null student_id holds the anonymous ones."""
    return facts.groupBy("student_id", "user_type").agg(F.count(F.lit(1)).alias("page_views"))


def activity_by_country_student(facts: DataFrame) -> DataFrame:
    """gold.activity_by_country_student: page views per (country, month, student_id), null student_id: anonymous."""
    return facts.groupBy("country", F.trunc("event_date", "month").alias("month"), "student_id").agg(
        F.count(F.lit(1)).alias("page_views")
    )


def _totals(activity: DataFrame, *keys: str) -> DataFrame:
    """page_views and distinct students per `keys`, from partial aggregates holding each student once per key."""
    return activity.groupBy(*keys).agg(F.sum("page_views").alias("page_views"), F.count("student_id").alias("students"))


def mart_country_access(activity: DataFrame) -> DataFrame:
    """gold.mart_country_access: one row per (country, month), from activity_by_country_student."""
    return _totals(activity, "country", "month")


def mart_users_by_type(activity: DataFrame) -> DataFrame:
    """gold.mart_users_by_type: one row per user_type (custom_4), from activity_by_student."""
    return _totals(activity, "user_type")


def mart_state_activity(activity: DataFrame, students: DataFrame) -> DataFrame:
    """gold.mart_state_activity: one row per student state (null: anonymous, unknown or stateless students), from
    activity_by_student and each student's current state."""
    per_student = activity.groupBy("student_id").agg(F.sum("page_views").alias("page_views"))
    return _totals(per_student.join(students.select("student_id", "state"), "student_id", "left"), "state")


def mart_daily_activity(facts: DataFrame) -> DataFrame:
    """gold.mart_daily_activity: one row per (event_date, client_type)."""
    return facts.groupBy("event_date", "client_type").agg(
        F.count(F.lit(1)).alias("page_views"),
        F.countDistinct("student_id").alias("students"),
        F.countDistinct("session_uuid").alias("sessions"),
    )


def page_view_enriched(facts: DataFrame, students: DataFrame) -> DataFrame:
    """gold.page_view_enriched: one row per event with its student's current state, city, university, course."""
    return facts.join(students.select("student_id", *ENRICHMENT), "student_id", "left").select(
        *FACT_PAGE_VIEW_COLUMNS, *ENRICHMENT
    )


# --------------------------------------------------------------------------------------------------
# refresh (the I/O edge): each table built whole once, then kept from what changed
# --------------------------------------------------------------------------------------------------

FACT_INPUTS = ("page_views", *tables.RECORDS)
# Gold's layout, 2 since facts carry `student_erased`. Each layout commits under app ids of its own, so a table an
# earlier layout wrote (other columns, other keys) has no marks of this one, and is rebuilt once.
LAYOUT = 2


MARKS_PROPERTY = "lakehouse.gold.marks"  # the marks a compacted history keeps (lakehouse.erasure)


def app_id(table: str) -> str:
    """The Delta txn app id gold.<table>'s refreshes commit under (layout 1 committed as `gold.<table>`)."""
    return f"gold.{table}@{LAYOUT}"


CHANGED = silver.CHANGED  # the bronze batch in which what gold reads of a silver row last changed
_RECORD_FACTS = {
    "fact_session": ("sessions", fact_session),
    "fact_subscription": ("subscriptions", fact_subscription),
    "fact_subject_follow": ("student_follow_subject", fact_subject_follow),
}


@dataclass
class Refresh:
    """One gold table's refresh: the silver batches it has seen and must reach per input, and how it writes."""

    session: SparkSession
    settings: Settings
    table: str
    seen: dict[str, int]  # silver input -> batch this table has consumed
    marks: dict[str, int]  # silver input -> batch it must reach
    once: bool = True  # commit at most once for these marks (a full refresh at the marks reached commits anyway)
    expect: quality.Guard | None = None  # the table's expectations, checking the rows it writes

    def silver(self, name: str) -> DataFrame:
        """The whole silver table (an empty one when no delivery fed it yet)."""
        if name not in self.marks:
            return silver.empty(self.session, name)
        return delta.read_table(self.session, "silver", name, self.settings)

    def changed(self, name: str) -> DataFrame:
        """The silver rows whose content changed since this table's last refresh."""
        rows = self.silver(name)
        if name not in self.marks:
            return rows
        return rows.where(
            (F.col(CHANGED) > F.lit(self.seen.get(name, -1))) & (F.col(CHANGED) <= F.lit(self.marks[name]))
        )

    def gold(self, name: str) -> DataFrame:
        """A gold table this one reads, named in its `after` (an empty one when its inputs never had a delivery)."""
        if delta.table_exists("gold", name, self.settings):
            return delta.read_table(self.session, "gold", name, self.settings)
        return BY_NAME[name].build(Refresh(self.session, self.settings, name, {}, {}))

    @property
    def target(self) -> delta.Target:
        # the txn version grows whenever an input mark does: their sum
        return delta.Target(
            SPECS[self.table],
            self.settings,
            app_id=app_id(self.table),
            version=sum(self.marks.values()) if self.once else None,
            user_metadata=json.dumps({"marks": self.marks}),
            expect=self.expect,
        )


@dataclass(frozen=True)
class GoldTable:
    """How one gold table is kept: its silver inputs, its whole content, and what a refresh does with the changes."""

    name: str
    inputs: tuple[str, ...]
    build: Callable[[Refresh], DataFrame]
    update: Callable[[Refresh], None]
    after: tuple[str, ...] = ()  # the gold tables it reads: written before it in a run


def _first_changed(run: Refresh, *names: str) -> str | None:
    """The earliest `as_of` among the changed rows of these snapshot tables (exact text), None when none changed."""
    bounds = [run.changed(n).agg(F.min("as_of").alias("b")) for n in names if n in run.marks]
    if not bounds:
        return None
    union = bounds[0]
    for b in bounds[1:]:
        union = union.unionByName(b)
    return union.agg(F.date_format(F.min("b"), "yyyy-MM-dd HH:mm:ss.SSSSSS")).collect()[0][0]


def _as_of_from(rows: DataFrame, moment: str) -> DataFrame:
    """Snapshot rows from the latest delivery at or before `moment` on: all that states from `moment` on depend on."""
    return rows.where(F.col("as_of") >= F.lit(latest_as_of(rows, moment, inclusive=True) or moment).cast("timestamp"))


def _touched(frame: DataFrame, column: str) -> list:
    """The distinct values of `column` in `frame` (days, months, states, user types: a handful of rows)."""
    return [r[0] for r in frame.select(column).distinct().collect()]


def _within(column: str, values: list) -> str:
    """A predicate selecting rows whose `column` is one of `values` (a null among them included)."""
    from datetime import date

    def literal(v: object) -> str:
        return f"DATE'{v.isoformat()}'" if isinstance(v, date) else "'" + str(v).replace("'", "''") + "'"

    known = [literal(v) for v in sorted(v for v in values if v is not None)]
    parts = ([f"`{column}` IN ({', '.join(known)})"] if known else []) + (
        [f"`{column}` IS NULL"] if None in values else []
    )
    return " OR ".join(parts) or "false"


def _replace_groups(run: Refresh, rows: DataFrame, column: str, values: list) -> None:
    """Replace the table's rows whose `column` is one of `values` with `rows` (restricted to them)."""
    if not values:
        delta.advance(run.session, run.target)
        return
    where = _within(column, values)
    delta.overwrite(rows.where(where), run.target, replace_where=where)


# -- dimensions ------------------------------------------------------------------------------


def _history_table(name: str, entity: str, transform: Callable[[DataFrame], DataFrame]) -> GoldTable:
    """dim_<entity>_history: the silver snapshot's columns; a change rewrites its deliveries from the first changed."""

    def update(run: Refresh) -> None:
        first = _first_changed(run, entity)
        if first is None:
            delta.advance(run.session, run.target)
            return
        where = f"as_of >= TIMESTAMP'{first}'"
        delta.overwrite(transform(run.silver(entity).where(where)), run.target, replace_where=where)

    return GoldTable(name, (entity,), lambda run: transform(run.silver(entity)), update)


def _student_history_update(run: Refresh) -> None:
    first = _first_changed(run, "students", "universities", "courses")
    if first is None:
        delta.advance(run.session, run.target)
        return
    where = f"as_of >= TIMESTAMP'{first}'"
    rows = dim_student_history(
        run.silver("students").where(where),
        _as_of_from(run.silver("universities"), first),
        _as_of_from(run.silver("courses"), first),
    )
    delta.overwrite(rows, run.target, replace_where=where)


def _current_table(
    name: str, history: str, inputs: tuple[str, ...], current: Callable[[DataFrame], DataFrame]
) -> GoldTable:
    """dim_<entity>: each key's latest state. Every key seen has a row at the history's latest delivery (present or
    a deletion marker), so that delivery alone gives the whole table."""

    def build(run: Refresh) -> DataFrame:
        rows = run.gold(history)
        latest = latest_as_of(rows)
        return current(rows.where(F.col("as_of") >= F.lit(latest).cast("timestamp")) if latest else rows)

    return GoldTable(name, inputs, build, lambda run: delta.overwrite(build(run), run.target), after=(history,))


def _dates(run: Refresh, read: Callable[[str], DataFrame]) -> list[DataFrame]:
    return [
        read("page_views").select("event_date"),
        fact_session(read("sessions")).select("session_date"),
        fact_subscription(read("subscriptions")).select("payment_date"),
        fact_subject_follow(read("student_follow_subject")).select("followed_date"),
    ]


def _dim_date_update(run: Refresh) -> None:
    """Facts are never removed: the calendar only grows, to cover the dates of the changed facts."""
    delta.overwrite(dim_date(run.gold("dim_date").select("date"), *_dates(run, run.changed)), run.target)


# -- facts -----------------------------------------------------------------------------------


def _fact_page_view_update(run: Refresh) -> None:
    """Each event enters silver once, in the batch its changed_batch_id names: its new rows are appended."""
    delta.append_once(fact_page_view(run.changed("page_views")), run.target)


def _record_fact(name: str) -> GoldTable:
    entity, transform = _RECORD_FACTS[name]
    (key,) = SPECS[name].keys

    def update(run: Refresh) -> None:
        rows = transform(run.changed(entity))
        delta.merge_once(
            run.session, rows, run.target, on=f"t.{key} = s.{key}", update_set={c: f"s.{c}" for c in rows.columns}
        )

    return GoldTable(name, (entity,), lambda run: transform(run.silver(entity)), update)


def _activity(
    name: str, aggregate: Callable[[DataFrame], DataFrame], keys: tuple[str, ...], within: str | None = None
) -> GoldTable:
    """A partial aggregate of the page views: the new events' counts are added to their groups."""

    def update(run: Refresh) -> None:
        added = aggregate(fact_page_view(run.changed("page_views")))
        on = " AND ".join(f"t.{k} <=> s.{k}" for k in keys)
        delta.merge_once(
            run.session,
            added,
            run.target,
            on=on,
            update_set={"page_views": "t.page_views + s.page_views"},
            within=added.select(within) if within else None,
        )

    return GoldTable(name, ("page_views",), lambda run: aggregate(fact_page_view(run.silver("page_views"))), update)


# -- marts -----------------------------------------------------------------------------------


def _mart(name: str, transform: Callable[[DataFrame], DataFrame], source: str, column: str, touched: str) -> GoldTable:
    """A mart built by `transform` from one gold table; an update recomputes the groups of `column` the new events
    touch (`touched`: a SQL expression over the new page views giving their days, months, user types)."""

    def rows(run: Refresh) -> DataFrame:
        return transform(run.gold(source))

    def update(run: Refresh) -> None:
        new = fact_page_view(run.changed("page_views"))
        _replace_groups(run, rows(run), column, _touched(new.select(F.expr(touched).alias(column)), column))

    return GoldTable(name, ("page_views",), rows, update, after=(source,))


def _students_changed(run: Refresh) -> DataFrame | None:
    """Students whose enrichment attributes changed since this table's last refresh: dim_student then (read back at
    the version this table last saw) against dim_student now; `old`/`new` hold their states. None when dim_student has
    had no commit since (a delivery of events only): no student moved, told from its log without a Spark job. Raises
    LookupError when that version is no longer readable."""
    path = run.settings.table_path("gold", "dim_student")
    seen = _seen(path, app_id("dim_student"), run.seen)
    if seen is None or seen < (oldest_readable_version(path) or 0):  # an erasure vacuums every old version
        raise LookupError("dim_student as this table last saw it is not in the log, or no longer readable")
    if seen == latest_version(path):
        return None
    then = run.session.read.format("delta").option("versionAsOf", seen).load(path)
    now = run.gold("dim_student")
    attrs = F.struct(*ENRICHMENT)
    return (
        now.select("student_id", attrs.alias("new"), F.col("state").alias("new_state"))
        .join(then.select("student_id", attrs.alias("old"), F.col("state").alias("old_state")), "student_id", "left")
        .where(~F.col("new").eqNullSafe(F.col("old")))
    )


def _seen(path: str, app_id: str, marks: dict[str, int]) -> int | None:
    """The Delta version of a gold table whose commit recorded input marks no later than `marks`: the table as a
    reader that has seen `marks` last read it."""
    for commit in app_commits(path, app_id):
        theirs = json.loads(commit.user_metadata or "{}").get("marks", {})
        if all(theirs.get(k, -1) <= marks.get(k, -1) for k in theirs):
            return commit.version
    return None


def _students_moved(run: Refresh, build: Callable[[DataFrame], DataFrame]) -> tuple[DataFrame, DataFrame | None] | None:
    """(dim_student, the students whose attributes changed, None when none did); None when those cannot be told,
    after rebuilding the table whole with `build(dim_student)`."""
    students = run.gold("dim_student")
    try:
        return students, _students_changed(run)
    except LookupError:
        delta.overwrite(build(students), run.target)
        return None


def _state_activity_update(run: Refresh) -> None:
    """The states whose totals change: those of students with new events (null: anonymous or unknown), and the
    states students moved from and to."""
    found = _students_moved(run, lambda students: mart_state_activity(run.gold("activity_by_student"), students))
    if found is None:
        return
    students, moved = found
    new = fact_page_view(run.changed("page_views")).select("student_id").distinct()
    states = new.join(students, "student_id", "left").select("state")
    if moved is not None:
        states = states.unionByName(moved.select(F.col("old_state").alias("state"))).unionByName(
            moved.select(F.col("new_state").alias("state"))
        )
    rows = mart_state_activity(run.gold("activity_by_student"), students)
    _replace_groups(run, rows, "state", _touched(states, "state"))


def _enriched_update(run: Refresh) -> None:
    """New events are appended with their student's current attributes; the events of students whose attributes
    changed are rewritten in place (a MERGE on student_id, committed once per version under its own app id)."""
    found = _students_moved(run, lambda students: page_view_enriched(run.gold("fact_page_view"), students))
    if found is None:
        return
    students, moved = found
    if moved is not None:
        restate = delta.Target(
            SPECS[run.table], run.settings, app_id=app_id(run.table) + ".restate", version=run.target.version
        )
        delta.merge_once(
            run.session,
            moved.select("student_id", "new.*"),
            restate,
            on="t.student_id = s.student_id",
            update_set={c: f"s.{c}" for c in ENRICHMENT},
            insert=False,
        )
    delta.append_once(page_view_enriched(fact_page_view(run.changed("page_views")), students), run.target)


def _student_history(run: Refresh) -> DataFrame:
    return dim_student_history(run.silver("students"), run.silver("universities"), run.silver("courses"))


_STUDENT_INPUTS = ("students", "universities", "courses")

# The gold tables in dependency order: each reads silver and the gold tables it names in `after`, and starts in a
# run as soon as those are written, side by side with the others.
ORDER: tuple[GoldTable, ...] = (
    _history_table("dim_university_history", "universities", dim_university_history),
    _history_table("dim_course_history", "courses", dim_course_history),
    _history_table("dim_subject_history", "subjects", dim_subject_history),
    GoldTable("dim_student_history", _STUDENT_INPUTS, _student_history, _student_history_update),
    GoldTable(
        "fact_page_view",
        ("page_views",),
        lambda run: fact_page_view(run.silver("page_views")),
        _fact_page_view_update,
    ),
    *(_record_fact(name) for name in _RECORD_FACTS),
    _activity("activity_by_student", activity_by_student, ("student_id", "user_type")),
    _activity(
        "activity_by_country_student",
        activity_by_country_student,
        ("country", "month", "student_id"),
        within="month",
    ),
    _current_table("dim_university", "dim_university_history", ("universities",), dim_university),
    _current_table("dim_course", "dim_course_history", ("courses",), dim_course),
    _current_table("dim_subject", "dim_subject_history", ("subjects",), dim_subject),
    _current_table("dim_student", "dim_student_history", _STUDENT_INPUTS, dim_student),
    GoldTable("dim_date", FACT_INPUTS, lambda run: dim_date(*_dates(run, run.silver)), _dim_date_update),
    _mart("mart_daily_activity", mart_daily_activity, "fact_page_view", "event_date", "event_date"),
    _mart(
        "mart_country_access",
        mart_country_access,
        "activity_by_country_student",
        "month",
        "trunc(event_date, 'month')",
    ),
    _mart("mart_users_by_type", mart_users_by_type, "activity_by_student", "user_type", "user_type"),
    GoldTable(
        "mart_state_activity",
        ("page_views", *_STUDENT_INPUTS),
        lambda run: mart_state_activity(run.gold("activity_by_student"), run.gold("dim_student")),
        _state_activity_update,
        after=("activity_by_student", "dim_student"),
    ),
    GoldTable(
        "page_view_enriched",
        ("page_views", *_STUDENT_INPUTS),
        lambda run: page_view_enriched(run.gold("fact_page_view"), run.gold("dim_student")),
        _enriched_update,
        after=("fact_page_view", "dim_student"),
    ),
)
BY_NAME = {t.name: t for t in ORDER}
TABLES: tuple[str, ...] = tuple(BY_NAME)
assert set(TABLES) == set(SPECS), "every gold table of the catalogue has a model here"


def _silver_marks(settings: Settings) -> dict[str, int | None]:
    return {
        t.name: last_txn_version(settings.table_path("silver", t.name), silver.app_id(t.name)) for t in silver.TABLES
    }


def seen_marks(settings: Settings, table: str) -> dict[str, int] | None:
    """The silver batches gold.<table> has consumed per input, from its latest commit, or from the table property an
    erasure's compaction of its history kept them in (None: never built, or built by an earlier layout of gold:
    then it is built whole)."""
    path = settings.table_path("gold", table)
    for commit in app_commits(path, app_id(table)):
        marks = json.loads(commit.user_metadata or "{}").get("marks")
        return marks if isinstance(marks, dict) else None
    kept = json.loads(DeltaLog(path).configuration().get(MARKS_PROPERTY) or "{}")
    return kept.get("marks") if kept.get("app_id") == app_id(table) else None


def _plan(
    settings: Settings, table: GoldTable, marks: dict[str, int | None]
) -> tuple[dict[str, int], dict[str, int] | None] | None:
    """(input marks to reach, marks consumed) for a table that lags silver, or None when it is up to date."""
    reach = {i: m for i in table.inputs if (m := marks[i]) is not None}
    if not reach:
        return None
    seen = seen_marks(settings, table.name)
    if seen is not None and not any(
        data_changed(settings.table_path("silver", i), silver.app_id(i), seen.get(i), m)
        for i, m in reach.items()
        if seen.get(i, -1) < m
    ):
        return None  # no input moved, or only by batches that changed none of its rows
    return reach, seen


def pending(settings: Settings) -> bool:
    """Whether some gold table lags silver (read from the Delta logs, without Spark)."""
    marks = _silver_marks(settings)
    return any(_plan(settings, table, marks) is not None for table in ORDER)


def lagging(settings: Settings) -> set[str]:
    """The gold tables that lag silver (read from the Delta logs, without Spark)."""
    marks = _silver_marks(settings)
    return {table.name for table in ORDER if _plan(settings, table, marks) is not None}


def _write(
    session: SparkSession,
    settings: Settings,
    table: GoldTable,
    reach: dict[str, int],
    seen: dict[str, int] | None,
    full_refresh: bool,
    checks: quality.Checks,
) -> TableReport:
    """Refresh one gold table on `session`: built whole when new, unreadable as before, or on a full refresh;
    otherwise kept from what changed. The rows written are checked against the table's expectations on the way."""
    started = time.monotonic()
    run = Refresh(session, settings, table.name, seen or {}, reach, once=seen != reach)
    before = latest_version(run.target.path)
    run.expect = guard = checks.guard(session, SPECS[table.name], run.target.version)
    try:
        if full_refresh or seen is None or not is_table(settings.table_path("gold", table.name)):
            delta.overwrite(table.build(run), run.target)
        else:
            delta.align_properties(session, run.target)  # a table an earlier layout created: its change feed on
            table.update(run)
    finally:
        if guard is not None:
            guard.close()
    rows_in = sum(
        rows_committed(settings.table_path("silver", i), silver.app_id(i), (seen or {}).get(i), m)
        for i, m in reach.items()
    )
    return TableReport(
        rows_in=rows_in,
        rows_out=rows_written(run.target.path),
        seconds=round(time.monotonic() - started, 3),  # side by side with the other writes
        version=run.target.version,
        commits=commits_since(run.target.path, before),
    )


def refresh(
    spark: SparkSession,
    settings: Settings,
    run_id: str,
    full_refresh: bool = False,
    expectations: Expectations | None = None,
) -> StageReport:
    """Bring gold up to date with silver, each table as soon as the gold tables it reads are, side by side; a table
    whose silver inputs did not move gets no commit. `full_refresh` rebuilds every table from the whole of silver.
    The rows written are checked against `expectations` (default: the file of `settings.expectations`); a table whose
    rules read other gold tables is written after them."""
    started = time.monotonic()
    checks = quality.Checks(settings, expectations or load(settings.expectations), run_id)
    marks = _silver_marks(settings)
    reports: dict[str, TableReport] = {}
    jobs = {}
    for table in ORDER:
        plan = _plan(settings, table, marks)
        if plan is None and full_refresh:
            reach = {i: m for i in table.inputs if (m := marks[i]) is not None}
            plan = (reach, seen_marks(settings, table.name)) if reach else None
        if plan is None:
            reports[table.name] = TableReport(skipped=True)
        else:
            jobs[table.name] = partial(
                _write,
                settings=settings,
                table=table,
                reach=plan[0],
                seen=plan[1],
                full_refresh=full_refresh,
                checks=checks,
            )
    after = {t.name: (*t.after, *_gold_reads(checks.expectations, t.name)) for t in ORDER}
    try:
        reports.update(delta.write_tables(spark, jobs, after=after))
    except BaseException:
        checks.record(spark, quiet=True)
        raise
    checks.record(spark)
    return StageReport.of_tables(
        "gold",
        {name: reports[name] for name in TABLES},
        time.monotonic() - started,
        expectations=checks.results,
        quarantined=checks.dropped,
        run_id=run_id,
        full_refresh=full_refresh,
    )


def _gold_reads(expectations: Expectations, table: str) -> tuple[str, ...]:
    """The other gold tables the rules of gold.<table> read: written before it in a run."""
    return tuple(
        r.split(".", 1)[1]
        for r in expectations.reads(f"gold.{table}")
        if r.startswith("gold.") and r != f"gold.{table}"
    )
