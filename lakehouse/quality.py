"""Checking the rows a refresh writes against the declared expectations (lakehouse/expectations.py): the rows are
computed once and counted in that same pass, a failing `fail` rule raises before the table is written, rows a `drop`
rule fails go to quarantine with their place in the source, and what every rule found goes to
quality.expectation_results."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce

from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from lakehouse import delta, tables
from lakehouse.config import Settings
from lakehouse.delta_log import is_table
from lakehouse.expectations import REASON, ROW, ExpectationFailed, Expectations, ExpectationsError, Rule
from lakehouse.reports import ExpectationResult

log = logging.getLogger(__name__)

RESULTS = tables.table("quality", "expectation_results")
SAMPLE_KEYS = 5  # keys of failing rows a failed run names
_PLACE_COLUMNS = ("source_file", "line_number", "batch_id")  # a row's line in bronze (its batch landed the file once)


def app_id(table: str) -> str:
    """The txn app id under which the rows `<layer>.<table>`'s rules drop are appended to quarantine."""
    return f"expectations.{table}"


@dataclass(frozen=True)
class Place:
    """Where a table's rows come from, to quarantine a dropped row as bronze quarantines a line: the bronze rows the
    refresh reads, the quarantine table of their group, the bronze column holding the raw text, and (exports) the
    entity."""

    bronze: DataFrame
    quarantine: tables.Table
    raw: str
    entity: str | None = None


def outcome(rule: Rule, rows_checked: int, rows_failed: int) -> str:
    """passed, warned, dropped or failed: a `fail` rule fails when more than its allowed share of rows fails."""
    if not rows_failed:
        return "passed"
    if rule.action == "fail":
        return "failed" if rows_failed * 100 > rule.max_failed_pct * rows_checked else "warned"
    return "dropped" if rule.action == "drop" else "warned"


class Checks:
    """One stage's checking: the expectations, the run, and what the rules of every table it writes found."""

    def __init__(self, settings: Settings, expectations: Expectations, run_id: str):
        self.settings, self.expectations, self.run_id = settings, expectations, run_id
        self.results: list[ExpectationResult] = []
        self.dropped = 0  # rows `drop` rules left out of the tables, into quarantine
        self._lock = threading.Lock()

    def guard(
        self, session: SparkSession, table: tables.Table, version: int | None, place: Place | None = None
    ) -> Guard | None:
        """The check of one table's refresh (None when no rule checks the table)."""
        rules = self.expectations.on(table.key)
        return Guard(self, session, table, rules, version, place) if rules else None

    def add(self, results: list[ExpectationResult], dropped: int = 0) -> None:
        with self._lock:
            self.results.extend(results)
            self.dropped += dropped

    def record(self, spark: SparkSession, quiet: bool = False) -> None:
        """Append the results to quality.expectation_results, one row per (run, table, expectation): a stage retried
        in the same run keeps its first check's row. `quiet` (the stage failed already) only logs a failure to."""
        if not self.results:
            return
        rows = [
            (
                r.run_id,
                datetime.fromisoformat(r.checked_at),
                r.table_name,
                r.expectation,
                r.action,
                r.rows_checked,
                r.rows_failed,
                r.outcome,
            )
            for r in self.results
        ]
        try:
            found = spark.createDataFrame(rows, RESULTS.ddl)
            if is_table(self.settings.table_path(RESULTS.layer, RESULTS.name)):
                earlier = delta.read_table(spark, RESULTS.layer, RESULTS.name, self.settings).where(
                    F.col("run_id") == self.run_id
                )
                found = found.join(earlier.select(*RESULTS.keys), list(RESULTS.keys), "left_anti").select(
                    *RESULTS.names
                )
            delta.append(found, delta.Target(RESULTS, self.settings))
        except Exception:
            if not quiet:
                raise
            log.exception("the expectation results of run %s could not be recorded", self.run_id)


class Guard:
    """A table's rules in one refresh (a `delta.Target`'s `expect`): given the rows to write, it computes them once
    with a flag per rule, counts the failures in that pass, raises for a `fail` rule over its allowance, quarantines
    what `drop` rules fail, and returns the rows to write. `close` frees the computed rows after the write."""

    def __init__(
        self,
        checks: Checks,
        session: SparkSession,
        table: tables.Table,
        rules: tuple[Rule, ...],
        version: int | None,
        place: Place | None,
    ):
        self.checks, self.session, self.table, self.rules = checks, session, table, rules
        self.version, self.place = version, place
        self._computed: list[DataFrame] = []

    def __call__(self, rows: DataFrame) -> DataFrame:
        settings = self.checks.settings
        flags = [f"_expect_{i}" for i in range(len(self.rules))]
        checked_at = datetime.now(UTC).isoformat()
        try:
            flagged = rows.alias(ROW).select(
                "*", *(F.expr(rule.sql(settings)).alias(flag) for rule, flag in zip(self.rules, flags))
            )
            kinds = {f.name: f.dataType for f in flagged.schema.fields}
        except AnalysisException as exc:
            raise self._unusable(rows, exc) from None
        for rule, flag in zip(self.rules, flags):
            if not isinstance(kinds[flag], BooleanType):
                raise ExpectationsError(f"{self._where(rule)}: expect is {kinds[flag].simpleString()}, not a condition")
        computed = flagged.persist(StorageLevel.DISK_ONLY)  # computed once: counted now, written next
        self._computed.append(computed)
        drops = [(rule, F.col(flag)) for rule, flag in zip(self.rules, flags) if rule.action == "drop"]
        keep = reduce(Column.__and__, (ok for _, ok in drops)) if drops else F.lit(True)
        observation = Observation(f"expectations_{uuid.uuid4().hex}")
        aggregates = [
            F.count(F.lit(1)).alias("_rows"),
            F.count_if(~keep).alias("_dropped"),
            *(F.count_if(~F.col(f)).alias(f) for f in flags),
        ]
        computed.observe(observation, *aggregates).write.format("noop").mode("overwrite").save()
        counts = observation.get
        checked = int(counts["_rows"])
        results = [
            ExpectationResult(
                run_id=self.checks.run_id,
                checked_at=checked_at,
                table_name=self.table.key,
                expectation=rule.name,
                action=rule.action,
                rows_checked=checked,
                rows_failed=int(counts[flag]),
                outcome=outcome(rule, checked, int(counts[flag])),
            )
            for rule, flag in zip(self.rules, flags)
        ]
        failing = next((r for r in zip(self.rules, flags, results) if r[2].outcome == "failed"), None)
        if failing is not None:
            self.checks.add(results)
            rule, flag, result = failing
            raise self._failed(rule, result, computed.where(~F.col(flag)))
        self.checks.add(results, int(counts["_dropped"]))
        if not drops:
            return computed.select(*rows.columns)
        if counts["_dropped"]:
            reason = F.coalesce(*(F.when(~ok, F.lit(rule.reason)) for rule, ok in drops))
            self._quarantine(computed.where(~keep).withColumn("_reason", reason))
        return computed.where(keep).select(*rows.columns)

    def _where(self, rule: Rule) -> str:
        return f"{self.checks.expectations.path}:{rule.line}: expectation {rule.name}"

    def _unusable(self, rows: DataFrame, exc: AnalysisException) -> ExpectationsError:
        """The rule Spark cannot evaluate on this table, in one line."""
        for rule in self.rules:
            try:
                analysed = rows.alias(ROW).select(F.expr(rule.sql(self.checks.settings))).schema
                log.debug("%s analyses as %s", rule.name, analysed.simpleString())
            except AnalysisException as found:
                cause = (str(found).strip().splitlines() or [type(found).__name__])[0][:300]
                return ExpectationsError(f"{self._where(rule)}: Spark cannot evaluate it on {self.table.key}: {cause}")
        return ExpectationsError(f"{self.checks.expectations.path}: {self.table.key}: {str(exc).splitlines()[0]}")

    def _failed(self, rule: Rule, result: ExpectationResult, failing: DataFrame) -> ExpectationFailed:
        """The error holding the table back: the rule, how many rows failed, a few of their keys."""
        sample = [
            "/".join("null" if v is None else str(v) for v in row)
            for row in failing.select(*self.table.keys).limit(SAMPLE_KEYS).collect()
        ]
        share = 100 * result.rows_failed / max(result.rows_checked, 1)
        return ExpectationFailed(
            f"expectation {rule.name} failed on {self.table.key}: {result.rows_failed:,} of {result.rows_checked:,} "
            f"rows ({share:.3g}%, more than the {rule.max_failed_pct:g}% allowed); sample keys "
            f"({', '.join(self.table.keys)}): {', '.join(sample)}. The table was not written and its delivery "
            "stays pending: fix the data or the rule and run again",
            self.table.key,
            rule.name,
            result.rows_failed,
            result.rows_checked,
            self.checks.run_id,
        )

    def _quarantine(self, dropped: DataFrame) -> None:
        """Append the dropped rows to their group's quarantine table with reason `expectation:<name>` and the line,
        raw text and landed file they were read from; a line a rule dropped before is not quarantined twice."""
        place = self.place
        if place is None:  # the expectations file refuses `drop` on tables whose rows have no place
            raise ExpectationsError(f"{self.table.key}: its rows have no place in the source to quarantine them by")
        lines = place.bronze.select(
            *_PLACE_COLUMNS, F.col(place.raw).alias("raw"), "landed_path", "landed_at", "delivery", "as_of"
        )
        quarantined = dropped.select(*_PLACE_COLUMNS, F.col("_reason").alias("reason")).join(
            lines, list(_PLACE_COLUMNS), "left"
        )
        extra = {
            "raw_base64": F.lit(None).cast("string"),
            "run_id": F.lit(self.checks.run_id),
            "entity": F.lit(place.entity),
        }
        rows = quarantined.select(*(extra.get(c, F.col(c)).alias(c) for c in place.quarantine.names))
        path = self.checks.settings.table_path(place.quarantine.layer, place.quarantine.name)
        if is_table(path):
            earlier = (
                delta.read_table(self.session, place.quarantine.layer, place.quarantine.name, self.checks.settings)
                .where(F.col("reason").startswith(REASON))
                .select("landed_path", "line_number", "reason")
            )
            rows = rows.join(earlier, ["landed_path", "line_number", "reason"], "left_anti").select(
                *place.quarantine.names
            )
        target = delta.Target(
            place.quarantine, self.checks.settings, app_id=app_id(self.table.key), version=self.version
        )
        delta.append(rows, target)

    def close(self) -> None:
        """Free the rows computed for the write."""
        for frame in self._computed:
            frame.unpersist()
        self._computed.clear()
