"""What a stage reports: the same figures for every stage (landing, bronze, silver, gold, the warehouse mirror)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# the columns of a run's summary (flow artifact, `lakehouse run`, `lakehouse summary`), in order
COLUMNS = ("files", "rows in", "rows out", "quarantined", "deliveries")


@dataclass
class StageReport:
    """One stage's run: files taken, rows read and written, rows quarantined, deliveries seen, whether it had nothing
    to do, and its wall time; `details` holds what is the stage's own (its tables, batches, per-group counts)."""

    stage: str
    files: int = 0
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    deliveries: list[str] = field(default_factory=list)
    skipped: bool = False
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

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
        }

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def of_tables(cls, stage: str, tables: dict[str, dict[str, Any]], seconds: float, **details: Any) -> StageReport:
        """A layer's report from its tables' reports (each with `skipped`, `rows_in`, `rows_out`)."""
        return cls(
            stage,
            rows_in=sum(t["rows_in"] for t in tables.values()),
            rows_out=sum(t["rows_out"] for t in tables.values()),
            skipped=all(t["skipped"] for t in tables.values()),
            seconds=round(seconds, 3),
            details={**details, "tables": tables},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageReport:
        """A report read back from `as_dict` (a run report on disk); unknown keys are refused."""
        return cls(**data)
