"""Freshness and volume of the source groups (events, and each export), from the landing ledger alone (no Spark):
a group is stale when its newest delivery landed longer ago than LAKEHOUSE_FRESHNESS_SLA, and a delivery is a volume
anomaly when it holds fewer lines than LAKEHOUSE_VOLUME_MIN_PCT % of the median of the group's 7 deliveries before it.
What was alerted is kept in a small file of the data folder, so a group turning stale is said once, until it
recovers, whichever process checks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lakehouse import alerts, tables
from lakehouse.config import Settings
from lakehouse.landing import read_ledger

GROUPS: tuple[str, ...] = ("events", *tables.ENTITIES)
HISTORY = 7  # deliveries a delivery's volume is compared with (the median of their lines)
MIN_HISTORY = 3  # fewer earlier deliveries than this: no volume judgement yet (the first is often a backfill)
STATE_FILE = "alerts-state.json"


@dataclass(frozen=True)
class GroupStatus:
    """One source group now: its newest landing and delivery, whether it is stale, and its latest delivery's volume
    against the median of the deliveries before it."""

    group: str
    last_landed: datetime | None
    stale: bool
    latest_delivery: str | None = None
    latest_lines: int | None = None
    median_lines: float | None = None
    anomaly: bool = False

    def age(self, now: datetime) -> timedelta | None:
        return None if self.last_landed is None else now - self.last_landed

    @property
    def volume(self) -> str:
        """ok, anomaly, or why it cannot be told: `no baseline` (fewer than MIN_HISTORY earlier deliveries),
        `unknown` (landed before the ledger counted lines)."""
        if self.anomaly:
            return "anomaly"
        if self.latest_lines is None:
            return "—" if self.latest_delivery is None else "unknown"
        return "ok" if self.median_lines is not None else "no baseline"


@dataclass
class CheckReport:
    """`lakehouse checks`: when it looked, against which SLA, every group's status, and the alerts it sent."""

    checked_at: datetime
    sla: str
    min_pct: float
    groups: list[GroupStatus]
    alerts: list[alerts.Alert] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(g.stale or g.anomaly for g in self.groups)

    def rows(self) -> list[dict[str, Any]]:
        """One row per group, for a table."""
        return [
            {
                "group": g.group,
                "newest delivery": g.latest_delivery or "—",
                "landed (UTC)": g.last_landed.strftime("%Y-%m-%d %H:%M") if g.last_landed else "never",
                "age": _human(g.age(self.checked_at)),
                "freshness": "stale" if g.stale else "fresh",
                "lines": "—" if g.latest_lines is None else f"{g.latest_lines:,}",
                "median of 7": "—" if g.median_lines is None else f"{g.median_lines:,.0f}",
                "volume": g.volume,
            }
            for g in self.groups
        ]


def _human(age: timedelta | None) -> str:
    if age is None:
        return "—"
    minutes = int(age.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes // (24 * 60)} d {minutes // 60 % 24} h"


def _group(entry: dict[str, Any]) -> str | None:
    if entry.get("kind") == "events":
        return "events"
    return entry.get("entity") if entry.get("entity") in tables.ENTITIES else None


def evaluate(manifests: list[dict[str, Any]], now: datetime, sla: timedelta, min_pct: float) -> list[GroupStatus]:
    """Every group's status from the ledger's manifests, at `now`."""
    entries: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for manifest in manifests:
        for entry in manifest["files"]:
            group = _group(entry)
            if group is not None:
                entries[group].append(dict(entry, batch_id=manifest["batch_id"]))
    return [_status(group, entries[group], now, sla, min_pct) for group in GROUPS]


def _status(group: str, entries: list[dict[str, Any]], now: datetime, sla: timedelta, min_pct: float) -> GroupStatus:
    if not entries:
        return GroupStatus(group, None, stale=True)
    landed = max(datetime.fromisoformat(e["landed_at"]) for e in entries)
    latest_file: dict[tuple[str, str], dict[str, Any]] = {}  # (delivery, path) -> its latest landing
    for e in sorted(entries, key=lambda e: e["batch_id"]):
        latest_file[(e["delivery"], e["path"])] = e
    deliveries: dict[str, tuple[datetime, int | None]] = {}
    for (delivery, _), e in latest_file.items():
        as_of, lines = deliveries.get(delivery, (datetime.fromisoformat(e["as_of"]), 0))
        deliveries[delivery] = (as_of, None if lines is None or "lines" not in e else lines + int(e["lines"]))
    ordered = sorted(deliveries.items(), key=lambda d: (d[1][0], d[0]))
    latest, (_, lines) = ordered[-1]
    earlier = [n for _, (_, n) in ordered[:-1] if n is not None][-HISTORY:]
    median = statistics.median(earlier) if len(earlier) >= MIN_HISTORY else None
    anomaly = lines is not None and median is not None and lines < min_pct / 100 * median
    return GroupStatus(group, landed, now - landed > sla, latest, lines, median, anomaly)


@contextlib.contextmanager
def _alert_state(settings: Settings) -> Iterator[dict[str, Any]]:
    """What was alerted (stale groups since when, anomalous deliveries), locked while one process updates it."""
    path = settings.data_dir / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            state = {}
        state.setdefault("stale", {})
        state.setdefault("volume", [])
        yield state
        tmp = Path(f"{path}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        tmp.replace(path)


def _transitions(report: CheckReport, state: dict[str, Any], sla: str) -> list[alerts.Alert]:
    """The alerts this check owes: groups turning stale or back to fresh, and anomalous deliveries not said yet."""
    out = []
    for g in report.groups:
        age = _human(g.age(report.checked_at))
        if g.stale and g.group not in state["stale"]:
            state["stale"][g.group] = report.checked_at.isoformat()
            text = (
                f"{g.group} is stale: its newest delivery ({g.latest_delivery}) landed {age} ago, over the {sla} SLA"
                if g.last_landed
                else f"{g.group} is stale: nothing of it was ever delivered"
            )
            out.append(alerts.Alert("stale", text, group=g.group, delivery=g.latest_delivery))
        elif not g.stale and g.group in state["stale"]:
            del state["stale"][g.group]
            out.append(
                alerts.Alert(
                    "recovered",
                    f"{g.group} is fresh again: delivery {g.latest_delivery} landed {age} ago",
                    group=g.group,
                    delivery=g.latest_delivery,
                )
            )
        said = f"{g.group}/{g.latest_delivery}"
        if g.anomaly and said not in state["volume"]:
            state["volume"] = [*state["volume"], said][-100:]
            out.append(
                alerts.Alert(
                    "volume_anomaly",
                    f"{g.group} delivery {g.latest_delivery} holds {g.latest_lines:,} lines, under "
                    f"{report.min_pct:g}% of the median of its last {HISTORY} deliveries ({g.median_lines:,.0f})",
                    group=g.group,
                    delivery=g.latest_delivery,
                )
            )
    return out


def check(settings: Settings, now: datetime | None = None, alert: bool = True) -> CheckReport:
    """Evaluate freshness and volume now (no Spark); with `alert`, send what changed since the last check."""
    now = now or datetime.now(UTC)
    report = CheckReport(
        now,
        settings.freshness_sla,
        settings.volume_min_pct,
        evaluate(read_ledger(settings), now, settings.sla, settings.volume_min_pct),
    )
    if alert:
        with _alert_state(settings) as state:
            report.alerts = _transitions(report, state, settings.freshness_sla)
        for item in report.alerts:
            alerts.send(settings, item)
    return report
