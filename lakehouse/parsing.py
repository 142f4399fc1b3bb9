"""Spark SQL expressions shared by bronze (is it valid?) and silver (its value)."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# `2017-11-16 02:10:20`, glued `2017-11-1602:10:20`, or ISO 8601 with optional fraction and zone.
AT_PATTERN = r"^\d{4}-\d{2}-\d{2}[ T]?\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$"


def parse_at(raw: Column) -> Column:
    """The event time as a UTC timestamp, null when `raw` is missing or not one of the accepted forms."""
    text = F.trim(raw)
    spaced = F.regexp_replace(text, r"^(\d{4}-\d{2}-\d{2})(\d{2}:)", "$1 $2")
    return F.when(text.rlike(AT_PATTERN), spaced.try_cast("timestamp"))


def parse_export_time(raw: Column) -> Column:
    """A transactional timestamp (`2017-08-22 13:37:20.000`, `2019-01-01 13:00:00.0000`) as UTC, null if invalid."""
    return parse_at(raw)
