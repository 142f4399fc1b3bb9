"""The dashboard's SQL: fixed statements over gold, every filter value a bound parameter."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import pandas as pd

from lakehouse import catalog, tables, trust
from lakehouse.config import Settings, get_settings

log = logging.getLogger(__name__)

FOREIGN = "country is not null and lower(country) not in ('br', 'bra', 'brasil', 'brazil')"
UNKNOWN = "(unknown)"  # the label of a missing client type or country, in every chart and filter
_UNKNOWN = "'" + UNKNOWN + "'"
# gold read once into small tables of the connection's in-memory database (`memory.main`, shared by its cursors, so
# one filter change runs its statements at once), rebuilt when a source gets a new Delta commit: a filter change then
# scans per-day aggregates in memory; only distinct students need the (day, student) grain
PAGE_VIEWS = (
    f"select f.event_date, coalesce(f.client_type, {_UNKNOWN}) as client_type, "
    f"coalesce(f.country, {_UNKNOWN}) as country, coalesce(f.user_type, '(anonymous)') as user_type, "
    "f.student_id, d.state, d.university_name as university, d.course_name as course "
    "from gold.fact_page_view f left join gold.dim_student d on f.student_id = d.student_id"
)
# dimension of the `cube` temp table -> its value expression (allow-list)
DIMENSIONS = {
    "user_type": "user_type",
    "state": "coalesce(state, '(unknown)')",
    "university": "coalesce(university, '(unknown)')",
    "course": "coalesce(course, '(unknown)')",
}
CACHE = [
    f"create or replace table memory.main.pv as {PAGE_VIEWS}",
    "create or replace table memory.main.cube as "
    + " union all ".join(
        f"select '{dim}' as dim, {expr} as value, event_date, client_type, country, count(*) as page_views "
        f"from memory.main.pv {'' if dim == 'user_type' else 'where student_id is not null '}group by all"
        for dim, expr in DIMENSIONS.items()
    ),
    "create or replace table memory.main.student_days as select distinct event_date, client_type, country, "
    "hash(student_id) as student_key, coalesce(state, '(unknown)') as state from memory.main.pv where student_id is not null",
    "drop table memory.main.pv",
    "create or replace table memory.main.sessions_daily as select cast(session_start_at as date) as session_date, "
    f"coalesce(client_type, {_UNKNOWN}) as client_type, count(*) as sessions from gold.fact_session group by all",
    "create or replace table memory.main.payments as select distinct cast(payment_at as date) as payment_date, student_id "
    "from gold.fact_subscription",
    "create or replace table memory.main.calendar as select cast(date as date) as day from gold.dim_date",
]


def _reads(statements: list[str]) -> tuple[str, ...]:
    """The catalogue's tables these statements read."""
    reading = [sql for sql in statements if not sql.lstrip().lower().startswith("drop ")]
    names = {n.split(" AS ")[0] for sql in reading for n in duckdb.get_table_names(sql, qualified=True)}
    return tuple(sorted(names & set(tables.BY_KEY)))


# the lake tables the cache is built from: a new commit to one of them rebuilds it
CACHE_SOURCES = _reads(CACHE)
# one filter clause for page views; $client / $country null means "all"
PV_FILTER = (
    "event_date between $start and $end"
    " and ($client::varchar is null or client_type = $client)"
    " and ($country::varchar is null or country = $country)"
)
BREAKDOWNS = ("state", "university", "course")

SQL = {
    "bounds": "select min(event_date) as first, max(event_date) as last from gold.mart_daily_activity",
    # known values first, then UNKNOWN when some rows lack one
    "client_types": f"select coalesce(client_type, {_UNKNOWN}) from (select distinct client_type "
    f"from gold.mart_daily_activity) order by client_type is null, 1",
    "countries": f"select coalesce(country, {_UNKNOWN}) from (select distinct country "
    f"from gold.mart_country_access) order by country is null, 1",
    "months": "select distinct month from gold.mart_country_access where month is not null order by 1",
    "page_views": f"select coalesce(sum(page_views), 0) as page_views from memory.main.cube where dim = 'user_type' and {PV_FILTER}",
    "sessions": "select coalesce(sum(sessions), 0) as sessions from memory.main.sessions_daily "
    "where session_date between $start and $end and ($client::varchar is null or client_type = $client)",
    "paying": "select count(distinct student_id) as paying_students from memory.main.payments "
    "where payment_date between $start and $end",
    "user_type": f"select value as user_type, sum(page_views) as page_views from memory.main.cube "
    f"where dim = 'user_type' and {PV_FILTER} group by 1 order by 2 desc, 1",
    # every calendar day of the period for each client type shown: a day without page views is a zero, not a line
    # drawn straight across it
    "daily": f"with counts as (select event_date, client_type, sum(page_views) as page_views from memory.main.cube "
    f"where dim = 'user_type' and {PV_FILTER} group by 1, 2) "
    "select d.day as event_date, c.client_type, coalesce(n.page_views, 0) as page_views "
    "from memory.main.calendar d cross join (select distinct client_type from counts) c "
    "left join counts n on n.event_date = d.day and n.client_type = c.client_type "
    "where d.day between $start and $end order by 1, 2",
    "by_state": f"select s.state, s.students, coalesce(v.page_views, 0) as page_views from "
    f"(select state, count(distinct student_key) as students from memory.main.student_days where {PV_FILTER} group by 1) s "
    f"left join (select value as state, sum(page_views) as page_views from memory.main.cube "
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
    SQL[f"by_{_name}"] = (
        f"select value as {_name}, sum(page_views) as page_views from memory.main.cube "
        f"where dim = '{_name}' and {PV_FILTER} group by 1 order by 2 desc, 1 limit $top"
    )


@dataclass(frozen=True)
class Filters:
    start: date
    end: date
    client_type: str | None = None
    country: str | None = None

    def params(self) -> dict:
        return {"start": self.start, "end": self.end, "client": self.client_type, "country": self.country}


class Gold:
    """The dashboard's read-only view of the lake, rebuilt when tables appear or vanish or gold gets a new commit."""

    CHECK_SECONDS = 5

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self._lock = threading.RLock()  # held while the connection or its cached tables change, and by readers
        self._lake: catalog.LakeConnection | None = None
        self._keys: set[str] = set()
        self._checked = 0.0
        self._checking = False
        self._stale = False
        self._versions: dict[str, int | None] = {}

    @property
    def lake(self) -> catalog.LakeConnection:
        """The open connection; a check of the lake for changes runs in the background, off the filter path."""
        with self._lock:
            if self._lake is None or self._stale:
                self._refresh()
            elif time.monotonic() - self._checked > self.CHECK_SECONDS and not self._checking:
                self._checking = True
                threading.Thread(target=self._check, daemon=True, name="gold-check").start()
            assert self._lake is not None  # _refresh opened it
            return self._lake

    def _state(self) -> tuple[list[catalog.LakeTable], set[str], dict[str, int | None]]:
        """The lake's tables, their keys, and the latest Delta version of each cached source."""
        tables = catalog.discover(self.settings)
        by_key = {t.key: t for t in tables}
        versions = {}
        if all(k in by_key for k in CACHE_SOURCES):
            commits = {k: catalog.last_commit(by_key[k], self.settings) for k in CACHE_SOURCES}
            versions = {k: v[0] if v else None for k, v in commits.items()}
        return tables, set(by_key), versions

    def _check(self) -> None:
        try:
            _, keys, versions = self._state()
            if keys != self._keys or versions != self._versions:
                self._stale = True
        except Exception as exc:  # a transient listing failure: keep serving, check again later
            log.warning("could not check the lake for new gold commits (will retry): %s", exc)
        finally:
            self._checked = time.monotonic()
            self._checking = False

    def _refresh(self) -> None:
        """(Re)open the connection when tables appeared or vanished; rebuild the cached tables on a new commit."""
        tables, keys, versions = self._state()
        if self._lake is None or keys != self._keys:
            old, self._lake = self._lake, catalog.connect(self.settings, read_only=True, tables=tables)
            self._keys, self._versions = keys, {}
            if old is not None:
                old.close()
        if versions and versions != self._versions:
            self._lake.cache(CACHE)  # fixed DDL on the connection's own in-memory database
            self._versions = versions
        self._checked, self._stale = time.monotonic(), False

    def has(self, *keys: str) -> bool:
        lake = self.lake
        return all(k in self._keys and not any(s.startswith(k + ":") for s in lake.skipped) for k in keys)

    def frame(self, name: str, params: dict | None = None) -> pd.DataFrame:
        """Run the named statement with bound parameters (only the ones it uses)."""
        with self._lock:
            return self.lake.frame(*_bind(name, params))

    def frames(self, named: dict[str, dict | None]) -> dict[str, pd.DataFrame]:
        """Run several named statements at once (one DuckDB cursor each); their results by name."""
        with self._lock:
            results = self.lake.frames([_bind(name, params) for name, params in named.items()])
        return dict(zip(named, results))

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
        out = {
            "page_views": self.frame("page_views", params).iloc[0, 0],
            "active_students": states["students"].sum(),  # one state per student: the per-state sum is exact
            "sessions": self.frame("sessions", params).iloc[0, 0],
            "paying_students": self.frame("paying", params).iloc[0, 0],
        }
        return {k: int(v or 0) for k, v in out.items()}

    def breakdown(self, name: str, filters: Filters, top: int = 10) -> pd.DataFrame:
        if name not in BREAKDOWNS:
            raise ValueError(f"unknown breakdown {name!r}")
        return self.frame(f"by_{name}", {**filters.params(), "top": int(top)})

    def overview(self, filters: Filters, top: int = 10) -> dict:
        """Everything the period, client type and country filters drive: headline numbers and five charts' data.

        Its eight statements run at once, each on its own cursor."""
        params = {**filters.params(), "top": int(top)}
        out = self.frames(
            {
                name: params
                for name in (
                    "by_state",
                    "page_views",
                    "sessions",
                    "paying",
                    "by_university",
                    "by_course",
                    "user_type",
                    "daily",
                )
            }
        )
        headline = {
            "page_views": out["page_views"].iloc[0, 0],
            "active_students": out["by_state"]["students"].sum(),
            "sessions": out["sessions"].iloc[0, 0],
            "paying_students": out["paying"].iloc[0, 0],
        }
        return {
            "headline": {k: int(v or 0) for k, v in headline.items()},
            "states": out["by_state"],
            "universities": out["by_university"],
            "courses": out["by_course"],
            "user_types": out["user_type"],
            "daily": out["daily"],
        }

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

    def trust(self) -> trust.Trust:
        """The trust panel: source groups fresh or stale, each table's last refresh and expectations."""
        with self._lock:
            return trust.overview(self.settings, lake=self.lake)


def _bind(name: str, params: dict | None) -> tuple[str, dict | None]:
    """The named statement and the parameters it uses."""
    sql = SQL[name]
    used = {k: v for k, v in (params or {}).items() if f"${k}" in sql}
    return sql, used or None


def to_datetime(value) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()
