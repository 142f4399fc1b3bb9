"""What every flow shares: the retry policy of its tasks and the run report it publishes."""

from __future__ import annotations

import json
from typing import Any

from prefect import Task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from lakehouse.reports import LockReport, RunReport, StageReport
from lakehouse.runs import is_transient

RETRY_DELAYS = [2, 10, 30]


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


def publish_report(flow: str, reports: list[StageReport], lock: LockReport) -> RunReport:
    """Attach the run's table and markdown artifacts, and return the run's report."""
    run = RunReport(flow, reports, lock)
    create_table_artifact(table=run.summary, key=f"{flow}-report", description=f"{flow}: rows in and out per layer")
    body = json.dumps({k: v for k, v in run.as_dict().items() if k in ("stages", "lock")}, indent=2, default=str)
    create_markdown_artifact(
        markdown=f"# {flow}\n\n```json\n{body}\n```\n",
        key=f"{flow}-details",
        description=f"{flow}: every stage's report",
    )
    return run
