"""Where a learner's id is still found after an erasure, without Spark: every file under the lake (Delta logs and
checkpoints, every Parquet file read row by row, change-data files, landed files, `_system`), the data folder's
Prefect database and logs, every `dw` and stage table, and `pg_stats` (`lakehouse erase --verify`).

The id is looked for where a learner can be named: a field naming a learner in raw text (read as JSON, escapes and
all), a value of a personal column, a condition or a statistic in a Delta log, a flow run's parameters. An id of
six characters or more is also looked for in every byte, in every spelling (plain, JSON-escaped): shorter ids are
too common as text (a count, a day) to be told from a learner's by their bytes alone."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse import tables
from lakehouse.config import Settings
from lakehouse.landing import lake_fs, read_ledger
from lakehouse.pgserver import managed, warehouse_dsn
from lakehouse.prefect_server import prefect_home
from lakehouse.tombstones import array_items, kind_of, learners

DISTINCTIVE = 6  # characters from which an id is also looked for in every byte
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


@dataclass(frozen=True)
class Found:
    """One place the id is still found, and how many times."""

    place: str
    count: int


class Needle:
    """The id looked for: as a value, as a token in text (JSON escapes decoded), and (when distinctive) in bytes."""

    def __init__(self, student_id: str):
        self.id = student_id.strip()
        self.token = re.compile(r"(?<![0-9A-Za-z_.:/-])" + re.escape(self.id) + r"(?![0-9A-Za-z_.:-])")
        self.distinctive = len(self.id) >= DISTINCTIVE
        escaped = "".join(f"\\u{ord(c):04x}" for c in self.id)
        self.spellings = {s.encode() for s in (self.id, escaped, escaped.upper().replace("\\U", "\\u"))}

    def in_text(self, text: str) -> int:
        """How often the id stands as a token of the text, escapes decoded."""
        return len(self.token.findall(_ESCAPE.sub(lambda m: chr(int(m[1], 16)), text)))

    def in_raw(self, text: str, kind: str | None) -> int:
        """Whether a raw line, record or file names the learner (1) or not (0)."""
        return int(self.id in learners(text, kind))

    def in_bytes(self, data: bytes) -> int:
        """How often a spelling of a distinctive id is in the bytes (0 for a short id)."""
        return sum(data.count(s) for s in self.spellings) if self.distinctive else 0


# -- the lake ----------------------------------------------------------------------------------------------------------


def _spec(relative: str) -> tables.Table | None:
    """The catalogue's table a lake file belongs to (`<layer>/<table>/...`)."""
    parts = relative.split("/")
    return tables.BY_KEY.get(f"{parts[0]}.{parts[1]}") if len(parts) > 2 else None


def _stats(needle: Needle, stats: str | None, spec: tables.Table | None) -> int:
    """Hits in a file's statistics (a JSON text): a personal column's min or max naming the learner."""
    if not stats:
        return 0
    parsed = json.loads(stats)
    hits = 0
    for bound in ("minValues", "maxValues"):
        for column, value in (parsed.get(bound) or {}).items():
            personal = spec is None or column not in spec.names or spec.column(column).pii
            if personal and isinstance(value, str):
                hits += value.strip() == needle.id or needle.in_raw(value, None) or needle.in_text(value) > 0
    return hits


def _log_actions(needle: Needle, actions: Iterator[dict[str, Any]], spec: tables.Table | None) -> int:
    """Hits in Delta log actions: conditions and parameters of a commit, statistics of the files it added or removed,
    the table's properties."""
    hits = 0
    for action in actions:
        if info := action.get("commitInfo"):
            hits += needle.in_text(json.dumps(info.get("operationParameters") or {}, ensure_ascii=False))
        for kind in ("add", "remove", "cdc"):
            if file := action.get(kind):
                hits += _stats(needle, file.get("stats"), spec)
        for file in action.get("allFiles") or ():  # a checksum file listing the version's files
            hits += _stats(needle, file.get("stats"), spec)
        if meta := action.get("metaData") or action.get("metadata"):
            hits += needle.in_text(json.dumps(meta.get("configuration") or {}, ensure_ascii=False))
    return hits


def _texts(column: pa.ChunkedArray) -> list[str]:
    """The non-null values of a column as text (maps, lists and structs as JSON)."""
    return [v if isinstance(v, str) else json.dumps(v, default=str) for v in column.to_pylist() if v is not None]


def _parquet_rows(needle: Needle, table: pa.Table, spec: tables.Table | None) -> int:
    """Hits in a data file's rows: a personal column (or any column of a table the catalogue does not know) naming
    the learner (raw text read as its kind reads it: an event line, or its row's export); with a distinctive id, any
    text holding it."""
    kind = spec.name if spec is not None and spec.name in ("events", *tables.ENTITIES) else None
    entities = table.column("entity").to_pylist() if "entity" in table.column_names else None
    hits = 0
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_nested(column.type)):
            continue
        personal = spec is None or name not in spec.names or spec.column(name).pii
        for row, value in enumerate(column.to_pylist()):
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if name == "raw_base64":
                text = base64.b64decode(text).decode("utf-8", "replace")
            row_kind = entities[row] if entities is not None else kind
            if personal and (text.strip() == needle.id or needle.in_raw(text, row_kind)):
                hits += 1
            elif needle.distinctive and needle.in_text(text):
                hits += 1
    return hits


def _landed(needle: Needle, fs: Any, path: str, kind: str | None) -> int:
    """Hits in a landed file, read piece by piece: each line (events, or text that is not a JSON array) or each
    element of an export's array naming the learner."""
    hint = {s for s in needle.spellings} | {needle.id.encode(), b"\\u"}
    hits = 0
    if kind != "events":
        try:
            with fs.open(path, "rb") as f:
                items = [t for part, t in array_items(f) if part == "item" and any(h in t for h in hint)]
            return sum(needle.in_raw(t.decode("utf-8", "replace"), kind) for t in items)
        except ValueError:
            pass
    with fs.open(path, "rb") as f:
        for line in iter(f.readline, b""):
            if any(h in line for h in hint):
                hits += needle.in_raw(line.decode("utf-8", "replace").rstrip("\r\n"), kind)
    return hits


def _parquet(fs: Any, path: str) -> pa.Table | None:
    """The Parquet file's rows, or None when it is not whole (a writer killed mid-file leaves one behind)."""
    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f)
    except (pa.ArrowInvalid, OSError):
        return None


def scan_lake(settings: Settings, needle: Needle) -> list[Found]:
    """Every file under the lake."""
    fs, root = lake_fs(settings)
    root = root.rstrip("/")
    kinds = {e["landed_path"]: kind_of(e) for m in read_ledger(settings) for e in m["files"]}
    kinds.update(
        {x["kept_at"]: kind_of(e) for m in read_ledger(settings) for e in m["files"] for x in e.get("long_lines", [])}
    )
    found = []
    for path in sorted(fs.find(root)):
        relative = path[len(root) + 1 :]
        spec = _spec(relative)
        hits = 0
        if "/_delta_log/" in relative and relative.endswith((".json", ".crc")) and "/." not in relative:
            text = fs.cat_file(path).decode("utf-8", "replace")
            lines = (json.loads(ln) for ln in text.splitlines() if ln.strip().startswith("{"))
            hits = _log_actions(needle, lines, spec)
        elif relative.endswith(".parquet") and "/." not in relative:
            table = _parquet(fs, path)
            if table is None:
                found.append(Found(f"lake {relative} (not readable as Parquet, so not shown clean)", 1))
                continue
            if "/_delta_log/" in relative:
                adds = [a for a in table.column("add").to_pylist() if a] if "add" in table.column_names else []
                hits = sum(_stats(needle, a.get("stats"), spec) for a in adds)
                hits += (
                    sum(needle.in_text(v) for v in _texts(table.column("metaData")))
                    if "metaData" in table.column_names
                    else 0
                )
            else:
                hits = _parquet_rows(needle, table, spec)
        elif relative.startswith("landing/"):
            hits = _landed(needle, fs, path, kinds.get(relative))
        elif relative.startswith("_system/ledger/"):
            manifest = json.loads(fs.cat_file(path))
            heads = [
                (h.get("head") or "", kind_of(e)) for e in manifest["files"] for h in (e, *e.get("long_lines", []))
            ]
            hits = sum(needle.in_raw(head, kind) for head, kind in heads if head)
        if not hits and not relative.endswith(".parquet") and "/." not in relative:
            hits = needle.in_bytes(fs.cat_file(path)) if needle.distinctive else 0
        if hits:
            found.append(Found(f"lake {relative}", hits))
    return found


# -- Prefect's database and the logs -----------------------------------------------------------------------------------


def _prefect_rows(needle: Needle, database: Path) -> list[Found]:
    """Hits in Prefect's database: a flow run's parameters holding the id; with a distinctive id, any text."""
    found = []
    con = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        names = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        for table in names:
            columns = [r[1] for r in con.execute(f'pragma table_info("{table}")')]
            hits = 0
            for row in con.execute(f'select {", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)} from "{table}"'):
                for column, value in zip(columns, row):
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                    if not isinstance(text, str):
                        continue
                    if column == "parameters" and needle.id in _values(text):
                        hits += 1
                    elif needle.distinctive and needle.in_text(text):
                        hits += 1
            if hits:
                found.append(Found(f"Prefect database {database.name}, table {table}", hits))
    finally:
        con.close()
    return found


def _values(text: str) -> set[str]:
    """Every scalar of a JSON document, as text."""
    try:
        doc = json.loads(text)
    except ValueError:
        return set()
    out: set[str] = set()
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            out.add(str(item).strip())
    return out


def scan_data_folder(settings: Settings, needle: Needle) -> list[Found]:
    """The data folder's Prefect database (rows, and the bytes of its files) and its logs."""
    found = []
    home = prefect_home(settings)
    database = home / "prefect.db"
    if database.exists():
        found += _prefect_rows(needle, database)
    for folder in (home, Path(settings.data_dir) / "logs"):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []:
            data = path.read_bytes()
            hits = needle.in_bytes(data)
            if not hits and path.suffix == ".log":
                hits = sum(needle.in_raw(line, None) for line in data.decode("utf-8", "replace").splitlines())
            if hits:
                found.append(Found(f"data folder {path.relative_to(Path(settings.data_dir))}", hits))
    return found


# -- the warehouse -----------------------------------------------------------------------------------------------------


def scan_warehouse(settings: Settings, needle: Needle) -> list[Found]:
    """Every dw and stage table (a learner column holding the id; with a distinctive id, any text), and pg_stats."""
    if settings.pg_dsn is None and not managed(settings).initialized():
        return []
    found = []
    with psycopg2.connect(warehouse_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "select table_schema, table_name, column_name from information_schema.columns c"
            " where table_schema in ('dw', 'stage') and data_type in ('text', 'character varying', 'ARRAY')"
            " order by 1, 2, 3"
        )
        for schema, table, column in cur.fetchall():
            if column == "student_id":
                cur.execute(f'select count(*) from "{schema}"."{table}" where student_id = %s', (needle.id,))
            elif needle.distinctive:
                cur.execute(
                    f'select count(*) from "{schema}"."{table}" where "{column}"::text ~ %s', (_pg_token(needle.id),)
                )
            else:
                continue
            if n := cur.fetchone()[0]:  # type: ignore[index]
                found.append(Found(f"warehouse {schema}.{table}.{column}", n))
        cur.execute(
            "select schemaname, tablename, attname, coalesce(most_common_vals::text, '') || ' '"
            " || coalesce(histogram_bounds::text, '') from pg_stats where schemaname in ('dw', 'stage')"
        )
        for schema, table, column, values in cur.fetchall():
            hits = needle.in_text(values) if (column == "student_id" or needle.distinctive) else 0
            if hits:
                found.append(Found(f"warehouse pg_stats {schema}.{table}.{column}", hits))
    conn.close()
    return found


def _pg_token(text: str) -> str:
    """A PostgreSQL regex finding `text` as a token."""
    return r"(^|[^0-9A-Za-z_.:/-])" + re.escape(text) + r"($|[^0-9A-Za-z_.:-])"


def verify(settings: Settings, student_id: str) -> list[Found]:
    """Every place the id is still found: the lake, the data folder's Prefect database and logs, the warehouse."""
    needle = Needle(student_id)
    if not needle.id:
        raise ValueError("name the student id to look for")
    return scan_lake(settings, needle) + scan_data_folder(settings, needle) + scan_warehouse(settings, needle)
