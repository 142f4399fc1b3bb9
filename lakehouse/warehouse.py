"""The PostgreSQL warehouse: migrations, the read-only BI role, and the gold → dw mirror (COPY + SCD2)."""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
import psycopg2.errors

from lakehouse import faults
from lakehouse.config import PROJECT_ROOT, Settings, get_settings
from lakehouse.reports import StageReport

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection
    from psycopg2.extensions import cursor as Cursor

log = logging.getLogger(__name__)

MIRROR_LOCK = 0x6C616B65_6D697272  # pg advisory lock key of the mirror ("lakemirr")
MIGRATE_LOCK = 0x6C616B65_6D696772  # ... and of the migrations runner ("lakemigr")
BATCH_ROWS = 16_384  # rows per Arrow batch rendered as one CSV chunk
BI_GROUP, BI_LOGIN = "bi_reader", "bi_user"
# What a BI session gets by default: read-only transactions, no query past the timeout; at most so many sessions.
BI_LOGIN_SETTINGS = {"default_transaction_read_only": "on", "statement_timeout": "5min"}
BI_CONNECTION_LIMIT = 10


def _sql_dir() -> Path:
    """warehouse_sql/: the copy shipped inside the installed package (wheel), else the checkout's top-level folder."""
    packaged = Path(__file__).resolve().parent / "warehouse_sql"
    return packaged if packaged.is_dir() else PROJECT_ROOT / "warehouse_sql"


SQL_DIR = _sql_dir()


@dataclass(frozen=True)
class Load:
    """One dw target table: the gold table it reads, the DuckDB select that stages it, and what its kind's load
    template (warehouse_sql/load/dimension.sql or fact.sql) needs to be rendered for it."""

    target: str
    gold: str
    grain: str  # what one row of the target is, in one line
    columns: tuple[str, ...]
    select: str  # DuckDB select over `{src}` giving `columns` in order
    key: str | None = None  # dimensions: the business key
    key_collation: str | None = None  # dimensions: the collation the key is sorted and partitioned under
    fact_time: str | None = None  # facts: the column whose time picks each dimension's version
    measures: tuple[tuple[str, str], ...] = ()  # facts: (column, aggregate) combining the staged rows of one grain
    depends: tuple[str, ...] = ()  # facts: the dimensions whose surrogate keys the fact carries

    @property
    def is_dimension(self) -> bool:
        return self.key is not None


def _key_cast(key: str) -> str:
    """A dimension key as the warehouse types it: the student id is text, the other ids are integers."""
    return f"cast({key} as {'varchar' if key == 'student_id' else 'integer'})"


def _dimension(entity: str, attributes: tuple[str, ...], key_collation: str | None = None) -> Load:
    key = f"{entity}_id"
    key_sql = _key_cast(key)
    columns = (key, *attributes, "is_deleted", "as_of", "delivery")
    attrs = [f"cast({a} as timestamptz) as {a}" if a.endswith("_at") else a for a in attributes]
    select = ", ".join(
        [
            f"{key_sql} as {key}",
            *attrs,
            "cast(is_deleted as boolean) as is_deleted",
            "cast(as_of as timestamptz) as as_of",
            "cast(delivery as varchar) as delivery",
        ]
    )
    return Load(
        f"dim_{entity}",
        f"dim_{entity}_history",
        f"one row per {entity} version (SCD type 2)",
        columns,
        f"select {select} from {{src}}",
        key=key,
        key_collation=key_collation,
    )


# dim_student's erased member (warehouse_sql/010): facts whose student was erased point to it; anonymous facts
# (no student ever) keep a null key
ERASED_MEMBER = "(erased)"
ERASED_MEMBER_SK = 0
_STUDENT = f"cast(coalesce(student_id, case when student_erased then '{ERASED_MEMBER}' end) as varchar) as student_id"
# a gold fact as this layout of gold writes it: one an earlier layout wrote lacks `student_erased` (none erased)
_STUDENT_FACT = "(from {src} union all by name select null::boolean as student_erased where false)"


def _record_fact(name: str, grain: str, columns: tuple[str, ...]) -> Load:
    """A fact of one row per distinct source record, dated by its one `_at` column; its `_id` columns are the keys of
    the dimensions it carries."""
    keys = [c for c in columns if c.endswith("_id")]
    (time,) = [c for c in columns if c.endswith("_at")]

    def staged(column: str) -> str:
        if column == "student_id":
            return _STUDENT  # an erased learner's rows under the erased member
        if column in keys:
            return _key_cast(column)
        return f"cast({column} as timestamptz)" if column == time else column

    return Load(
        name,
        name,
        grain,
        columns,
        f"select {', '.join(map(staged, columns))} from {_STUDENT_FACT}",
        fact_time=time,
        depends=tuple(f"dim_{k.removesuffix('_id')}" for k in keys),
    )


LOADS: tuple[Load, ...] = (
    # student_id is sorted and partitioned under collate "C": the same groups (text equality is bytewise either
    # way), a cheaper sort than under the database's collation
    _dimension(
        "student",
        (
            "registered_at",
            "state",
            "city",
            "university_id",
            "university_name",
            "course_id",
            "course_name",
            "signup_source",
        ),
        key_collation="C",
    ),
    _dimension("course", ("course_name",)),
    _dimension("university", ("university_name",)),
    _dimension("subject", ("subject_name",)),
    _record_fact(
        "fact_session", "one row per distinct session record", ("student_id", "session_start_at", "client_type")
    ),
    _record_fact("fact_subscription", "one row per distinct payment", ("student_id", "payment_at", "plan_type")),
    _record_fact(
        "fact_subject_follow",
        "one row per distinct follow of a subject by a student",
        ("student_id", "subject_id", "followed_at"),
    ),
    Load(
        "fact_page_view_daily",
        "fact_page_view",
        "one row per (day, student, client type, country); student null when anonymous",
        ("event_date", "student_id", "client_type", "country", "page_views", "first_event_at", "last_event_at"),
        f"select cast(event_date as date) as event_date, {_STUDENT}, client_type,"
        " country, count(*) as page_views, cast(min(event_at) as timestamptz) as first_event_at,"
        " cast(max(event_at) as timestamptz) as last_event_at"
        f" from {_STUDENT_FACT} group by all",
        fact_time="first_event_at",
        measures=(("page_views", "sum"), ("first_event_at", "min"), ("last_event_at", "max")),
        depends=("dim_student",),
    ),
)
LOADS_BY_TARGET = {load.target: load for load in LOADS}


# -- gold sources: where the mirror reads gold -------------------------------------------------


class GoldSource(Protocol):
    """Gold tables as DuckDB relations, each with a version number."""

    def version(self, table: str) -> int | None:
        """The table's current version (None: no such table)."""

    def relation(self, con: DuckDBPyConnection, table: str, version: int) -> str:
        """SQL text of a relation reading `table` at `version` in DuckDB connection `con`."""


class DeltaGold:
    """Gold tables read from the lake's Delta tables (version = latest commit in `_delta_log`)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def path(self, table: str) -> str:
        return self.settings.table_path("gold", table)

    def version(self, table: str) -> int | None:
        from lakehouse.storage import filesystem

        fs, root = filesystem(self.path(table) + "/_delta_log", self.settings)
        try:
            names = fs.ls(root, detail=False)
        except FileNotFoundError:
            return None
        versions = [int(m.group(1)) for n in names if (m := re.fullmatch(r"(\d{20})\.json", n.rsplit("/", 1)[-1]))]
        return max(versions) if versions else None

    def relation(self, con: DuckDBPyConnection, table: str, version: int) -> str:
        from lakehouse.catalog import extension_path

        con.execute(f"load '{extension_path()}'")  # a no-op once loaded
        if not self.settings.lake_is_local:
            from lakehouse.catalog import gcs_secret_sql, httpfs_path

            con.execute(f"load '{httpfs_path(self.settings)}'")
            con.execute(gcs_secret_sql(self.settings))
        path = self.path(table).replace("'", "''")
        return f"delta_scan('{path}', version => {int(version)})"


class ArrowGold:
    """Gold tables given in memory as Arrow tables (tests, benchmarks), each with a version."""

    def __init__(self, tables: dict[str, Any], versions: dict[str, int] | None = None):
        self.tables = tables
        self.versions = versions or {name: 0 for name in tables}

    def version(self, table: str) -> int | None:
        return self.versions.get(table) if table in self.tables else None

    def relation(self, con: DuckDBPyConnection, table: str, version: int) -> str:
        name = f"gold_{table}_v{int(version)}"
        con.register(name, self.tables[table])
        return name


def duckdb_connection() -> DuckDBPyConnection:
    """An in-memory DuckDB connection with UTC as its time zone, and no progress bar on stdout."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_progress_bar = false")
    return con


# -- streaming rows into PostgreSQL with COPY -------------------------------------------------


class CsvStream(io.RawIOBase):
    """A read-only file over Arrow record batches rendered as CSV, for `copy_expert`. A background thread reads
    and renders the batches while PostgreSQL parses the previous ones, at most `ahead` chunks ahead (bounded
    memory)."""

    def __init__(self, batches: Iterable, on_batch: Callable[[int], None] | None = None, ahead: int = 4):
        import pyarrow.csv as pacsv

        self._options = pacsv.WriteOptions(include_header=False)
        self._write = pacsv.write_csv
        self._chunk = memoryview(b"")
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._done = False
        self.rows = 0
        self.error: BaseException | None = None  # what failed while reading or rendering the batches
        self._thread = threading.Thread(target=self._render, args=(iter(batches),), name="csv-stream", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _render(self, batches: Iterator) -> None:
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                sink = io.BytesIO()
                self._write(batch, sink, self._options)
                self.rows += batch.num_rows
                if self._on_batch:
                    self._on_batch(self.rows)
                if not self._put(sink.getvalue()):
                    return
            self._put(None)
        except BaseException as exc:  # handed to the reader, raised in copy_expert's thread
            self._put(exc)

    def read(self, size: int = -1) -> bytes:
        if not self._chunk:
            if self._done:
                return b""
            item = self._queue.get()
            if item is None:
                self._done = True
                return b""
            if isinstance(item, BaseException):
                self._done = True
                self.error = item
                raise item
            self._chunk = memoryview(item)
        size = len(self._chunk) if size is None or size < 0 else size
        out, self._chunk = self._chunk[:size], self._chunk[size:]
        return out.tobytes()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()


def copy_batches(
    cur: Cursor,
    table: str,
    columns: Iterable[str],
    batches: Iterable[Any],
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """COPY Arrow record batches into `table` (CSV over the wire); returns the rows sent."""
    stream = CsvStream(batches, on_batch)
    try:
        cur.copy_expert(f"copy {table} ({', '.join(columns)}) from stdin with (format csv)", stream, size=1 << 20)
    except psycopg2.Error:
        if stream.error is not None:  # psycopg2 reports it as a cancelled COPY: raise what actually failed
            raise stream.error from None
        raise
    finally:
        stream.close()
    return stream.rows


# -- SQL files -------------------------------------------------------------------------------


def migrations() -> list[tuple[int, str, Path]]:
    """The migration files `warehouse_sql/NNN_name.sql`, in order."""
    found = []
    for path in SQL_DIR.glob("*.sql"):
        m = re.fullmatch(r"(\d{3})_(\w+)\.sql", path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return sorted(found)


def _template_context(load: Load) -> dict[str, Any]:
    """The variables of the load's template (their meaning is stated at the top of each template)."""
    if load.is_dimension:
        attributes = [c for c in load.columns if c not in (load.key, "is_deleted", "as_of", "delivery")]
        return {
            "table": load.target,
            "grain": load.grain,
            "key": load.key,
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
    }


def load_sql(target: str) -> str:
    """The load SQL of a dw target table: its kind's template in warehouse_sql/load/, rendered from LOADS."""
    import jinja2

    load = LOADS_BY_TARGET.get(target)
    if load is None:
        raise KeyError(f"no dw target table {target!r}; targets: {', '.join(LOADS_BY_TARGET)}")
    template = SQL_DIR / "load" / ("dimension.sql" if load.is_dimension else "fact.sql")
    # the environment sqlfluff lints the templates with: trailing newline kept, the `do` statement, no escaping
    env = jinja2.Environment(
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.do"], autoescape=False
    )
    return env.from_string(template.read_text()).render(_template_context(load))


def load_statements(target: str) -> list[tuple[str, str]]:
    """The statements of the target's load SQL as (name, sql); a name is the statement's leading `-- name:`."""
    statements = []
    for chunk in re.split(r";[ \t]*(?:\n|$)", load_sql(target)):
        lines = chunk.strip().splitlines()
        if not any(ln.strip() and not ln.lstrip().startswith("--") for ln in lines):
            continue
        names = [m.group(1) for ln in lines if (m := re.match(r"--\s*(\w+):", ln))]
        if not names:
            raise ValueError(f"a statement of the {target} load has no leading `-- name:` comment")
        statements.append((names[-1], chunk.strip()))
    return statements


class MigrationError(RuntimeError):
    """A migration file no longer matches what was applied to the warehouse."""


def _changed_migrations(done: dict[int, str]) -> list[str]:
    """Why migrate refuses: one line per applied migration whose file changed since it was applied."""
    found = migrations()
    problems = []
    for version, _, path in found:
        checksum = hashlib.sha256(path.read_text().encode()).hexdigest()
        if version in done and done[version] != checksum:
            problems.append(
                f"warehouse_sql/{path.name} was changed after it was applied to this database"
                f" (applied sha256 {done[version][:12]}, file now {checksum[:12]})"
            )
    return problems


def migrate(dsn: str) -> list[str]:
    """Apply the pending warehouse migrations in order, each once (recorded in dw.schema_version); refuse to
    run when an applied migration file was changed since (MigrationError)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    applied: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (MIGRATE_LOCK,))
            cur.execute("create schema if not exists dw")
            cur.execute(
                "create table if not exists dw.schema_version (version integer primary key, name text not null,"
                " checksum text not null, applied_at timestamptz not null default now())"
            )
            cur.execute("select version, checksum from dw.schema_version")
            done = dict(cur.fetchall())
        problems = _changed_migrations(done)
        if problems:
            last = max((v for v, _, _ in migrations()), default=0)
            raise MigrationError(
                "; ".join(problems) + ". Applied migrations are never run again, so the change would not reach"
                " this database. Restore the file as it was applied (for example `git log -p -- warehouse_sql/`)"
                f" and put the change in a new migration, warehouse_sql/{last + 1:03d}_<what>.sql. No migration"
                " was applied."
            )
        for version, name, path in migrations():
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                continue
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(sql)
                cur.execute(
                    "insert into dw.schema_version (version, name, checksum) values (%s, %s, %s)",
                    (version, name, checksum),
                )
            conn.commit()
            conn.autocommit = True
            applied.append(path.name)
            log.info("applied migration %s", path.name)
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    finally:
        conn.close()
    return applied


def ensure_bi_login(dsn: str, settings: Settings | None = None) -> bool:
    """Create or update the BI login `bi_user` (member of bi_reader) with the password from the environment, sent
    as a SCRAM verifier computed here; the login defaults to read-only transactions, with BI_LOGIN_SETTINGS."""
    settings = settings or get_settings()
    password = settings.bi_password.get_secret_value() if settings.bi_password else ""
    if not password:
        log.warning("LAKEHOUSE_BI_PASSWORD is unset: role %s exists, no BI login (%s) was created", BI_GROUP, BI_LOGIN)
        return False
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        for attempt in range(5):
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "select rolsuper, rolcreatedb, rolcreaterole, rolreplication from pg_roles where rolname = %s",
                        (BI_LOGIN,),
                    )
                    found = cur.fetchone()
                    if found is None:
                        cur.execute(f"create role {BI_LOGIN} login in role {BI_GROUP}")
                    elif any(found):  # only a superuser may change these; a mirror role with CREATEROLE need not
                        cur.execute(f"alter role {BI_LOGIN} with nosuperuser nocreatedb nocreaterole noreplication")
                    verifier = psycopg2.extensions.encrypt_password(password, BI_LOGIN, conn, "scram-sha-256")
                    cur.execute(
                        f"alter role {BI_LOGIN} with login connection limit {BI_CONNECTION_LIMIT} password %s",
                        (verifier,),
                    )
                    for name, value in BI_LOGIN_SETTINGS.items():
                        cur.execute(f"alter role {BI_LOGIN} set {name} = %s", (value,))
                    cur.execute(f"grant {BI_GROUP} to {BI_LOGIN}")
                return True
            except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation, psycopg2.errors.InternalError):
                if attempt == 4:  # roles are cluster-wide: another database's mirror may be doing the same
                    raise
                time.sleep(0.1 * (attempt + 1))
    finally:
        conn.close()
    return True


# -- the mirror ------------------------------------------------------------------------------


def _applied_deliveries(cur: Cursor, target: str) -> set[tuple[str, datetime]]:
    cur.execute("select delivery, as_of from dw.load_delivery where table_name = %s", (target,))
    return set(cur.fetchall())


def first_value(cur: Cursor) -> Any:
    """The first column of the row the last statement returned (one it always returns)."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _last_gold_version(cur: Cursor, target: str) -> int | None:
    cur.execute("select gold_version from dw.load_audit where table_name = %s order by load_id desc limit 1", (target,))
    row = cur.fetchone()
    return row[0] if row else None


# Settings of the load transaction. synchronous_commit off: the commit does not wait for its WAL flush, so a
# server crash right after a commit can lose that whole load (never part of it); the next mirror re-applies it,
# since dw.load_audit is lost with it.
LOAD_SETTINGS = {"timezone": "UTC", "work_mem": "64MB", "synchronous_commit": "off"}


def load_session(cur: Cursor) -> None:
    """Apply LOAD_SETTINGS to the current transaction (SET LOCAL)."""
    for name, value in LOAD_SETTINGS.items():
        cur.execute(f"set local {name} = %s", (value,))


def _is_timestamp(column: str) -> bool:
    return column.endswith("_at") or column == "as_of"


def stage_query(load: Load, relation: str, where: str = "") -> str:
    """The DuckDB query whose rows are COPYed into the load's stage table."""
    columns = ", ".join(load.columns)
    query = load.select.format(src=relation)
    if where:
        query = f"select * from ({query}) as gold({columns}) where {where}"
    # timestamps leave DuckDB as UTC text with an explicit offset: DuckDB renders them several times faster
    # than Arrow's CSV writer, and PostgreSQL reads them the same whatever its session time zone
    rendered = [
        f"strftime(cast({c} as timestamp), '%Y-%m-%d %H:%M:%S.%f+00') as {c}" if _is_timestamp(c) else c
        for c in load.columns
    ]
    return f"select {', '.join(rendered)} from ({query}) as staged({columns})"


def _stage(
    cur: Cursor, duck: DuckDBPyConnection, load: Load, relation: str, where: str = "", params: list | None = None
) -> int:
    """Empty the load's stage tables and COPY the gold rows into stage.<target>(_history)."""
    stage = f"stage.{load.target}_history" if load.is_dimension else f"stage.{load.target}"
    extra = f", stage.{load.target}_version" if load.is_dimension else ""
    cur.execute(f"truncate {stage}{extra}")
    reader = duck.execute(stage_query(load, relation, where), params or []).to_arrow_reader(BATCH_ROWS)
    point = f"mirror.{load.target}.copying"
    return copy_batches(cur, stage, load.columns, reader, on_batch=lambda _: faults.point(point))


def _apply(cur: Cursor, target: str) -> dict[str, int]:
    counts = {}
    for name, sql in load_statements(target):
        cur.execute(sql)
        counts[name] = max(cur.rowcount, 0)
    return counts


def _load_dimension(
    cur: Cursor, duck: DuckDBPyConnection, load: Load, source: GoldSource, version: int, load_id: Callable[[], int]
) -> dict:
    relation = source.relation(duck, load.gold, version)
    in_gold = {
        (d, a)
        for d, a in duck.execute(
            f"select distinct cast(delivery as varchar), cast(as_of as timestamptz)"
            f" from {relation} where as_of is not null"
        ).fetchall()
    }
    new = sorted(in_gold - _applied_deliveries(cur, load.target), key=lambda x: (x[1], x[0]))
    report: dict[str, Any] = {"status": "applied", "gold_version": version, "deliveries": [d for d, _ in new]}
    counts = {"rows_staged": 0, "rows_inserted": 0, "rows_closed": 0, "rows_removed": 0}
    if new:
        replay_from = new[0][1]
        replayed = sorted(d for d, a in in_gold if a >= replay_from and (d, a) not in new)
        counts["rows_staged"] = _stage(cur, duck, load, relation, "as_of >= ?", [replay_from])
        faults.point(f"mirror.{load.target}.staged")
        steps = _apply(cur, load.target)
        counts.update(
            rows_inserted=steps.get("inserted", 0),
            rows_closed=steps.get("closed", 0),
            rows_removed=steps.get("rewound", 0),
        )
        cur.executemany(
            "insert into dw.load_delivery (table_name, delivery, as_of, load_id) values (%s, %s, %s, %s)"
            " on conflict do nothing",
            [(load.target, d, a, load_id()) for d, a in new],
        )
        if replayed:
            report["replayed"] = replayed
    _audit(cur, load_id(), load, version, [d for d, _ in new], counts)
    report.update(counts)
    return report


def _load_fact(
    cur: Cursor,
    duck: DuckDBPyConnection,
    load: Load,
    source: GoldSource,
    version: int | None,
    load_id: Callable[[], int],
) -> dict:
    counts = {"rows_staged": 0, "rows_inserted": 0, "rows_closed": 0, "rows_removed": 0}
    if version is None:  # gold table gone while its dimensions changed: the fact is empty
        cur.execute(f"truncate stage.{load.target}")
    else:
        counts["rows_staged"] = _stage(cur, duck, load, source.relation(duck, load.gold, version))
    faults.point(f"mirror.{load.target}.staged")
    steps = _apply(cur, load.target)
    counts.update(rows_inserted=steps.get("inserted", 0), rows_removed=steps.get("removed", 0))
    _audit(cur, load_id(), load, -1 if version is None else version, [], counts)
    return {"status": "applied", "gold_version": version, **counts}


def _audit(cur: Cursor, load_id: int, load: Load, version: int, deliveries: list[str], counts: dict[str, int]) -> None:
    cur.execute(
        "insert into dw.load_audit (load_id, table_name, gold_table, gold_version, deliveries, rows_staged,"
        " rows_inserted, rows_closed, rows_removed) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            load_id,
            load.target,
            load.gold,
            version,
            deliveries,
            counts["rows_staged"],
            counts["rows_inserted"],
            counts["rows_closed"],
            counts["rows_removed"],
        ),
    )


def mirror(settings: Settings | None = None, source: GoldSource | None = None, dsn: str | None = None) -> StageReport:
    """Apply new gold versions to the PostgreSQL warehouse in one transaction; returns a report."""
    from lakehouse.pgserver import warehouse_logins

    settings = settings or get_settings()
    dsn, roles_dsn = (dsn, dsn) if dsn else warehouse_logins(settings)
    source = source or DeltaGold(settings)
    started = time.perf_counter()
    migrate(dsn)
    ensure_bi_login(roles_dsn, settings)

    duck = duckdb_connection()
    conn = psycopg2.connect(dsn)
    tables: dict[str, dict] = {}
    load_ids: list[int] = []
    try:
        with conn, conn.cursor() as cur:
            load_session(cur)
            cur.execute("select pg_advisory_xact_lock(%s)", (MIRROR_LOCK,))
            faults.point("mirror.locked")

            def load_id() -> int:
                if not load_ids:
                    cur.execute("select nextval('dw.load_id_seq')")
                    load_ids.append(first_value(cur))
                return load_ids[0]

            changed: set[str] = set()
            for load in LOADS:
                version = source.version(load.gold)
                last = _last_gold_version(cur, load.target)
                if load.is_dimension:
                    if version is None or version == last:
                        tables[load.target] = {
                            "status": "missing" if version is None else "skipped",
                            "gold_version": version,
                        }
                        continue
                    report = _load_dimension(cur, duck, load, source, version, load_id)
                    if report["deliveries"]:
                        changed.add(load.target)
                else:
                    depends_changed = bool(changed.intersection(load.depends))
                    if version is None and not (depends_changed and last is not None):
                        tables[load.target] = {"status": "missing", "gold_version": None}
                        continue
                    if version == last and not depends_changed:
                        tables[load.target] = {"status": "skipped", "gold_version": version}
                        continue
                    report = _load_fact(cur, duck, load, source, version, load_id)
                tables[load.target] = report
                faults.point(f"mirror.{load.target}.applied")
            faults.point("mirror.before_commit")
        faults.point("mirror.committed")
    finally:
        conn.close()
        duck.close()

    applied = [t for t, r in tables.items() if r["status"] == "applied"]
    seconds = time.perf_counter() - started
    staged = sum(r.get("rows_staged", 0) for r in tables.values())
    return StageReport(
        "mirror",
        rows_in=staged,
        rows_out=sum(r.get("rows_inserted", 0) for r in tables.values()),
        deliveries=sorted({d for r in tables.values() for d in r.get("deliveries", [])}),
        skipped=not applied,
        seconds=round(seconds, 3),
        details={
            "load_id": load_ids[0] if load_ids else None,
            "applied": applied,
            "rows_per_second": round(staged / seconds) if seconds and staged else 0,
            "tables": tables,
        },
    )
