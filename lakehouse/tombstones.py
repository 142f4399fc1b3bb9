"""What an erasure leaves behind for later runs, below the layers that read it: the salted hashes of erased ids
(tombstones), who a raw text names (read the same way in Python and in Spark SQL), the filter bronze applies to
later deliveries, and the scrub of landed files (docs/erasure.md)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakehouse import parsing as P
from lakehouse import tables
from lakehouse.config import Settings, join
from lakehouse.landing import INCOMING, LEDGER, lake_fs, lake_listing, read_ledger
from lakehouse.security import write_secret

SALT_FILE = "erasure-salt"  # under the data folder, mode 0600, when LAKEHOUSE_ERASURE_SALT is unset
TOMBSTONES = "_system/tombstones"  # one JSON file per erased id, named by its salted hash
REDACTED = "[erased]"
CHUNK = 1 << 20

# -- the salt and who is erased ------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Erased:
    """Who is erased, as the salt and the salted hashes of their ids (never the ids themselves)."""

    salt: str
    hashes: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> Erased:
        """Every learner the tombstones hold (nobody without a salt)."""
        key = salt(settings)
        return cls(key or "", frozenset(tombstones(settings)) if key else frozenset())

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def __contains__(self, student_id: object) -> bool:
        return isinstance(student_id, str) and hashed(self.salt, student_id) in self.hashes

    def any_of(self, candidates: Column) -> Column:
        """Spark SQL: whether one of an array of candidate ids is erased."""
        hashes = F.array(*(F.lit(h) for h in sorted(self.hashes)))
        return F.exists(candidates, lambda c: F.array_contains(hashes, F.sha2(F.concat(F.lit(self.salt), c), 256)))


# -- who a raw text names: Python and Spark SQL read it alike ----------------------------------------------------------

STUDENT_KEYS = (tables.EVENT_STUDENT_FIELD, "StudentId", "Id")
# a student field and its value in text that is not JSON: a JSON string (escapes and all) or a bare token
_PATTERN = r'"(studentId_clientType|StudentId|Id)"\s*:\s*("(?:[^"\\]|\\.)*(?:"|$)|[^\s,}\]"]+)'
_FOUND = re.compile(_PATTERN)


def student_keys(kind: str | None) -> tuple[str, ...]:
    """The fields that name a learner in raw text of `kind`: an event line, an export with a student field (none for
    courses, universities, subjects), or anything else (an unknown export, a file under any name: every one)."""
    if kind == "events":
        return (tables.EVENT_STUDENT_FIELD,)
    if kind in tables.EXPORT:
        field = tables.EXPORT[kind].student_field
        return (field,) if field else ()
    return STUDENT_KEYS


def normalized(key: str, value: object) -> str | None:
    """A learner's id as silver reads it from a field's value: control characters removed, the part before `@` of
    `studentId_clientType`, trimmed; None when blank or absent."""
    if value is None or isinstance(value, dict | list):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    text = re.sub(P.CONTROL, "", text)
    if key == tables.EVENT_STUDENT_FIELD:
        text = text.split("@", 1)[0]
    return text.strip(" ") or None


def _decoded(token: str) -> object:
    """A value found by pattern: a JSON string decoded (one cut short at the end of the text too), else as is."""
    for text in (token, token + '"'):
        try:
            return json.loads(text) if token.startswith('"') else token
        except ValueError:
            continue
    return token


def learners(text: str, kind: str | None) -> set[str]:
    """The learner ids a raw line, record or file names: read as JSON (an object, or an array of objects: escaped
    forms, spaces and numbers are read as the parser reads them), else found by pattern in the text."""
    keys = student_keys(kind)
    if not keys:
        return set()
    try:
        doc = json.loads(text.removeprefix("\ufeff"))
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        found = [(k, doc.get(k)) for k in keys]
    elif isinstance(doc, list):
        found = [(k, e.get(k)) for e in doc if isinstance(e, dict) for k in keys]
    else:
        found = [(m[1], _decoded(m[2])) for m in _FOUND.finditer(text) if m[1] in keys]
    return {n for k, v in found if (n := normalized(k, v)) is not None}


def keys_column(kind: str | Column | None) -> Column:
    """Spark SQL: `student_keys` of a kind given as text or as a column (an export's entity)."""
    if kind is None or isinstance(kind, str):
        return F.array(*(F.lit(k) for k in student_keys(kind))).cast("array<string>")
    out: Any = F
    for entity in tables.ENTITIES:
        out = out.when(kind == entity, keys_column(entity))
    return out.otherwise(keys_column(None))


def _normalized_column(key: Column, value: Column) -> Column:
    part = F.when(key == tables.EVENT_STUDENT_FIELD, F.substring_index(value, "@", 1)).otherwise(value)
    return P.nonblank(P.clean(part))


def _of_object(obj: Column, keys: Column) -> Column:
    return F.transform(keys, lambda k: _normalized_column(k, F.try_element_at(obj, k)))


def learners_column(text: Column, keys: Column) -> Column:
    """Spark SQL: what `learners` gives, as an array (null entries removed), for raw text and its `keys_column`."""
    body = P.json_text(text)
    obj = F.from_json(body, "map<string,string>")
    items = F.from_json(body, "array<string>")
    in_items = F.flatten(F.transform(items, lambda e: _of_object(F.from_json(e, "map<string,string>"), keys)))
    pattern = F.lit(_PATTERN)
    in_text = F.transform(
        F.filter(
            F.regexp_extract_all(body, pattern, 0), lambda m: F.array_contains(keys, F.regexp_extract(m, _PATTERN, 1))
        ),
        lambda m: _normalized_column(
            F.regexp_extract(m, _PATTERN, 1),
            F.coalesce(
                *(
                    F.get_json_object(F.concat(F.lit('{"v":'), F.regexp_extract(m, _PATTERN, 2), F.lit(end)), "$.v")
                    for end in ("}", '"}')
                ),
                F.regexp_extract(m, _PATTERN, 2),
            ),
        ),
    )
    found = F.when(obj.isNotNull(), _of_object(obj, keys)).when(items.isNotNull(), in_items).otherwise(in_text)
    return F.filter(F.coalesce(found, F.array().cast("array<string>")), lambda c: c.isNotNull())


def without_learners(text: Column, keys: Column, erased: Erased) -> Column:
    """Spark SQL: a whole file's raw text without the erased learners it names: a JSON array keeps its other
    elements; other text has the values naming them redacted."""
    body = P.json_text(text)
    items = F.from_json(body, "array<string>")
    kept = F.filter(
        items, lambda e: ~erased.any_of(_of_object(F.from_json(e, "map<string,string>"), keys)).eqNullSafe(True)
    )
    pattern = F.lit(_PATTERN)
    matches = F.regexp_extract_all(body, pattern, 0)
    named = F.filter(
        matches, lambda m: erased.any_of(learners_column(F.concat(F.lit("{"), m, F.lit("}")), keys)).eqNullSafe(True)
    )
    redacted = F.aggregate(
        named,
        body,
        lambda acc, m: F.replace(
            acc, m, F.concat(F.lit('"'), F.regexp_extract(m, _PATTERN, 1), F.lit(f'": "{REDACTED}"'))
        ),
    )
    return F.when(items.isNotNull(), F.concat(F.lit("["), F.array_join(kept, ","), F.lit("]"))).otherwise(redacted)


def event_student(value: Column) -> Column:
    """The student id of a raw event line as silver reads it (the part of `studentId_clientType` before `@`)."""
    return F.get(learners_column(value, keys_column("events")), 0)


def mark_erased(frame: DataFrame, erased: Erased, group: str) -> DataFrame:
    """Bronze's filter of a classified frame: a line or record naming an erased learner gets status `erased` (kept
    nowhere; the run report counts it); a file quarantined whole keeps its row without the learner's records.
    `_erased` marks the rows of either kind: their landed files are scrubbed too."""
    if not erased:
        return frame.withColumn("_erased", F.lit(False))
    text = F.col("value") if group == "events" else F.coalesce(F.col("record"), F.col("raw"))
    keys = keys_column("events") if group == "events" else keys_column(F.col("entity"))
    named = erased.any_of(learners_column(text, keys))
    whole = F.col("line_number").isNull()
    marked = frame.withColumn("status", F.when(named & ~whole, F.lit("erased")).otherwise(F.col("status"))).withColumn(
        "_whole_named", named & whole
    )
    column = "value" if group == "events" else "raw"
    scrubbed = F.when(F.col("_whole_named"), without_learners(F.col(column), keys, erased)).otherwise(F.col(column))
    out = marked.withColumn(column, scrubbed)
    if "raw_base64" in frame.columns:  # the original bytes hold what the scrub removed
        out = out.withColumn("raw_base64", F.when(F.col("_whole_named"), F.lit(None)).otherwise(F.col("raw_base64")))
    return out.withColumn("_erased", (F.col("status") == "erased") | F.col("_whole_named")).drop("_whole_named")


# -- landed files, scrubbed by content and streamed -------------------------------------------------------------------


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


def kind_of(entry: dict[str, Any]) -> str | None:
    """The kind of raw text a landed file holds: events, its export's entity, or None (an unknown export)."""
    return "events" if entry["kind"] == "events" else entry.get("entity")


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """A file's lines with their terminators, one at a time."""
    yield from iter(stream.readline, b"")


def array_items(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """A JSON text read piece by piece: ("item", raw element text) for each element of a top-level array, and
    ("gap", text between them) for the brackets, commas and spaces; ValueError when it is not one array."""
    depth, in_string, escape = 0, False, False
    buffer = bytearray()
    started = False
    while chunk := stream.read(CHUNK):
        for byte in chunk:
            if not started:
                if byte in b" \t\r\n" or (not buffer and byte == 0xEF) or (buffer[:1] == b"\xef" and len(buffer) < 3):
                    buffer.append(byte)
                    continue
                if byte != ord("["):
                    raise ValueError("not a JSON array")
                started, depth = True, 1
                buffer.append(byte)
                yield "gap", bytes(buffer)
                buffer.clear()
                continue
            if depth == 0:
                if byte not in b" \t\r\n":
                    raise ValueError("text after the array")
                buffer.append(byte)
                continue
            if in_string:
                buffer.append(byte)
                if escape:
                    escape = False
                elif byte == ord("\\"):
                    escape = True
                elif byte == ord('"'):
                    in_string = False
                continue
            if byte == ord('"'):
                in_string = True
                buffer.append(byte)
            elif byte in b"[{":
                depth += 1
                buffer.append(byte)
            elif byte in b"]}":
                depth -= 1
                if depth == 0:
                    if buffer.strip():
                        yield "item", bytes(buffer)
                    buffer.clear()
                    buffer.append(byte)
                    continue
                buffer.append(byte)
            elif byte == ord(",") and depth == 1:
                yield "item", bytes(buffer)
                buffer.clear()
            else:
                buffer.append(byte)
    if not started or depth != 0:
        raise ValueError("not a whole JSON array")
    yield "gap", bytes(buffer)


def _may_name(text: bytes, hint: frozenset[bytes] | None) -> bool:
    """Whether text may name one of the learners `hint` holds (their ids in plain text): it holds one of them, or a
    JSON escape that could spell one. Without a hint, any text may."""
    return hint is None or b"\\u" in text or any(h in text for h in hint)


def _named(text: bytes, kind: str | None, erased: Erased, hint: frozenset[bytes] | None) -> bool:
    return _may_name(text, hint) and any(s in erased for s in learners(text.decode("utf-8", "replace"), kind))


def _scrubbed_export(
    src: IO[bytes], dst: IO[bytes], kind: str | None, erased: Erased, hint: frozenset[bytes] | None = None
) -> int:
    """Copy a JSON array export without the elements naming an erased learner; the elements it removed."""
    removed, first = 0, True
    for part, text in array_items(src):
        if part == "gap":
            dst.write(text if first or text.strip(b" \t\r\n") != b"" else b"")
            continue
        if _named(text, kind, erased, hint):
            removed += 1
            continue
        dst.write(text if first else b"," + text)
        first = False
    return removed


def _scrubbed_lines(
    src: IO[bytes], dst: IO[bytes], kind: str | None, erased: Erased, hint: frozenset[bytes] | None = None
) -> int:
    """Copy text line by line, each line naming an erased learner left blank (line numbers stay exact); the lines it
    blanked."""
    removed = 0
    for line in _lines(src):
        body = line.rstrip(b"\r\n")
        if body and _named(body, kind, erased, hint):
            dst.write(line[len(body) :])
            removed += 1
        else:
            dst.write(line)
    return removed


def scrub_file(
    fs: Any, settings: Settings, path: str, kind: str | None, erased: Erased, hint: frozenset[bytes] | None = None
) -> int:
    """Rewrite one landed file without what names an erased learner, read piece by piece (never whole): an export
    that is one JSON array loses those elements, any other text those lines. The records or lines removed."""
    tmp = f"{path}.erasing-{uuid.uuid4().hex}"
    removed = 0
    if kind != "events":
        try:
            with fs.open(path, "rb") as src, fs.open(tmp, "wb") as dst:
                removed = _scrubbed_export(src, dst, kind, erased, hint)
        except ValueError:
            removed = -1
    if kind == "events" or removed < 0:
        with fs.open(path, "rb") as src, fs.open(tmp, "wb") as dst:
            removed = _scrubbed_lines(src, dst, kind, erased, hint)
    if removed:
        _replace(fs, settings, tmp, path)
    else:
        fs.rm(tmp)
    return removed


def scrub_landing(
    settings: Settings, erased: Erased, paths: set[str] | None = None, hint: Iterable[str] | None = None
) -> dict[str, int]:
    """Rewrite every landed file (or those at `paths`) without the records and lines naming an erased learner, and the
    ledger's heads without them; the ledger keeps each file's original content hash, so it is never landed again.
    `hint`: the ids themselves, when known (an erasure): only text holding one, or a JSON escape, is parsed."""
    fs, root = lake_fs(settings)
    plain = None if hint is None else frozenset(i.encode() for i in hint)
    rewritten = 0
    for entry, rel in landed_files(settings):
        path = join(root, rel)
        if (paths is not None and rel not in paths and entry["landed_path"] not in paths) or not fs.exists(path):
            continue
        rewritten += scrub_file(fs, settings, path, kind_of(entry), erased, plain) > 0
    manifests = 0
    for m in read_ledger(settings):
        changed = False
        for e in m["files"]:
            for holder in (e, *e.get("long_lines", [])):
                head = holder.get("head")
                if head and any(s in erased for s in learners(head, kind_of(e))):
                    holder["head"] = REDACTED
                    changed = True
        if changed:
            _write_bytes(
                fs,
                settings,
                join(root, LEDGER, f"batch-{m['batch_id']:06d}.json"),
                json.dumps(m, indent=1, sort_keys=True).encode(),
            )
            manifests += 1
    incoming = join(root, INCOMING)
    if fs.exists(incoming):  # leftovers of a killed landing: copies of source files
        fs.rm(incoming, recursive=True)
    return {"landed_files": rewritten, "ledger_manifests": manifests}


def _replace(fs: Any, settings: Settings, tmp: str, path: str) -> None:
    """Put the file written at `tmp` in place of `path` in one step (a rename; a copy on object stores)."""
    if settings.lake_is_local:
        fs.mv(tmp, path)
    else:
        fs.copy(tmp, path)
        fs.rm(tmp)


def _write_bytes(fs: Any, settings: Settings, path: str, data: bytes) -> None:
    tmp = f"{path}.erasing-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, data)
    _replace(fs, settings, tmp, path)
