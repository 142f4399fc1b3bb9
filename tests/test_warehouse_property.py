"""Property: for any sequence of full exports, however runs group or order their arrival, the dw history equals a
reference SCD2 model and keeps its invariants after every run."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg2
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lakehouse.warehouse.migrations import migrate
from lakehouse.warehouse.mirror import ArrowGold, mirror
from tests.warehouse_data import (
    DIM_ATTRS,
    UTC,
    Delivery,
    arrow_table,
    check_invariants,
    dw_history,
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
    """Exports (with repeats), the arrival order of the deliveries and how arrivals are grouped into runs."""
    n = draw(st.integers(1, 6))
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
    stamps = [START + timedelta(hours=12 * i) for i in range(n)]
    return {
        **{
            entity: [Delivery(s.isoformat(), s, recs) for s, recs in zip(stamps, exports_of[entity])]
            for entity in ENTITIES
        },
        "runs": runs,
    }


def gold(exports: dict, arrived: list[int], version: int) -> ArrowGold:
    tables = {}
    for entity in ENTITIES:
        key = f"{entity}_id"
        rows = history_rows(entity, [exports[entity][i] for i in arrived], keep_duplicates=True)
        tables[f"dim_{entity}_history"] = arrow_table(
            rows, (key, *DIM_ATTRS[entity], "is_deleted", "as_of", "delivery"), key=key
        )
    return ArrowGold(tables, {name: version for name in tables})


def reset(cur):
    cur.execute(
        "truncate dw.dim_student, dw.dim_course, dw.dim_university, dw.dim_subject, dw.load_audit,"
        " dw.load_delivery restart identity cascade"
    )


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(scenario=scenarios())
def test_history_matches_reference_model(pg_dsn, settings, scenario):
    migrate(pg_dsn)
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    cur = conn.cursor()
    try:
        reset(cur)
        arrived: list[int] = []
        for version, run in enumerate(scenario["runs"], start=1):
            arrived += run
            mirror(settings, gold(scenario, arrived, version), dsn=pg_dsn)
            for entity in ENTITIES:
                check_invariants(cur, entity)
                expected = reference_history(entity, [scenario[entity][i] for i in arrived])
                assert dw_history(cur, entity) == expected, (entity, arrived)
        before = {e: dw_history(cur, e) for e in ENTITIES}
        again = mirror(settings, gold(scenario, arrived, len(scenario["runs"])), dsn=pg_dsn)
        assert again.skipped
        newer = mirror(settings, gold(scenario, arrived, len(scenario["runs"]) + 1), dsn=pg_dsn)
        assert newer.details["tables"]["dim_student"].deliveries == []  # a new gold version, no new delivery
        assert {e: dw_history(cur, e) for e in ENTITIES} == before
    finally:
        conn.close()
