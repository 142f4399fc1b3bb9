"""A gold-shaped lake (the documented gold columns, docs/lake-tables.md) plus small bronze/silver/quarantine tables,
written by Spark from `range`."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

AS_OF = "2017-11-18 06:00:00"
START = "2017-10-16 00:00:00"
DAYS = 46  # 2017-10-16 .. 2017-11-30
FOREIGN = ["us", "pt", "ar", "ao", "mz", "py", "fr", "de", "es", "uy", "co", "mx"]
STATES = ["SP", "SP", "SP", "RJ", "RJ", "MG", "MG", "RS", "PR", "BA", "SC", "PE", "CE", "GO", "DF", "PA", "ES", "AM"]
# anonymous events carry no `studentId_clientType`: null student_id and null client_type
CLIENTS = (
    "case when student_id is null then null when b < 50 then 'Website' when b < 70 then 'Android' "
    "when b < 90 then 'iOS' else 'Webapp' end"
)


def _h(col: str, salt: int, mod: int) -> str:
    return f"pmod(xxhash64({col}, {salt}), {mod})"


def _pick(values: list[str], index_sql: str) -> str:
    array = ", ".join(f"'{v}'" for v in values)
    return f"element_at(array({array}), cast({index_sql} as int) + 1)"


def _landed(source_file: str, landed_path: str, line_number: str) -> list[str]:
    """The columns every bronze and quarantine row carries: the line it came from and the batch that landed it."""
    return [
        f"'{source_file}' as source_file",
        f"'{landed_path}' as landed_path",
        f"{line_number} as line_number",
        "'2017-11-18' as delivery",
        f"timestamp'{AS_OF}' as as_of",
        "1L as batch_id",
        "timestamp'2017-11-18 07:00:00' as landed_at",
        "'run-1' as run_id",
    ]


def _write(df: DataFrame, lake: str, layer: str, name: str, mode: str = "overwrite") -> None:
    df.coalesce(1).write.format("delta").mode(mode).option("overwriteSchema", "true").save(f"{lake}/{layer}/{name}")


def page_views(spark: SparkSession, events: int, students: int) -> DataFrame:
    """`fact_page_view` rows: Oct 16 - Nov 30 2017, ~20% anonymous (null client type), ~6% foreign (skewed mix)."""
    return (
        spark.range(events)
        .selectExpr(
            "id",
            f"timestamp_seconds(unix_timestamp(timestamp'{START}') + {_h('id', 1, DAYS * 86400)}) as event_at",
            f"{_h('id', 2, 100)} as b",
            f"{_h('id', 3, 1000)} as c",
            f"case when {_h('id', 4, 10)} < 2 then null else cast({_h('id', 5, students)} as string) end as student_id",
        )
        .selectExpr(
            "substr(sha2(cast(id as string), 256), 1, 32) as event_id",
            "event_at",
            "to_date(event_at) as event_date",
            "student_id",
            f"{CLIENTS} as client_type",
            f"case when c < 940 then 'br' else {_pick(FOREIGN, 'floor(pow((c - 940) / 60.0, 2) * 12)')} end as country",
            f"{_pick(STATES, _h('id', 6, len(STATES)))} as region",
            f"concat('Cidade', {_h('id', 7, 40)}) as city_name",
            f"{_pick(['Chrome62', 'Firefox56', 'Safari11', 'Edge15'], _h('id', 8, 4))} as browser",
            f"{_pick(['Windows10', 'Windows7', 'Android', 'iOS', 'MacOS'], _h('id', 9, 5))} as platform",
            f"concat('/disciplina/', {_h('id', 10, 300)}) as page_name",
            f"{_pick(['busca', 'disciplina', 'arquivo', 'perfil', 'home'], _h('id', 11, 5))} as page_category",
            f"case when student_id is null then null else "
            f"{_pick(['CoreUser', 'CoreUser', 'CasualUser', 'NewUser', 'PowerUser'], _h('id', 12, 5))} end as user_type",
            f"concat(coalesce(student_id, 'anon'), '-', {_h('id', 13, 7)}) as session_uuid",
        )
    )


def dim_student(spark: SparkSession, students: int) -> DataFrame:
    """`dim_student` rows: skewed states, 30 universities, 40 courses, 2% deleted."""
    return spark.range(students).selectExpr(
        "cast(id as string) as student_id",
        f"timestamp_seconds(unix_timestamp(timestamp'2017-01-01 00:00:00') + {_h('id', 20, 300 * 86400)}) as registered_at",
        f"{_pick(STATES, _h('id', 21, len(STATES)))} as state",
        f"concat('Cidade', {_h('id', 22, 40)}) as city",
        f"cast({_h('id', 23, 30)} as int) as university_id",
        f"concat('Universidade ', {_h('id', 23, 30)}) as university_name",
        f"cast({_h('id', 24, 40)} as int) as course_id",
        f"concat('Curso ', {_h('id', 24, 40)}) as course_name",
        f"{_pick(['Facebook', 'Google', 'Email', 'Other'], _h('id', 25, 4))} as signup_source",
        f"{_h('id', 26, 50)} = 0 as is_deleted",
        f"timestamp'{AS_OF}' as as_of",
    )


OPTIONAL = {
    ("gold", "dim_course"),
    ("gold", "dim_university"),
    ("gold", "dim_subject"),
    ("gold", "fact_subject_follow"),
    ("gold", "mart_state_activity"),
    ("bronze", "students"),
}


def write_lake(spark: SparkSession, lake: str, events: int = 4000, students: int = 300, full: bool = True) -> list[str]:
    """Write the lake under `lake` (without OPTIONAL tables unless `full`); `gold.mart_users_by_type` gets two versions."""
    lake = lake.rstrip("/")
    fact = page_views(spark, events, students).repartition(1).cache()
    dim = dim_student(spark, students).cache()
    fact.createOrReplaceTempView("f")
    dim.createOrReplaceTempView("d")
    tables: dict[tuple[str, str], DataFrame] = {}
    for entity, count in (("course", 40), ("university", 30), ("subject", 60)):
        tables["gold", f"dim_{entity}"] = spark.range(count).selectExpr(
            f"cast(id as int) as {entity}_id",
            f"concat('{entity.title()} ', id) as {entity}_name",
            "false as is_deleted",
            f"timestamp'{AS_OF}' as as_of",
        )
    tables["gold", "dim_student"] = dim
    tables["gold", "dim_date"] = spark.sql(
        f"select explode(sequence(to_date('{START}'), date_add(to_date('{START}'), {DAYS - 1}))) as date"
    ).selectExpr("date", "year(date) as year", "month(date) as month", "day(date) as day", "dayofweek(date) as weekday")
    tables["gold", "fact_page_view"] = fact
    tables["gold", "fact_session"] = spark.sql(
        "select student_id, min(event_at) as session_start_at, first(client_type) as client_type "
        "from f where student_id is not null group by student_id, session_uuid, event_date"
    )
    tables["gold", "fact_subscription"] = spark.range(max(students // 8, 1)).selectExpr(
        f"cast({_h('id', 30, students)} as string) as student_id",
        f"timestamp_seconds(unix_timestamp(timestamp'{START}') + {_h('id', 31, DAYS * 86400)}) as payment_at",
        f"{_pick(['Mensal', 'Anual'], _h('id', 32, 2))} as plan_type",
    )
    tables["gold", "fact_subject_follow"] = spark.range(students).selectExpr(
        f"cast({_h('id', 33, students)} as string) as student_id",
        f"cast({_h('id', 34, 60)} as int) as subject_id",
        f"timestamp_seconds(unix_timestamp(timestamp'{START}') + {_h('id', 35, DAYS * 86400)}) as followed_at",
    )
    tables["gold", "mart_country_access"] = spark.sql(
        "select country, cast(trunc(event_date, 'MM') as date) as month, count(*) as page_views, "
        "count(distinct student_id) as students from f group by 1, 2"
    )
    tables["gold", "mart_state_activity"] = spark.sql(
        "select d.state, count(*) as page_views, count(distinct f.student_id) as students "
        "from f join d on f.student_id = d.student_id group by 1"
    )
    tables["gold", "mart_daily_activity"] = spark.sql(
        "select event_date, client_type, count(*) as page_views, count(distinct student_id) as students, "
        "count(distinct session_uuid) as sessions from f group by 1, 2"
    )
    small = min(events, 200)
    tables["bronze", "events"] = spark.range(small).selectExpr(
        "concat('{\"at\":\"2017-11-16 02:10:', id % 60, '\"}') as value",
        "'2017-11-16 02:10:20' as at_raw",
        *_landed("events/2017-11-18/part-0.json", "landing/events/x/part-0.json", "id + 1"),
    )
    tables["bronze", "students"] = dim.limit(small).selectExpr(
        "to_json(struct(student_id as Id, state as State)) as record",
        *_landed("transactional/2017-11-18/students.json", "landing/x/students.json", "cast(student_id as long) + 1"),
    )
    tables["silver", "students"] = dim.limit(small).select("student_id", "state", "as_of")
    tables["quarantine", "events"] = spark.range(7).selectExpr(
        "case when id < 4 then 'not_json_object' else 'unparseable_at' end as reason",
        "concat('garbage ', id) as raw",
        *_landed("events/2017-11-18/part-0.json", "landing/events/x/part-0.json", "id + 1000"),
    )
    tables["quarantine", "transactional"] = spark.range(2).selectExpr(
        "'students' as entity",
        "'not_an_object' as reason",
        "'42' as raw",
        *_landed("transactional/2017-11-18/students.json", "landing/x/students.json", "id + 1"),
    )
    # version 0 of mart_users_by_type is a stale placeholder; version 1 is the real mart
    _write(
        spark.createDataFrame([("StaleType", 1, 1)], "user_type string, page_views long, students long"),
        lake,
        "gold",
        "mart_users_by_type",
    )
    tables["gold", "mart_users_by_type"] = spark.sql(
        "select user_type, count(*) as page_views, count(distinct student_id) as students from f group by 1"
    )
    written = []
    for (layer, name), df in tables.items():
        if full or (layer, name) not in OPTIONAL:
            _write(df, lake, layer, name)
            written.append(f"{layer}.{name}")
    fact.unpersist()
    dim.unpersist()
    return written


_shared: dict[str, str] = {}


def shared_lake(spark: SparkSession | None) -> str:
    """One small lake per test process (written on first use); LAKEHOUSE_TEST_LAKE names one written before."""
    import os

    prebuilt = os.environ.get("LAKEHOUSE_TEST_LAKE")
    if prebuilt and os.path.isdir(prebuilt):
        return prebuilt
    if "lake" not in _shared:
        import tempfile

        lake = tempfile.mkdtemp(prefix="lakehouse-gold-") + "/lake"
        assert spark is not None, "no prebuilt lake: a Spark session writes one"
        write_lake(spark, lake, events=3000, students=200, full=False)
        _shared["lake"] = lake
    return _shared["lake"]
