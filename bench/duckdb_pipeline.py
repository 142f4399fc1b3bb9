"""The same job as `lakehouse run` as one DuckDB script: what a user might write instead.

Parse the events (both field spellings, three `at` forms), quarantine unreadable lines, deduplicate,
build the dimensions with their latest state, the facts and the four marts, and COPY them into PostgreSQL.
Usage: python -m bench.duckdb_pipeline --source DIR --dsn DSN --workdir DIR
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import duckdb

from lakehouse.schemas import BR_STATES
from lakehouse.tables import EVENT_SPELLINGS

AT_PATTERN = r"^\d{4}-\d{2}-\d{2}[ T]?\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$"
EVENT_FIELDS = {  # column <- JSON spellings (first non-null wins)
    "at": ("at",),
    "browser": ("browser",),
    "city_name": ("city_name",),
    "country": ("country",),
    "region": ("region",),
    "platform": ("platform",),
    "session_uuid": ("session_uuid",),
    "student_client": ("studentId_clientType",),
    "user_type": ("custom_4",),
    "visitor_type": ("user_type",),
    **EVENT_SPELLINGS,
    "first_accessed_page": ("first-accessed-page",),
    "university_name": ("custom_1",),
    "course_name": ("custom_2",),
    "custom_3": ("custom_3",),
    "carrier": ("carrier",),
    "model": ("model",),
    "os_ver": ("os_ver",),
    "nth": ("nth",),
    "clv_total": ("clv_total",),
    "install_uuid": ("install_uuid",),
    "uuid": ("uuid",),
    "name": ("name",),
    "type": ("type",),
    "language": ("language",),
    "device_new": ("device_new",),
}
ENTITY_COLUMNS = {
    "students": ("Id", "RegisteredDate", "State", "City", "UniversityId", "CourseId", "SignupSource"),
    "courses": ("Id", "Name"),
    "universities": ("Id", "Name"),
    "subjects": ("Id", "Name"),
    "sessions": ("StudentId", "SessionStartTime", "StudentClient"),
    "subscriptions": ("StudentId", "PaymentDate", "PlanType"),
    "student_follow_subject": ("StudentId", "SubjectId", "FollowDate"),
}
# What goes into PostgreSQL (schema `duck`): name -> select over the built tables.
LOADS = {
    "dim_student": "select * from dim_student",
    "dim_course": "select * from dim_course",
    "dim_university": "select * from dim_university",
    "dim_subject": "select * from dim_subject",
    "fact_session": "select * from fact_session",
    "fact_subscription": "select * from fact_subscription",
    "fact_subject_follow": "select * from fact_subject_follow",
    "fact_page_view_daily": """
        select event_date, student_id, client_type, country, count(*) as page_views,
               min(event_at) as first_event_at, max(event_at) as last_event_at
        from fact_page_view group by all""",
    "mart_country_access": "select * from mart_country_access",
    "mart_users_by_type": "select * from mart_users_by_type",
    "mart_state_activity": "select * from mart_state_activity",
    "mart_daily_activity": "select * from mart_daily_activity",
}
PG_TYPES = {
    "VARCHAR": "text",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "HUGEINT": "numeric",
    "DOUBLE": "double precision",
}


def parse_time(expr: str) -> str:
    """SQL: a UTC timestamp from the accepted text forms, null otherwise."""
    spaced = rf"regexp_replace(trim({expr}), '^(\d{{4}}-\d{{2}}-\d{{2}})(\d{{2}}:)', '\1 \2')"
    return (
        f"case when regexp_matches(trim({expr}), '{AT_PATTERN}') then try_cast({spaced} as timestamptz)::timestamp end"
    )


def export_time(expr: str) -> str:
    return f"try_cast(trim({expr}) as timestamptz)::timestamp"


def build(con: duckdb.DuckDBPyConnection, source: Path, timings: dict) -> dict:
    """Build quarantine, dims, facts and marts as DuckDB tables; returns row counts."""
    t = time.perf_counter()
    events_glob = str(source / "events" / "**" / "*.json")
    con.execute(f"""
        create table lines as
        select row_number() over () as ordinal, filename as source_file, line
        from read_csv('{events_glob}', columns = {{'line': 'VARCHAR'}}, delim = e'\\x1f', quote = '', escape = '',
                      header = false, filename = true, auto_detect = false, strict_mode = false,
                      max_line_size = 100000000)
    """)
    con.execute("""
        create table raw_events as
        select source_file,
               ordinal - min(ordinal) over (partition by source_file) + 1 as line_number,
               regexp_extract(source_file, '/events/([^/]+)/', 1) as delivery,
               line,
               case when json_valid(line) then json_type(line) = 'OBJECT' else false end as is_object
        from lines where line is not null and trim(line, e' \\t\\r') <> ''
    """)
    con.execute("drop table lines")
    paths = sorted({s for spellings in EVENT_FIELDS.values() for s in spellings})
    index = {p: i + 1 for i, p in enumerate(paths)}
    json_paths = "[" + ", ".join("'$.\"" + p + "\"'" for p in paths) + "]"
    picked = ",\n".join(
        f"coalesce({', '.join(f'v[{index[s]}]' for s in spellings)}) as {col}"
        for col, spellings in EVENT_FIELDS.items()
        if col != "at"
    )
    con.execute(f"""
        create table parsed as
        select source_file, line_number, delivery, line, is_object, v[{index["at"]}] as at_raw,
               {parse_time(f"v[{index['at']}]")} as event_at, {picked}
        from (select *, case when is_object then json_extract_string(line, {json_paths}) end as v from raw_events)
    """)
    con.execute("drop table raw_events")
    con.execute("""
        create table quarantine_events as
        select case when not is_object then 'not_json_object' when at_raw is null then 'missing_at'
                    else 'unparseable_at' end as reason,
               line as raw, source_file, line_number, delivery
        from parsed where not is_object or event_at is null
    """)
    cols = [c for c in EVENT_FIELDS if c != "at"]
    con.execute(f"""
        create table fact_page_view as
        select md5(concat_ws('|', event_at::varchar, {", ".join(f"coalesce({c}, '')" for c in cols)})) as event_id,
               event_at, event_at::date as event_date,
               nullif(trim(split_part(student_client, '@', 1)), '') as student_id,
               case when contains(student_client, '@') then nullif(trim(split_part(student_client, '@', 2)), '') end
                   as client_type,
               {", ".join(c for c in cols if c != "student_client")}
        from (select distinct on (event_at, {", ".join(cols)}) *
              from parsed where is_object and event_at is not null
              order by event_at, {", ".join(cols)}, delivery, source_file, line_number)
    """)
    con.execute("drop table parsed")
    timings["events_s"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    for entity, columns in ENTITY_COLUMNS.items():
        files = str(source / "transactional" / "*" / f"{entity}.json")
        spec = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"
        con.execute(f"""
            create table raw_{entity} as
            select *, regexp_extract(filename, '/transactional/([^/]+)/', 1) as delivery
            from read_json('{files}', format = 'array', columns = {spec}, filename = true)
        """)
        con.execute(f"""alter table raw_{entity} add column as_of timestamp;
                        update raw_{entity} set as_of = {export_time("delivery")}""")
    con.execute("create table deliveries as select distinct delivery, as_of from raw_students")
    lookup = {name.lower(): code for code, name in BR_STATES.items()} | {c.lower(): c for c in BR_STATES}
    values = ", ".join(f"('{strip}', '{code}')" for strip, code in sorted(lookup.items()))
    con.execute(f"create table state_lookup as select strip_accents(k) as k, code from (values {values}) v(k, code)")
    for entity, key in (("courses", "course"), ("universities", "university"), ("subjects", "subject")):
        con.execute(f"""
            create table dim_{key} as
            with present as (
                select try_cast(trim(Id) as integer) as {key}_id, nullif(trim(Name), '') as {key}_name, delivery, as_of
                from raw_{entity} where try_cast(trim(Id) as integer) is not null
            ), latest as (select max(as_of) as as_of from raw_{entity})
            select distinct on ({key}_id) {key}_id, {key}_name, as_of < (select as_of from latest) as is_deleted, as_of
            from present order by {key}_id, as_of desc
        """)
    con.execute(
        """
        create table dim_student as
        with present as (
            select trim(Id) as student_id, """
        + export_time("RegisteredDate")
        + """ as registered_at,
                   coalesce(l.code, nullif(trim(State), '')) as state, nullif(trim(City), '') as city,
                   try_cast(trim(UniversityId) as integer) as university_id,
                   try_cast(trim(CourseId) as integer) as course_id,
                   nullif(trim(SignupSource), '') as signup_source, delivery, as_of
            from raw_students s left join state_lookup l on l.k = strip_accents(lower(trim(s.State)))
            where nullif(trim(Id), '') is not null
        ), latest as (
            select distinct on (student_id) * from present order by student_id, as_of desc
        )
        select s.student_id, s.registered_at, s.state, s.city, s.university_id, u.university_name,
               s.course_id, c.course_name, s.signup_source,
               s.as_of < (select max(as_of) from raw_students) as is_deleted, s.as_of
        from latest s
        left join dim_university u using (university_id)
        left join dim_course c using (course_id)
    """
    )
    con.execute("""
        create table dim_date as
        select d::date as date, year(d) as year, month(d) as month, day(d) as day, isodow(d) as weekday
        from range((select min(event_date) from fact_page_view)::timestamp,
                   (select max(event_date) from fact_page_view)::timestamp + interval 1 day, interval 1 day) t(d)
    """)
    con.execute(f"""
        create table fact_session as
        select distinct trim(StudentId) as student_id, {export_time("SessionStartTime")} as session_start_at,
               nullif(trim(StudentClient), '') as client_type
        from raw_sessions
    """)
    con.execute(f"""
        create table fact_subscription as
        select distinct trim(StudentId) as student_id, {export_time("PaymentDate")} as payment_at,
               nullif(trim(PlanType), '') as plan_type
        from raw_subscriptions
    """)
    con.execute(f"""
        create table fact_subject_follow as
        select distinct trim(StudentId) as student_id, try_cast(trim(SubjectId) as integer) as subject_id,
               {export_time("FollowDate")} as followed_at
        from raw_student_follow_subject
    """)
    timings["dims_facts_s"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    con.execute("""
        create table mart_country_access as
        select country, date_trunc('month', event_date)::date as month, count(*) as page_views,
               count(distinct student_id) as students
        from fact_page_view group by all
    """)
    con.execute("""
        create table mart_users_by_type as
        select user_type, count(*) as page_views, count(distinct student_id) as students
        from fact_page_view group by all
    """)
    con.execute("""
        create table mart_state_activity as
        select d.state, count(*) as page_views, count(distinct f.student_id) as students
        from fact_page_view f join dim_student d using (student_id) group by all
    """)
    con.execute("""
        create table mart_daily_activity as
        select event_date, client_type, count(*) as page_views, count(distinct student_id) as students,
               count(distinct session_uuid) as sessions
        from fact_page_view group by all
    """)
    timings["marts_s"] = round(time.perf_counter() - t, 3)
    # fmt: off
    tables = ["quarantine_events", "fact_page_view", "dim_student", "dim_course", "dim_university", "dim_subject",
              "dim_date", "fact_session", "fact_subscription", "fact_subject_follow", "mart_country_access",
              "mart_users_by_type", "mart_state_activity", "mart_daily_activity"]
    # fmt: on
    return {name: con.execute(f"select count(*) from {name}").fetchall()[0][0] for name in tables}


def load(con: duckdb.DuckDBPyConnection, dsn: str, workdir: Path, timings: dict) -> dict:
    """COPY the dims, facts and marts into PostgreSQL (schema `duck`, replaced); returns rows loaded per table."""
    from bench.common import fresh_schema

    t = time.perf_counter()
    pg = fresh_schema(dsn, "duck")
    loaded = {}
    try:
        with pg, pg.cursor() as cur:
            for name, select in LOADS.items():
                rel = con.sql(select)
                cols = ", ".join(f'"{c}" {PG_TYPES.get(str(ty), "text")}' for c, ty in zip(rel.columns, rel.types))
                cur.execute(f"create table duck.{name} ({cols})")
                path = workdir / f"{name}.csv"
                con.execute(f"copy ({select}) to '{path}' (header false, format csv)")
                with open(path, encoding="utf-8") as handle:
                    cur.copy_expert(f"copy duck.{name} from stdin with (format csv)", handle)
                loaded[name] = cur.rowcount
                path.unlink()
    finally:
        pg.close()
    timings["load_postgres_s"] = round(time.perf_counter() - t, 3)
    return loaded


def run(source: Path, dsn: str | None, workdir: Path, threads: int | None = None) -> dict:
    """The whole job; returns timings and row counts."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    timings: dict = {}
    start = time.perf_counter()
    con = duckdb.connect(str(workdir / "bench.duckdb"))
    con.execute("set TimeZone = 'UTC'")
    con.execute(f"set temp_directory = '{workdir / 'tmp'}'")
    if threads:
        con.execute(f"set threads = {threads}")
    rows = build(con, source, timings)
    loaded = load(con, dsn, workdir, timings) if dsn else {}
    con.close()
    timings["total_s"] = round(time.perf_counter() - start, 3)
    return {
        "timings": timings,
        "rows": rows,
        "loaded": loaded,
        "events_per_s": round(rows["fact_page_view"] / timings["total_s"], 1) if timings["total_s"] else None,
    }


def main() -> None:
    from bench.common import baseline_parser, emit

    parser = baseline_parser(__doc__)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    emit(run(args.source.resolve(), args.dsn, args.workdir.resolve(), args.threads))


if __name__ == "__main__":
    main()
