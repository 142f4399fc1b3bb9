"""What the mirror loads into each `dw` table, derived from the catalogue: the gold table it reads, the DuckDB select
that stages it, and the parameters of its kind's load template (warehouse_sql/load/dimension.sql or fact.sql)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from lakehouse import tables
from lakehouse.config import PROJECT_ROOT


def _sql_dir() -> Path:
    """warehouse_sql/: the copy shipped inside the installed package (wheel), else the checkout's top-level folder."""
    packaged = Path(__file__).resolve().parent.parent / "warehouse_sql"
    return packaged if packaged.is_dir() else PROJECT_ROOT / "warehouse_sql"


SQL_DIR = _sql_dir()
ERASED_MEMBER = tables.ERASED_MEMBER
ERASED_MEMBER_SK = 0
# dimension keys sorted and partitioned under collate "C": the same groups (text equality is bytewise either way),
# a cheaper sort than under the database's collation
KEY_COLLATION = {"dim_student": "C"}


@dataclass(frozen=True)
class Load:
    """One dw target table: the gold table it reads, the DuckDB select that stages it, and what its kind's load
    template needs to be rendered for it."""

    target: str
    gold: str
    grain: str  # what one row of the target is, in one line
    columns: tuple[str, ...]  # the staged columns
    select: str  # DuckDB select over `{src}` giving `columns` in order
    key: str | None = None  # dimensions: the business key
    key_collation: str | None = None  # dimensions: the collation the key is sorted and partitioned under
    fact_time: str | None = None  # facts: the column whose time picks each dimension's version
    measures: tuple[tuple[str, str], ...] = ()  # facts: (column, aggregate) combining the staged rows of one grain
    depends: tuple[str, ...] = ()  # facts: the dimensions whose surrogate keys the fact carries

    @property
    def is_dimension(self) -> bool:
        return self.key is not None

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns of the target's grain: its rows of one value are replaced together when gold's change."""
        return self.spec.keys

    @property
    def spec(self) -> tables.Table:
        return tables.table("dw", self.target)


def _staged(column: tables.Column, key: bool = False) -> str:
    """A gold column as the warehouse types it: ids cast to the dimension key's type, times to timestamptz."""
    if column.type == "timestamp":
        return f"cast({column.name} as timestamptz) as {column.name}"
    if key or column.type in ("int", "boolean") or column.name == "delivery":
        duck = {"string": "varchar", "int": "integer", "boolean": "boolean"}[column.type]
        return f"cast({column.name} as {duck}) as {column.name}"
    return column.name


def _dimension(spec: tables.Table) -> Load:
    gold = tables.table("gold", spec.source or "")
    key = gold.keys[0]
    return Load(
        spec.name,
        gold.name,
        spec.grain,
        gold.names,
        f"select {', '.join(_staged(c, key=c.name == key) for c in gold.columns)} from {{src}}",
        key=key,
        key_collation=KEY_COLLATION.get(spec.name),
    )


# an erased learner's rows under the erased member; anonymous rows (no learner ever) keep a null key
_STUDENT = f"cast(coalesce(student_id, case when student_erased then '{ERASED_MEMBER}' end) as varchar) as student_id"
# a gold fact as this layout of gold writes it: one an earlier layout wrote lacks `student_erased` (none erased)
_STUDENT_FACT = "(from {src} union all by name select null::boolean as student_erased where false)"


def _depends(spec: tables.Table) -> tuple[str, ...]:
    """The dimensions whose surrogate keys a fact carries."""
    return tuple(f"dim_{c.removesuffix('_sk')}" for c in spec.names if c.endswith("_sk"))


def _record_fact(spec: tables.Table) -> Load:
    """A fact of one row per distinct source record, dated by its one `_at` column."""
    gold = tables.table("gold", spec.source or "")
    staged = [c for c in spec.names if not c.endswith("_sk")]
    (time,) = [c for c in staged if c.endswith("_at")]
    select = [_STUDENT if c == "student_id" else _staged(gold.column(c), key=c.endswith("_id")) for c in staged]
    return Load(
        spec.name,
        gold.name,
        spec.grain,
        tuple(staged),
        f"select {', '.join(select)} from {_STUDENT_FACT}",
        fact_time=time,
        depends=_depends(spec),
    )


def _page_view_daily(spec: tables.Table) -> Load:
    staged = tuple(c for c in spec.names if not c.endswith("_sk"))
    return Load(
        spec.name,
        spec.source or "",
        spec.grain,
        staged,
        f"select cast(event_date as date) as event_date, {_STUDENT}, client_type,"
        " country, count(*) as page_views, cast(min(event_at) as timestamptz) as first_event_at,"
        " cast(max(event_at) as timestamptz) as last_event_at"
        f" from {_STUDENT_FACT} group by all",
        fact_time="first_event_at",
        measures=(("page_views", "sum"), ("first_event_at", "min"), ("last_event_at", "max")),
        depends=_depends(spec),
    )


# what the warehouse adds to a gold table it mirrors row for row: column -> DuckDB expression over gold's columns
DERIVED = {
    "dim_date": {
        "quarter": "cast(quarter(date) as integer)",
        "month_name": "strftime(date, '%B')",
        "week": "cast(weekofyear(date) as integer)",
        "is_weekend": "weekday >= 6",
    },
}


def _mirrored(spec: tables.Table) -> Load:
    """A gold table mirrored row for row (the calendar, the marts), with the columns the warehouse derives."""
    gold = tables.table("gold", spec.source or "")
    derived = DERIVED.get(spec.name, {})
    select = [f"{derived[c]} as {c}" if c in derived else _staged(gold.column(c)) for c in spec.names]
    return Load(spec.name, gold.name, spec.grain, spec.names, f"select {', '.join(select)} from {{src}}")


def _kind(spec: tables.Table) -> int:
    """The order loads run in: SCD2 dimensions (facts pick their surrogate keys from them), the calendar, the facts,
    the marts."""
    if (spec.source or "").endswith("_history"):
        return 0
    return {"dim": 1, "fact": 2}.get(spec.name.split("_")[0], 3)


def _load(spec: tables.Table) -> Load:
    if _kind(spec) == 0:
        return _dimension(spec)
    if spec.name == "fact_page_view_daily":
        return _page_view_daily(spec)
    if _kind(spec) == 2:
        return _record_fact(spec)
    return _mirrored(spec)


LOADS: tuple[Load, ...] = tuple(
    _load(t) for t in sorted(tables.layer("dw"), key=_kind) if t.kept_by is tables.Kept.LOADED
)
LOADS_BY_TARGET = {load.target: load for load in LOADS}


def _template_context(load: Load, changes: bool = False) -> dict[str, Any]:
    """The variables of the load's template (their meaning is stated at the top of each template); `changes`: the
    fact's load of the grains whose gold rows changed."""
    if load.is_dimension:
        attributes = [c for c in load.columns if c not in (load.key, "is_deleted", "as_of", "delivery")]
        return {
            "table": load.target,
            "grain": load.grain,
            "key": load.key,
            "surrogate_key": load.spec.keys[0],
            "attributes": attributes,
            "key_collation": load.key_collation or "",
        }
    measures = [list(m) for m in load.measures]
    dimensions = [{"entity": d.removeprefix("dim_"), "key": LOADS_BY_TARGET[d].key} for d in load.depends]
    return {
        "table": load.target,
        "grain": load.grain,
        "fact_time": load.fact_time,
        "measures": measures,
        "columns": [c for c in load.columns if c not in dict(load.measures)],
        "dimensions": dimensions,
        "keys": list(load.keys),
        "changes": changes,
    }


# the environment sqlfluff lints the templates with: trailing newline kept, the `do` statement, no escaping; each
# template is compiled once (again when its file changes)
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(SQL_DIR),
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
    extensions=["jinja2.ext.do"],
    autoescape=False,
)


def render(template: str, context: dict[str, Any]) -> str:
    """A template of warehouse_sql/ (its path under it) rendered with `context`."""
    return _TEMPLATES.get_template(template).render(context)


def _target(target: str) -> Load:
    load = LOADS_BY_TARGET.get(target)
    if load is None:
        raise KeyError(f"no dw target table {target!r}; targets: {', '.join(LOADS_BY_TARGET)}")
    return load


def load_sql(target: str, changes: bool = False) -> str:
    """The load SQL of a dw target table: its kind's template in warehouse_sql/load/, rendered from LOADS; `changes`:
    a fact's load of only the grains whose gold rows changed (fact.sql's `changes`)."""
    load = _target(target)
    if changes and load.is_dimension:
        raise ValueError(f"dw.{target} is a dimension: restated by delivery, never loaded from gold's changes")
    template = "load/" + ("dimension.sql" if load.is_dimension else "fact.sql")
    return render(template, _template_context(load, changes))


def repoint_sql(target: str) -> str:
    """The SQL re-pointing a fact's surrogate keys after its dimensions changed (warehouse_sql/load/repoint.sql); empty
    for a table that carries none."""
    load = _target(target)
    return render("load/repoint.sql", _template_context(load)) if load.depends else ""


def table_sql(target: str) -> str:
    """Every SQL the mirror may run for a dw table: its load, then its re-pointing when it has one."""
    repoint = repoint_sql(target)
    return load_sql(target) + (f"\n{repoint}" if repoint else "")


def statements(sql: str) -> list[tuple[str, str]]:
    """The statements of a rendered load as (name, sql); a name is the statement's leading `-- name:`."""
    found = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", sql):
        lines = chunk.strip().splitlines()
        if not any(ln.strip() and not ln.lstrip().startswith("--") for ln in lines):
            continue
        names = [m.group(1) for ln in lines if (m := re.match(r"--\s*(\w+):", ln))]
        if not names:
            raise ValueError("a statement of a load has no leading `-- name:` comment")
        found.append((names[-1], chunk.strip()))
    return found


def load_statements(target: str, changes: bool = False) -> list[tuple[str, str]]:
    """The statements of the target's load SQL as (name, sql)."""
    return statements(load_sql(target, changes))


def repoint_statements(target: str) -> dict[str, str]:
    """The fact's re-pointing statement per dimension it carries (`dim_<entity>` -> sql)."""
    return {f"dim_{name.removeprefix('repointed_')}": sql for name, sql in statements(repoint_sql(target))}
