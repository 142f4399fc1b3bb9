"""Property: for any sequence of full exports, however runs group or order their arrival and whatever deliveries
are corrected after they were applied, after every run the dw history equals a reference SCD2 model of the exports as
they are now and keeps its invariants, a version that did not change keeps its surrogate key, dw (facts included)
equals a mirror of the same gold into an empty warehouse, and the drift check finds nothing."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import psycopg2
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.mirror import ArrowGold, mirror
from tests.builders import new_database
from tests.warehouse_data import (
    DIM_ATTRS,
    UTC,
    Delivery,
    arrow_table,
    calendar,
    canonical,
    check_invariants,
    dw_history,
    empty_warehouse,
    history_rows,
    reference_history,
)

START = datetime(2017, 11, 16, 6, tzinfo=UTC)
STUDENT_IDS = ["1", "2", "10", "007", "x9"]  # ids as strings, "007" and "7"-like lookalikes stay distinct

student_record = st.builds(
    lambda sid, state, city, course: {
        "student_id": sid,
        "registered_at": START - timedelta(days=len(sid)),
        "state": state,
        "city": city,
        "university_id": 1,
        "university_name": "U1",
        "course_id": course,
        "course_name": f"C{course}",
        "signup_source": "web",
    },
    st.sampled_from(STUDENT_IDS),
    st.sampled_from(["SP", "RJ", None]),
    st.sampled_from(["a", "b"]),
    st.sampled_from([1, 2]),
)
ENTITIES = ("student", "course", "university", "subject")


def named_record(entity: str, names: list[str | None]):
    """A record of a dimension that has an id and a name (course, university, subject)."""
    return st.builds(
        lambda key, name: {f"{entity}_id": key, f"{entity}_name": name}, st.integers(1, 4), st.sampled_from(names)
    )


RECORDS = {
    "student": student_record,
    "course": named_record("course", ["math", "physics", ""]),
    "university": named_record("university", ["USP", "UFRJ", None]),
    "subject": named_record("subject", ["Cálculo I", "Física", "cálculo i"]),
}


@st.composite
def scenarios(draw):
    """Exports (with repeats), the sessions and page views each delivery brings, the arrival order of the deliveries,
    how arrivals are grouped into runs, and corrections: an applied delivery's export (or sessions) exported again,
    changed."""
    n = draw(st.integers(1, 5))
    exports_of = {
        entity: draw(
            st.lists(st.lists(RECORDS[entity], max_size=7 if entity == "student" else 4), min_size=n, max_size=n)
        )
        for entity in ENTITIES
    }
    for exports in exports_of.values():  # exact duplicate records within one export
        for i, export in enumerate(exports):
            if export and draw(st.booleans()):
                exports[i] = export + [dict(draw(st.sampled_from(export)))]
    sessions = draw(st.lists(st.lists(SESSION, max_size=4), min_size=n, max_size=n))
    views = draw(st.lists(st.lists(VIEW, max_size=4), min_size=n, max_size=n))
    order = list(range(n))
    how = draw(st.sampled_from(["in order", "one late", "shuffled"]))
    if how == "one late" and n > 1:  # a delivery that arrives after later ones were applied
        order.append(order.pop(draw(st.integers(0, n - 2))))
    elif how == "shuffled":
        order = draw(st.permutations(order))
    cuts = draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    runs, current = [], [order[0]]
    for idx, cut in zip(order[1:], cuts):
        if cut:
            runs.append(current)
            current = []
        current.append(idx)
    runs.append(current)
    # after a run, one delivery that has arrived may be exported again with other records (changed, removed, added)
    corrections = []
    for r in range(len(runs)):
        if draw(st.booleans()):
            arrived = [i for run in runs[: r + 1] for i in run]
            what = draw(st.sampled_from([*ENTITIES, "sessions"]))
            again = SESSION if what == "sessions" else RECORDS[what]
            corrections.append((r, draw(st.sampled_from(arrived)), what, draw(st.lists(again, max_size=5))))
    stamps = [START + timedelta(hours=12 * i) for i in range(n)]
    return {
        **{
            entity: [Delivery(s.isoformat(), s, recs) for s, recs in zip(stamps, exports_of[entity])]
            for entity in ENTITIES
        },
        "sessions": sessions,
        "views": views,
        "runs": runs,
        "corrections": corrections,
    }


SESSION = st.builds(
    lambda sid, hours, client: {
        "student_id": sid,
        "session_start_at": START + timedelta(hours=hours),
        "client_type": client,
    },
    st.sampled_from([*STUDENT_IDS, "404", None]),  # a key no export knows, an anonymous session
    st.integers(-24, 72),
    st.sampled_from(["Website", "Android"]),
)


VIEW = st.builds(
    lambda sid, hours: {"student_id": sid, "event_at": START + timedelta(hours=hours), "client_type": "Website"},
    st.sampled_from([*STUDENT_IDS, "404", None]),
    st.integers(-24, 72),
)


def gold(exports: dict, arrived: list[int], version: int) -> ArrowGold:
    tables = {}
    for entity in ENTITIES:
        key = f"{entity}_id"
        rows = history_rows(entity, [exports[entity][i] for i in arrived], keep_duplicates=True)
        tables[f"dim_{entity}_history"] = arrow_table(
            rows, (key, *DIM_ATTRS[entity], "is_deleted", "as_of", "delivery"), key=key
        )
    sessions = [{**s, "session_date": s["session_start_at"].date()} for i in arrived for s in exports["sessions"][i]]
    tables["fact_session"] = arrow_table(sessions, ("student_id", "session_start_at", "session_date", "client_type"))
    views = [
        {**v, "event_id": f"{i}-{n}", "event_date": v["event_at"].date(), "country": "br"}
        for i in arrived
        for n, v in enumerate(exports["views"][i])
    ]
    tables["fact_page_view"] = arrow_table(
        views, ("event_id", "event_at", "event_date", "student_id", "client_type", "country")
    )
    days = [s["session_date"] for s in sessions] + [v["event_date"] for v in views] or [START.date()]
    tables["dim_date"] = calendar(min(days), max(days))
    return ArrowGold(tables, {name: version for name in tables})


def correct(scenario: dict, delivery: int, what: str, records: list[dict]) -> None:
    """The delivery's export of `what`, exported again with these records."""
    if what == "sessions":
        scenario["sessions"][delivery] = records
    else:
        old = scenario[what][delivery]
        scenario[what][delivery] = Delivery(old.name, old.as_of, records)


def surrogate_keys(cur) -> dict[tuple, int]:
    """Every version's surrogate key by (entity, key, valid_from, state)."""
    found = {}
    for entity in ENTITIES:
        state = ", ".join((*DIM_ATTRS[entity], "is_deleted"))
        cur.execute(f"select {entity}_sk, {entity}_id, valid_from, row({state})::text from dw.dim_{entity}")
        found.update({(entity, *rest): sk for sk, *rest in cur.fetchall()})
    return found


@pytest.fixture
def fresh_dsn(pg_server):
    """A second warehouse, emptied before each comparison (hypothesis runs every example in one fixture)."""
    return new_database(pg_server)


@hsettings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure is reproduced by running the test again
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_history_matches_reference_model(pg_dsn, fresh_dsn, settings, scenario):
    scenario = copy.deepcopy(scenario)  # corrections rewrite its exports; the drawn example stays as reported
    migrate(pg_dsn)
    migrate(fresh_dsn)
    conn, fresh = psycopg2.connect(pg_dsn), psycopg2.connect(fresh_dsn)
    conn.autocommit = fresh.autocommit = True
    cur, fresh_cur = conn.cursor(), fresh.cursor()
    steps: list[tuple[str, tuple]] = []
    for r, run in enumerate(scenario["runs"]):
        steps.append(("arrive", tuple(run)))
        steps += [("correct", c[1:]) for c in scenario["corrections"] if c[0] == r]
    try:
        empty_warehouse(cur)
        arrived: list[int] = []
        for version, (kind, what) in enumerate(steps, start=1):
            if kind == "arrive":
                arrived += what
            else:
                correct(scenario, *what)
            before = surrogate_keys(cur)
            report = mirror(settings, gold(scenario, arrived, version), dsn=pg_dsn)
            assert report.details["drifted"] == [], (kind, what, report.details["drift"])
            for entity in ENTITIES:
                check_invariants(cur, entity)
                expected = reference_history(entity, [scenario[entity][i] for i in arrived])
                assert dw_history(cur, entity) == expected, (entity, kind, what)
            after = surrogate_keys(cur)
            kept = before.keys() & after.keys()
            assert {v: after[v] for v in kept} == {v: before[v] for v in kept}, "a version that stayed changed its key"
            empty_warehouse(fresh_cur)
            mirror(settings, gold(scenario, arrived, version), dsn=fresh_dsn)
            assert without_audit(canonical(cur)) == without_audit(canonical(fresh_cur)), (kind, what)
        state = canonical(cur)
        again = mirror(settings, gold(scenario, arrived, len(steps)), dsn=pg_dsn)
        assert again.skipped
        newer = mirror(settings, gold(scenario, arrived, len(steps) + 1), dsn=pg_dsn)
        assert all(newer.details["tables"][f"dim_{e}"].status in ("skipped", "missing") for e in ENTITIES)
        assert newer.details["tables"]["fact_session"].rows_inserted == 0  # a new gold version, the same rows
        assert without_audit(canonical(cur)) == without_audit(state)
    finally:
        conn.close()
        fresh.close()


def without_audit(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "load_audit"}
