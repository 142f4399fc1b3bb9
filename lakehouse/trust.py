"""Trust at a glance (the dashboard's trust panel, `lakehouse summary`): per source group, its newest delivery, fresh
or stale against the SLA, its volume and the share of its latest delivery quarantined; per gold table (and every
table rules check), its last refresh, fresh or stale, whether work is pending, and what its expectations found last.
Read from the landing ledger, the Delta logs and DuckDB over the lake: no Spark."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from lakehouse import catalog, delta_log, expectations, freshness, gold, silver, tables
from lakehouse.config import Settings
from lakehouse.expectations import REASON
from lakehouse.reports import OUTCOMES

log = logging.getLogger(__name__)

_LATEST_RESULTS = (
    "select table_name, expectation, outcome, rows_failed from quality.expectation_results "
    "qualify row_number() over (partition by table_name, expectation order by checked_at desc) = 1"
)


def _quarantine_sql(group: str) -> str:
    """Rows bronze kept, rows refused at bronze, and rows expectations dropped, of one delivery of `group`."""
    if group == "events":
        bronze, quarantine, entity = "bronze.events", "quarantine.events", ""
    else:
        bronze, quarantine, entity = f"bronze.{group}", "quarantine.transactional", " and entity = $entity"
    where = f"delivery = $delivery{entity}"
    return (
        f"select (select count(*) from {bronze} where delivery = $delivery) as kept, "
        f"(select count(*) from {quarantine} where {where} and not starts_with(reason, '{REASON}')) as refused, "
        f"(select count(*) from {quarantine} where {where} and starts_with(reason, '{REASON}')) as dropped"
    )


@dataclass(frozen=True)
class SourceTrust:
    """One source group: its freshness and volume (lakehouse checks), and its latest delivery's quarantine."""

    status: freshness.GroupStatus
    rows: int | None = None  # lines or records of the latest delivery bronze read
    quarantined: int | None = None  # of them: refused at bronze or dropped by an expectation

    @property
    def quarantine_rate(self) -> float | None:
        return None if not self.rows else (self.quarantined or 0) / self.rows


@dataclass(frozen=True)
class TableTrust:
    """One table: its last refresh, its freshness (its source groups'), whether it lags its inputs, and the outcome
    of each of its expectations at its latest check (with the rows that failed)."""

    table: str
    last_refresh: datetime | None
    stale: bool
    behind: bool
    outcomes: dict[str, str] = field(default_factory=dict)  # expectation -> outcome
    failed_rows: dict[str, int] = field(default_factory=dict)  # expectation -> rows failed

    def tally(self) -> str:
        """The expectations in a few words: `2 passed, 1 warned (12 rows)`."""
        counts = Counter(self.outcomes.values())
        rows: Counter[str] = Counter()
        for name, outcome in self.outcomes.items():
            rows[outcome] += self.failed_rows.get(name, 0)
        parts = [
            f"{counts[o]} {o}" + (f" ({rows[o]:,} row{'s' if rows[o] > 1 else ''})" if rows[o] else "")
            for o in (*OUTCOMES, "unchecked")
            if counts[o]
        ]
        return ", ".join(parts) or "—"


@dataclass
class Trust:
    """Everything the trust panel shows."""

    checked_at: datetime
    sla: str
    sources: list[SourceTrust]
    tables: list[TableTrust]

    def source_rows(self) -> list[dict[str, str]]:
        """One row per source group, as the panel and `lakehouse summary` print it."""
        return [
            {
                "source": s.status.group,
                "newest delivery": s.status.latest_delivery or "—",
                "landed (UTC)": _when(s.status.last_landed),
                "freshness": "stale" if s.status.stale else "fresh",
                "volume": s.status.volume,
                "quarantined": "—"
                if s.quarantine_rate is None
                else f"{100 * s.quarantine_rate:.2g}% ({s.quarantined:,} of {s.rows:,})",
            }
            for s in self.sources
        ]

    def table_rows(self) -> list[dict[str, str]]:
        """One row per table, as the panel and `lakehouse summary` print it."""
        return [
            {
                "table": t.table,
                "last refresh (UTC)": _when(t.last_refresh),
                "freshness": "stale" if t.stale else "fresh",
                "work": "pending" if t.behind else "up to date",
                "expectations": t.tally(),
            }
            for t in self.tables
        ]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def _groups_of(table: str) -> set[str]:
    """The source groups a silver or gold table is made from."""
    layer, name = table.split(".", 1)
    inputs = gold.BY_NAME[name].inputs if layer == "gold" else (name,)
    return {silver.BY_NAME[i].source for i in inputs}


def overview(settings: Settings, now: datetime | None = None, lake: catalog.LakeConnection | None = None) -> Trust:
    """The trust panel's content, now; `lake` reuses an open DuckDB view of the lake."""
    now = now or datetime.now(UTC)
    checks = freshness.check(settings, now, alert=False)
    own = lake is None
    lake = lake or catalog.connect(settings, read_only=True)
    try:
        readable = {t.key for t in lake.tables} - {s.split(":", 1)[0] for s in lake.skipped}
        sources = [_source(lake, readable, status) for status in checks.groups]
        latest = _latest_results(lake, readable)
    finally:
        if own:
            lake.close()
    try:
        rules = expectations.load(settings.expectations).rules
    except expectations.ExpectationsError as exc:
        log.warning("%s", exc)
        rules = ()
    stale = {s.status.group for s in sources if s.status.stale}
    silver_behind, gold_behind = silver.lagging(settings), gold.lagging(settings)
    checked = list(dict.fromkeys(r.table for r in rules if r.table.startswith("silver.")))
    out = []
    for key in [*checked, *(t.key for t in tables.layer("gold"))]:
        layer, name = key.split(".", 1)
        inputs = set(gold.BY_NAME[name].inputs) if layer == "gold" else {name}
        behind = bool(inputs & silver_behind) or (layer == "gold" and name in gold_behind)
        mine = [r.name for r in rules if r.table == key]
        found = {n: latest.get((key, n)) for n in mine}
        out.append(
            TableTrust(
                key,
                _last_commit(settings, layer, name),
                bool(_groups_of(key) & stale),
                behind,
                {n: (f[0] if f else "unchecked") for n, f in found.items()},
                {n: f[1] for n, f in found.items() if f},
            )
        )
    return Trust(now, settings.freshness_sla, sources, out)


def _last_commit(settings: Settings, layer: str, name: str) -> datetime | None:
    found = delta_log.last_commit(settings.table_path(layer, name), settings)
    return found[1] if found else None


def _source(lake: catalog.LakeConnection, readable: set[str], status: freshness.GroupStatus) -> SourceTrust:
    """A group's latest delivery: rows bronze read of it, and how many were quarantined."""
    group = status.group
    needed = {"bronze.events", "quarantine.events"} if group == "events" else {f"bronze.{group}"}
    needed |= set() if group == "events" else {"quarantine.transactional"}
    if status.latest_delivery is None or not needed <= readable:
        return SourceTrust(status)
    params = {"delivery": status.latest_delivery, **({} if group == "events" else {"entity": group})}
    try:
        _, rows = lake.rows(_quarantine_sql(group), params)
    except duckdb.Error as exc:  # a table being rewritten: the panel shows the rest
        log.warning("quarantine of %s not read: %s", group, exc)
        return SourceTrust(status)
    kept, refused, dropped = rows[0]
    return SourceTrust(status, kept + refused, refused + dropped)


def _latest_results(lake: catalog.LakeConnection, readable: set[str]) -> dict[tuple[str, str], tuple[str, int]]:
    """(table, expectation) -> (outcome, rows failed) of its latest check."""
    if "quality.expectation_results" not in readable:
        return {}
    with contextlib.suppress(duckdb.Error):
        _, rows = lake.rows(_LATEST_RESULTS)
        return {(t, e): (o, int(n)) for t, e, o, n in rows}
    return {}
