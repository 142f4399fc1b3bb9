"""`lakehouse up` end to end: server, worker, deployments, a full-pipeline run created as the UI does, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from lakehouse.config import PROJECT_ROOT

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"`lakehouse up` exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _screenshot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                     args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.get_by_text("full-pipeline").first.wait_for(timeout=60_000)
        page.get_by_text("mirror-warehouse").first.wait_for(timeout=10_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out), full_page=False)
        browser.close()


@pytest.mark.timeout(1800)
def test_up_runs_full_pipeline_created_through_the_rest_api(settings, pg_dsn, tmp_path):
    from lakehouse.tools.generate import generate

    generate(Path(settings.source_url), seed=5, students=60, events=3000, deliveries=2)
    prefect_port, dashboard_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "lakehouse.cli", "up", "--prefect-port", str(prefect_port),
                               "--dashboard-port", str(dashboard_port)], cwd=PROJECT_ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{prefect_port}/api"
    state_file = Path(settings.data_dir) / "prefect" / "up.json"
    try:
        state = _wait(lambda: state_file.exists() and json.loads(state_file.read_text()), 300, "the platform", up, log)
        children = [psutil.Process(pid) for pid in state["children"].values()]
        assert set(state["children"]) == {"prefect-server", "prefect-worker", "dashboard"}
        assert f"http://127.0.0.1:{prefect_port}" in log.read_text()

        deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
        assert {"full-pipeline", "land-bronze", "refine", "mirror-warehouse", "maintenance"} <= \
            {d["name"] for d in deployments}
        limit = httpx.get(f"{api}/v2/concurrency_limits/lakehouse-writer")
        assert limit.status_code == 200 and limit.json()["limit"] == 1

        def ready():
            listed = httpx.post(f"{api}/deployments/filter", json={}).json()
            return all(d["status"] == "READY" for d in listed)

        _wait(ready, 120, "the worker to serve every deployment", up, log)
        shot = tmp_path / "prefect-ui.png"
        _screenshot(f"http://127.0.0.1:{prefect_port}/deployments", shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("LAKEHOUSE_UPDATE_SCREENSHOT"):
            shutil.copy(shot, PROJECT_ROOT / "docs" / "prefect-ui.png")

        # what the UI's "Quick run" sends: no parameters typed
        deployment = httpx.get(f"{api}/deployments/name/full-pipeline/full-pipeline").json()
        run = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                         json={"state": {"type": "SCHEDULED"}, "parameters": {}})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]

        def finished():
            flow_run = httpx.get(f"{api}/flow_runs/{run_id}").json()
            return flow_run if flow_run["state_type"] in TERMINAL else None

        flow_run = _wait(finished, 1200, "the full-pipeline run", up, log)
        assert flow_run["state_type"] == "COMPLETED", (flow_run["state"], log.read_text()[-2000:])
        artifacts = httpx.post(f"{api}/artifacts/filter",
                               json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
        assert "full-pipeline-report" in {a["key"] for a in artifacts}
        assert Path(settings.lake_url, "gold").is_dir()

        dashboard = _wait(lambda: _answers(f"http://127.0.0.1:{dashboard_port}"), 120, "the dashboard", up, log)
        assert dashboard.status_code == 200

    finally:
        os.kill(up.pid, signal.SIGINT)  # what Ctrl-C sends
        code = up.wait(timeout=90)
    assert code == 0, log.read_text()[-2000:]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert not state_file.exists()


def _answers(url: str):
    try:
        response = httpx.get(url, timeout=10, follow_redirects=True)
        return response if response.status_code < 500 else None
    except httpx.HTTPError:
        return None
