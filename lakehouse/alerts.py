"""Alerts: one JSON POST to LAKEHOUSE_ALERT_WEBHOOK per thing a person needs to know (Slack's incoming webhooks read
its `text`), and the same as a Prefect event for Prefect's automations. Sending never fails what sends it: a few
short attempts, then a warning in the log."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from lakehouse.config import Settings
from lakehouse.expectations import ExpectationFailed
from lakehouse.reports import ExpectationResult, RunReport, TableDrift

log = logging.getLogger(__name__)

KINDS = (
    "run_failed",
    "expectation_failed",
    "expectation_warned",
    "stale",
    "recovered",
    "volume_anomaly",
    "warehouse_drift",
)
ATTEMPTS = 3
TIMEOUT_SECONDS = 5.0
BACKOFF_SECONDS = (0.5, 2.0)  # waits between attempts
EVENT_PREFIX = "lakehouse."  # Prefect event names: lakehouse.<kind>


@dataclass(frozen=True)
class Alert:
    """One alert: its kind, a line for a person, and the fields that apply."""

    kind: str
    text: str
    table: str | None = None
    expectation: str | None = None
    rows_failed: int | None = None
    run_id: str | None = None
    group: str | None = None  # a source group: events or an export's entity
    delivery: str | None = None
    flow: str | None = None
    url: str | None = None  # the Prefect run, when the platform serves one

    def payload(self) -> dict[str, Any]:
        """The JSON body: `kind`, `text`, and the fields that apply."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def send(settings: Settings, alert: Alert) -> bool:
    """Post the alert to the webhook (when one is set) and emit it as a Prefect event (when Prefect is at hand);
    True when the webhook took it. Never raises."""
    assert alert.kind in KINDS, alert.kind
    _emit(alert)
    if settings.alert_webhook is None:
        return False
    url = settings.alert_webhook.get_secret_value()
    for attempt in range(ATTEMPTS):
        try:
            response = httpx.post(url, json=alert.payload(), timeout=TIMEOUT_SECONDS)
            if response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the webhook refuses this alert: another attempt would too
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt + 1 < ATTEMPTS:
            time.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
    log.warning("the alert webhook did not take the %s alert (%s): %s", alert.kind, problem, alert.text)
    return False


def _emit(alert: Alert) -> None:
    """The alert as a Prefect event `lakehouse.<kind>`, when a flow runs or a Prefect API is configured (Prefect is
    imported here, not at the head: it reads its settings when first imported)."""
    if "prefect" not in sys.modules and not os.environ.get("PREFECT_API_URL"):
        return
    try:
        from prefect.context import FlowRunContext
        from prefect.events import emit_event
        from prefect.settings import PREFECT_API_URL

        if FlowRunContext.get() is None and not PREFECT_API_URL.value():
            return
        subject = alert.table or alert.group or alert.flow or "pipeline"
        emit_event(
            event=EVENT_PREFIX + alert.kind,
            resource={"prefect.resource.id": f"lakehouse.{subject}", "prefect.resource.name": subject},
            payload=alert.payload(),
        )
    except Exception as exc:  # an event Prefect cannot take never fails what sends it
        log.warning("the %s alert was not emitted as a Prefect event: %s", alert.kind, exc)


def _cause(error: BaseException | None) -> ExpectationFailed | None:
    """The ExpectationFailed behind a failure, if one is."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ExpectationFailed):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def run_failed(flow: str, error: BaseException | str, run_id: str | None, url: str | None = None) -> Alert:
    """The alert for a failed run: `expectation_failed` when a `fail` rule held its delivery back, else `run_failed`."""
    failed = _cause(error) if isinstance(error, BaseException) else None
    if failed is not None:
        return Alert(
            "expectation_failed",
            f"{flow} failed: expectation {failed.expectation} on {failed.table} failed for {failed.rows_failed:,} of "
            f"{failed.rows_checked:,} rows; nothing after it was published and the delivery stays pending",
            table=failed.table,
            expectation=failed.expectation,
            rows_failed=failed.rows_failed,
            run_id=run_id or failed.run_id,
            flow=flow,
            url=url,
        )
    if isinstance(error, BaseException):
        first = (str(error).strip().splitlines() or [""])[0][:300]
        reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    else:
        reason = (error.strip().splitlines() or ["no reason given"])[0][:300]
    return Alert("run_failed", f"{flow} failed: {reason}", run_id=run_id, flow=flow, url=url)


def warned(result: ExpectationResult, flow: str, url: str | None = None) -> Alert:
    """The alert for a `warn` rule that rows failed."""
    return Alert(
        "expectation_warned",
        f"{result.table_name}: expectation {result.expectation} warned for {result.rows_failed:,} of "
        f"{result.rows_checked:,} rows (kept)",
        table=result.table_name,
        expectation=result.expectation,
        rows_failed=result.rows_failed,
        run_id=result.run_id,
        flow=flow,
        url=url,
    )


def drifted(drift: TableDrift, flow: str, run_id: str | None = None, url: str | None = None) -> Alert:
    """The alert for a `dw` table that differs from its gold table after a mirror."""
    return Alert(
        "warehouse_drift",
        f"dw.{drift.table} differs from gold.{drift.gold_table} ({drift.dw_rows:,} rows against {drift.gold_rows:,}):"
        " `lakehouse run --full-refresh warehouse` rebuilds dw from gold",
        table=f"dw.{drift.table}",
        run_id=run_id,
        flow=flow,
        url=url,
    )


def of_run(run: RunReport, flow: str, run_id: str | None = None, url: str | None = None) -> list[Alert]:
    """What a finished run alerts: each `warn` rule that rows failed, each `dw` table that drifted from gold."""
    found = [warned(r, flow, url) for r in run.expectations if r.action == "warn" and r.outcome == "warned"]
    mirror = run.stage("mirror")
    drift = mirror.details.get("drift", []) if mirror is not None else []
    return found + [drifted(d, flow, run_id, url) for d in drift if isinstance(d, TableDrift) and d.drifted]
