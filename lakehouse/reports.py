"""What a run reports: the same figures for every stage (landing, bronze, silver, gold, the warehouse mirror), each
table's refresh below its stage, and the run's stages with the writer lock it held."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# the columns of a run's summary (flow artifact, `lakehouse run`, `lakehouse summary`), in order
COLUMNS = ("files", "rows in", "rows out", "quarantined", "deliveries")


@dataclass
class TableReport:
    """One table's refresh within a stage: skipped (nothing new), rows read and written, its wall time (side by side
    with the stage's other writes), the input version it reached (a bronze batch, or gold's txn version), and the
    Delta commits it made."""

    skipped: bool = False
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0
    version: int | None = None
    commits: int = 0


OUTCOMES = ("passed", "warned", "dropped", "failed")


@dataclass
class ExpectationResult:
    """What one expectation found in one refresh of its table: a row of quality.expectation_results."""

    run_id: str
    checked_at: str  # ISO 8601, UTC
    table_name: str
    expectation: str
    action: str
    rows_checked: int
    rows_failed: int
    outcome: str  # one of OUTCOMES

    @property
    def line(self) -> str:
        """The result in a few words, for a person."""
        failed = f": {self.rows_failed:,} of {self.rows_checked:,} rows" if self.rows_failed else ""
        return f"{self.table_name} {self.expectation} {self.outcome}{failed}"


@dataclass
class StageReport:
    """One stage's run: files taken, rows read and written, rows quarantined, deliveries seen, whether it had nothing
    to do, its wall time, the Delta commits it made and the Spark jobs it ran (None when Spark runs elsewhere: a Spark
    Connect server); `tables` holds its tables' refreshes, `details` what else is the stage's own (batches, per-group
    counts)."""

    stage: str
    files: int = 0
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    deliveries: list[str] = field(default_factory=list)
    skipped: bool = False
    seconds: float = 0.0
    commits: int = 0
    jobs: int | None = None
    tables: dict[str, TableReport] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    expectations: list[ExpectationResult] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The stage's row in a run summary."""
        return {
            "stage": self.stage,
            "files": self.files,
            "rows in": self.rows_in,
            "rows out": self.rows_out,
            "quarantined": self.quarantined,
            "deliveries": len(self.deliveries),
            "status": "skipped" if self.skipped else "done",
            "seconds": self.seconds,
            "commits": self.commits,
            "jobs": self.jobs,
        }

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def of_tables(
        cls,
        stage: str,
        tables: dict[str, TableReport],
        seconds: float,
        expectations: list[ExpectationResult] | None = None,
        quarantined: int = 0,
        **details: Any,
    ) -> StageReport:
        """A layer's report from its tables' reports (what their expectations found, the rows they quarantined)."""
        return cls(
            stage,
            rows_in=sum(t.rows_in for t in tables.values()),
            rows_out=sum(t.rows_out for t in tables.values()),
            quarantined=quarantined,
            skipped=all(t.skipped for t in tables.values()),
            seconds=round(seconds, 3),
            commits=sum(t.commits for t in tables.values()),
            tables=tables,
            details=details,
            expectations=list(expectations or []),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageReport:
        """A report read back from `as_dict` (a run report on disk); unknown keys are refused."""
        tables = {name: TableReport(**t) for name, t in (data.get("tables") or {}).items()}
        checks = [ExpectationResult(**r) for r in data.get("expectations") or []]
        return cls(**{**data, "tables": tables, "expectations": checks})


@dataclass
class LoadReport:
    """One `dw` table's load within a mirror run: applied, skipped (gold as applied) or missing (no gold table); the
    gold version read; for a dimension the deliveries new to it, those whose gold rows changed since it applied
    them (corrected, or gone from gold), the unchanged ones re-read after them and the as-of it was restated from;
    and the rows staged, inserted, closed (a version's end moved), removed and re-pointed (a fact's surrogate keys);
    for a fact or mart, whether gold was read whole or only its changes since the version applied, and how many."""

    status: str
    gold_version: int | None = None
    deliveries: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    restated_from: str | None = None
    rows_staged: int = 0
    rows_inserted: int = 0
    rows_closed: int = 0
    rows_removed: int = 0
    rows_repointed: int = 0
    read: str | None = None  # a fact or mart: how gold was read, "changes" (its change feed) or "full"
    rows_changed: int = 0  # read from the changes: the change rows read (pre- and post-images, inserts, deletes)


@dataclass
class TableDrift:
    """A `dw` table against gold: the rows and a hash of the current state on each side (a dimension's current
    versions, every row of a fact or mart), read at `gold_version`; `drifted` when they differ."""

    table: str
    gold_table: str
    gold_version: int | None
    gold_rows: int
    dw_rows: int
    gold_hash: str
    dw_hash: str
    drifted: bool = field(init=False)

    def __post_init__(self) -> None:
        self.drifted = (self.gold_rows, self.gold_hash) != (self.dw_rows, self.dw_hash)


@dataclass
class LockReport:
    """How a run held the single-writer lock: when it asked, got and released it, how long it waited; `reentrant`
    when the run already held it."""

    requested_at: float = 0.0
    acquired_at: float = 0.0
    waited_seconds: float = 0.0
    released_at: float = 0.0
    reentrant: bool = False


@dataclass
class RunReport:
    """A flow run: its stages' reports in order and the writer lock it held (what `lakehouse run` saves as
    last-run.json and the flow publishes as artifacts)."""

    flow: str
    stages: list[StageReport]
    lock: LockReport

    @property
    def summary(self) -> list[dict[str, Any]]:
        """One row per stage."""
        return [s.row() for s in self.stages]

    def stage(self, name: str) -> StageReport | None:
        return next((s for s in self.stages if s.stage == name), None)

    @property
    def quarantined(self) -> int:
        return sum(s.quarantined for s in self.stages)

    @property
    def expectations(self) -> list[ExpectationResult]:
        """What the run's expectations found, stage after stage."""
        return [r for s in self.stages for r in s.expectations]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "summary": self.summary,
            "stages": {s.stage: s.as_dict() for s in self.stages},
            "lock": dataclasses.asdict(self.lock),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """A run report read back from `as_dict`."""
        stages = [StageReport.from_dict(s) for s in data["stages"].values()]
        return cls(data.get("flow", ""), stages, LockReport(**(data.get("lock") or {})))
