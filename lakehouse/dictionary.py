"""The catalogue for people: the data dictionary `lakehouse tables` prints and docs/lake-tables.md (generated here;
`make lint` fails when the file is stale: `python -m lakehouse.dictionary --write` rewrites it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lakehouse import tables
from lakehouse.config import DELTA_LAYERS, PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "lake-tables.md"
# The layers `lakehouse query` shows as DuckDB views, in order; the warehouse is PostgreSQL's schema dw.
QUERY_LAYERS = DELTA_LAYERS
_DUCKDB = {
    "string": "VARCHAR",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "date": "DATE",
    "double": "DOUBLE",
}


def duckdb_type(spark_type: str) -> str:
    """A lake column's type as `lakehouse query` (DuckDB over Delta) shows it."""
    if spark_type.startswith("map<"):
        key, value = spark_type[4:-1].split(",", 1)
        return f"MAP({duckdb_type(key)}, {duckdb_type(value)})"
    return _DUCKDB[spark_type]


def shown_type(table: tables.Table, column: tables.Column) -> str:
    """A column's type as its reader sees it: DuckDB's for the lake, PostgreSQL's for dw."""
    return column.type if table.layer == "dw" else duckdb_type(column.type)


def listed(warehouse: bool = False) -> tuple[tables.Table, ...]:
    """The tables `lakehouse tables` lists: the lake's query layers, or the warehouse's dw."""
    return tables.layer("dw") if warehouse else tuple(t for t in tables.LAKE if t.layer in QUERY_LAYERS)


def entry(table: tables.Table) -> dict[str, Any]:
    """One table as the JSON data dictionary gives it."""
    return {
        "table": table.key,
        "grain": table.grain,
        "keys": list(table.keys),
        "kept_by": str(table.kept_by),
        "columns": [
            {"name": c.name, "type": shown_type(table, c), "description": c.description, "pii": c.pii}
            for c in table.columns
        ],
    }


def select(name: str | None, warehouse: bool = False) -> tuple[tables.Table, ...]:
    """The listed tables `name` picks: `<layer>.<table>`, a table name, a layer, or all of them (None)."""
    found = listed(warehouse)
    if name is None:
        return found
    picked = tuple(t for t in found if name in (t.key, t.name, t.layer))
    if not picked:
        raise KeyError(f"no table {name!r}; one of: {', '.join(t.key for t in found)}")
    return picked


# -- docs/lake-tables.md --------------------------------------------------------------------------------------------

_INTRO = """# The tables of the lake

<!-- Generated from the catalogue (lakehouse/tables.py) by `python -m lakehouse.dictionary --write`; `make lint`
fails when it is stale. Edit the catalogue, not this file. -->

Every Delta table of the lake `<lake>/<layer>/<table>` is a view `<layer>.<table>` in `lakehouse query`, the
dashboard and the DuckDB catalog file; `lakehouse tables [NAME] [--format json]` prints the same dictionary. Types
are as `lakehouse query` shows them (PostgreSQL's for `dw`). **Personal** columns hold a learner's id, raw text that
may name one, or a per-person id or hash: Delta keeps no statistics on them, and an erasure rewrites them
(`docs/erasure.md`). How the stages keep each table up to date is in `docs/incremental.md`; the raw data and its quirks
are in `docs/source-data.md`; the warehouse in `docs/warehouse.md`.

| layer | holds |
|---|---|
| `landing` (files, not Delta) | each new source file copied once, immutable (except that an erasure removes a learner's records: `docs/erasure.md`), under `landing/<kind>/<delivery>/<sha256 prefix>/` |
| `bronze` | every event line and exported record as delivered, with where each came from |
| `quarantine` | what could not be read or held, with the reason (`docs/quarantine.md`) |
| `silver` | typed, conformed, deduplicated page views, the snapshot history of the exports, the records |
| `gold` | the star schema, the marts and the dimension histories the warehouse versions |
| `quality` | what the declared expectations found in each refresh (`docs/quality.md`) |
| `_system` (not a view) | the landing ledger, the erasure tombstones (salted hashes) and `_system.erasures` |
| `dw` (PostgreSQL) | the warehouse: SCD type 2 dimensions and facts for BI tools |

Kept by: **appended** (rows only added), **merged** (a Delta MERGE by key), **replaced by delivery** (the deliveries
from the first changed one rewritten), **replaced by group** (the groups new rows touch recomputed), **rebuilt**
(rewritten whole from its inputs), **loaded by the mirror** (dw, from gold).
"""

_OUTRO = """
The marts answer the case study's questions: students per state (`gold.mart_state_activity`), foreign countries with
more than 100 page views in a month (`gold.mart_country_access`), users per user type (`gold.mart_users_by_type`).
Totals reconcile: the page views of every mart add up to the rows of `gold.fact_page_view`.
"""

_LAYER_TITLES = {
    "bronze": "Bronze",
    "quarantine": "Quarantine",
    "silver": "Silver",
    "gold": "Gold",
    "quality": "Quality",
    "_system": "System tables",
    "dw": "The warehouse (PostgreSQL schema `dw`)",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table_md(table: tables.Table) -> list[str]:
    layout = [f"kept: {table.kept_by}", f"key: {', '.join(f'`{k}`' for k in table.keys)}"]
    if table.partition_by:
        layout.append(f"partitioned by {', '.join(f'`{c}`' for c in table.partition_by)}")
    if table.stats:
        layout.append(f"statistics on {', '.join(f'`{c}`' for c in table.stats)}")
    if table.change_feed:
        layout.append("change data feed kept (the mirror reads it)")
    if table.source:
        layout.append(f"from `gold.{table.source}`")
    lines = [f"### `{table.key}`", "", f"{_cell(table.grain)}. {'; '.join(layout)}.", ""]
    lines += ["| column | type | description | personal |", "|---|---|---|---|"]
    for c in table.columns:
        lines.append(f"| `{c.name}` | {shown_type(table, c)} | {_cell(c.description)} | {'yes' if c.pii else ''} |")
    return [*lines, ""]


def markdown() -> str:
    """docs/lake-tables.md, from the catalogue."""
    out = [_INTRO]
    for layer in _LAYER_TITLES:
        out += [f"## {_LAYER_TITLES[layer]}", ""]
        for table in tables.layer(layer):
            out += _table_md(table)
    return "\n".join(out).rstrip("\n") + "\n" + _OUTRO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="docs/lake-tables.md from the catalogue")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 when the file differs from the catalogue")
    action.add_argument("--write", action="store_true", help="rewrite the file")
    parser.add_argument("--file", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = markdown()
    if args.write:
        args.file.write_text(text)
        return 0
    if not args.file.exists() or args.file.read_text() != text:
        print(
            f"{args.file} is stale: it differs from the catalogue (lakehouse/tables.py); "
            "run `.venv/bin/python -m lakehouse.dictionary --write`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
