"""What every flow shares: settings, retry policy, the writer lock, progress events, run reports."""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE

from lakehouse.config import Settings, get_settings

WRITER_LIMIT = "lakehouse-writer"
RETRY_DELAYS = [2, 10, 30]

# -- settings ---------------------------------------------------------------------------------


def settings_for(source: str | None = None) -> Settings:
    """The process settings, with the source overridden when a run names one."""
    settings = get_settings()
    return settings.model_copy(update={"source": source}) if source else settings


def call_stage(fn: Callable[..., dict], *args: Any, **options: Any) -> dict:
    """Call a stage function, passing only the options that were given; refuse options it does not take."""
    given = {k: v for k, v in options.items() if v not in (None, False)}
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in given if k not in params and not takes_any]
    if unknown:
        raise ValueError(f"{fn.__module__}.{fn.__name__} does not support option(s) {', '.join(unknown)}")
    return fn(*args, **given) or {}


# -- retries: transient failures only ---------------------------------------------------------

_NOT_TRANSIENT_OS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
_TRANSIENT_NAMES = {
    "OperationalError",  # psycopg2: connection refused / dropped
    "InterfaceError",  # psycopg2: connection already closed
    "Py4JNetworkError",
    "ServiceUnavailable", "TooManyRequests", "InternalServerError", "GatewayTimeout", "BadGateway",
    "RetryError", "TransportError", "ClientConnectionError", "ServerDisconnectedError",
}
_TRANSIENT_JAVA = ("java.net.", "java.io.IOException", "java.util.concurrent.TimeoutException",
                   "com.google.cloud.storage.StorageException", "org.apache.hadoop.fs.FileAlreadyExists")
_NOT_TRANSIENT_JAVA = ("java.io.FileNotFoundException", "org.apache.spark.sql.AnalysisException")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _java_classes(exc: BaseException) -> list[str]:
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    names: list[str] = []
    try:
        while java is not None and len(names) < 8:
            names.append(java.getClass().getName())
            java = java.getCause()
    except Exception:  # the JVM may be gone
        pass
    return names


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying (storage, network, database connection), never for data errors."""
    for e in _chain(exc):
        if isinstance(e, _NOT_TRANSIENT_OS):
            return False
        if isinstance(e, (ConnectionError, TimeoutError, OSError)):
            return True
        names = {cls.__name__ for cls in type(e).__mro__}
        if names & _TRANSIENT_NAMES:
            return True
        for java in _java_classes(e):
            if java.startswith(_NOT_TRANSIENT_JAVA):
                return False
            if java.startswith(_TRANSIENT_JAVA):
                return True
    return False


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry only transient failures."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


TASK_OPTIONS: dict[str, Any] = dict(
    retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE, persist_result=False,
)


def inject_transient(task: str, settings: Settings | None = None) -> None:
    """Test hook: `LAKEHOUSE_TRANSIENT_FAIL=<task>:<times>` raises ConnectionError on the first <times> attempts."""
    spec = os.environ.get("LAKEHOUSE_TRANSIENT_FAIL", "")
    name, _, times = spec.partition(":")
    if name != task:
        return
    counter = (settings or get_settings()).data_dir / "faults" / f"transient-{task}.count"
    counter.parent.mkdir(parents=True, exist_ok=True)
    seen = int(counter.read_text()) if counter.exists() else 0
    if seen < int(times or 1):
        counter.write_text(str(seen + 1))
        raise ConnectionError(f"injected transient failure {seen + 1}/{times or 1} in {task}")


# -- one writer at a time ---------------------------------------------------------------------

_held = threading.local()


def _api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def ensure_writer_limit() -> None:
    """Create the `lakehouse-writer` global concurrency limit (1 slot) unless it exists."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(WRITER_LIMIT, 1)
        except Exception:  # a concurrent creator won the race
            client.read_global_concurrency_limit_by_name(WRITER_LIMIT)


@contextlib.contextmanager
def _file_lock(path: Path, log) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another run is writing the lake (%s held); waiting", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def writer_lock(settings: Settings) -> Iterator[dict]:
    """Hold the single-writer lock: the Prefect `lakehouse-writer` limit when a server is used, plus a lake lock file."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield {"reentrant": True}
        finally:
            _held.depth -= 1
        return
    log = get_run_logger()
    info: dict[str, Any] = {"requested_at": time.time()}
    with contextlib.ExitStack() as stack:
        if _api_configured():
            from prefect.concurrency.sync import concurrency

            ensure_writer_limit()
            stack.enter_context(concurrency(WRITER_LIMIT, occupy=1, strict=True))
        stack.enter_context(_file_lock(settings.data_dir / "lakehouse.lock", log))
        info["acquired_at"] = time.time()
        info["waited_seconds"] = round(info["acquired_at"] - info["requested_at"], 3)
        if info["waited_seconds"] > 1:
            log.info("writer lock acquired after %.1f s", info["waited_seconds"])
        _held.depth = 1
        try:
            yield info
        finally:
            _held.depth = 0
            info["released_at"] = time.time()


# -- progress events (the CLI draws them) ------------------------------------------------------

Listener = Callable[[str, str, dict], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Receive `(stage, event, report)` with event in {start, done, skipped, failed}; returns a remover."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(stage: str, event: str, report: dict | None = None) -> None:
    for listener in list(_listeners):
        try:
            listener(stage, event, report or {})
        except Exception:  # a drawing problem never fails a run
            pass


@contextlib.contextmanager
def stage(name: str) -> Iterator[dict]:
    """Announce a stage's start and end to listeners; the yielded dict receives its report."""
    out: dict = {}
    emit(name, "start")
    started = time.monotonic()
    try:
        yield out
    except BaseException as exc:
        emit(name, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    out.setdefault("seconds", round(time.monotonic() - started, 2))
    emit(name, "skipped" if out.get("skipped") else "done", out)


# -- reports ----------------------------------------------------------------------------------

_FIELDS = {
    "files": ("files_new", "new_files", "files"),
    "rows in": ("rows_in", "lines_read", "records_in"),
    "rows out": ("rows_out", "bronze_rows", "rows_written"),
    "quarantined": ("quarantined", "rows_quarantined"),
    "deliveries": ("deliveries", "deliveries_processed"),
    "warehouse loads": ("loads_applied",),
}


def _total(value: Any) -> int | float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, tuple, set)):
        return len(value)
    if isinstance(value, dict):
        return sum(v for v in (_total(x) for x in value.values()) if v is not None)
    return None


def _pick(report: Any, keys: tuple[str, ...]) -> int | float | None:
    """The first of `keys` found at this level, else the sum found in nested reports (tables, groups)."""
    if not isinstance(report, dict):
        return None
    for key in keys:
        if key in report and _total(report[key]) is not None:
            return _total(report[key])
    found = [v for v in (_pick(child, keys) for child in report.values()) if v is not None]
    return sum(found) if found else None


def summary_rows(reports: dict[str, dict]) -> list[dict]:
    """One artifact row per stage: rows in and out, quarantined, deliveries, warehouse loads, status."""
    rows = []
    for name, report in reports.items():
        row: dict[str, Any] = {"stage": name}
        for label, keys in _FIELDS.items():
            value = _pick(report, keys)
            row[label] = "" if value is None else value
        row["status"] = "skipped" if report.get("skipped") else report.get("status", "done")
        row["seconds"] = report.get("seconds", "")
        rows.append(row)
    return rows


def publish_report(flow: str, reports: dict[str, dict], extra: dict | None = None) -> dict:
    """Attach the run's table and markdown artifacts, and return the whole report."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = summary_rows(reports)
    create_table_artifact(table=rows, key=f"{flow}-report", description=f"{flow}: rows in and out per layer")
    body = json.dumps({"stages": reports, **(extra or {})}, indent=2, default=str)
    create_markdown_artifact(markdown=f"# {flow}\n\n```json\n{body}\n```\n", key=f"{flow}-details",
                             description=f"{flow}: every stage's report")
    return {"flow": flow, "summary": rows, "stages": reports, **(extra or {})}
