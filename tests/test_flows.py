"""Prefect flows: entrypoints, retry policy, a real pipeline run under prefect_test_harness, two concurrent runs."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lakehouse.config import PROJECT_ROOT

# the deployments README.md names
DOCUMENTED_DEPLOYMENTS = {"full-pipeline", "land-bronze", "refine", "mirror-warehouse", "maintenance", "checks"}


def _deployments() -> list[dict]:
    return yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]


def _source(settings, deliveries: int = 2) -> Path:
    from lakehouse.tools.generate import generate

    generate(Path(settings.source_url), seed=3, students=60, events=3000, deliveries=deliveries)
    return Path(settings.source_url)


def _delta_commits(lake: str) -> dict[str, int]:
    """Commit files per Delta table of a local lake."""
    return {
        str(log.parent.relative_to(lake)): len(list(log.glob("*.json"))) for log in Path(lake).glob("*/*/_delta_log")
    }


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# -- prefect.yaml -----------------------------------------------------------------------------


def test_every_entrypoint_imports_and_needs_no_parameters():
    from prefect.flows import load_flow_from_entrypoint

    deployments = _deployments()
    assert DOCUMENTED_DEPLOYMENTS <= {d["name"] for d in deployments}
    for deployment in deployments:
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / deployment["entrypoint"]))
        missing = [p.name for p in inspect.signature(flow.fn).parameters.values() if p.default is p.empty]
        assert not missing, f"{deployment['name']}: parameters without default {missing}"
        assert deployment["work_pool"]["name"] == "lakehouse"
    crons = {d["name"]: [s["cron"] for s in d.get("schedules", []) if "cron" in s] for d in deployments}
    assert crons["full-pipeline"] == ["0 6 * * *"]  # daily
    assert crons["maintenance"] == ["0 3 * * 0"]  # weekly
    checks = next(d for d in deployments if d["name"] == "checks")
    assert [s["interval"] for s in checks["schedules"]] == [900]  # every 15 minutes


# -- retry policy -----------------------------------------------------------------------------


def test_transient_failures_are_told_from_data_errors():
    import psycopg2
    from py4j.protocol import Py4JNetworkError

    from lakehouse.runs import is_transient

    for exc in (
        ConnectionError("reset"),
        TimeoutError(),
        OSError("EIO"),
        psycopg2.OperationalError("refused"),
        Py4JNetworkError("gateway"),
    ):
        assert is_transient(exc), exc
    for exc in (
        ValueError("bad row"),
        KeyError("col"),
        FileNotFoundError("nope"),
        PermissionError("ro"),
        ZeroDivisionError(),
    ):
        assert not is_transient(exc), exc
    try:
        try:
            raise ConnectionResetError("peer")
        except ConnectionResetError as cause:
            raise RuntimeError("write failed") from cause
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


@pytest.mark.e2e
def test_retries_only_transient_failures_under_prefect(harness, settings):
    from prefect import flow, task

    from flows.common import TASK_OPTIONS
    from lakehouse.runs import inject_transient

    attempts = {"data": 0, "net": 0}

    @task(**TASK_OPTIONS)
    def data_error():
        attempts["data"] += 1
        raise ValueError("a data error")

    @task(**TASK_OPTIONS)
    def flaky():
        attempts["net"] += 1
        inject_transient("flaky", settings)
        return "ok"

    @flow
    def probe():
        return flaky(), data_error(return_state=True)

    os.environ["LAKEHOUSE_TRANSIENT_FAIL"] = "flaky:1"
    try:
        result, data_state = probe()
    finally:
        del os.environ["LAKEHOUSE_TRANSIENT_FAIL"]
    assert result == "ok" and attempts["net"] == 2
    assert data_state.is_failed() and attempts["data"] == 1


@pytest.mark.e2e
def test_maintenance_refuses_a_retention_that_breaks_time_travel(harness, settings):
    from flows.maintenance import maintenance
    from lakehouse.maintenance import min_retain_hours

    assert min_retain_hours() == 7 * 24
    state = maintenance(retain_hours=1, return_state=True)
    assert state.is_failed()
    assert "would break time travel" in str(state.result(raise_on_failure=False))


@pytest.mark.e2e
def test_a_warehouse_that_cannot_work_is_said_before_any_pipeline_work(harness, settings, monkeypatch):
    from flows.pipeline import full_pipeline
    from lakehouse import pgserver

    _source(settings, deliveries=1)

    def missing():
        raise pgserver.PostgresError(pgserver.INSTALL_HINT)

    monkeypatch.setattr(pgserver, "find_bindir", missing)
    state = full_pipeline(return_state=True)
    assert state.is_failed()
    assert str(state.result(raise_on_failure=False)) == pgserver.INSTALL_HINT
    assert not any(p.is_file() for p in Path(settings.lake_url).rglob("*")), "nothing was landed"


# -- the real pipeline --------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_full_pipeline_retries_a_transient_failure_and_reports(harness, spark, settings, pg_dsn, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import full_pipeline, refine

    _source(settings)
    monkeypatch.setenv("LAKEHOUSE_TRANSIENT_FAIL", "bronze:1")
    state = full_pipeline(return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert (settings.data_dir / "faults" / "transient-bronze.count").read_text() == "1"
    rows = {r["stage"]: r for r in report.summary}
    assert list(rows) == ["land", "bronze", "silver", "gold", "mirror"]
    assert rows["land"]["files"] > 0 and rows["bronze"]["rows out"] > 0 and rows["mirror"]["rows out"] > 0
    assert rows["land"]["deliveries"] == rows["bronze"]["deliveries"] == rows["mirror"]["deliveries"] == 2
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["full-pipeline-report"]))
        )
    assert artifacts and artifacts[0].type == "table"

    before = _delta_commits(settings.lake_url)
    again = full_pipeline(return_state=True)
    assert again.is_completed()
    assert _delta_commits(settings.lake_url) == before, "a run with nothing new made a Delta commit"

    # the UI's "full refresh of a layer": gold is rebuilt (a commit per table; its checks recorded), silver is left
    # alone
    rebuilt = refine(full_refresh="gold", return_state=True)
    assert rebuilt.is_completed(), rebuilt.message
    after = _delta_commits(settings.lake_url)
    assert {t for t in after if after[t] != before[t]} == {
        *(t for t in before if t.startswith("gold/")),
        "quality/expectation_results",
    }
    assert all(after[t] == before[t] + 1 for t in before if t.startswith("gold/"))


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_two_concurrent_runs_serialize(settings, pg_dsn, tmp_path):
    _source(settings, deliveries=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "lakehouse.cli", "run", "--report", str(tmp_path / f"r{i}.json")],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [run.communicate(timeout=1500)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-2000:]
    locks = sorted(
        (json.loads((tmp_path / f"r{i}.json").read_text())["lock"] for i in range(2)),
        key=lambda lock: lock["acquired_at"],
    )
    assert locks[0]["released_at"] <= locks[1]["acquired_at"], locks
    assert locks[1]["waited_seconds"] > 0
