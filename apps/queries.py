"""The dashboard's SQL: fixed statements over gold, every filter value a bound parameter."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd

from lakehouse import catalog
from lakehouse.config import Settings, get_settings

FOREIGN = "country is not null and lower(country) not in ('br', 'bra', 'brasil', 'brazil')"
# gold read once into small DuckDB temp tables, rebuilt when a source gets a new Delta commit: a filter change
# then scans per-day aggregates in memory; only distinct students need the (day, student) grain
PAGE_VIEWS = ("select f.event_date, f.client_type, f.country, coalesce(f.user_type, '(anonymous)') as user_type, "
              "f.student_id, d.state, d.university_name as university, d.course_name as course "
              "from gold.fact_page_view f left join gold.dim_student d on f.student_id = d.student_id")
# dimension of the `cube` temp table -> its value expression (allow-list)
DIMENSIONS = {"user_type": "user_type", "state": "coalesce(state, '(unknown)')",
              "university": "coalesce(university, '(unknown)')", "course": "coalesce(course, '(unknown)')"}
CACHE = [
    f"create or replace temp table pv as {PAGE_VIEWS}",
    "create or replace temp table cube as " + " union all ".join(
        f"select '{dim}' as dim, {expr} as value, event_date, client_type, country, count(*) as page_views "
        f"from pv {'' if dim == 'user_type' else 'where student_id is not null '}group by all"
        for dim, expr in DIMENSIONS.items()),
    "create or replace temp table student_days as select distinct event_date, client_type, country, "
    "hash(student_id) as student_key, coalesce(state, '(unknown)') as state from pv where student_id is not null",
    "drop table pv",
    "create or replace temp table sessions_daily as select cast(session_start_at as date) as session_date, "
    "client_type, count(*) as sessions from gold.fact_session group by all",
    "create or replace temp table payments as select distinct cast(payment_at as date) as payment_date, student_id "
    "from gold.fact_subscription",
]
CACHE_SOURCES = ("gold.fact_page_view", "gold.dim_student", "gold.fact_session", "gold.fact_subscription")
# one filter clause for page views; $client / $country null means "all"
PV_FILTER = (
    "event_date between $start and $end"
    " and ($client::varchar is null or client_type = $client)"
    " and ($country::varchar is null or country = $country)"
)
BREAKDOWNS = ("state", "university", "course")

SQL = {
    "bounds": "select min(event_date) as first, max(event_date) as last from gold.mart_daily_activity",
    "client_types": "select distinct client_type from gold.mart_daily_activity where client_type is not null order by 1",
    "countries": "select distinct country from gold.mart_country_access where country is not null order by 1",
    "months": "select distinct month from gold.mart_country_access where month is not null order by 1",
    "page_views": f"select coalesce(sum(page_views), 0) as page_views from cube where dim = 'user_type' and {PV_FILTER}",
    "sessions": "select coalesce(sum(sessions), 0) as sessions from sessions_daily "
                "where session_date between $start and $end and ($client::varchar is null or client_type = $client)",
    "paying": "select count(distinct student_id) as paying_students from payments "
              "where payment_date between $start and $end",
    "user_type": f"select value as user_type, sum(page_views) as page_views from cube "
                 f"where dim = 'user_type' and {PV_FILTER} group by 1 order by 2 desc, 1",
    "daily": f"select event_date, client_type, sum(page_views) as page_views from cube "
             f"where dim = 'user_type' and {PV_FILTER} group by 1, 2 order by 1, 2",
    "by_state": f"select s.state, s.students, coalesce(v.page_views, 0) as page_views from "
                f"(select state, count(distinct student_key) as students from student_days where {PV_FILTER} group by 1) s "
                f"left join (select value as state, sum(page_views) as page_views from cube "
                f"where dim = 'state' and {PV_FILTER} group by 1) v on s.state = v.state "
                f"order by students desc, state",
    "foreign": f"select country, page_views, students from gold.mart_country_access "
               f"where month = $month and {FOREIGN} and page_views > $min_views order by page_views desc, country",
    "as_of": "select (select max(as_of) from gold.dim_student) as gold_as_of, "
             "(select max(as_of) from bronze.events) as bronze_as_of",
    "quarantine": "select 'events' as source, reason, count(*) as rows from quarantine.events group by 1, 2 "
                  "union all select 'transactional', reason, count(*) from quarantine.transactional group by 1, 2 "
                  "order by rows desc",
}
for _name in ("university", "course"):
    SQL[f"by_{_name}"] = (f"select value as {_name}, sum(page_views) as page_views from cube "
                          f"where dim = '{_name}' and {PV_FILTER} group by 1 order by 2 desc, 1 limit $top")


@dataclass(frozen=True)
class Filters:
    start: date
    end: date
    client_type: str | None = None
    country: str | None = None

    def params(self) -> dict:
        return {"start": self.start, "end": self.end, "client": self.client_type, "country": self.country}


class Gold:
    """The dashboard's read-only view of the lake, rebuilt when tables appear or vanish."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self._lock = threading.Lock()
        self._lake: catalog.LakeConnection | None = None
        self._keys: set[str] = set()
        self._checked = 0.0
        self._versions: dict[str, int | None] = {}

    @property
    def lake(self) -> catalog.LakeConnection:
        with self._lock:
            if self._lake is None or time.monotonic() - self._checked > 5:
                tables = catalog.discover(self.settings)
                keys = {t.key for t in tables}
                if self._lake is None or keys != self._keys:
                    old, self._lake = self._lake, catalog.connect(self.settings, read_only=True, tables=tables)
                    self._keys, self._versions = keys, {}
                    if old is not None:
                        old.close()
                self._refresh_cache(tables)
                self._checked = time.monotonic()
            return self._lake

    def _refresh_cache(self, tables: list[catalog.Table]) -> None:
        """Rebuild the temp tables whose gold sources got a new Delta commit."""
        by_key = {t.key: t for t in tables}
        if not all(k in by_key for k in CACHE_SOURCES):
            return
        versions = {k: catalog.last_commit(by_key[k], self.settings) for k in CACHE_SOURCES}
        versions = {k: v[0] if v else None for k, v in versions.items()}
        if versions == self._versions:
            return
        with self._lake._lock:
            for sql in CACHE:
                self._lake.con.execute(sql)  # fixed DDL on the connection's private temp schema
        self._versions = versions

    def has(self, *keys: str) -> bool:
        lake = self.lake
        return all(k in self._keys and not any(s.startswith(k + ":") for s in lake.skipped) for k in keys)

    def frame(self, name: str, params: dict | None = None) -> pd.DataFrame:
        """Run the named statement with bound parameters (only the ones it uses)."""
        sql = SQL[name]
        used = {k: v for k, v in (params or {}).items() if f"${k}" in sql}
        return self.lake.frame(sql, used or None)

    def bounds(self) -> tuple[date, date]:
        row = self.frame("bounds").iloc[0]
        if pd.isna(row["first"]):
            today = date.today()
            return today, today
        return pd.Timestamp(row["first"]).date(), pd.Timestamp(row["last"]).date()

    def options(self, name: str) -> list:
        return list(self.frame(name).iloc[:, 0])

    def headline(self, filters: Filters, states: pd.DataFrame | None = None) -> dict[str, int]:
        """Page views, active students, sessions, paying students in the filters' period."""
        params = filters.params()
        states = self.breakdown("state", filters) if states is None else states
        out = {"page_views": self.frame("page_views", params).iloc[0, 0],
               "active_students": states["students"].sum(),  # one state per student: the per-state sum is exact
               "sessions": self.frame("sessions", params).iloc[0, 0],
               "paying_students": self.frame("paying", params).iloc[0, 0]}
        return {k: int(v or 0) for k, v in out.items()}

    def breakdown(self, name: str, filters: Filters, top: int = 10) -> pd.DataFrame:
        if name not in BREAKDOWNS:
            raise ValueError(f"unknown breakdown {name!r}")
        return self.frame(f"by_{name}", {**filters.params(), "top": int(top)})

    def overview(self, filters: Filters) -> dict:
        """Everything the period, client type and country filters drive: headline numbers and five charts' data."""
        params = filters.params()
        states = self.breakdown("state", filters)
        return {"headline": self.headline(filters, states), "states": states,
                "universities": self.breakdown("university", filters), "courses": self.breakdown("course", filters),
                "user_types": self.frame("user_type", params), "daily": self.frame("daily", params)}

    def foreign(self, month: date, min_views: int) -> pd.DataFrame:
        return self.frame("foreign", {"month": month, "min_views": int(min_views)})

    def freshness(self) -> dict:
        """Latest delivery as-of (gold, bronze), last gold commit, rows quarantined by source and reason."""
        out: dict = {"gold_as_of": None, "bronze_as_of": None, "last_run": None, "quarantine": pd.DataFrame()}
        if self.has("gold.dim_student", "bronze.events"):
            out.update(self.frame("as_of").iloc[0].to_dict())
        if self.has("quarantine.events", "quarantine.transactional"):
            out["quarantine"] = self.frame("quarantine")
        commits = [catalog.last_commit(t, self.settings) for t in self.lake.tables if t.layer == "gold"]
        times = [c[1] for c in commits if c]
        out["last_run"] = max(times) if times else None
        return out


def to_datetime(value) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()
