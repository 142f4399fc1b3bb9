"""Spark SQL expressions shared by bronze (is it valid?) and silver (its value): one reading of every record."""

from __future__ import annotations

from datetime import UTC, date

from pyspark.sql import Column
from pyspark.sql import functions as F

# `2017-11-16 02:10:20`, glued `2017-11-1602:10:20`, or ISO 8601 with optional fraction and zone.
AT_PATTERN = r"^\d{4}-\d{2}-\d{2}[ T]?\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$"

# Limits of what the lake and the warehouse hold (docs/quarantine.md).
MAX_ID_CHARS = 128  # ids and the other values the warehouse keys rows by (client type, country, plan type)
MAX_VALUE_BYTES = 1024 * 1024  # any one field value (or key) of an event or record, as delivered
PARSER_DEPTH = 1000  # Spark's JSON parser refuses deeper nesting (its `maxNestingDepth`)

CONTROL = r"[\x00-\x1F\x7F]"  # ASCII control characters, NUL among them: removed from every value
# A JSON escape that decodes to one (a raw one inside a string is invalid JSON and never parses; DEL may be raw).
_CONTROL_ESCAPE = r"\\u00[01][0-9A-Fa-f]|\\u007[Ff]|\\[bfnrt]|\x7F"
_CORRUPT = "_corrupt_record"
_STRICT = {"columnNameOfCorruptRecord": _CORRUPT}
_ANY_DEPTH = {**_STRICT, "maxNestingDepth": str(2**31 - 1)}


def parse_at(raw: Column) -> Column:
    """The event time as a UTC timestamp, null when `raw` is missing or not one of the accepted forms."""
    text = F.trim(raw)
    spaced = F.regexp_replace(text, r"^(\d{4}-\d{2}-\d{2})(\d{2}:)", "$1 $2")
    return F.when(text.rlike(AT_PATTERN), spaced.try_cast("timestamp"))


def parse_export_time(raw: Column) -> Column:
    """A transactional timestamp (`2017-08-22 13:37:20.000`, `2019-01-01 13:00:00.0000`) as UTC, null if invalid."""
    return parse_at(raw)


def json_text(value: Column) -> Column:
    """The JSON text of a line or export: without a leading UTF-8 byte-order mark."""
    return F.when(value.startswith("\ufeff"), F.substring(value, 2, 2**31 - 1)).otherwise(value)


def may_hold_control(value: Column) -> Column:
    """Whether the parsed values of this JSON text may hold a control character: a raw DEL, or (searched only in texts
    with a backslash) an escape of one."""
    return F.when(value.contains("\\"), value.rlike(_CONTROL_ESCAPE)).otherwise(value.contains("\x7f"))


def clean(value: Column) -> Column:
    """The text without control characters (PostgreSQL refuses NUL; the others break exports and displays)."""
    return F.regexp_replace(value, CONTROL, "")


def has_control(value: Column) -> Column:
    """Whether the text holds a control character."""
    return value.rlike(CONTROL)


def read_object(text: Column, schema: str) -> Column:
    """`text` parsed as a JSON object with string fields: the struct of `schema` plus `_corrupt_record`, which holds
    the text when the parser refuses it (not JSON, not an object, nesting too deep)."""
    return F.from_json(text, f"{schema}, {_CORRUPT} string", _STRICT)


def parsed(obj: Column) -> Column:
    """Whether `read_object` parsed its text as an object."""
    return obj.isNotNull() & obj.getField(_CORRUPT).isNull()


def too_deep(text: Column) -> Column:
    """Whether the parser refuses the JSON text `text` only for its nesting deeper than PARSER_DEPTH (three parses:
    evaluate it on texts already refused)."""
    wrapped = F.concat(F.lit('{"v":'), text, F.lit("}"))

    def readable(options: dict[str, str]) -> Column:
        return F.from_json(wrapped, f"{_CORRUPT} string", options).getField(_CORRUPT).isNull()

    return readable(_ANY_DEPTH) & ~readable({**_STRICT, "maxNestingDepth": str(PARSER_DEPTH + 1)})  # + the wrapper


def all_fields(text: Column) -> Column:
    """Every top-level field of a JSON object as text (nested values as their JSON text)."""
    return F.from_json(text, "map<string,string>")


def cleaned_keys(keys: Column, control: Column) -> Column:
    """The keys as silver names them: control characters removed when the text may hold some."""
    return F.when(control, F.transform(keys, clean)).otherwise(keys)


def value_too_large(text: Column) -> Column:
    """Whether a field value or key of the JSON object `text` is longer than MAX_VALUE_BYTES (UTF-8)."""
    fields = all_fields(text)
    return F.when(
        F.octet_length(text) > MAX_VALUE_BYTES,
        F.exists(
            F.map_entries(fields),
            lambda e: (
                (F.octet_length(e.getField("key")) > MAX_VALUE_BYTES)
                | (F.octet_length(e.getField("value")) > MAX_VALUE_BYTES)
            ),
        ),
    ).otherwise(F.lit(False))


def changed_by_cleaning(text: Column, control: Column) -> Column:
    """Whether removing control characters changes a field value or key of the JSON object `text`."""
    return F.when(
        control,
        F.coalesce(
            F.exists(
                F.map_entries(all_fields(text)),
                lambda e: has_control(e.getField("key")) | F.coalesce(has_control(e.getField("value")), F.lit(False)),
            ),
            F.lit(False),
        ),
    ).otherwise(F.lit(False))


def student_and_client(raw: Column) -> tuple[Column, Column]:
    """(`student_id`, `client_type`) of a `studentId_clientType` value (`"123@Website"`); blank parts are null."""
    sc = nonblank(raw)
    return (nonblank(F.substring_index(sc, "@", 1)), F.when(sc.contains("@"), nonblank(F.substring_index(sc, "@", -1))))


def nonblank(value: Column) -> Column:
    """The trimmed text, null when blank."""
    return F.nullif(F.trim(value), F.lit(""))


def too_long(*ids: Column) -> Column:
    """Whether one of these values is longer than MAX_ID_CHARS characters."""
    longest = F.greatest(*(F.length(c) for c in ids)) if len(ids) > 1 else F.length(ids[0])
    return F.coalesce(longest > MAX_ID_CHARS, F.lit(False))


def may_be_too_long(*raw: Column) -> Column:
    """Whether a value derived from these (as a part of one) may be longer than MAX_ID_CHARS: a cheap guard."""
    return too_long(*raw)


def outside(when: Column, since: date, until: date) -> Column:
    """Whether the timestamp `when` falls on a UTC date outside [since, until]; false when it is null."""
    day = F.to_date(when)
    return F.coalesce((day < F.lit(since)) | (day > F.lit(until)), F.lit(False))


def field(obj: Column, name: str, control: Column) -> Column:
    """A string field of a parsed object, control characters removed when its text may hold some."""
    value = obj.getField(name)
    return F.when(control, clean(value)).otherwise(value)


def plausible_dates(since: date, days_ahead: int, today: date | None = None) -> tuple[date, date]:
    """The plausible range of event and record dates: [since, today + days_ahead] (UTC dates)."""
    from datetime import datetime, timedelta

    return since, (today or datetime.now(UTC).date()) + timedelta(days=days_ahead)
