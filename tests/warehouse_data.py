"""Gold-shaped inputs for the warehouse tests: history rows derived from export sequences, a reference SCD2
model, small sample datasets, and canonical views of the dw tables."""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from lakehouse.warehouse.loads import SQL_DIR

UTC = UTC
TS = pa.timestamp("us", tz="UTC")

# fmt: off
STUDENT_ATTRS = ("registered_at", "state", "city", "university_id", "university_name", "course_id", "course_name",
                 "signup_source")
# fmt: on
DIM_ATTRS = {
    "student": STUDENT_ATTRS,
    "course": ("course_name",),
    "university": ("university_name",),
    "subject": ("subject_name",),
}
ARROW_TYPES = {
    "registered_at": TS,
    "university_id": pa.int32(),
    "course_id": pa.int32(),
    "course_id_": pa.int32(),
    "is_deleted": pa.bool_(),
    "as_of": TS,
    "delivery": pa.string(),
    "student_id": pa.string(),
    "subject_id": pa.int32(),
    "university_id_": pa.int32(),
    "session_start_at": TS,
    "payment_at": TS,
    "followed_at": TS,
    "event_at": TS,
    "event_date": pa.date32(),
    "session_date": pa.date32(),
    "payment_date": pa.date32(),
    "followed_date": pa.date32(),
    "page_views": pa.int64(),
    "students": pa.int64(),
    "sessions": pa.int64(),
}


@dataclass
class Delivery:
    """One full export of an entity: its name, as-of time and records (dicts with the key and attributes)."""

    name: str
    as_of: datetime
    records: list[dict] = field(default_factory=list)


def arrow_table(rows: list[dict], columns: tuple[str, ...], key: str | None = None) -> pa.Table:
    """An Arrow table with gold-like types (timestamps in UTC, int ids as int32, other columns strings)."""
    fields = []
    for c in columns:
        if c == key and c != "student_id":
            fields.append(pa.field(c, pa.int32()))
        else:
            fields.append(pa.field(c, ARROW_TYPES.get(c, pa.string())))
    schema = pa.schema(fields)
    return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)


def history_rows(entity: str, deliveries: list[Delivery], keep_duplicates: bool = False) -> list[dict]:
    """Gold history rows: per delivery (in as-of order), one row per key seen so far; absent keys carry their
    last attributes with is_deleted = true; a key repeated in one export keeps its last record."""
    key = f"{entity}_id"
    attrs = DIM_ATTRS[entity]
    last: dict = {}
    rows: list[dict] = []
    for d in sorted(deliveries, key=lambda d: d.as_of):
        present: dict = {}
        for rec in d.records:
            present[rec[key]] = rec
        for k, rec in present.items():
            last[k] = {a: rec.get(a) for a in attrs}
        for k in sorted(last, key=str):
            row = {key: k, **last[k], "is_deleted": k not in present, "as_of": d.as_of, "delivery": d.name}
            rows.append(row)
            if (
                keep_duplicates
                and k in present
                and sum(1 for r in d.records if r[key] == k and {a: r.get(a) for a in attrs} == last[k]) > 1
            ):
                rows.append(dict(row))  # an exact duplicate row: the mirror must collapse it
    return rows


def reference_history(entity: str, deliveries: list[Delivery]) -> list[tuple]:
    """The expected SCD2 history: (key, *attrs, is_deleted, valid_from, valid_to, is_current), sorted."""
    key = f"{entity}_id"
    attrs = DIM_ATTRS[entity]
    states: dict = {}
    for d in sorted(deliveries, key=lambda d: d.as_of):
        present = {}
        for rec in d.records:
            present[rec[key]] = tuple(rec.get(a) for a in attrs)
        known = set(states) | set(present)
        for k in known:
            versions = states.setdefault(k, [])
            if k in present:
                state = (present[k], False)
            else:
                state = (versions[-1][0][0], True)
            if not versions or versions[-1][0] != state:
                versions.append((state, d.as_of))
    out = []
    for k, versions in states.items():
        for i, ((values, deleted), start) in enumerate(versions):
            end = versions[i + 1][1] if i + 1 < len(versions) else None
            out.append((k, *values, deleted, start, end, end is None))
    return sorted(out, key=_sort_key)


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, str(v)) for v in row)


# -- reading the warehouse -------------------------------------------------------------------


def dw_history(cur, entity: str) -> list[tuple]:
    """dw.dim_<entity> without surrogate keys, in the reference model's shape (static members, sk <= 0, left out)."""
    key = f"{entity}_id"
    cols = ", ".join((key, *DIM_ATTRS[entity], "is_deleted", "valid_from", "valid_to", "is_current"))
    cur.execute(f"select {cols} from dw.dim_{entity} where {entity}_sk > 0")
    return sorted(cur.fetchall(), key=_sort_key)


def check_invariants(cur, entity: str) -> None:
    """SCD2 invariants of dw.dim_<entity>: contiguous, non-overlapping windows, one current row per key,
    no two consecutive versions with the same state."""
    key = f"{entity}_id"
    attrs = (*DIM_ATTRS[entity], "is_deleted")
    cur.execute(
        f"select {key}, {', '.join(attrs)}, valid_from, valid_to, is_current from dw.dim_{entity}"
        f" order by {key}, valid_from"
    )
    by_key: dict = {}
    for row in cur.fetchall():
        by_key.setdefault(row[0], []).append(row)
    n = len(attrs)
    for k, versions in by_key.items():
        assert sum(1 for v in versions if v[-1]) == 1, f"{k}: not exactly one current version"
        assert versions[-1][-1] and versions[-1][-2] is None, f"{k}: the last version is not the open current one"
        for a, b in zip(versions, versions[1:]):
            assert a[-2] == b[-3], f"{k}: windows not contiguous ({a[-2]} vs {b[-3]})"
            assert a[1 : 1 + n] != b[1 : 1 + n], f"{k}: two consecutive versions with the same state"
        for v in versions:
            assert v[-2] is None or v[-3] < v[-2], f"{k}: empty window"


def canonical(cur) -> dict:
    """The whole dw content with surrogate keys replaced by (business key, valid_from), load ids dropped."""
    out = {}
    for entity in DIM_ATTRS:
        out[f"dim_{entity}"] = dw_history(cur, entity)

    def facts(sql):
        cur.execute(sql)
        return sorted(cur.fetchall(), key=_sort_key)

    out["fact_session"] = facts(
        "select f.student_id, f.session_start_at, f.client_type, f.session_date, d.student_id, d.valid_from"
        " from dw.fact_session f left join dw.dim_student d using (student_sk)"
    )
    out["fact_subscription"] = facts(
        "select f.student_id, f.payment_at, f.plan_type, f.payment_date, d.student_id, d.valid_from"
        " from dw.fact_subscription f left join dw.dim_student d using (student_sk)"
    )
    out["fact_subject_follow"] = facts(
        "select f.student_id, f.subject_id, f.followed_at, f.followed_date, d.student_id, d.valid_from,"
        " s.subject_id, s.valid_from"
        " from dw.fact_subject_follow f left join dw.dim_student d using (student_sk)"
        " left join dw.dim_subject s using (subject_sk)"
    )
    for table in (
        "dim_date",
        "mart_country_access",
        "mart_users_by_type",
        "mart_state_activity",
        "mart_daily_activity",
    ):
        out[table] = facts(f"select * from dw.{table}")
    out["fact_page_view_daily"] = facts(
        "select f.event_date, f.student_id, f.client_type, f.country, f.page_views, f.first_event_at,"
        " f.last_event_at, d.student_id, d.valid_from"
        " from dw.fact_page_view_daily f left join dw.dim_student d using (student_sk)"
    )
    out["load_audit"] = facts(
        "select table_name, gold_table, gold_version, deliveries, rows_staged, rows_inserted, rows_closed,"
        " rows_removed from dw.load_audit"
    )
    out["load_delivery"] = facts("select table_name, delivery, as_of from dw.load_delivery")
    return out


def empty_warehouse(cur) -> None:
    """Every dw table emptied but the migrations' record, the erased member back: dw as a first mirror finds it."""
    cur.execute(
        "select string_agg(format('dw.%I', tablename), ', ') from pg_tables where schemaname = 'dw'"
        " and tablename <> 'schema_version'"
    )
    cur.execute(f"truncate {cur.fetchone()[0]} restart identity cascade")
    cur.execute((SQL_DIR / "010_erased_member.sql").read_text())


# -- a small deterministic sample of every gold table --------------------------------------


def sample_deliveries(seed: int = 7, students: int = 40, n: int = 3) -> dict[str, list[Delivery]]:
    """Export sequences for the four dimensions: changes, deletions, returns, duplicates."""
    rnd = random.Random(seed)
    start = datetime(2017, 11, 16, 6, tzinfo=UTC)
    out: dict[str, list[Delivery]] = {e: [] for e in DIM_ATTRS}
    for i in range(n):
        as_of = start + timedelta(days=i)
        name = as_of.date().isoformat()
        recs = []
        for s in range(students):
            if rnd.random() < 0.1:
                continue  # absent from this delivery: deleted (may come back later)
            recs.append(
                {
                    "student_id": str(s),
                    "registered_at": start - timedelta(days=s),
                    "state": rnd.choice(["SP", "RJ", "MG"]) if i and rnd.random() < 0.3 else ["SP", "RJ", "MG"][s % 3],
                    "city": f"city{s % 5}",
                    "university_id": s % 4,
                    "university_name": f"U{s % 4}",
                    "course_id": s % 6,
                    "course_name": f"C{s % 6}",
                    "signup_source": "web" if s % 2 else "app",
                }
            )
        recs.append(dict(recs[0]))  # a duplicate record in one export
        out["student"].append(Delivery(name, as_of, recs))
        for entity, count in (("course", 6), ("university", 4), ("subject", 8)):
            out[entity].append(
                Delivery(
                    name,
                    as_of,
                    [
                        {f"{entity}_id": k, f"{entity}_name": f"{entity} {k}" + (" v2" if i and k == 1 else "")}
                        for k in range(count)
                        if not (i == 1 and k == 2)
                    ],
                )
            )
    return out


def sample_gold(seed: int = 7, deliveries: int = 3, upto: int | None = None) -> dict[str, pa.Table]:
    """Gold-shaped Arrow tables (dim histories and facts) from the first `upto` of `deliveries` deliveries."""
    rnd = random.Random(seed)
    exports = sample_deliveries(seed, n=deliveries)
    upto = deliveries if upto is None else upto
    tables: dict[str, pa.Table] = {}
    for entity, seq in exports.items():
        key = f"{entity}_id"
        rows = history_rows(entity, seq[:upto], keep_duplicates=True)
        tables[f"dim_{entity}_history"] = arrow_table(
            rows, (key, *DIM_ATTRS[entity], "is_deleted", "as_of", "delivery"), key=key
        )
    start = datetime(2017, 11, 15, tzinfo=UTC)
    span = timedelta(days=upto + 1)

    def when():
        return start + timedelta(seconds=rnd.randrange(int(span.total_seconds())))

    sessions = [
        {
            "student_id": str(rnd.randrange(45)),
            "session_start_at": when(),
            "client_type": rnd.choice(["Website", "Android"]),
        }
        for _ in range(120)
    ]
    payments = [
        {"student_id": str(rnd.randrange(40)), "payment_at": when(), "plan_type": rnd.choice(["Mensal", "Anual"])}
        for _ in range(25)
    ]
    follows = [
        {"student_id": str(rnd.randrange(40)), "subject_id": rnd.randrange(8), "followed_at": when()} for _ in range(50)
    ]
    for rows, at, day in ((sessions, "session_start_at", "session_date"), (payments, "payment_at", "payment_date")):
        for row in rows:
            row[day] = row[at].date()
    for row in follows:
        row["followed_date"] = row["followed_at"].date()
    views = []
    for i in range(400):
        at = when()
        views.append(
            {
                "event_id": f"e{i}",
                "event_at": at,
                "event_date": at.date(),
                "student_id": None if rnd.random() < 0.2 else str(rnd.randrange(40)),
                "client_type": rnd.choice(["Website", "Android"]),
                "country": rnd.choice(["Brazil", "Chile"]),
            }
        )
    tables["fact_session"] = arrow_table(sessions, ("student_id", "session_start_at", "session_date", "client_type"))
    tables["fact_subscription"] = arrow_table(payments, ("student_id", "payment_at", "payment_date", "plan_type"))
    tables["fact_subject_follow"] = arrow_table(follows, ("student_id", "subject_id", "followed_at", "followed_date"))
    tables["fact_page_view"] = arrow_table(
        views, ("event_id", "event_at", "event_date", "student_id", "client_type", "country")
    )
    days = [r["event_date"] for r in views] + [r["session_date"] for r in sessions]
    days += [r["payment_date"] for r in payments] + [r["followed_date"] for r in follows]
    tables["dim_date"] = calendar(min(days), max(days))
    tables.update(marts(views))
    return tables


def calendar(first: date, last: date) -> pa.Table:
    """gold.dim_date from `first` to `last`."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return pa.table(
        {
            "date": pa.array(days, pa.date32()),
            "year": pa.array([d.year for d in days], pa.int32()),
            "month": pa.array([d.month for d in days], pa.int32()),
            "day": pa.array([d.day for d in days], pa.int32()),
            "weekday": pa.array([d.isoweekday() for d in days], pa.int32()),
            "weekday_name": [d.strftime("%A") for d in days],
            "month_start_date": pa.array([d.replace(day=1) for d in days], pa.date32()),
        }
    )


def marts(views: list[dict]) -> dict[str, pa.Table]:
    """The four gold marts of these page views (user type and state by the student's id: a stand-in)."""

    def totals(key) -> list[tuple]:
        views_of: dict = {}
        students_of: dict = {}
        for v in views:
            views_of[key(v)] = views_of.get(key(v), 0) + 1
            students_of.setdefault(key(v), set()).update({v["student_id"]} - {None})
        return [(*k, n, len(students_of[k])) for k, n in views_of.items()]

    def table(names: tuple, types: tuple, rows: list[tuple]) -> pa.Table:
        return pa.table({n: pa.array([r[i] for r in rows], t) for i, (n, t) in enumerate(zip(names, types))})

    count = (pa.int64(), pa.int64())
    daily = totals(lambda v: (v["event_date"], v["client_type"]))
    return {
        "mart_country_access": table(
            ("country", "month", "page_views", "students"),
            (pa.string(), pa.date32(), *count),
            totals(lambda v: (v["country"], v["event_date"].replace(day=1))),
        ),
        "mart_users_by_type": table(
            ("user_type", "page_views", "students"),
            (pa.string(), *count),
            totals(lambda v: (None if v["student_id"] is None else "CoreUser",)),
        ),
        "mart_state_activity": table(
            ("state", "page_views", "students"),
            (pa.string(), *count),
            totals(lambda v: (None if v["student_id"] is None else ["SP", "RJ", "MG"][int(v["student_id"]) % 3],)),
        ),
        "mart_daily_activity": table(
            ("event_date", "client_type", "page_views", "students", "sessions"),
            (pa.date32(), pa.string(), *count, pa.int64()),
            [(*r, r[-1]) for r in daily],
        ),
    }


def write_delta(spark, lake: str, tables: dict[str, pa.Table], mode: str = "overwrite") -> None:
    """Write Arrow tables as gold Delta tables `<lake>/gold/<name>` with Spark (TimestampType columns)."""
    for name, table in tables.items():
        df = spark.createDataFrame(table.to_pandas(types_mapper=None))
        for f in table.schema:
            if pa.types.is_timestamp(f.type):
                df = df.withColumn(f.name, df[f.name].cast("timestamp"))
            elif pa.types.is_date32(f.type):
                df = df.withColumn(f.name, df[f.name].cast("date"))
            elif pa.types.is_int32(f.type):
                df = df.withColumn(f.name, df[f.name].cast("int"))
        df.coalesce(1).write.format("delta").mode(mode).option("delta.enableDeletionVectors", "false").save(
            f"{lake}/gold/{name}"
        )


DELTA_TYPES = {
    pa.string(): "string",
    pa.int32(): "integer",
    pa.int64(): "long",
    pa.bool_(): "boolean",
    pa.date32(): "date",
    TS: "timestamp",
}


def write_delta_files(lake: str, tables: dict[str, pa.Table]) -> None:
    """Write Arrow tables as gold Delta tables `<lake>/gold/<name>` without Spark: per call and table, one
    Parquet file and one commit that replaces the table's files (an overwrite, as `write_delta` does)."""
    import pyarrow.parquet as pq

    for name, table in tables.items():
        root = Path(lake) / "gold" / name
        log = root / "_delta_log"
        log.mkdir(parents=True, exist_ok=True)
        live: set[str] = set()
        commits = sorted(log.glob("*.json"))
        for commit in commits:
            for line in commit.read_text().splitlines():
                action = json.loads(line)
                if "add" in action:
                    live.add(action["add"]["path"])
                elif "remove" in action:
                    live.discard(action["remove"]["path"])
        version = int(commits[-1].stem) + 1 if commits else 0
        part = f"part-{version:05d}-{uuid.uuid4()}-c000.snappy.parquet"
        pq.write_table(table, root / part)
        now = int(time.time() * 1000)
        actions: list[dict] = []
        if version == 0:
            fields = [
                {"name": f.name, "type": DELTA_TYPES[f.type], "nullable": True, "metadata": {}} for f in table.schema
            ]
            actions += [
                {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
                {
                    "metaData": {
                        "id": str(uuid.uuid4()),
                        "format": {"provider": "parquet", "options": {}},
                        "schemaString": json.dumps({"type": "struct", "fields": fields}),
                        "partitionColumns": [],
                        "configuration": {},
                        "createdTime": now,
                    }
                },
            ]
        actions += [{"remove": {"path": path, "deletionTimestamp": now, "dataChange": True}} for path in sorted(live)]
        actions.append(
            {
                "add": {
                    "path": part,
                    "partitionValues": {},
                    "size": (root / part).stat().st_size,
                    "modificationTime": now,
                    "dataChange": True,
                }
            }
        )
        actions.append(
            {"commitInfo": {"timestamp": now, "operation": "WRITE", "operationParameters": {"mode": "Overwrite"}}}
        )
        (log / f"{version:020d}.json").write_text("".join(json.dumps(a) + "\n" for a in actions))


# fmt: off
__all__ = ["Delivery", "UTC", "arrow_table", "canonical", "check_invariants", "date", "dw_history", "empty_warehouse",
           "history_rows", "reference_history", "sample_deliveries", "sample_gold", "write_delta", "write_delta_files"]
# fmt: on
