"""DuckDB over the lake: every Delta table `<lake>/<layer>/<table>` is a view `<layer>.<table>`."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import duckdb

from lakehouse import delta_log
from lakehouse.config import DELTA_LAYERS, Settings, get_settings, join
from lakehouse.storage import filesystem

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
READ_STATEMENTS = {duckdb.StatementType.SELECT}
ALIAS = "lake"  # the attached database holding the views


class CatalogError(RuntimeError):
    """A one-line, user-facing failure of the query layer."""


@dataclass(frozen=True)
class LakeTable:
    """A Delta table found in the lake, where it lives."""

    layer: str
    name: str
    location: str

    @property
    def key(self) -> str:
        return f"{self.layer}.{self.name}"


def extension_path() -> str:
    """Absolute path of the delta extension shipped by the pinned `duckdb-extension-delta` wheel."""
    import duckdb_extension_delta

    root = Path(duckdb_extension_delta.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    found = root / "delta.duckdb_extension"
    if not found.is_file():
        raise CatalogError(f"delta extension for DuckDB {duckdb.__version__} not found under {root}")
    return str(found)


def _fs(settings: Settings) -> tuple[Any, str]:
    return filesystem(settings.lake_url, settings)


def discover(settings: Settings | None = None) -> list[LakeTable]:
    """Every `<layer>/<table>` folder of the lake that holds a `_delta_log`, sorted by key."""
    settings = settings or get_settings()
    if not settings.lake_is_local:
        httpfs_path(settings)  # fail in one line before listing a lake DuckDB could not read
    return lake_tables(settings, DELTA_LAYERS)


def lake_tables(settings: Settings, layers: tuple[str, ...] | list[str]) -> list[LakeTable]:
    """Every Delta table (a `<layer>/<table>` folder holding a `_delta_log`) under these layers, sorted by key."""
    fs, _ = _fs(settings)
    found = []
    for layer in layers:
        base = settings.table_path(layer, "")
        try:
            entries = fs.ls(base, detail=True)
        except FileNotFoundError:
            continue
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") != "directory" or not NAME.match(name):
                continue
            location = settings.table_path(layer, name)
            if fs.exists(join(location, "_delta_log")):
                found.append(LakeTable(layer, name, location))
    return sorted(found, key=lambda t: t.key)


def last_commit(table: LakeTable, settings: Settings | None = None) -> tuple[int, datetime] | None:
    """(version, commit time) of a table's latest Delta commit, from its `_delta_log`."""
    return delta_log.last_commit(table.location, settings or get_settings())


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan(table: LakeTable, version: int | None = None) -> str:
    location = table.location if "://" in table.location else str(Path(table.location).resolve())
    at = "" if version is None else f", version => {int(version)}"
    return f"delta_scan({_literal(location)}{at})"


def _open(settings: Settings) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"LOAD {_literal(extension_path())}")
    if not settings.lake_is_local:
        con.execute(f"LOAD {_literal(httpfs_path(settings))}")
        con.execute(gcs_secret_sql(settings))
    return con


def httpfs_path(settings: Settings) -> str:
    """The httpfs extension a remote (gs://) lake needs, from the `duckdb-extension-httpfs` wheel; one-line error if absent."""
    if not settings.lake_url.startswith("gs://"):
        raise CatalogError(f"DuckDB reads only local and gs:// lakes, not {settings.lake_url.split('://')[0]}://")
    wanted = f"duckdb-extension-httpfs=={duckdb.__version__}"
    try:
        import duckdb_extension_httpfs
    except ImportError:
        raise CatalogError(
            f"a gs:// lake needs the {wanted} package (DuckDB's httpfs extension), which is not installed"
        ) from None
    found = (
        Path(duckdb_extension_httpfs.__file__).parent
        / "extensions"
        / f"v{duckdb.__version__}"
        / "httpfs.duckdb_extension"
    )
    if not found.is_file():
        raise CatalogError(
            f"a gs:// lake needs {wanted}: no httpfs extension for DuckDB {duckdb.__version__} at {found}"
        )
    return str(found)


def gcs_secret_sql(settings: Settings) -> str:
    """`CREATE SECRET` for DuckDB's GCS access: HMAC keys from settings (gcs_hmac_key_id, gcs_hmac_secret), or none for a
    public bucket (gcs_token 'anon') or a custom endpoint (gcs_endpoint: an emulator, a private endpoint)."""
    key_id = settings.gcs_hmac_key_id
    secret = settings.gcs_hmac_secret.get_secret_value() if settings.gcs_hmac_secret else None
    custom = settings.gcs_endpoint
    options = ["TYPE gcs"]
    if key_id and secret:
        options += [f"KEY_ID {_literal(key_id)}", f"SECRET {_literal(secret)}"]
    elif settings.gcs_token != "anon" and not custom:
        raise CatalogError(
            "DuckDB reads a gs:// lake with GCS HMAC keys: set LAKEHOUSE_GCS_HMAC_KEY_ID and "
            "LAKEHOUSE_GCS_HMAC_SECRET, or LAKEHOUSE_GCS_TOKEN=anon for a public bucket"
        )
    if custom:
        endpoint = urlsplit(custom if "://" in custom else f"http://{custom}")
        options += [
            f"ENDPOINT {_literal(endpoint.netloc)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if endpoint.scheme == 'https' else 'false'}",
        ]
    return f"CREATE OR REPLACE SECRET lake_gcs ({', '.join(options)})"


def _create_views(
    con: duckdb.DuckDBPyConnection, database: str, tables: list[LakeTable], versions: dict[str, int] | None = None
) -> list[str]:
    """Create `<database>.<layer>.<table>` views; returns the keys that could not be read."""
    versions = versions or {}
    skipped = []
    for layer in DELTA_LAYERS:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{database}"."{layer}"')
    for table in tables:
        version = versions.get(table.key)
        sql = f'CREATE OR REPLACE VIEW "{database}"."{table.layer}"."{table.name}" AS SELECT * FROM {_scan(table, version)}'
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            if version is not None:
                missing = f"{table.key} has no Delta version {version}"
                raise CatalogError(_vacuumed([table], versions) or missing) from None
            skipped.append(f"{table.key}: {_first_line(exc)}")
    return skipped


def _vacuumed(tables: list[LakeTable], versions: dict[str, int] | None) -> str | None:
    """Why a pinned version cannot be read when a vacuum deleted its files: one line naming the oldest readable one."""
    for table in tables:
        version = (versions or {}).get(table.key)
        oldest = None if version is None else delta_log.oldest_readable_version(table.location)
        if version is not None and oldest is not None and version < oldest:
            return (
                f"{table.key} version {version} can no longer be read (a vacuum deleted its files);"
                f" the oldest readable version is {oldest}"
            )
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def refresh_catalog(
    settings: Settings | None = None,
    tables: list[LakeTable] | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> bool:
    """Rewrite the views of the persistent catalog file (Settings.catalog_path); False when it is locked by another process."""
    settings = settings or get_settings()
    tables = discover(settings) if tables is None else tables
    path = settings.catalog_path
    path.parent.mkdir(parents=True, exist_ok=True)
    own = con is None
    con = con or _open(settings)
    try:
        try:
            con.execute(f"ATTACH {_literal(str(path))} AS catalog_file")
        except duckdb.Error:
            return False
        try:
            _create_views(con, "catalog_file", tables)
            keys = {t.key for t in tables}
            stale = con.execute(
                "select schema_name, view_name from duckdb_views() where database_name = 'catalog_file' and not internal"
            ).fetchall()
            for schema, view in stale:
                if f"{schema}.{view}" not in keys:
                    con.execute(f'DROP VIEW "catalog_file"."{schema}"."{view}"')
        finally:
            con.execute("DETACH catalog_file")
        _install_extension(con)
        return True
    finally:
        if own:
            con.close()


def _install_extension(con: duckdb.DuckDBPyConnection) -> None:
    """Copy the delta extension into DuckDB's extension folder so `LOAD delta` works offline in other DuckDB 1.x clients."""
    try:
        con.execute(f"INSTALL {_literal(extension_path())}")
    except duckdb.Error as exc:
        log.warning("delta extension not installed for other DuckDB clients (`LOAD delta` may go online): %s", exc)


class LakeConnection:
    """A locked-down DuckDB connection: views read-only, file access limited to the lake, configuration locked."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, tables: list[LakeTable], skipped: list[str], database: str | None = None
    ):
        self.con = con
        self.tables = tables
        self.skipped = skipped
        self.database = database  # the database holding the views, when not the default one
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def execute(self, sql: str, params: list | dict | None = None) -> duckdb.DuckDBPyConnection:
        """Run one read statement with bound parameters; fetch from the returned DuckDB result."""
        check_read_only(sql)
        return self.con.execute(sql, params) if params is not None else self.con.execute(sql)

    def cache(self, statements: list[str]) -> None:
        """Run fixed statements of the caller's own (tables of the connection's in-memory database built from the
        views); unchecked, so never with text from a user."""
        with self._lock:
            for sql in statements:
                self.con.execute(sql)

    def rows(self, sql: str, params: list | dict | None = None) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of one read statement."""
        with self._lock:
            result = self.execute(sql, params)
            return [d[0] for d in result.description or []], result.fetchall()

    def frame(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """One read statement as a pandas DataFrame."""
        with self._lock:
            return self.execute(sql, params).df()

    def frames(self, statements: list[tuple[str, list[Any] | dict[str, Any] | None]]) -> list[pd.DataFrame]:
        """Several read statements run at once, each on its own DuckDB cursor; their pandas DataFrames in order."""
        for sql, _ in statements:
            check_read_only(sql)
        with self._lock:
            cursors = [self.con.cursor() for _ in statements]  # same database, views and locked settings
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lake-query")

        def run(cursor: duckdb.DuckDBPyConnection, statement: tuple[str, Any]) -> pd.DataFrame:
            sql, params = statement
            try:
                if self.database:
                    cursor.execute(f"USE {self.database}")
                return (cursor.execute(sql, params) if params is not None else cursor.execute(sql)).df()
            finally:
                cursor.close()

        return list(self._pool.map(run, cursors, statements))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.con.close()


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN of one SELECT) before DuckDB runs it."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise CatalogError(_first_line(exc)) from None
    if len(statements) != 1:
        raise CatalogError(f"expected exactly one SQL statement, got {len(statements)}")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        inner = re.sub(r"^\s*explain\s+(analyze\s+)?", "", statement.query, flags=re.I)
        if inner != statement.query:
            return check_read_only(inner)
    if statement.type not in READ_STATEMENTS:
        raise CatalogError(
            f"only read-only queries are allowed (SELECT, WITH, SHOW, DESCRIBE); got {statement.type.name}"
        )


def connect(
    settings: Settings | None = None,
    read_only: bool = True,
    versions: dict[str, int] | None = None,
    tables: list[LakeTable] | None = None,
    refresh: bool = False,
) -> LakeConnection:
    """Open DuckDB with every lake table as a view `<layer>.<table>`; `versions` pins tables to a Delta version."""
    settings = settings or get_settings()
    tables = discover(settings) if tables is None else tables
    con = _open(settings)
    if refresh:
        refresh_catalog(settings, tables, con=con)
    if not read_only:
        return _lock_down(LakeConnection(con, tables, _create_views(con, "memory", tables, versions)), settings)
    workdir = tempfile.mkdtemp(prefix="lakehouse-catalog-")
    views = str(Path(workdir, "views.duckdb"))
    try:
        con.execute(f"ATTACH {_literal(views)} AS {ALIAS}")
        skipped = _create_views(con, ALIAS, tables, versions)
        con.execute(f"DETACH {ALIAS}")
        con.execute(f"ATTACH {_literal(views)} AS {ALIAS} (READ_ONLY)")
        con.execute(f"USE {ALIAS}")
    except BaseException:
        con.close()
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the attached file stays readable through its open handle
    return _lock_down(LakeConnection(con, tables, skipped, database=ALIAS), settings)


def _lock_down(lake: LakeConnection, settings: Settings) -> LakeConnection:
    """Limit file access to the lake and lock the configuration."""
    root = settings.lake_url.rstrip("/") + "/"
    lake.con.execute("SET TimeZone = 'UTC'")
    lake.con.execute("SET enable_progress_bar = false")
    lake.con.execute(f"SET allowed_directories = [{_literal(root)}]")
    lake.con.execute("SET enable_external_access = false")
    lake.con.execute("SET lock_configuration = true")
    return lake


def query(
    sql: str,
    settings: Settings | None = None,
    version: int | None = None,
    params: list | dict | None = None,
    refresh: bool = True,
) -> tuple[list[str], list[tuple], list[str]]:
    """Run one read-only query over the lake; `version` reads the lake tables it names as of that Delta version.

    Returns (column names, rows, warnings). Raises CatalogError with a one-line reason.
    """
    settings = settings or get_settings()
    check_read_only(sql)
    tables = discover(settings)
    versions = None
    if version is not None:
        if version < 0:
            raise CatalogError("--version must be 0 or more")
        named = {n.lower() for n in duckdb.get_table_names(sql, qualified=True)}
        keys = {t.key for t in tables if t.key in named or f"{ALIAS}.{t.key}" in named}
        if not keys:
            raise CatalogError("--version needs the SQL to name a lake table as <layer>.<table>")
        versions = {key: version for key in keys}
    lake = connect(settings, read_only=True, versions=versions, tables=tables, refresh=refresh)
    try:
        names, rows = lake.rows(sql, params)
    except duckdb.Error as exc:
        raise CatalogError(_vacuumed(tables, versions) or _first_line(exc)) from None
    finally:
        lake.close()
    return names, rows, lake.skipped
