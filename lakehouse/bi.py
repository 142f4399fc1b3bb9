"""`lakehouse bi`: Apache Superset over the warehouse (schema dw), connected as the read-only login `bi_user`, with the
case study's dashboard. Superset runs from its own environment (.venv-bi, pinned by bi/uv.lock); its state lives in
the data folder (`superset/`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.pgserver import PostgresError, warehouse_logins
from lakehouse.platform import port_free, public_url
from lakehouse.runs import writer_lock
from lakehouse.security import (
    ADMIN_USER,
    BindRefused,
    admin_password,
    check_bind,
    connect_host,
    login_set,
    secure_data_dir,
    secure_dir,
    write_secret,
)
from lakehouse.warehouse.mirror import DeltaGold, mirror
from lakehouse.warehouse.roles import BI_LOGIN, ensure_bi_login

if TYPE_CHECKING:
    import httpx

BI_VENV = PROJECT_ROOT / ".venv-bi"
SETUP_SCRIPT = PROJECT_ROOT / "bi" / "superset_setup.py"
BI_PASSWORD_FILE = "bi-password"  # under the data folder, mode 0600, when LAKEHOUSE_BI_PASSWORD is unset
SCHEMA = "dw"
DATABASE_NAME = "lakehouse warehouse (dw)"
DASHBOARD_TITLE = "Passei Direto case study"
DASHBOARD_SLUG = "passei-direto"


class BiError(RuntimeError):
    """`lakehouse bi` cannot go on (one line naming the fix)."""


# -- what the dashboard shows: datasets and charts, declared once ------------------------------

# every dw object people get a Superset dataset of (the charts use some of them)
DATASETS = (
    "fact_page_view_daily",
    "fact_session",
    "fact_subscription",
    "fact_subject_follow",
    "dim_date",
    "students",
    "courses",
    "universities",
    "subjects",
    "mart_country_access",
    "mart_users_by_type",
    "mart_state_activity",
    "mart_daily_activity",
)


@dataclass(frozen=True)
class Metric:
    label: str
    sql: str  # an aggregate over the dataset's columns


@dataclass(frozen=True)
class Chart:
    """One chart of the dashboard: a Superset viz over one dataset."""

    name: str
    dataset: str
    viz: str  # pie, table, echarts_timeseries_bar, echarts_timeseries_line
    metrics: tuple[Metric, ...]
    groupby: tuple[str, ...] = ()  # pie and table: the categories; time series: one series per value
    x_axis: str | None = None  # time series: the x axis column
    time_grain: str | None = None  # a temporal x axis: P1D, P1W, P1M
    where: tuple[str, ...] = ()  # SQL conditions on the rows
    having: str = ""  # SQL condition on the groups
    width: int = 6  # of the dashboard's 12 columns
    options: dict[str, Any] = field(default_factory=dict)  # extra params of the viz


PAGE_VIEWS = Metric("page views", "SUM(page_views)")
STUDENTS = Metric("students", "SUM(students)")

CHARTS = (
    Chart(
        "Foreign countries with over 100 page views, November 2017",
        "mart_country_access",
        "echarts_timeseries_bar",
        (PAGE_VIEWS,),
        x_axis="country",
        where=("country <> 'br'", "month = '2017-11-01'"),
        having="SUM(page_views) > 100",
        options={"show_value": True},
    ),
    Chart(
        "Page views and students by user type",
        "mart_users_by_type",
        "table",
        (PAGE_VIEWS, STUDENTS),
        groupby=("user_type",),
    ),
    Chart(
        "Students per state",
        "mart_state_activity",
        "pie",
        (STUDENTS,),
        groupby=("state",),
        width=5,
        options={"show_labels": True, "label_type": "key_percent", "show_legend": False},
    ),
    Chart(
        "Page views per state",
        "mart_state_activity",
        "echarts_timeseries_bar",
        (PAGE_VIEWS,),
        x_axis="state",
        width=7,
    ),
    Chart(
        "Daily page views by client type",
        "mart_daily_activity",
        "echarts_timeseries_line",
        (PAGE_VIEWS,),
        groupby=("client_type",),
        x_axis="event_date",
        time_grain="P1D",
        width=12,
    ),
    Chart(
        "Page views per day",
        "fact_page_view_daily",
        "echarts_timeseries_bar",
        (PAGE_VIEWS,),
        x_axis="event_date",
        time_grain="P1D",
    ),
    Chart(
        "Sessions per day by client type",
        "fact_session",
        "echarts_timeseries_bar",
        (Metric("sessions", "COUNT(*)"),),
        groupby=("client_type",),
        x_axis="session_date",
        time_grain="P1D",
        options={"stack": "Stack"},
    ),
    Chart(
        "Payments per month by plan type",
        "fact_subscription",
        "echarts_timeseries_bar",
        (Metric("payments", "COUNT(*)"),),
        groupby=("plan_type",),
        x_axis="payment_date",
        time_grain="P1M",
    ),
    Chart(
        "Subject follows per month",
        "fact_subject_follow",
        "echarts_timeseries_bar",
        (Metric("follows", "COUNT(*)"),),
        x_axis="followed_date",
        time_grain="P1M",
    ),
)


def _adhoc_metric(metric: Metric) -> dict[str, Any]:
    return {
        "expressionType": "SQL",
        "sqlExpression": metric.sql,
        "label": metric.label,
        "hasCustomLabel": True,
        "optionName": "metric_" + "_".join(metric.label.split()),
    }


def form_data(chart: Chart, dataset_id: int) -> dict[str, Any]:
    """The chart's params, as Superset's chart editor saves them for its viz."""
    filters = [
        {"expressionType": "SQL", "sqlExpression": sql, "clause": clause, "optionName": f"filter_{i}"}
        for i, (sql, clause) in enumerate(
            [(w, "WHERE") for w in chart.where] + ([(chart.having, "HAVING")] if chart.having else [])
        )
    ]
    metrics = [_adhoc_metric(m) for m in chart.metrics]
    params: dict[str, Any] = {
        "datasource": f"{dataset_id}__table",
        "viz_type": chart.viz,
        "adhoc_filters": filters,
        "groupby": list(chart.groupby),
        "row_limit": 10_000,
    }
    if chart.viz == "pie":
        params.update(metric=metrics[0], sort_by_metric=True)
    else:
        params["metrics"] = metrics
    if chart.viz == "table":
        params.update(query_mode="aggregate", order_desc=True, server_pagination=False)
    if chart.x_axis:
        params.update(x_axis=chart.x_axis, show_legend=bool(chart.groupby), rich_tooltip=True)
        if chart.time_grain:
            params["time_grain_sqla"] = chart.time_grain
        else:  # categories ordered by the first metric, largest first
            params.update(x_axis_sort=chart.metrics[0].label, x_axis_sort_asc=False)
    params.update(chart.options)
    return params


def query_context(chart: Chart, dataset_id: int) -> dict[str, Any]:
    """The query Superset runs for `GET /api/v1/chart/<id>/data/`: the chart's rows, unpivoted."""
    metrics = [_adhoc_metric(m) for m in chart.metrics]
    columns: list[Any] = []
    orderby: list[list[Any]] = [[metrics[0], False]]
    if chart.x_axis and chart.time_grain:
        axis = {
            "timeGrain": chart.time_grain,
            "columnType": "BASE_AXIS",
            "sqlExpression": chart.x_axis,
            "label": chart.x_axis,
            "expressionType": "SQL",
        }
        columns.append(axis)
        orderby = [[axis, True]]
    elif chart.x_axis:
        columns.append(chart.x_axis)
    columns += list(chart.groupby)
    query = {
        "columns": columns,
        "metrics": metrics,
        "orderby": orderby,
        "filters": [],
        "extras": {"where": " AND ".join(f"({w})" for w in chart.where), "having": chart.having},
        "row_limit": 10_000,
        "series_columns": list(chart.groupby) if chart.x_axis else [],
        "annotation_layers": [],
        "applied_time_extras": {},
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
    }
    return {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": False,
        "queries": [query],
        "form_data": form_data(chart, dataset_id),
        "result_format": "json",
        "result_type": "full",
    }


def layout(charts: list[tuple[Chart, int]]) -> list[list[tuple[Chart, int]]]:
    """Rows of the dashboard: the charts in order, a new row when the next one does not fit in 12 columns."""
    rows: list[list[tuple[Chart, int]]] = []
    used = 12
    for item in charts:
        if used + item[0].width > 12:
            rows.append([])
            used = 0
        rows[-1].append(item)
        used += item[0].width
    return rows


def position_json(rows: list[list[tuple[Chart, int]]], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dashboard layout (Superset's position_json) with `rows` appended below what `existing` holds."""
    pos: dict[str, Any] = (
        existing
        if existing and "GRID_ID" in existing
        else {
            "DASHBOARD_VERSION_KEY": "v2",
            "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
            "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
            "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": DASHBOARD_TITLE}},
        }
    )
    for row in rows:
        row_id = f"ROW-{secrets.token_hex(5)}"
        pos["GRID_ID"]["children"].append(row_id)
        pos[row_id] = {
            "type": "ROW",
            "id": row_id,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        for chart, chart_id in row:
            key = f"CHART-{secrets.token_hex(5)}"
            pos[row_id]["children"].append(key)
            pos[key] = {
                "type": "CHART",
                "id": key,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID", row_id],
                "meta": {"width": chart.width, "height": 50, "chartId": chart_id, "sliceName": chart.name},
            }
    return pos


# -- state under the data folder -----------------------------------------------------------------


def superset_home(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "superset"


def _state_file(settings: Settings) -> Path:
    return superset_home(settings) / "running.json"


def bi_password(settings: Settings, create: bool = False) -> tuple[str | None, Path | None]:
    """(password, file it was read from) of `bi_user`: LAKEHOUSE_BI_PASSWORD, else the stored one, else (with
    `create`) a new random one stored 0600 under the data folder."""
    if settings.bi_password is not None and settings.bi_password.get_secret_value():
        return settings.bi_password.get_secret_value(), None
    path = Path(settings.data_dir).resolve() / BI_PASSWORD_FILE
    try:
        return path.read_text().strip(), path
    except FileNotFoundError:
        if not create:
            return None, None
    secure_data_dir(settings)
    with contextlib.suppress(FileExistsError):  # another process made it meanwhile
        write_secret(path, secrets.token_urlsafe(24))
    return path.read_text().strip(), path


def superset_version(venv: Path = BI_VENV) -> str:
    """The apache-superset version installed in the Superset environment."""
    found = sorted(venv.glob("lib/python*/site-packages/apache_superset-*.dist-info"))
    if not found:
        raise BiError(f"Superset is not installed in {venv}: run `make bi` (it installs the environment of bi/uv.lock)")
    return found[-1].name.removeprefix("apache_superset-").removesuffix(".dist-info")


def check_environment(venv: Path = BI_VENV) -> str:
    """The installed Superset version; BiError when the environment is missing or older than bi/uv.lock."""
    version = superset_version(venv)
    stamp, lock = venv / ".synced", PROJECT_ROOT / "bi" / "uv.lock"
    if not stamp.exists() or (lock.exists() and stamp.stat().st_mtime < lock.stat().st_mtime):
        raise BiError(f"the Superset environment {venv} is older than bi/uv.lock: run `make bi` to update it")
    for program in ("python", "gunicorn"):
        if not (venv / "bin" / program).exists():
            raise BiError(f"{venv}/bin/{program} is missing: remove {venv} and run `make bi`")
    return version


CONFIG = '''"""Superset's settings for `lakehouse bi`, written by lakehouse/bi.py: edits here are lost at the next start."""

import hashlib
import os
from pathlib import Path

_HOME = Path(__file__).resolve().parent
SECRET_KEY = (_HOME / "secret-key").read_text().strip()
GUEST_TOKEN_JWT_SECRET = hashlib.sha256(("guest-token:" + SECRET_KEY).encode()).hexdigest()
DATA_DIR = str(_HOME)
SQLALCHEMY_DATABASE_URI = (
    "sqlite:///" + os.environ.get("SUPERSET_METADATA_DB", str(_HOME / "superset.db")) + "?check_same_thread=false"
)
SESSION_COOKIE_NAME = "superset_session"  # apart from other services on this host (cookies ignore ports)
RATELIMIT_ENABLED = True  # the login: 5 attempts a second at most
RATELIMIT_STORAGE_URI = "memory://"
# offline: the browser loads nothing but from Superset itself (not the frontend's usage pixel, map tiles, web fonts)
MAPBOX_API_KEY = ""
THEME_FONT_URL_ALLOWED_DOMAINS = []
CONTENT_SECURITY_POLICY_WARNING = False
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
'''


def write_config(settings: Settings) -> Path:
    """Superset's config file and its secret key (both 0600) in `superset/` of the data folder."""
    home = secure_dir(superset_home(settings))
    key = home / "secret-key"
    if not key.exists():
        write_secret(key, secrets.token_urlsafe(48))
    path = home / "superset_config.py"
    if not path.exists() or path.read_text() != CONFIG:
        write_secret(path, CONFIG, replace=True)
    return path


# -- the warehouse, as bi_user -------------------------------------------------------------------


def sqlalchemy_uri(dsn: str, user: str, password: str) -> str:
    """The SQLAlchemy URI (psycopg2) of the warehouse in libpq DSN `dsn`, as `user` with `password`."""
    from urllib.parse import quote, urlencode

    from psycopg2.extensions import parse_dsn

    params = parse_dsn(dsn)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    database = params.pop("dbname", user)
    for key in ("user", "password"):
        params.pop(key, None)
    if host.startswith("/"):  # a Unix socket folder
        params["host"], host = host, ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{port}" if host else "")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg2://{netloc}/{quote(database, safe='')}{query}"


def _connect(dsn: str, **overrides: str) -> Any:
    import psycopg2
    from psycopg2.extensions import make_dsn

    conn = psycopg2.connect(make_dsn(dsn, connect_timeout="10", **overrides))
    conn.autocommit = True
    return conn


def _mirrored(dsn: str) -> bool:
    """Whether the mirror has loaded this warehouse at least once."""
    with contextlib.closing(_connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('dw.load_audit') is not null")
        row = cur.fetchone()
        if not row or not row[0]:
            return False
        cur.execute("select exists (select from dw.load_audit)")
        row = cur.fetchone()
        return bool(row and row[0])


def prepare_warehouse(settings: Settings, say: Callable[[str], None]) -> tuple[str, str, Path | None]:
    """The warehouse DSN, bi_user's password and the file it is kept in (None: LAKEHOUSE_BI_PASSWORD). Mirrors gold
    when the warehouse was never loaded and the lake has gold; makes sure bi_user logs in with the password."""
    import psycopg2

    password, stored = bi_password(settings, create=True)
    assert password is not None
    settings = settings.model_copy(update={"bi_password": _secret(password)})  # the mirror makes the login with it
    try:
        dsn, roles_dsn = warehouse_logins(settings)
        loaded = _mirrored(dsn)
    except (PostgresError, psycopg2.Error) as exc:
        raise BiError(f"cannot reach the warehouse: {str(exc).strip().splitlines()[0]}") from None
    if not loaded:
        if DeltaGold(settings).version("fact_page_view") is None:
            raise BiError(
                f"the warehouse is empty and the lake ({settings.lake_url}) has no gold yet: run `lakehouse run`"
                " (or `make demo`) first"
            )
        say("the warehouse was never loaded: mirroring gold into dw first")
        with writer_lock(settings):
            report = mirror(settings)
        say(f"mirrored {report.rows_out:,} rows in {report.seconds:.1f} s")
    try:
        _connect(dsn, user=BI_LOGIN, password=password).close()
        return dsn, password, stored
    except psycopg2.OperationalError:
        pass  # no such login yet, or another password: set it below
    try:
        ensure_bi_login(roles_dsn, settings)
        _connect(dsn, user=BI_LOGIN, password=password).close()
    except psycopg2.Error as exc:
        where = "LAKEHOUSE_BI_PASSWORD" if stored is None else str(stored)
        raise BiError(
            f"{BI_LOGIN} cannot log in to the warehouse with the password from {where} and it could not be set"
            f" ({str(exc).strip().splitlines()[0]}): create the login (docs/warehouse.md) or set"
            f" LAKEHOUSE_BI_PASSWORD to its password"
        ) from None
    return dsn, password, stored


def _describe(dsn: str) -> str:
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')} (schema {SCHEMA})"


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def available_datasets(dsn: str, password: str) -> set[str]:
    """The DATASETS that exist in dw and that bi_user may read."""
    with contextlib.closing(_connect(dsn, user=BI_LOGIN, password=password)) as conn, conn.cursor() as cur:
        cur.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = any(%s) and has_table_privilege(c.oid, 'select')",
            (SCHEMA, list(DATASETS)),
        )
        return {name for (name,) in cur.fetchall()}


# -- Superset's REST API ---------------------------------------------------------------------------


def rison(value: Any) -> str:
    """`value` in Rison, the encoding of Superset's `q` query parameter."""
    if value is True or value is False:
        return "!t" if value else "!f"
    if value is None:
        return "!n"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(value, list | tuple):
        return "!(" + ",".join(rison(v) for v in value) + ")"
    if isinstance(value, dict):
        return "(" + ",".join(f"{k}:{rison(v)}" for k, v in value.items()) + ")"
    raise TypeError(f"no Rison form for {type(value).__name__}")


class LoginRefused(RuntimeError):
    """Superset refused the admin login."""


class SupersetApi:
    """A session of Superset's REST API as a browser holds it: the login's bearer token, the session cookie, the CSRF
    token and a Referer on every write."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 60):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout)
        got = self.client.post(
            "/api/v1/security/login",
            json={"username": username, "password": password, "provider": "db", "refresh": True},
        )
        if got.status_code == 401:
            self.client.close()
            raise LoginRefused(f"Superset refused the {username} login")
        got.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {got.json()['access_token']}"
        csrf = self.get("/api/v1/security/csrf_token/")["result"]
        self.client.headers.update({"X-CSRFToken": csrf, "Referer": f"{self.base_url}/"})

    def close(self) -> None:
        self.client.close()

    def _checked(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise BiError(
                f"Superset answered {response.request.method} {response.request.url.path} with HTTP"
                f" {response.status_code}: {response.text[:500]}"
            )
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        query = {k: rison(v) for k, v in params.items()}
        return self._checked(self.client.get(path, params=query))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._checked(self.client.post(path, json=body))

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self._checked(self.client.put(path, json=body))

    def find(self, resource: str, **equal: Any) -> list[dict[str, Any]]:
        """The `resource` objects (database, dataset, chart, dashboard) whose columns equal the given values."""
        filters = [{"col": k, "opr": "eq", "value": v} for k, v in equal.items()]
        return list(self.get(f"/api/v1/{resource}/", q={"filters": filters, "page_size": 100})["result"])


@dataclass
class Bootstrapped:
    dashboard_id: int
    charts: dict[str, int]  # chart name -> id, of the charts in CHARTS
    created: list[str]  # what this run created
    skipped: dict[str, str]  # chart name -> why it is not on the dashboard


def bootstrap(api: SupersetApi, uri: str, available: set[str]) -> Bootstrapped:
    """Make Superset's database connection, the datasets, the charts and the dashboard, each looked up by name
    first: a second run creates nothing twice and keeps what people changed or added."""
    created: list[str] = []
    database = {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": uri,
        "expose_in_sqllab": True,
        "allow_dml": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_file_upload": False,
        "allow_run_async": False,
    }
    found = api.find("database", database_name=DATABASE_NAME)
    if found:
        database_id = int(found[0]["id"])
        api.put(f"/api/v1/database/{database_id}", database)  # the password may have changed; DML stays off
    else:
        database_id = int(api.post("/api/v1/database/", database)["id"])
        created.append(f"database {DATABASE_NAME!r}")

    datasets: dict[str, int] = {}
    for table in DATASETS:
        if table not in available:
            continue
        mine = [d for d in api.find("dataset", table_name=table, schema=SCHEMA) if d["database"]["id"] == database_id]
        if mine:
            datasets[table] = int(mine[0]["id"])
            api.put(f"/api/v1/dataset/{datasets[table]}/refresh", {})  # columns the table gained since
        else:
            made = api.post("/api/v1/dataset/", {"database": database_id, "schema": SCHEMA, "table_name": table})
            datasets[table] = int(made["id"])
            created.append(f"dataset {SCHEMA}.{table}")

    dashboard = api.find("dashboard", slug=DASHBOARD_SLUG)
    if dashboard:
        dashboard_id = int(dashboard[0]["id"])
    else:
        body = {"dashboard_title": DASHBOARD_TITLE, "slug": DASHBOARD_SLUG, "published": True}
        dashboard_id = int(api.post("/api/v1/dashboard/", body)["id"])
        created.append(f"dashboard {DASHBOARD_TITLE!r}")

    charts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    new: list[tuple[Chart, int]] = []
    for chart in CHARTS:
        if chart.dataset not in datasets:
            skipped[chart.name] = f"{SCHEMA}.{chart.dataset} is not in the warehouse yet"
            continue
        found = api.find("chart", slice_name=chart.name)
        if found:
            charts[chart.name] = int(found[0]["id"])
            continue
        dataset_id = datasets[chart.dataset]
        body = {
            "slice_name": chart.name,
            "viz_type": chart.viz,
            "datasource_id": dataset_id,
            "datasource_type": "table",
            "params": json.dumps(form_data(chart, dataset_id)),
            "query_context": json.dumps(query_context(chart, dataset_id)),
            "query_context_generation": True,
            "dashboards": [dashboard_id],
        }
        charts[chart.name] = int(api.post("/api/v1/chart/", body)["id"])
        new.append((chart, charts[chart.name]))
        created.append(f"chart {chart.name!r}")
    if not dashboard:  # a new dashboard shows every chart; the layout's charts become the dashboard's
        positions = position_json(layout([(c, charts[c.name]) for c in CHARTS if c.name in charts]))
        body = {"position_json": json.dumps(positions), "json_metadata": json.dumps({"positions": positions})}
        api.put(f"/api/v1/dashboard/{dashboard_id}", body)
    elif new:  # new charts go below what the dashboard shows: people's layout stays
        current = api.get(f"/api/v1/dashboard/{dashboard_id}")["result"].get("position_json")
        positions = position_json(layout(new), json.loads(current) if current else None)
        api.put(f"/api/v1/dashboard/{dashboard_id}", {"position_json": json.dumps(positions)})
    return Bootstrapped(dashboard_id, charts, created, skipped)


# -- the Superset process ----------------------------------------------------------------------------


@dataclass
class Superset:
    """Superset's processes for one data folder: the metadata setup and the web server, each in its own process
    group; `stop()` ends them and whatever they started."""

    settings: Settings
    port: int = 8088
    venv: Path = BI_VENV
    say: Callable[[str], None] = print
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return superset_home(self.settings)

    @property
    def logs(self) -> Path:
        return Path(self.settings.data_dir).resolve() / "logs"

    @property
    def log(self) -> Path:
        return self.logs / "superset.log"

    @property
    def api_url(self) -> str:
        host = connect_host(self.settings.bind)
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Superset's environment: the project's own settings and secrets left out."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "PREFECT_", "SUPERSET_"))}
        env.update(
            SUPERSET_CONFIG_PATH=str(self.home / "superset_config.py"),
            SUPERSET_HOME=str(self.home),
            PYTHONUNBUFFERED="1",
        )
        env.pop("VIRTUAL_ENV", None)
        return env

    def _spawn(self, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                args,
                cwd=self.home,
                env={**self.env(), **(extra_env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE,
                start_new_session=True,
                umask=0o077,
            )
        self.children.append(proc)
        return proc

    def _setup(self, password: str, schema: bool, database: Path, timeout: float = 600) -> None:
        args = [str(self.venv / "bin" / "python"), str(SETUP_SCRIPT)] + (["--schema"] if schema else [])
        proc = self._spawn(args, {"SUPERSET_METADATA_DB": str(database)})
        assert proc.stdin is not None
        proc.stdin.write(password.encode() + b"\n")
        proc.stdin.close()
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BiError(f"Superset's metadata setup took over {timeout:.0f} s; see {self.log}") from None
        self.children.remove(proc)
        if code != 0:
            raise BiError(f"Superset's metadata setup failed (exit {code}): {_tail(self.log)}")

    def prepare(self, version: str, password: str) -> None:
        """Superset's metadata database at `version` with the admin login: migrated and its roles synced once per
        Superset version, on a copy renamed into place (an interrupted setup leaves the last good one)."""
        database = self.home / "superset.db"
        stamp = self.home / "metadata-version"
        if database.exists() and stamp.exists() and stamp.read_text().strip() == version:
            return
        self.say(
            f"preparing Superset's metadata database ({'upgrade' if database.exists() else 'first start'}, about 20-30 s)"
        )
        work = database.with_name("superset.db.new")
        work.unlink(missing_ok=True)
        if database.exists():
            shutil.copy2(database, work)
        self._setup(password, schema=True, database=work)
        os.replace(work, database)
        stamp.write_text(version + "\n")

    def set_admin_password(self, password: str) -> None:
        """Set the admin login's password in the metadata database (the server may be running)."""
        self.say("setting the admin password in Superset (it changed since the last start)")
        self._setup(password, schema=False, database=self.home / "superset.db")

    def serve(self, timeout: float = 180) -> None:
        """Start the web server (gunicorn, one worker with threads) and wait until it answers /health."""
        import httpx

        bind = self.settings.bind
        address = f"[{bind}]:{self.port}" if ":" in bind else f"{bind}:{self.port}"
        # fmt: off
        args = [str(self.venv / "bin" / "gunicorn"), "--bind", address, "--workers", "1", "--worker-class", "gthread",
                "--threads", "8", "--timeout", "120", "--graceful-timeout", "5", "--limit-request-line", "0",
                "--limit-request-field_size", "0", "superset.app:create_app()"]
        # fmt: on
        proc = self._spawn(args)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BiError(f"Superset exited ({proc.returncode}) while starting: {_tail(self.log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BiError(f"Superset did not answer within {timeout:.0f} s; see {self.log}")
            time.sleep(0.5)

    def watch(self, poll: float = 1.0) -> int:
        """Block until Ctrl-C/SIGTERM (0) or until the server exits (1)."""
        while True:
            for proc in self.children:
                if proc.poll() is not None:
                    self.say(f"Superset exited ({proc.returncode}); log {self.log}:\n{_tail(self.log, 5)}")
                    return 1
            time.sleep(poll)

    def stop(self, grace: float = 10) -> None:
        """Stop every process group started here, then any descendant that left its group."""
        import psutil

        descendants: list[psutil.Process] = []
        for proc in self.children:
            with contextlib.suppress(psutil.Error):
                descendants += psutil.Process(proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _, alive = psutil.wait_procs(descendants, timeout=0)
        for leftover in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        self.children.clear()
        _state_file(self.settings).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in text[-lines:])


@contextlib.contextmanager
def _only_one(settings: Settings) -> Iterator[None]:
    """Hold `superset/lock` while Superset serves this data folder: a second `lakehouse bi` on it stops at once."""
    path = secure_dir(superset_home(settings)) / "lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BiError(f"another `lakehouse bi` serves this data folder ({path} is held)") from None
        yield


def _port_busy(settings: Settings, port: int) -> bool:
    return not port_free(port, settings.bind)


def run(settings: Settings, port: int = 8088, say: Callable[[str], None] = print) -> int:
    """Serve Superset for this data folder until Ctrl-C; every process started here is stopped on the way out."""
    superset = Superset(settings, port, say=say)

    def _terminate(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        with _only_one(settings):
            check_bind(settings.bind, login_set(settings), "`lakehouse bi`")
            version = check_environment()
            if _port_busy(settings, port):
                raise BiError(f"port {port} is already in use: stop what listens there, or pass --port")
            dsn, bi_secret, bi_stored = prepare_warehouse(settings, say)
            available = available_datasets(dsn, bi_secret)
            password, stored = admin_password(settings, create=True)
            assert password is not None
            write_config(settings)
            superset.prepare(version, password)
            say(f"starting Superset {version} on {public_url(settings, port, None)} (state in {superset.home})")
            superset.serve()
            try:
                api = SupersetApi(superset.api_url, ADMIN_USER, password)
            except LoginRefused:
                superset.set_admin_password(password)
                api = SupersetApi(superset.api_url, ADMIN_USER, password)
            try:
                done = bootstrap(api, sqlalchemy_uri(dsn, BI_LOGIN, bi_secret), available)
            finally:
                api.close()
            for what in done.created:
                say(f"created {what}")
            for name, why in done.skipped.items():
                say(f"not on the dashboard: {name!r} ({why})")
            url = public_url(settings, port, None)
            dashboard = f"{url}/superset/dashboard/{DASHBOARD_SLUG}/"
            _state_file(settings).write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "url": url,
                        "api_url": superset.api_url,
                        "dashboard_id": done.dashboard_id,
                        "dashboard_url": dashboard,
                        "charts": done.charts,
                    },
                    indent=2,
                )
            )
            admin_where = "LAKEHOUSE_ADMIN_PASSWORD" if stored is None else f"{stored} (mode 0600)"
            bi_where = "LAKEHOUSE_BI_PASSWORD" if bi_stored is None else f"{bi_stored} (mode 0600)"
            say(f"Superset        {url}")
            say(f"Dashboard       {dashboard}")
            say(f"Login           user {ADMIN_USER}, password from {admin_where}")
            say(f"Warehouse       {_describe(dsn)} as {BI_LOGIN} (read-only), password from {bi_where}")
            say(f"Logs            {superset.log}")
            say("Ctrl-C stops Superset.")
            code = superset.watch()
    except KeyboardInterrupt:
        code = 0
    except (BiError, BindRefused) as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        if superset.children:
            say("stopping Superset")
        try:
            superset.stop()
        except KeyboardInterrupt:
            superset.stop(grace=0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
