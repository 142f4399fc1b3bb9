"""What every flow shares: the retry policy of its tasks, the alert a failed run sends, and the run report it
publishes."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from prefect import Flow, Task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.runtime import flow_run
from prefect.states import State

from lakehouse import alerts
from lakehouse.reports import LockReport, RunReport, StageReport
from lakehouse.runs import is_transient, settings_for

RETRY_DELAYS = [2, 10, 30]
log = logging.getLogger(__name__)


def retry_if_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only transient failures."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


TASK_OPTIONS: dict[str, Any] = dict(
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)


def run_url(run_id: object | None = None) -> str | None:
    """The Prefect UI's page of the flow run, when the platform (`make up`) serves one."""
    ui = os.environ.get("PREFECT_UI_URL")
    run_id = run_id or flow_run.id
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui and run_id else None


def alert_failed_run(flow: Flow[Any, Any], run: FlowRun, state: State[Any]) -> None:
    """Flow hook (failed or crashed): one alert saying so and why: `expectation_failed` when a `fail` rule held the
    delivery back, else `run_failed`."""
    try:
        error: BaseException | str = state.result(raise_on_failure=False)
    except Exception as unreadable:  # a crashed run may hold no result
        error = state.message or str(unreadable)
    if not isinstance(error, BaseException):
        error = state.message or "no reason given"
    alerts.send(settings_for(), alerts.run_failed(flow.name, error, str(run.id), run_url(run.id)))


# every flow of the project alerts when a run of it fails
FLOW_HOOKS: dict[str, Any] = dict(on_failure=[alert_failed_run], on_crashed=[alert_failed_run])


def publish_report(flow: str, reports: list[StageReport], lock: LockReport) -> RunReport:
    """Attach the run's table and markdown artifacts (the expectations' results too), alert on `warn` rules that rows
    failed, and return the run's report."""
    run = RunReport(flow, reports, lock)
    create_table_artifact(table=run.summary, key=f"{flow}-report", description=f"{flow}: rows in and out per layer")
    body = json.dumps({k: v for k, v in run.as_dict().items() if k in ("stages", "lock")}, indent=2, default=str)
    create_markdown_artifact(
        markdown=f"# {flow}\n\n```json\n{body}\n```\n",
        key=f"{flow}-details",
        description=f"{flow}: every stage's report",
    )
    if run.expectations:
        create_table_artifact(
            table=[dataclasses.asdict(r) for r in run.expectations],
            key=f"{flow}-expectations",
            description=f"{flow}: what every expectation found in the rows written",
        )
    settings = settings_for()
    for alert in alerts.of_run(run, flow, str(flow_run.id) if flow_run.id else None, run_url()):
        alerts.send(settings, alert)
    return run
