"""Declared expectations (LAKEHOUSE_EXPECTATIONS, a YAML file): read, checked against the catalogue, and each rule's
SQL made ready for Spark. No Spark here: a bad file is refused at a flow's start, in one line naming the rule."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlglot
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from lakehouse import tables
from lakehouse.config import Settings
from lakehouse.delta_log import is_table

Action = Literal["warn", "drop", "fail"]
ACTIONS: tuple[str, ...] = ("warn", "drop", "fail")
CHECKED_LAYERS = ("silver", "gold")  # the tables expectations are declared on
READ_LAYERS = ("silver", "gold")  # the tables a rule's subquery may read
PLACE = ("source_file", "line_number")  # rows carrying these have a place in the source: `drop` can quarantine them
ROW = "row"  # the alias of the checked row inside a rule's subqueries
REASON = "expectation:"  # the quarantine reason of a dropped row: expectation:<name>
_NAME = re.compile(r"^[a-z0-9_]+$")


class ExpectationsError(ValueError):
    """An expectations file that cannot be used, said in one line naming the file, the line and the rule."""


class ExpectationFailed(RuntimeError):
    """A `fail` expectation held a table back: more than its allowed share of the rows checked failed."""

    def __init__(self, message: str, table: str, expectation: str, rows_failed: int, rows_checked: int, run_id: str):
        super().__init__(message)
        self.table, self.expectation, self.run_id = table, expectation, run_id
        self.rows_failed, self.rows_checked = rows_failed, rows_checked

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (str(self), self.table, self.expectation, self.rows_failed, self.rows_checked, self.run_id),
        )


class _Declared(BaseModel):
    """One expectation as the file declares it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    table: str
    expect: str
    action: str
    max_failed_pct: float | int | None = Field(None, ge=0, le=100)


@dataclass(frozen=True)
class Rule:
    """One checked expectation: its declaration, where the file states it, and the other tables its SQL reads."""

    name: str
    table: str  # <layer>.<name>
    expect: str
    action: Action
    max_failed_pct: float
    line: int
    reads: tuple[str, ...] = ()  # <layer>.<name> of the tables its subqueries read

    def sql(self, settings: Settings) -> str:
        """The expectation as Spark SQL: the tables it reads by their Delta paths (one not written yet, as on a lake
        that has had no export so far, reads as empty), null counted as failed."""
        text = self.expect
        if self.reads:

            def by_path(node: exp.Expression) -> exp.Expression:
                if isinstance(node, exp.Table) and node.db:
                    path = settings.table_path(node.db, node.name)
                    if not is_table(path, settings):
                        return _empty(node)
                    return exp.Table(
                        this=exp.to_identifier(path.replace("`", "``"), quoted=True),
                        db=exp.to_identifier("delta"),
                        alias=node.args.get("alias"),
                    )
                return node

            text = sqlglot.parse_one(text, read="spark").transform(by_path).sql(dialect="spark")
        return f"coalesce(({text}), false)"

    @property
    def reason(self) -> str:
        """The quarantine reason of the rows it drops."""
        return f"{REASON}{self.name}"


def _empty(table: exp.Table) -> exp.Expression:
    """A relation with the catalogue's columns of `table` and no row, under the table's alias or name."""
    spec = tables.table(table.db, table.name)
    listed = ", ".join(f"cast(null as {c.type}) as {c.name}" for c in spec.columns)
    empty = sqlglot.parse_one(f"select {listed} where false", read="spark")
    assert isinstance(empty, exp.Select)
    return empty.subquery(table.alias_or_name)


@dataclass(frozen=True)
class Expectations:
    """The rules of one expectations file, in the file's order."""

    path: Path
    rules: tuple[Rule, ...] = ()

    def on(self, table: str) -> tuple[Rule, ...]:
        """The rules checking `<layer>.<table>`."""
        return tuple(r for r in self.rules if r.table == table)

    def reads(self, table: str) -> tuple[str, ...]:
        """The tables the rules of `table` read."""
        return tuple(dict.fromkeys(t for r in self.on(table) for t in r.reads))


def load(path: Path | str) -> Expectations:
    """Read and check an expectations file; ExpectationsError (one line) when it cannot be used."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExpectationsError(f"{path}: cannot read the expectations file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ExpectationsError(f"{path}: the expectations file is not UTF-8 text") from None
    items = _items(text, path)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for item, line, fields in items:
        rule = _rule(item, line, fields, path)
        if rule.name in seen:
            raise ExpectationsError(
                f"{path}:{line}: expectation {rule.name}: the name is already used on line {seen[rule.name]}"
            )
        seen[rule.name] = line
        rules.append(rule)
    return Expectations(path, tuple(rules))


def _items(text: str, path: Path) -> list[tuple[Any, int, dict[str, int]]]:
    """Each declared item, the line it starts on, and the line of each of its fields."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExpectationsError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: {problem}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise ExpectationsError(f"{path}:1: the file must be a mapping with one key, `expectations`")
    extra = [k for k in data if k != "expectations"]
    if extra:
        raise ExpectationsError(f"{path}:1: unknown key {extra[0]!r}: the file has one key, `expectations`")
    listed = next((v for k, v in root.value if k.value == "expectations"), None)
    if data.get("expectations") is None:
        return []
    if not isinstance(data["expectations"], list) or not isinstance(listed, yaml.SequenceNode):
        line = listed.start_mark.line + 1 if listed is not None else 1
        raise ExpectationsError(f"{path}:{line}: `expectations` must be a list of expectations")
    out = []
    for item, node in zip(data["expectations"], listed.value):
        fields = {k.value: v.start_mark.line + 1 for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}
        out.append((item, node.start_mark.line + 1, fields))
    return out


def _rule(item: Any, line: int, fields: dict[str, int], path: Path) -> Rule:
    """One item checked: its fields, its table, its SQL and the columns it names."""
    label = f"expectation {item.get('name')}" if isinstance(item, dict) and item.get("name") else "expectation"

    def refuse(problem: str, field: str | None = None) -> ExpectationsError:
        return ExpectationsError(f"{path}:{fields.get(field or '', line)}: {label}: {problem}")

    if not isinstance(item, dict):
        raise refuse("each expectation is a mapping (name, table, expect, action)")
    try:
        declared = _Declared.model_validate(item)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        if error["type"] == "missing":
            raise refuse(f"`{field}` is missing") from None
        if error["type"] == "extra_forbidden":
            raise refuse(f"unknown field `{field}` (name, table, expect, action, max_failed_pct)", field) from None
        raise refuse(f"`{field}`: {error['msg'].lower()}", field) from None
    if not _NAME.match(declared.name):
        raise refuse(f"name {declared.name!r} must match [a-z0-9_]+", "name")
    if declared.action not in ACTIONS:
        raise refuse(f"unknown action {declared.action!r}: one of warn, drop, fail", "action")
    spec = _table(declared.table, CHECKED_LAYERS, lambda p: refuse(p, "table"))
    if declared.max_failed_pct is not None and declared.action != "fail":
        raise refuse(f"max_failed_pct applies to action fail only, not {declared.action}", "max_failed_pct")
    if declared.action == "drop" and not set(PLACE) <= set(spec.names):
        raise refuse(
            f"action drop needs rows with a place in the source ({', '.join(PLACE)}) to quarantine, and "
            f"{spec.key} has none: use warn or fail",
            "action",
        )
    reads = _check_sql(declared.expect, spec, lambda p: refuse(p, "expect"))
    return Rule(
        declared.name,
        spec.key,
        declared.expect,
        declared.action,  # type: ignore[arg-type]  # one of ACTIONS, checked above
        float(declared.max_failed_pct or 0),
        line,
        reads,
    )


def _table(key: str, layers: tuple[str, ...], refuse: Any) -> tables.Table:
    """The catalogue's spec of `<layer>.<table>`, among `layers`."""
    known = [t.key for t in tables.LAKE if t.layer in layers]
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (a {' or '.join(layers)} table of the catalogue)"
        raise refuse(f"unknown table {key!r}{hint}")
    return tables.BY_KEY[key]


def _check_sql(text: str, spec: tables.Table, refuse: Any) -> tuple[str, ...]:
    """Parse the expectation (Spark SQL), check every column it names against the catalogue; the tables it reads."""
    try:
        tree = sqlglot.parse_one(text, read="spark")
    except (ParseError, TokenError) as exc:
        errors = getattr(exc, "errors", None) or [{"description": str(exc).splitlines()[0]}]
        said = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", str(errors[0]["description"]))
        raise refuse(f"the SQL does not parse: {said}") from None
    if tree is None or isinstance(tree, (exp.Query, exp.Alias, exp.Block)) or not isinstance(tree, exp.Condition):
        raise refuse(f"expect must be one SQL condition over the row's columns, not {text!r}")
    scopes: dict[int, dict[str, tables.Table]] = {}
    reads = []
    for select in tree.find_all(exp.Select):
        scope: dict[str, tables.Table] = {}
        for source in select.find_all(exp.Table):
            if source.find_ancestor(exp.Select) is not select:
                continue
            read = _table(f"{source.db}.{source.name}".lower(), READ_LAYERS, refuse)
            reads.append(read.key)
            scope[source.alias_or_name.lower()] = read
            scope[read.key] = read
        scopes[id(select)] = scope
    for column in tree.find_all(exp.Column):
        inner = column.find_ancestor(exp.Select)
        _check_column(column, spec, scopes.get(id(inner), {}) if inner else {}, refuse)
    return tuple(dict.fromkeys(reads))


def _check_column(column: exp.Column, spec: tables.Table, scope: dict[str, tables.Table], refuse: Any) -> None:
    """A column of the checked row (`<column>` or `row.<column>`), or of a table its subquery reads."""
    name, owner = column.name.lower(), column.table.lower()
    if owner and owner != ROW:
        read = scope.get(owner) or scope.get(".".join(p for p in (column.db.lower(), owner) if p))
        if read is None:
            raise refuse(f"column {column.sql()!r}: {owner!r} is no table its subquery reads (the row is `{ROW}`)")
        if name not in read.names:
            raise refuse(f"unknown column {name!r} of {read.key}")
        return
    if owner == ROW or not any(name in t.names for t in scope.values()):
        if name not in spec.names:
            close = difflib.get_close_matches(name, spec.names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise refuse(f"unknown column {name!r} of {spec.key}{hint}")
