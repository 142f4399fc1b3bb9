"""What an erasure leaves behind for later runs, below the layers that read it: the salted hashes of erased ids
(tombstones), the filter bronze applies to later deliveries, and the scrub of landed files (docs/erasure.md)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakehouse import tables
from lakehouse.config import Settings, join
from lakehouse.landing import LEDGER, lake_fs, lake_listing, read_ledger
from lakehouse.security import write_secret

SALT_FILE = "erasure-salt"  # under the data folder, mode 0600, when LAKEHOUSE_ERASURE_SALT is unset
TOMBSTONES = "_system/tombstones"  # one JSON file per erased id, named by its salted hash
REDACTED = "[erased]"
# The field naming the learner, per kind of raw text: event lines, and each export that names one.
STUDENT_FIELD = {
    "events": tables.EVENT_STUDENT_FIELD,
    **{e.entity: e.student_field for e in tables.EXPORTS if e.student_field},
}


def salt(settings: Settings, create: bool = False) -> str | None:
    """The erasure salt: LAKEHOUSE_ERASURE_SALT, else the 0600 file under the data folder (made with `create`)."""
    if settings.erasure_salt is not None and settings.erasure_salt.get_secret_value():
        return settings.erasure_salt.get_secret_value()
    path = Path(settings.data_dir).resolve() / SALT_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_secret(path, secrets.token_hex(32))
    except FileExistsError:  # a concurrent creator won
        pass
    return path.read_text().strip()


def hashed(salt_text: str, student_id: str) -> str:
    """The salted hash an erased id is kept as."""
    return hashlib.sha256((salt_text + student_id.strip()).encode()).hexdigest()


def tombstones(settings: Settings) -> set[str]:
    """The salted hashes of every erased id."""
    _, names = lake_listing(settings, TOMBSTONES)
    return {n.rsplit("/", 1)[-1][:-5] for n in names if n.endswith(".json")}


def write_tombstones(settings: Settings, hashes: Iterable[str]) -> None:
    fs, root = lake_fs(settings)
    folder = join(root, TOMBSTONES)
    if settings.lake_is_local:
        fs.makedirs(folder, exist_ok=True)
    for h in hashes:
        fs.pipe_file(join(folder, f"{h}.json"), json.dumps({"erased_at": datetime.now(UTC).isoformat()}).encode())


# -- who a raw line or record belongs to -----------------------------------------------------------


def _clean(c: Column) -> Column:
    return F.trim(F.regexp_replace(c, r"[\x00-\x1F\x7F]", ""))


def event_student(value: Column) -> Column:
    """The student id of a raw event line (as silver reads it: the part of `studentId_clientType` before `@`)."""
    sc = _clean(F.get_json_object(value, "$.studentId_clientType"))
    return F.nullif(F.trim(F.substring_index(sc, "@", 1)), F.lit(""))


def record_student(entity: Column | str, record: Column) -> Column:
    """The student id of a raw export record of `entity` (its export's student field); null for exports without
    one."""
    entity = F.lit(entity) if isinstance(entity, str) else entity
    field: Any = F
    for name, key in STUDENT_FIELD.items():
        if name != "events":
            field = field.when(entity == name, F.get_json_object(record, f"$.{key}"))
    return F.nullif(_clean(field), F.lit(""))


def id_pattern(ids: Iterable[str], kind: str) -> str:
    """A regex finding raw text of `kind` (events, or an entity) that names one of `ids` in its student field
    (number or string, any spacing); Python and Java read it alike. Empty for entities without a student."""
    field = STUDENT_FIELD.get(kind)
    if field is None:
        return ""
    alternatives = "|".join(re.escape(i) for i in sorted(ids))
    return '"' + field + r'"\s*:\s*"?\s*(?:' + alternatives + r')\s*(?:@[^"]*)?"?\s*[,}]'


def mark_erased(frame: DataFrame, settings: Settings, group: str) -> DataFrame:
    """Bronze's filter: rows of a classified frame whose student is tombstoned get status `erased` (neither bronze
    nor quarantine keeps them; the run report counts them)."""
    found = tombstones(settings)
    if not found:
        return frame
    key = salt(settings)
    if key is None:
        return frame
    student = event_student(F.col("value")) if group == "events" else record_student(F.col("entity"), F.col("record"))
    digest = F.sha2(F.concat(F.lit(key), student), 256)
    erased = student.isNotNull() & digest.isin(*sorted(found))
    return frame.withColumn("status", F.when(erased, F.lit("erased")).otherwise(F.col("status")))


# -- landed files ----------------------------------------------------------------------------------


def value_pattern(kind: str) -> re.Pattern:
    """A regex capturing the student id (group 1) where raw text of `kind` names one in its student field."""
    return re.compile('"' + STUDENT_FIELD[kind] + r'"\s*:\s*"?\s*([^"@,}\s]+)\s*(?:@[^"]*)?"?\s*[,}]')


Erased = Callable[[str], bool]


def _redact(text: str, pattern: re.Pattern, erased: Erased) -> str:
    return pattern.sub(lambda m: f'"{REDACTED}"' if erased(m.group(1)) else m.group(0), text)


def names_erased(text: str, pattern: re.Pattern, erased: Erased) -> int:
    return sum(erased(m.group(1)) for m in pattern.finditer(text))


def _scrub_export(data: bytes, entity: str, erased: Erased, pattern: re.Pattern) -> bytes:
    """An export without the records of erased students; text that is not a JSON array has the ids redacted."""
    field = STUDENT_FIELD[entity]
    try:
        records = json.loads(data)
    except ValueError:
        records = None
    if not isinstance(records, list):
        return _redact(data.decode("utf-8", "replace"), pattern, erased).encode()
    kept = [r for r in records if not (isinstance(r, dict) and erased(str(r.get(field, "")).strip()))]
    if len(kept) == len(records):
        return data
    return ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in kept) + "\n]\n").encode()


def _scrub_lines(data: bytes, pattern: re.Pattern, erased: Erased) -> bytes:
    """Event lines with every line naming an erased student left blank (line numbers stay exact)."""
    return b"\n".join(
        b"" if names_erased(ln.decode("utf-8", "replace"), pattern, erased) else ln for ln in data.split(b"\n")
    )


def landed_files(settings: Settings, batches: set[int] | None = None) -> list[tuple[dict[str, Any], str]]:
    """(ledger entry, lake-relative path) of every landed file (of `batches`) and every long line kept beside one."""
    out = []
    for m in read_ledger(settings):
        if batches is not None and m["batch_id"] not in batches:
            continue
        for e in m["files"]:
            if e["status"] != "new":
                continue
            out.append((e, e["landed_path"]))
            out.extend((e, x["kept_at"]) for x in e.get("long_lines", []))
    return out


def kind_of(entry: dict[str, Any]) -> str:
    return "events" if entry["kind"] == "events" else entry["entity"] or ""


def scrub_landing(settings: Settings, erased: Erased, batches: set[int] | None = None) -> dict[str, int]:
    """Rewrite every landed file (of `batches`) naming an erased student without those records, and redact the
    ledger's heads; the ledger keeps each file's original content hash, so the source file is never landed again."""
    fs, root = lake_fs(settings)
    patterns = {k: value_pattern(k) for k in STUDENT_FIELD}
    rewritten = 0
    for entry, rel in landed_files(settings, batches):
        pattern = patterns.get(kind_of(entry))
        path = join(root, rel)
        if pattern is None or not fs.exists(path):
            continue
        data = fs.cat_file(path)
        if not names_erased(data.decode("utf-8", "replace"), pattern, erased):
            continue
        new = (
            _scrub_lines(data, pattern, erased)
            if entry["kind"] == "events"
            else _scrub_export(data, entry["entity"], erased, pattern)
        )
        _replace(fs, settings, path, new)
        rewritten += 1
    manifests = 0
    for m in read_ledger(settings):
        changed = False
        for e in m["files"]:
            pattern = patterns.get(kind_of(e))
            for holder in (e, *e.get("long_lines", [])):
                if pattern is not None and holder.get("head") and names_erased(holder["head"], pattern, erased):
                    holder["head"] = _redact(holder["head"], pattern, erased)
                    changed = True
        if changed:
            _replace(
                fs,
                settings,
                join(root, LEDGER, f"batch-{m['batch_id']:06d}.json"),
                json.dumps(m, indent=1, sort_keys=True).encode(),
            )
            manifests += 1
    incoming = join(root, "_system/incoming")
    if fs.exists(incoming):  # leftovers of a killed landing: copies of source files
        fs.rm(incoming, recursive=True)
    return {"landed_files": rewritten, "ledger_manifests": manifests}


def tombstoned(settings: Settings) -> Erased:
    """Whether a student id is erased, by its salted hash among the tombstones."""
    found, key = tombstones(settings), salt(settings)
    return lambda student: bool(found) and key is not None and hashed(key, student) in found


def _replace(fs: Any, settings: Settings, path: str, data: bytes) -> None:
    """Replace a file in one step: temp file + rename (local), one object put (object stores)."""
    if settings.lake_is_local:
        tmp = f"{path}.erasing-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)
