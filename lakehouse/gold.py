"""Gold: the star schema and marts of CONTRACT §6, plus the SCD2-ready dimension histories."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakehouse import delta
from lakehouse.config import Settings

# Layer policy, measured in bench/partitioning.py (bench/README.md): the fact MERGEd by day is partitioned by day;
# the tables rebuilt by overwrite (dims, marts, page_view_enriched) are small and stay unpartitioned.
PARTITION_BY: dict[str, list[str]] = {"fact_page_view": ["event_date"]}

FACT_PAGE_VIEW_COLUMNS = ("event_id", "event_at", "event_date", "student_id", "client_type", "country", "region",
                          "city_name", "browser", "platform", "page_name", "page_category", "user_type",
                          "session_uuid")
STUDENT_COLUMNS = ("student_id", "registered_at", "state", "city", "university_id", "university_name", "course_id",
                   "course_name", "signup_source", "is_deleted", "as_of")


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
    ref = names.select(F.col(key).alias("_k"), F.col(name), F.col("as_of").alias("_at"),
                       F.col("delivery").alias("_d"))
    pick = Window.partitionBy("student_id", "delivery").orderBy(F.desc_nulls_last("_at"), F.desc_nulls_last("_d"))
    return (rows.join(ref, (F.col(key) == F.col("_k")) & (F.col("_at") <= F.col("as_of")), "left")
            .withColumn("_n", F.row_number().over(pick)).where("_n = 1").drop("_n", "_k", "_at", "_d"))


def dim_student_history(students: DataFrame, universities: DataFrame, courses: DataFrame) -> DataFrame:
    """gold.dim_student_history: one row per (student_id, students delivery from its first), names as of then."""
    rows = _name_as_of(students, dim_university_history(universities), "university_id", "university_name")
    rows = _name_as_of(rows, dim_course_history(courses), "course_id", "course_name")
    return rows.select(*STUDENT_COLUMNS, "delivery")


def _current(history: DataFrame, key: str) -> DataFrame:
    latest = Window.partitionBy(key).orderBy(F.desc("as_of"), F.desc("delivery"))
    return (history.withColumn("_n", F.row_number().over(latest)).where("_n = 1")
            .drop("_n", "delivery"))


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


def dim_date(*fact_dates: Column | DataFrame) -> DataFrame:
    """gold.dim_date: one row per calendar day from the first to the last fact date (single-column inputs)."""
    dates = None
    for df in fact_dates:
        one = df.select(F.col(df.columns[0]).alias("date"))
        dates = one if dates is None else dates.unionByName(one)
    day = F.col("date")
    return (dates.agg(F.min("date").alias("lo"), F.max("date").alias("hi")).where("lo is not null")
            .select(F.explode(F.sequence("lo", "hi")).alias("date"))
            .select("date", F.year(day).alias("year"), F.month(day).alias("month"),
                    F.dayofmonth(day).alias("day"), (((F.dayofweek(day) + 5) % 7) + 1).alias("weekday"),
                    F.date_format(day, "EEEE").alias("weekday_name"),
                    F.trunc(day, "month").alias("month_start_date")))


# --------------------------------------------------------------------------------------------------
# facts
# --------------------------------------------------------------------------------------------------


def fact_page_view(page_views: DataFrame) -> DataFrame:
    """gold.fact_page_view: one row per distinct event, dated by the event (late events land in their day)."""
    return page_views.select(*FACT_PAGE_VIEW_COLUMNS)


def fact_session(sessions: DataFrame) -> DataFrame:
    """gold.fact_session: one row per distinct session record ever exported (kept if later exports omit it)."""
    return sessions.select(F.col("record_id").alias("session_id"), "student_id", "session_start_at",
                           F.to_date("session_start_at").alias("session_date"), "client_type", "first_as_of",
                           "is_deleted")


def fact_subscription(subscriptions: DataFrame) -> DataFrame:
    """gold.fact_subscription: one row per distinct payment record ever exported."""
    return subscriptions.select(F.col("record_id").alias("subscription_id"), "student_id", "payment_at",
                                F.to_date("payment_at").alias("payment_date"), "plan_type", "first_as_of",
                                "is_deleted")


def fact_subject_follow(follows: DataFrame) -> DataFrame:
    """gold.fact_subject_follow: one row per distinct follow record ever exported."""
    return follows.select(F.col("record_id").alias("follow_id"), "student_id", "subject_id", "followed_at",
                          F.to_date("followed_at").alias("followed_date"), "first_as_of", "is_deleted")


# --------------------------------------------------------------------------------------------------
# marts
# --------------------------------------------------------------------------------------------------


def _counts(df: DataFrame, *keys: str | Column) -> DataFrame:
    return df.groupBy(*keys).agg(F.count(F.lit(1)).alias("page_views"),
                                 F.countDistinct("student_id").alias("students"))


def mart_country_access(facts: DataFrame) -> DataFrame:
    """gold.mart_country_access: one row per (country, month)."""
    return _counts(facts, "country", F.trunc("event_date", "month").alias("month"))


def mart_users_by_type(facts: DataFrame) -> DataFrame:
    """gold.mart_users_by_type: one row per user_type (custom_4)."""
    return _counts(facts, "user_type")


def mart_state_activity(facts: DataFrame, students: DataFrame) -> DataFrame:
    """gold.mart_state_activity: one row per student state (null: anonymous, unknown or stateless students)."""
    return _counts(facts.join(students.select("student_id", "state"), "student_id", "left"), "state")


def mart_daily_activity(facts: DataFrame) -> DataFrame:
    """gold.mart_daily_activity: one row per (event_date, client_type)."""
    return facts.groupBy("event_date", "client_type").agg(
        F.count(F.lit(1)).alias("page_views"), F.countDistinct("student_id").alias("students"),
        F.countDistinct("session_uuid").alias("sessions"))


def page_view_enriched(facts: DataFrame, students: DataFrame) -> DataFrame:
    """gold.page_view_enriched: one row per event with its student's current state, city, university, course."""
    return facts.join(students.select(
        "student_id", "state", "city", "university_id", "university_name", "course_id", "course_name",
        "signup_source", "registered_at"), "student_id", "left").select(*FACT_PAGE_VIEW_COLUMNS, "state", "city",
        "university_id", "university_name", "course_id", "course_name", "signup_source", "registered_at")


# --------------------------------------------------------------------------------------------------
# refresh (the I/O edge)
# --------------------------------------------------------------------------------------------------

SNAPSHOTS = ("students", "courses", "universities", "subjects")
FACT_INPUTS = ("page_views", "sessions", "subscriptions", "student_follow_subject")
Read = Callable[[str], DataFrame]


def _student_history(r: Read) -> DataFrame:
    return dim_student_history(r("students"), r("universities"), r("courses"))


def _facts(r: Read) -> DataFrame:
    return fact_page_view(r("page_views"))


# (gold table, silver inputs, build from a silver reader), in dependency order
PLAN: list[tuple[str, tuple[str, ...], Callable[[Read], DataFrame] | None]] = [
    ("dim_university_history", ("universities",), lambda r: dim_university_history(r("universities"))),
    ("dim_course_history", ("courses",), lambda r: dim_course_history(r("courses"))),
    ("dim_subject_history", ("subjects",), lambda r: dim_subject_history(r("subjects"))),
    ("dim_student_history", ("students", "universities", "courses"), _student_history),
    ("dim_university", ("universities",), lambda r: dim_university(dim_university_history(r("universities")))),
    ("dim_course", ("courses",), lambda r: dim_course(dim_course_history(r("courses")))),
    ("dim_subject", ("subjects",), lambda r: dim_subject(dim_subject_history(r("subjects")))),
    ("dim_student", ("students", "universities", "courses"), lambda r: dim_student(_student_history(r))),
    ("fact_page_view", ("page_views",), None),  # incremental MERGE of the new silver rows
    ("fact_session", ("sessions",), lambda r: fact_session(r("sessions"))),
    ("fact_subscription", ("subscriptions",), lambda r: fact_subscription(r("subscriptions"))),
    ("fact_subject_follow", ("student_follow_subject",), lambda r: fact_subject_follow(r("student_follow_subject"))),
    ("dim_date", FACT_INPUTS, lambda r: dim_date(
        r("page_views").select("event_date"), fact_session(r("sessions")).select("session_date"),
        fact_subscription(r("subscriptions")).select("payment_date"),
        fact_subject_follow(r("student_follow_subject")).select("followed_date"))),
    ("mart_country_access", ("page_views",), lambda r: mart_country_access(_facts(r))),
    ("mart_users_by_type", ("page_views",), lambda r: mart_users_by_type(_facts(r))),
    ("mart_daily_activity", ("page_views",), lambda r: mart_daily_activity(_facts(r))),
    ("mart_state_activity", ("page_views", "students", "universities", "courses"),
     lambda r: mart_state_activity(_facts(r), dim_student(_student_history(r)))),
    ("page_view_enriched", ("page_views", "students", "universities", "courses"),
     lambda r: page_view_enriched(_facts(r), dim_student(_student_history(r)))),
]


def _silver_marks(settings: Settings) -> dict[str, int | None]:
    return {t: delta.last_txn_version(settings.table_path("silver", t), f"silver.{t}")
            for t in (*SNAPSHOTS, *FACT_INPUTS)}


def _versions(settings: Settings, marks: dict, table: str, inputs) -> tuple[int | None, int | None]:
    """(silver version gold.<table> must reach, version it has reached)."""
    known = [marks[i] for i in inputs if marks[i] is not None]
    done = delta.last_txn_version(settings.table_path("gold", table), f"gold.{table}")
    return (max(known) if known else None), done


def pending(settings: Settings) -> bool:
    """Whether some gold table lags silver (read from the Delta logs, without Spark)."""
    marks = _silver_marks(settings)
    for table, inputs, _ in PLAN:
        version, done = _versions(settings, marks, table, inputs)
        if version is not None and (done is None or done < version):
            return True
    return False


def _read_silver(session: SparkSession, settings: Settings, marks: dict, table: str) -> DataFrame:
    from lakehouse import silver

    if marks[table] is None:
        return silver.empty(session, table)
    return delta.read_table(session, "silver", table, settings)


def _write(session: SparkSession, settings: Settings, marks: dict, sizes: dict[str, int], table: str, version: int,
           done: int | None, full_refresh: bool) -> dict:
    """Write one gold table on `session`: fact_page_view MERGEs its new silver rows, the rest are rebuilt."""
    inputs, build = next((i, b) for t, i, b in PLAN if t == table)

    def read(name: str) -> DataFrame:
        return _read_silver(session, settings, marks, name)

    if build is None and not full_refresh:
        source = read("page_views").where(
            (F.col("batch_id") > F.lit(-1 if done is None else done)) & (F.col("batch_id") <= F.lit(version)))
        delta.merge_once(session, fact_page_view(source), "gold", table, on="t.event_id = s.event_id",
                         app_id=f"gold.{table}", version=version, partition_by=PARTITION_BY.get(table),
                         settings=settings, within=source.select("event_date"))
        rows_in = source.count()
    else:
        df = fact_page_view(read("page_views")) if build is None else build(read)
        moved = done is None or version > done  # a rebuild at the version already reached records no new txn
        delta.overwrite(df, "gold", table, partition_by=PARTITION_BY.get(table), settings=settings,
                        app_id=f"gold.{table}", version=version if moved else None)
        rows_in = sum(sizes.get(i, 0) for i in inputs)
    return {"skipped": False, "version": version, "rows_in": rows_in,
            "rows_out": delta.rows_written(settings.table_path("gold", table))}


def refresh(spark: SparkSession, settings: Settings, run_id: str, full_refresh: bool = False) -> dict:
    """Bring gold up to date with silver; a table whose silver inputs did not move gets no commit. Tables are
    written side by side (they read only silver). `full_refresh` rebuilds every table from the whole of silver."""
    marks = _silver_marks(settings)
    tables: dict = {}
    todo: dict[str, tuple[int, int | None]] = {}
    for table, inputs, _ in PLAN:
        version, done = _versions(settings, marks, table, inputs)
        if version is None or (done is not None and done >= version and not full_refresh):
            tables[table] = {"skipped": True, "rows_in": 0, "rows_out": 0}
        else:
            todo[table] = (version, done)
    # each silver input counted once (tables share inputs), for the rows-in figure of the rebuilt tables
    needed = {i for t, inputs, _ in PLAN if t in todo for i in inputs if marks[i] is not None}
    sizes = {i: delta.read_table(spark, "silver", i, settings).count() for i in sorted(needed)}
    tables.update(delta.write_tables(spark, {
        table: partial(_write, settings=settings, marks=marks, sizes=sizes, table=table, version=version, done=done,
                       full_refresh=full_refresh)
        for table, (version, done) in todo.items()}))
    return {"layer": "gold", "run_id": run_id, "full_refresh": full_refresh,
            "tables": {table: tables[table] for table, _, _ in PLAN}}
