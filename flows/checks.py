"""The checks flow: freshness and volume of the source groups (`lakehouse checks`), every 15 minutes under `make up`."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.common import FLOW_HOOKS
from lakehouse import freshness
from lakehouse.runs import settings_for


@flow(name="checks", log_prints=True, **FLOW_HOOKS)
def checks() -> freshness.CheckReport:
    """Freshness of each source group against the SLA and the volume of their latest deliveries, from the landing
    ledger (no Spark); alerts once when a group turns stale, recovers, or delivers an anomalous volume. A stale group
    does not fail the run: the alert says it once, a failing run every 15 minutes would not."""
    report = freshness.check(settings_for())
    logger = get_run_logger()
    for group in report.groups:
        if group.stale or group.anomaly:
            logger.warning("%s: %s, volume %s", group.group, "stale" if group.stale else "fresh", group.volume)
    for alert in report.alerts:
        logger.info("alert %s: %s", alert.kind, alert.text)
    create_table_artifact(
        table=report.rows(),
        key="checks",
        description=f"freshness (SLA {report.sla}) and volume of every source group",
    )
    return report
