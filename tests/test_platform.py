"""`lakehouse up` end to end: server, worker, deployments, a full-pipeline run created as the UI does, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import psycopg2.extensions
import pytest

from lakehouse.config import PROJECT_ROOT
from lakehouse.security import free_port
from tests.builders import cli

pytestmark = pytest.mark.e2e


# fmt: off
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# fmt: on
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"`lakehouse up` exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:] if log else ''}"
            )
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _screenshot(url: str, credentials: str, out: Path) -> None:
    """Open the Prefect UI in Chromium: it asks for the login first; then the deployments show."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        login = page.locator("input[type=password]")
        login.wait_for(timeout=60_000)
        assert page.get_by_text("full-pipeline").count() == 0
        login.fill(credentials)
        login.press("Enter")
        page.get_by_text("full-pipeline").first.wait_for(timeout=60_000)
        page.get_by_text("mirror-warehouse").first.wait_for(timeout=10_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out), full_page=False)
        browser.close()


SECRETS = {
    "LAKEHOUSE_BI_PASSWORD": "bi-Pass-4-platform-test",
    "LAKEHOUSE_SPARK_CONF": '{"spark.hadoop.fs.s3a.secret.key": "spark-Secret-4-platform-test"}',
}


@pytest.mark.timeout(1800)
def test_up_runs_full_pipeline_created_through_the_rest_api(settings, pg_dsn, tmp_path):
    """`lakehouse up` behind its login: the API answers 401 without it, CSRF and CORS are on, the UI asks for the
    login, the worker's flow runs and `lakehouse run` pass it, the dashboard asks for it; no secret reaches the
    configuration shown, the run's artifacts or any log."""
    from lakehouse.platform import api_session
    from lakehouse.tools.generate import generate

    generate(Path(settings.source_url), seed=5, students=60, events=3000, deliveries=2)
    prefect_port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "LAKEHOUSE_ADMIN_PASSWORD"}
    env.update(SECRETS)
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lakehouse.cli",
                "up",
                "--prefect-port",
                str(prefect_port),
                "--dashboard-port",
                str(dashboard_port),
                "--spark-port",
                str(free_port()),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui, api = f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{prefect_port}/api"
    state_file = Path(settings.data_dir) / "prefect" / "up.json"
    password_file = Path(settings.data_dir) / "admin-password"
    try:
        state = _wait(lambda: state_file.exists() and json.loads(state_file.read_text()), 300, "the platform", up, log)
        children = [psutil.Process(pid) for pid in state["children"].values()]
        assert set(state["children"]) == {"prefect-server", "spark-connect", "prefect-worker", "dashboard"}
        spark_token = (Path(settings.data_dir) / "prefect" / "spark-connect.token").read_text()
        assert ui in log.read_text()

        # the generated password: stored 0600 in a 0700 data folder, its path printed, never the password
        password = password_file.read_text().strip()
        credentials = f"admin:{password}"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600 and len(password) >= 24
        assert stat.S_IMODE(Path(settings.data_dir).stat().st_mode) == 0o700
        assert str(password_file) in log.read_text() and password not in log.read_text()

        # Prefect: 401 without the login or with a wrong one, 403 for a change without a CSRF token
        for auth in (None, ("admin", "wrong"), ("intruder", password)):
            assert httpx.get(f"{api}/admin/version", auth=auth).status_code == 401
            assert httpx.post(f"{api}/deployments/filter", json={}, auth=auth).status_code == 401
        assert httpx.get(f"{api}/admin/version", auth=("admin", password)).status_code == 200
        assert httpx.post(f"{api}/deployments/filter", json={}, auth=("admin", password)).status_code == 403
        settings_seen = httpx.get(f"{ui}/ui-settings").json()
        assert settings_seen["auth"] == "BASIC" and settings_seen["csrf_enabled"] is True
        # CORS: the UI's own origin only
        for origin, allowed in ((ui, True), ("http://evil.example", False)):
            preflight = httpx.options(
                f"{api}/deployments/filter",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed, preflight.headers

        api_client = api_session(api, credentials)
        deployments = api_client.post("/deployments/filter", json={}).json()
        assert {"full-pipeline", "land-bronze", "refine", "mirror-warehouse", "maintenance"} <= {
            d["name"] for d in deployments
        }
        limit = api_client.get("/v2/concurrency_limits/lakehouse-writer")
        assert limit.status_code == 200 and limit.json()["limit"] == 1

        def ready():
            listed = api_client.post("/deployments/filter", json={}).json()
            return all(d["status"] == "READY" for d in listed)

        _wait(ready, 120, "the worker to serve every deployment", up, log)
        shot = tmp_path / "prefect-ui.png"
        _screenshot(f"{ui}/deployments", credentials, shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("LAKEHOUSE_UPDATE_SCREENSHOT"):
            shutil.copy(shot, PROJECT_ROOT / "docs" / "prefect-ui.png")

        # what the UI's "Quick run" sends: no parameters typed; the worker's flow run reports with the login
        deployment = api_client.get("/deployments/name/full-pipeline/full-pipeline").json()
        run = api_client.post(
            f"/deployments/{deployment['id']}/create_flow_run", json={"state": {"type": "SCHEDULED"}, "parameters": {}}
        )
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]

        def finished(flow_run_id):
            flow_run = api_client.get(f"/flow_runs/{flow_run_id}").json()
            return flow_run if flow_run["state_type"] in TERMINAL else None

        flow_run = _wait(lambda: finished(run_id), 1200, "the full-pipeline run", up, log)
        assert flow_run["state_type"] == "COMPLETED", (flow_run["state"], log.read_text()[-2000:])
        assert Path(settings.lake_url, "gold").is_dir()

        # `lakehouse run` talks to the running platform with the stored login; a wrong password is one line
        cli_env = {k: v for k, v in env.items() if k != "LAKEHOUSE_ADMIN_PASSWORD"}
        wrong = cli("run", env={**cli_env, "LAKEHOUSE_ADMIN_PASSWORD": "wrong"}, timeout=300)
        assert wrong.returncode != 0 and "refused the admin login" in wrong.stderr, wrong.stderr[-2000:]
        again = cli("run", env=cli_env, timeout=900)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        # both runs used the platform's warm Spark: neither started a JVM of its own (its console log would be here)
        assert not (Path(settings.data_dir) / "logs" / "spark.log").exists()
        runs = api_client.post(
            "/flow_runs/filter",
            json={
                "flows": {"name": {"any_": ["full-pipeline"]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            },
        )
        assert len(runs.json()) == 2, runs.text

        # the dashboard: nothing before the login page; the same login opens it
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        _wait(lambda: _answers(dashboard), 120, "the dashboard", up, log)
        first = httpx.get(dashboard, follow_redirects=False)
        assert first.status_code == 302 and "/login" in first.headers["location"]
        entered = httpx.post(
            f"{dashboard}/login", data={"username": "admin", "password": password}, follow_redirects=False
        )
        assert entered.status_code == 302 and "user" in entered.cookies

        # no secret in the configuration shown, the runs' artifacts and logs, or the platform's log files
        artifacts = api_client.post("/artifacts/filter", json={}).json()
        assert {"full-pipeline-report", "full-pipeline-details"} <= {a["key"] for a in artifacts}
        logs = api_client.post("/logs/filter", json={"limit": 200}).json()
        assert logs, "the runs logged nothing?"
        shown = cli("config", env=cli_env, timeout=120).stdout
        texts = {
            "lakehouse config": shown,
            "artifacts": json.dumps(artifacts),
            "run logs": json.dumps(logs),
            "up output": log.read_text(),
            "lakehouse run": again.stdout + again.stderr,
        }
        texts.update({str(p): p.read_text(errors="replace") for p in (Path(settings.data_dir) / "logs").glob("*.log")})
        texts["last run"] = (Path(settings.data_dir) / "last-run.json").read_text()
        secrets = [
            password,
            spark_token,
            "bi-Pass-4-platform-test",
            "spark-Secret-4-platform-test",
            psycopg2.extensions.parse_dsn(pg_dsn)["password"],
        ]
        leaks = [(where, secret[:4]) for where, text in texts.items() for secret in secrets if secret in text]
        assert not leaks, f"secrets found in: {leaks}"
        api_client.close()

    finally:
        os.kill(up.pid, signal.SIGINT)  # what Ctrl-C sends
        code = up.wait(timeout=90)
    assert code == 0, log.read_text()[-2000:]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert not state_file.exists()


def test_up_refuses_to_listen_beyond_loopback_without_a_password(settings, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "LAKEHOUSE_ADMIN_PASSWORD"}
    env["LAKEHOUSE_BIND"] = "0.0.0.0"
    done = cli("up", "--prefect-port", str(free_port()), "--dashboard-port", str(free_port()), env=env, timeout=120)
    assert done.returncode == 1
    said = " ".join(done.stdout.split())
    assert "beyond this machine" in said and "LAKEHOUSE_ADMIN_PASSWORD" in said, said
    assert not (Path(settings.data_dir) / "admin-password").exists()
    assert not (Path(settings.data_dir) / "logs").exists(), "nothing was started"


def _answers(url: str):
    try:
        response = httpx.get(url, timeout=10, follow_redirects=True)
        return response if response.status_code < 500 else None
    except httpx.HTTPError:
        return None
