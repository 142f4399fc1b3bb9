"""The case study's way, as its write-ups did it: the baseline `lakehouse run` is compared against.

Spark with its defaults (200 shuffle partitions, adaptive execution off as in Spark 2.x, schema inference),
a Python UDF to split `studentId_clientType`, joins with the latest student/course/university data,
`toPandas()` of the results to CSV, then row-by-row INSERTs into PostgreSQL.
Usage: python -m bench.casestudy --source DIR --dsn DSN --workdir DIR
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

SPELLINGS = {
    "page_name": ("Page Name", "PageName"),
    "page_category": ("Page Category", "PageCategory"),
    "last_accessed_url": ("Last Accessed Url", "LastAccessedUrl"),
}
# fmt: off
FORMATS = ("yyyy-MM-dd HH:mm:ss", "yyyy-MM-ddHH:mm:ss", "yyyy-MM-dd'T'HH:mm:ssXXX", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
           "yyyy-MM-dd'T'HH:mm:ss'Z'", "yyyy-MM-dd'T'HH:mm:ss")
# fmt: on


def spark_session(master: str):
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the UDF's workers run this environment's Python
    return (
        SparkSession.builder.master(master)
        .appName("casestudy")
        .config("spark.sql.execution.pythonUDF.arrow.enabled", "false")
        .config("spark.sql.shuffle.partitions", "200")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )


def transform(spark, source: Path, timings: dict):
    """Events and transactional data to the case study's outputs (Spark DataFrames)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.functions import udf
    from pyspark.sql.types import StringType, StructField, StructType

    @udf(returnType=StructType([StructField("student_id", StringType()), StructField("client_type", StringType())]))
    def split_student(value):
        if value is None or "@" not in value:
            return (value or None, None)
        student, client = value.split("@", 1)
        return (student or None, client or None)

    t = time.perf_counter()
    raw = spark.read.json(str(source / "events" / "*" / "*.json"))  # schema inferred, PERMISSIVE
    cols = set(raw.columns)
    bad = F.col("_corrupt_record").isNotNull() if "_corrupt_record" in cols else F.lit(False)
    timings["infer_schema_s"] = round(time.perf_counter() - t, 3)

    def pick(*names):
        present = [F.col(f"`{n}`") for n in names if n in cols]
        return F.coalesce(*present) if present else F.lit(None).cast("string")

    at = F.coalesce(*(F.try_to_timestamp(F.col("at"), F.lit(fmt)) for fmt in FORMATS))
    events = (
        raw.where(~bad)
        .withColumn("event_at", at)
        .where(F.col("event_at").isNotNull())
        .withColumn("sc", split_student(F.col("studentId_clientType")))
        .select(
            "event_at",
            F.to_date("event_at").alias("event_date"),
            F.col("sc.student_id").alias("student_id"),
            F.col("sc.client_type").alias("client_type"),
            pick("country").alias("country"),
            pick("region").alias("region"),
            pick("city_name").alias("city_name"),
            pick("browser").alias("browser"),
            pick("platform").alias("platform"),
            pick("custom_4").alias("user_type"),
            pick("session_uuid").alias("session_uuid"),
            *(pick(*s).alias(name) for name, s in SPELLINGS.items()),
        )
        .dropDuplicates()
    )

    def latest(entity, key_cols):
        df = (
            spark.read.option("multiLine", "true")
            .json(str(source / "transactional" / "*" / f"{entity}.json"))
            .withColumn("delivery", F.regexp_extract(F.input_file_name(), r"/transactional/([^/]+)/", 1))
        )
        w = Window.partitionBy(*key_cols).orderBy(F.col("delivery").desc())
        return df.withColumn("_n", F.row_number().over(w)).where("_n = 1").drop("_n")

    students = latest("students", ["Id"]).select(
        F.col("Id").cast("string").alias("student_id"),
        F.col("State").alias("state"),
        F.col("City").alias("city"),
        F.col("UniversityId").cast("int").alias("university_id"),
        F.col("CourseId").cast("int").alias("course_id"),
        F.col("SignupSource").alias("signup_source"),
    )
    courses = latest("courses", ["Id"]).select(
        F.col("Id").cast("int").alias("course_id"), F.col("Name").alias("course_name")
    )
    universities = latest("universities", ["Id"]).select(
        F.col("Id").cast("int").alias("university_id"), F.col("Name").alias("university_name")
    )
    subjects = latest("subjects", ["Id"]).select(
        F.col("Id").cast("int").alias("subject_id"), F.col("Name").alias("subject_name")
    )
    dim_student = students.join(universities, "university_id", "left").join(courses, "course_id", "left")
    full = events.join(dim_student, "student_id", "left")

    def records(entity, cols):
        df = spark.read.option("multiLine", "true").json(str(source / "transactional" / "*" / f"{entity}.json"))
        return df.select(*(F.col(c).cast("string").alias(a) for c, a in cols)).dropDuplicates()

    outputs = {
        "dim_student": dim_student,
        "dim_course": courses,
        "dim_university": universities,
        "dim_subject": subjects,
        "fact_session": records(
            "sessions",
            [("StudentId", "student_id"), ("SessionStartTime", "session_start_at"), ("StudentClient", "client_type")],
        ),
        "fact_subscription": records(
            "subscriptions", [("StudentId", "student_id"), ("PaymentDate", "payment_at"), ("PlanType", "plan_type")]
        ),
        "fact_subject_follow": records(
            "student_follow_subject",
            [("StudentId", "student_id"), ("SubjectId", "subject_id"), ("FollowDate", "followed_at")],
        ),
        "fact_page_view_daily": events.groupBy("event_date", "student_id", "client_type", "country").agg(
            F.count(F.lit(1)).alias("page_views"),
            F.min("event_at").alias("first_event_at"),
            F.max("event_at").alias("last_event_at"),
        ),
        "mart_country_access": events.groupBy("country", F.trunc("event_date", "month").alias("month")).agg(
            F.count(F.lit(1)).alias("page_views"), F.countDistinct("student_id").alias("students")
        ),
        "mart_users_by_type": events.groupBy("user_type").agg(
            F.count(F.lit(1)).alias("page_views"), F.countDistinct("student_id").alias("students")
        ),
        "mart_state_activity": full.where(F.col("state").isNotNull())
        .groupBy("state")
        .agg(F.count(F.lit(1)).alias("page_views"), F.countDistinct("student_id").alias("students")),
        "mart_daily_activity": events.groupBy("event_date", "client_type").agg(
            F.count(F.lit(1)).alias("page_views"),
            F.countDistinct("student_id").alias("students"),
            F.countDistinct("session_uuid").alias("sessions"),
        ),
        "events_by_city_client_university_course": full.groupBy(
            "city_name", "client_type", "university_name", "course_name"
        ).agg(F.count(F.lit(1)).alias("page_views")),
    }
    return full, outputs


def hadoop_safe(source: Path, into: Path) -> Path:
    """A symlink view of the source whose folder names Hadoop accepts (no `:` in `2017-11-18T06:00:00`)."""
    for path in sorted(source.rglob("*.json")):
        rel = path.relative_to(source)
        link = into.joinpath(*(part.replace(":", "-") for part in rel.parts))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    return into


def run(source: Path, dsn: str | None, workdir: Path, master: str = "local[*]") -> dict:
    """The whole case-study job; returns timings and row counts."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    timings: dict = {}
    start = time.perf_counter()
    source = hadoop_safe(source, workdir / "source")
    spark = spark_session(master)
    timings["spark_start_s"] = round(time.perf_counter() - start, 3)
    full, outputs = transform(spark, source, timings)

    t = time.perf_counter()
    frames = {"full_dataset": full.toPandas()}
    frames.update({name: df.toPandas() for name, df in outputs.items()})
    timings["to_pandas_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    for name, frame in frames.items():
        frame.to_csv(workdir / f"{name}.csv", index=False)
    timings["to_csv_s"] = round(time.perf_counter() - t, 3)
    rows = {name: len(frame) for name, frame in frames.items()}
    spark.stop()

    inserted = {}
    if dsn:
        t = time.perf_counter()
        inserted = insert_row_by_row(dsn, {k: v for k, v in frames.items() if k != "full_dataset"})
        timings["insert_rows_s"] = round(time.perf_counter() - t, 3)
    timings["total_s"] = round(time.perf_counter() - start, 3)
    n_inserted = sum(inserted.values())
    return {
        "timings": timings,
        "rows": rows,
        "inserted": inserted,
        "insert_rows_per_s": round(n_inserted / timings["insert_rows_s"], 1) if inserted else None,
        "events_per_s": round(rows["full_dataset"] / timings["total_s"], 1),
    }


def insert_row_by_row(dsn: str, frames: dict) -> dict:
    """One `INSERT` per row, as the case study loaded its warehouse (schema `casestudy`, replaced)."""
    import pandas as pd

    from bench.common import fresh_schema

    conn = fresh_schema(dsn, "casestudy")
    counts = {}
    try:
        for name, frame in frames.items():
            cols = list(frame.columns)
            with conn, conn.cursor() as cur:
                cur.execute(f"create table casestudy.{name} ({', '.join(f'{c} text' for c in cols)})")
                sql = f"insert into casestudy.{name} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})"
                n = 0
                for row in frame.itertuples(index=False, name=None):
                    cur.execute(sql, tuple(None if pd.isna(v) else str(v) for v in row))
                    n += 1
                counts[name] = n
    finally:
        conn.close()
    return counts


def main() -> None:
    from bench.common import baseline_parser, emit

    parser = baseline_parser(__doc__)
    parser.add_argument("--master", default="local[*]")
    args = parser.parse_args()
    emit(run(args.source.resolve(), args.dsn, args.workdir.resolve(), args.master))


if __name__ == "__main__":
    main()
