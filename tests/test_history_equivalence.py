"""End to end on a generated source (late events, students who move, leave and return, a renamed course): after every
delivery, the lake kept incrementally equals a lake built in one run from the same deliveries, in every silver and
gold table; a re-run commits nothing; gold agrees with an independent DuckDB SQL computation over the raw files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lakehouse import bronze, gold, silver
from lakehouse.config import Settings
from lakehouse.landing import land
from lakehouse.tools.generate import STATES, generate
from tests.builders import assert_same_rows, comparable, delta_scan_sql, duckdb_with_delta

IGNORED = {"run_id", "loaded_at", "batch_id", "landed_at", "changed_batch_id"}
SILVER = tuple(silver.BY_NAME)
GOLD = gold.TABLES


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def _settings(root: Path, source: Path) -> Settings:
    return Settings(
        source=str(source),
        lake=str(root / "lake"),
        data_dir=str(root / "data"),
        spark_master="local[2]",
        shuffle_partitions=2,
    )


def _run(spark, settings: Settings, run_id: str) -> dict:
    land(settings)
    bronze.ingest(spark, settings, run_id)
    return {"silver": silver.refresh(spark, settings, run_id), "gold": gold.refresh(spark, settings, run_id)}


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory):
    """(source, {n: (full-build settings, incremental settings) after delivery n}). The incremental lake takes the
    deliveries one run at a time (the middle one as two runs: its events, then its exports); after each delivery but
    the first (there both are one run over the same files), a copy of it is set beside a lake built in one run from
    the deliveries so far."""
    root = tmp_path_factory.mktemp("history")
    source = root / "source"
    generate(source, seed=5, students=40, events=900, deliveries=3)
    deliveries = sorted(p.name for p in (source / "events").iterdir())
    step_source = root / "step-source"
    step = _settings(root / "step", step_source)
    pairs = {}
    for n, delivery in enumerate(deliveries):
        parts = [("events",), ("transactional",)] if n == 1 else [("transactional", "events")]
        for kinds in parts:
            for kind in kinds:
                shutil.copytree(source / kind / delivery, step_source / kind / delivery)
            _run(spark, step, f"delivery-{n}-{'-'.join(kinds)}")
        if n == 0:
            continue
        shutil.copytree(root / "step" / "lake", root / f"step-{n}" / "lake")
        full_source = root / f"full-source-{n}"
        for kind in ("transactional", "events"):
            for d in deliveries[: n + 1]:
                shutil.copytree(source / kind / d, full_source / kind / d)
        full = _settings(root / f"full-{n}", full_source)
        _run(spark, full, f"all-of-{n + 1}")
        pairs[n] = (full, _settings(root / f"step-{n}", step_source))
    return source, pairs


TABLES = [("silver", t) for t in SILVER] + [("gold", t) for t in GOLD]


@pytest.mark.parametrize("n", [1, 2], ids=lambda n: f"after-delivery-{n + 1}")
@pytest.mark.parametrize("layer,table", TABLES)
def test_incremental_equals_full_build_after_every_delivery(lakes, n, layer, table):
    """Read with DuckDB's delta extension: an independent reader of both lakes' tables."""
    full, step = lakes[1][n]
    con = duckdb_with_delta()

    def column_types(settings) -> dict[str, str]:
        return {r[0]: r[1] for r in con.execute(f"describe {delta_scan_sql(settings, layer, table, ['*'])}").fetchall()}

    types = column_types(full)
    assert list(types) == list(column_types(step))
    kept = comparable(types, IGNORED)
    a, b = delta_scan_sql(full, layer, table, kept), delta_scan_sql(step, layer, table, kept)
    assert (
        con.execute(f"select count(*) from ({a})").fetchone()[0]
        == con.execute(f"select count(*) from ({b})").fetchone()[0]
    )
    assert_same_rows(con, a, b)


def _latest_commit(path: str) -> int:
    return max(int(p.stem) for p in Path(path, "_delta_log").glob("*.json"))


@pytest.mark.parametrize("kind", ["full", "incremental"])
def test_rerun_with_nothing_new_commits_nothing(spark, lakes, kind):
    lake = lakes[1][2][0 if kind == "full" else 1]
    paths = [lake.table_path(layer, t) for layer, ts in (("silver", SILVER), ("gold", GOLD)) for t in ts]
    before = [_latest_commit(p) for p in paths]
    report = _run(spark, lake, "again")
    assert all(t.skipped for layer in report.values() for t in layer.tables.values())
    assert [_latest_commit(p) for p in paths] == before


def _duckdb(source: Path, settings: Settings):
    con = duckdb_with_delta()
    for t in GOLD:
        con.execute(f"create view gold_{t} as select * from delta_scan('{settings.table_path('gold', t)}')")
    states = [(code.lower(), code) for code, _, _, _ in STATES] + [(name, code) for code, name, _, _ in STATES]
    con.execute("create table state_names (k varchar, code varchar)")
    con.executemany("insert into state_names select lower(strip_accents(?)), ?", states)
    # Independent of the pipeline: raw lines -> JSON objects with a valid `at`, exact duplicate lines once.
    con.execute(f"""
        create table ev as
        with lines as (
            select rtrim(unnest(string_split(content, chr(10))), chr(13)) as line
            from read_text('{source}/events/**/*.json')
        ), objects as (
            select distinct line from lines
            where trim(line) <> '' and json_valid(line) and json_type(line::json) = 'OBJECT'
        ), parsed as (
            select line, line->>'$.at' as at_text from objects
        ), timed as (
            select *, coalesce(
                case when regexp_matches(at_text, '^\\d{{4}}-\\d{{2}}-\\d{{2}} \\d{{2}}:\\d{{2}}:\\d{{2}}$')
                     then try_strptime(at_text, '%Y-%m-%d %H:%M:%S') end,
                case when regexp_matches(at_text, '^\\d{{4}}-\\d{{2}}-\\d{{2}}\\d{{2}}:\\d{{2}}:\\d{{2}}$')
                     then try_strptime(at_text, '%Y-%m-%d%H:%M:%S') end,
                case when at_text like '%T%' then try_cast(at_text as timestamptz)::timestamp end) as event_at
            from parsed
        )
        select event_at, cast(event_at as date) as event_date,
               nullif(split_part(line->>'$.studentId_clientType', '@', 1), '') as student_id,
               case when contains(line->>'$.studentId_clientType', '@')
                    then nullif(split_part(line->>'$.studentId_clientType', '@', 2), '') end as client_type,
               line->>'$.country' as country, line->>'$.custom_4' as user_type,
               line->>'$.session_uuid' as session_uuid
        from timed where event_at is not null
    """)
    con.execute(f"""
        create table students_now as
        with raw as (
            select trim(Id) as student_id, State, filename,
                   cast(replace(regexp_extract(filename, 'transactional/([^/]+)/', 1), 'T', ' ') as timestamp) as as_of
            from read_json('{source}/transactional/*/students.json', format = 'array', filename = true,
                           columns = {{Id: 'VARCHAR', State: 'VARCHAR'}})
        ), latest as (
            select * from raw qualify as_of = max(as_of) over (partition by student_id)
        )
        select distinct student_id,
               coalesce(s.code, nullif(trim(State), '')) as state
        from latest left join state_names s on s.k = lower(strip_accents(trim(State)))
    """)
    return con


def test_gold_agrees_with_independent_duckdb_sql(lakes):
    source, one = lakes[0], lakes[1][2][0]
    con = _duckdb(source, one)
    assert con.execute("select count(*) from ev").fetchone()[0] > 800
    assert_same_rows(con, "select count(*) from ev", "select count(*) from gold_fact_page_view")
    assert_same_rows(
        con,
        "select country, date_trunc('month', event_date)::date, count(*), count(distinct student_id) "
        "from ev group by all",
        "select country, month, page_views, students from gold_mart_country_access",
    )
    assert_same_rows(
        con,
        "select user_type, count(*), count(distinct student_id) from ev group by all",
        "select user_type, page_views, students from gold_mart_users_by_type",
    )
    assert_same_rows(
        con,
        "select event_date, client_type, count(*), count(distinct student_id), count(distinct session_uuid) "
        "from ev group by all",
        "select event_date, client_type, page_views, students, sessions from gold_mart_daily_activity",
    )
    assert_same_rows(
        con,
        "select s.state, count(*), count(distinct e.student_id) from ev e "
        "left join students_now s using (student_id) group by all",
        "select state, page_views, students from gold_mart_state_activity",
    )
    assert_same_rows(
        con, "select student_id, state from students_now", "select student_id, state from gold_dim_student"
    )
    assert_same_rows(
        con,
        f"""select count(*) from (select distinct trim(StudentId), SessionStartTime, StudentClient
                    from read_json('{source}/transactional/*/sessions.json', format = 'array',
                    columns = {{StudentId: 'VARCHAR', SessionStartTime: 'VARCHAR', StudentClient: 'VARCHAR'}}))""",
        "select count(*) from gold_fact_session",
    )
    assert_same_rows(
        con,
        "select min(d), max(d), datediff('day', min(d), max(d)) + 1 from (select event_date as d from ev "
        "union all select session_date from gold_fact_session union all select payment_date "
        "from gold_fact_subscription union all select followed_date from gold_fact_subject_follow) x",
        "select min(date), max(date), count(*) from gold_dim_date",
    )
