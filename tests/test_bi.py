"""`lakehouse bi` end to end: Superset over a fresh warehouse, driven through its REST API as a browser would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import psycopg2
import pytest

from lakehouse import bi, config
from lakehouse.bi import CHARTS, DASHBOARD_SLUG, DATASETS, rison, sqlalchemy_uri
from lakehouse.config import PROJECT_ROOT
from lakehouse.security import free_port
from lakehouse.tools.generate import generate
from tests.builders import cli
from tests.warehouse_data import sample_gold, write_delta

pytestmark = pytest.mark.bi

# Each case-study chart and the same question asked of gold with `lakehouse query` (columns named as the chart's).
CASE_STUDY = {
    "Foreign countries with over 100 page views, November 2017": (
        'select country, page_views as "page views" from gold.mart_country_access'
        " where country <> 'br' and month = date '2017-11-01' and page_views > 100"
    ),
    "Page views and students by user type": (
        'select user_type, page_views as "page views", students from gold.mart_users_by_type'
    ),
    "Students per state": "select state, students from gold.mart_state_activity",
    "Page views per state": 'select state, page_views as "page views" from gold.mart_state_activity',
    "Daily page views by client type": (
        'select event_date, client_type, page_views as "page views" from gold.mart_daily_activity'
    ),
}


def _rows(records: list[dict], columns: list[str]) -> list[tuple]:
    """Records as comparable rows: days as ISO dates (a chart's time axis is epoch milliseconds), numbers as ints."""

    def value(v):
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 10**11:  # epoch ms of a day
            return datetime.fromtimestamp(v / 1000, UTC).date().isoformat()
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return sorted((tuple(value(r[c]) for c in columns) for r in records), key=str)


@pytest.fixture
def lake_run(settings, pg_dsn):
    """A small generated source through `lakehouse run`: the warehouse the mirror makes of it."""
    generate(Path(settings.source_url), seed=7, students=300, events=15_000, deliveries=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = cli("run", env=env, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return env


@pytest.fixture(scope="module")
def bi_env():
    """The Superset environment, installed once: make's stamp makes this a no-op when it is installed."""
    subprocess.run(["make", "--no-print-directory", ".venv-bi/.synced"], cwd=PROJECT_ROOT, check=True, timeout=1800)


def _start(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lakehouse.cli", "bi", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_ready(state: Path, proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            return json.loads(state.read_text())
        if proc.poll() is not None:
            pytest.fail(f"`lakehouse bi` exited ({proc.returncode}) before it was ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"`lakehouse bi` was not ready within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Ctrl-C, as in a terminal: Superset and everything it started are gone when the command returns."""
    tree = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    os.kill(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout)
    finally:
        leftover = [pid for pid in tree if _alive(pid)]
        for pid in leftover:  # a failed stop leaves nothing running behind the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert len(tree) > 1  # gunicorn's master and worker were there
    assert code == 0 and not leftover, leftover


def _browser(url: str, password: str) -> httpx.Client:
    """A REST session as Superset's frontend holds it: the login's token, the session cookie, CSRF token, Referer."""
    client = httpx.Client(base_url=url, timeout=60)
    got = client.post(
        "/api/v1/security/login", json={"username": "admin", "password": password, "provider": "db", "refresh": True}
    )
    assert got.status_code == 200, got.text
    client.headers["Authorization"] = f"Bearer {got.json()['access_token']}"
    csrf = client.get("/api/v1/security/csrf_token/").json()["result"]
    client.headers.update({"X-CSRFToken": csrf, "Referer": f"{url}/"})
    return client


def _count(client: httpx.Client, resource: str) -> int:
    got = client.get(f"/api/v1/{resource}/", params={"q": "(page_size:100)"})
    assert got.status_code == 200, got.text
    return got.json()["count"]


def _sql_lab(client: httpx.Client, database_id: int, sql: str) -> httpx.Response:
    return client.post(
        "/api/v1/sqllab/execute/",
        json={
            "database_id": database_id,
            "sql": sql,
            "schema": "dw",
            "runAsync": False,
            "client_id": uuid.uuid4().hex[:10],
        },
    )


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_bi_serves_the_case_study_dashboard_as_bi_user(bi_env, lake_run, settings, pg_dsn, tmp_path):
    """`lakehouse bi` on the warehouse `lakehouse run` made of a generated source: the dashboard and its charts, each
    chart's rows, the case study's charts answering what `lakehouse query` answers on gold, the connection as bi_user
    with writes refused, generated secrets 0600 and never printed; Ctrl-C stops everything; a second start keeps what
    a person made, creates nothing twice and takes a changed admin password."""
    env = {k: v for k, v in lake_run.items() if k not in ("LAKEHOUSE_ADMIN_PASSWORD", "LAKEHOUSE_BI_PASSWORD")}
    data = Path(settings.data_dir)
    state, log, port = data / "superset" / "running.json", tmp_path / "bi.log", free_port()
    url = f"http://127.0.0.1:{port}"

    proc = _start(port, env, log)
    try:
        ready = _wait_ready(state, proc, log, 420)
        printed = log.read_text()
        password = (data / "admin-password").read_text().strip()
        bi_password = (data / "bi-password").read_text().strip()
        for secret in (data / "admin-password", data / "bi-password", data / "superset" / "secret-key"):
            assert secret.stat().st_mode & 0o777 == 0o600
            assert secret.read_text().strip() not in printed
        assert (data / "superset" / "superset_config.py").stat().st_mode & 0o777 == 0o600
        assert url in printed and str(data / "admin-password") in printed

        assert httpx.get(f"{url}/api/v1/dashboard/", timeout=30).status_code == 401
        client = _browser(url, password)
        dashboard = client.get(f"/api/v1/dashboard/{DASHBOARD_SLUG}").json()["result"]
        assert dashboard["id"] == ready["dashboard_id"]
        charts = client.get(f"/api/v1/dashboard/{dashboard['id']}/charts").json()["result"]
        assert {c["slice_name"] for c in charts} == {c.name for c in CHARTS}
        layout = json.loads(dashboard["position_json"]).values()
        placed = {v["meta"]["chartId"] for v in layout if isinstance(v, dict) and v.get("type") == "CHART"}
        assert {c["id"] for c in charts} <= placed
        answered = {}
        for chart in charts:
            got = client.get(f"/api/v1/chart/{chart['id']}/data/")
            assert got.status_code == 200, (chart["slice_name"], got.text[:500])
            assert got.json()["result"][0]["rowcount"] > 0, chart["slice_name"]
            answered[chart["slice_name"]] = got.json()["result"][0]["data"]
        for name, sql in CASE_STUDY.items():  # the same numbers as gold's, for the same question
            asked = cli("query", "--format", "json", sql, env=lake_run, timeout=300)
            assert asked.returncode == 0, asked.stderr[-2000:]
            expected = json.loads(asked.stdout)
            columns = list(expected[0])
            assert _rows(answered[name], columns) == _rows(expected, columns), name

        (database,) = client.get("/api/v1/database/").json()["result"]
        connection = client.get(f"/api/v1/database/{database['id']}/connection").json()["result"]
        assert connection["sqlalchemy_uri"].startswith("postgresql+psycopg2://bi_user:")
        assert bi_password not in connection["sqlalchemy_uri"]
        assert connection["allow_dml"] is False and connection["expose_in_sqllab"] is True
        who = _sql_lab(client, database["id"], "select user")
        assert who.status_code == 200 and who.json()["data"] == [{"user": "bi_user"}], who.text[:500]
        for write in ("create table dw.x(i int)", "insert into dw.fact_session (student_id) values ('x')"):
            refused = _sql_lab(client, database["id"], write)
            assert refused.status_code >= 400 and "DML_NOT_ALLOWED" in refused.text, refused.text[:500]
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute("select to_regclass('dw.x'), (select count(*) from dw.fact_session where student_id = 'x')")
            assert cur.fetchone() == (None, 0)

        # a person's chart on one of the datasets
        datasets = client.get("/api/v1/dataset/", params={"q": "(page_size:100)"}).json()["result"]
        assert {d["table_name"] for d in datasets} == set(DATASETS)
        mine = client.post(
            "/api/v1/chart/",
            json={
                "slice_name": "A person's chart",
                "viz_type": "table",
                "datasource_id": datasets[0]["id"],
                "datasource_type": "table",
                "params": json.dumps({"query_mode": "raw", "all_columns": [], "row_limit": 10}),
            },
        )
        assert mine.status_code == 201, mine.text
        counts = {r: _count(client, r) for r in ("database", "dataset", "chart", "dashboard")}
        client.close()
    finally:
        if proc.poll() is None:
            _stop(proc)
    assert not state.exists()

    env["LAKEHOUSE_ADMIN_PASSWORD"] = "another-Admin-password-4-bi"  # changed since the first start
    started = time.monotonic()
    proc = _start(port, env, log)
    try:
        again = _wait_ready(state, proc, log, 300)
        second = time.monotonic() - started
        assert again["charts"] == ready["charts"]
        assert "created" not in log.read_text().split("Ctrl-C stops Superset.")[1]
        client = _browser(url, env["LAKEHOUSE_ADMIN_PASSWORD"])
        assert {r: _count(client, r) for r in ("database", "dataset", "chart", "dashboard")} == counts
        found = client.get(f"/api/v1/chart/{mine.json()['id']}").json()["result"]
        assert found["slice_name"] == "A person's chart"
        client.close()
    finally:
        if proc.poll() is None:
            _stop(proc)
    print(f"second start ready in {second:.1f} s")


def test_an_empty_warehouse_is_mirrored_from_gold_first(settings, pg_dsn, spark):
    """dw never loaded and gold in the lake: `lakehouse bi` mirrors gold, then bi_user logs in with a generated
    password kept 0600; without gold it names the command to run."""
    said: list[str] = []
    with pytest.raises(bi.BiError, match="has no gold yet: run `lakehouse run`"):
        bi.prepare_warehouse(config.get_settings(), said.append)
    write_delta(spark, config.get_settings().lake_url, sample_gold())
    dsn, password, stored = bi.prepare_warehouse(config.get_settings(), said.append)
    assert stored == Path(settings.data_dir).resolve() / "bi-password" and stored.stat().st_mode & 0o777 == 0o600
    assert any("mirroring gold" in line for line in said)
    with psycopg2.connect(psycopg2.extensions.make_dsn(dsn, user="bi_user", password=password)) as conn:
        with conn.cursor() as cur:
            cur.execute("select user, count(*) > 0 from dw.fact_page_view_daily")
            assert cur.fetchone() == ("bi_user", True)
    assert bi.available_datasets(dsn, password) >= {"fact_page_view_daily", "fact_session"}
    assert bi.prepare_warehouse(config.get_settings(), said.append)[1] == password  # kept; no second mirror
    assert sum("mirroring gold" in line for line in said) == 1


def test_chart_specs_lay_out_and_query_what_they_name():
    """Every chart names a dataset of DATASETS; rows hold at most 12 columns; the saved query groups by the x axis
    (time-grained when temporal) and the series, with the filters as WHERE and HAVING."""
    assert {c.dataset for c in bi.CHARTS} <= set(bi.DATASETS)
    assert len({c.name for c in bi.CHARTS}) == len(bi.CHARTS)
    rows = bi.layout([(c, i) for i, c in enumerate(bi.CHARTS)])
    assert all(sum(c.width for c, _ in row) <= 12 for row in rows) and sum(map(len, rows)) == len(bi.CHARTS)
    positions = bi.position_json(rows)
    charts = [v["meta"]["chartId"] for v in positions.values() if isinstance(v, dict) and v.get("type") == "CHART"]
    assert sorted(charts) == list(range(len(bi.CHARTS)))
    countries = bi.query_context(bi.CHARTS[0], 7)
    (query,) = countries["queries"]
    assert query["columns"] == ["country"] and query["extras"]["having"] == "SUM(page_views) > 100"
    assert "month = '2017-11-01'" in query["extras"]["where"] and countries["datasource"] == {"id": 7, "type": "table"}
    daily = next(c for c in bi.CHARTS if c.dataset == "mart_daily_activity")
    axis, series = bi.query_context(daily, 1)["queries"][0]["columns"]
    assert axis["timeGrain"] == "P1D" and axis["sqlExpression"] == "event_date" and series == "client_type"


def test_sqlalchemy_uri_is_bi_user_on_the_warehouse_of_the_dsn():
    uri = sqlalchemy_uri("postgresql://owner:secret@127.0.0.1:5433/lakehouse?sslmode=prefer", "bi_user", "p@ss/w:rd")
    assert uri == "postgresql+psycopg2://bi_user:p%40ss%2Fw%3Ard@127.0.0.1:5433/lakehouse?sslmode=prefer"
    assert sqlalchemy_uri("host=/run/pg dbname=dw user=x", "bi_user", "pw") == (
        "postgresql+psycopg2://bi_user:pw@/dw?host=%2Frun%2Fpg"
    )
    assert (
        rison({"filters": [{"col": "slug", "value": "it's!"}], "n": 1})
        == "(filters:!((col:'slug',value:'it!'s!!')),n:1)"
    )


def test_refuses_to_listen_beyond_loopback_without_a_login_or_without_its_environment(settings, tmp_path):
    said: list[str] = []
    wide = settings.model_copy(update={"bind": "0.0.0.0"})
    assert bi.run(wide, free_port(), said.append) == 1
    assert "`lakehouse bi` would listen on 0.0.0.0" in said[0] and "LAKEHOUSE_ADMIN_PASSWORD" in said[0]
    with pytest.raises(bi.BiError, match="run `make bi`"):
        bi.check_environment(tmp_path / "no-venv")
