"""What a pipeline run needs around its stages: the source it reads, which failures are worth a retry, one writer at
a time, whether Spark will have work, and progress events for whoever draws them."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lakehouse import bronze, gold, landing, silver
from lakehouse.config import Settings, get_settings
from lakehouse.reports import LockReport, StageReport
from lakehouse.security import secure_data_dir
from lakehouse.sources import OneDelivery, Source, open_source
from lakehouse.spark import spark_jobs

WRITER_LIMIT = "lakehouse-writer"  # the Prefect global concurrency limit (one slot) every lake writer holds
SPARK_STAGES = ("bronze", "silver", "gold")

log = logging.getLogger(__name__)

# -- settings and source ----------------------------------------------------------------------


def settings_for(source: str | None = None) -> Settings:
    """The process settings, with the source overridden when a run names one (the data folder and a local lake made
    private on the way)."""
    settings = get_settings()
    secure_data_dir(settings)
    return settings.model_copy(update={"source": source}) if source else settings


def source_for(settings: Settings, delivery: str | None = None) -> Source:
    """The run's source, narrowed to one delivery folder when a run names one."""
    files = open_source(settings.source_url, settings)
    return OneDelivery(files, delivery) if delivery else files


def stages_pending(settings: Settings) -> bool:
    """Whether a Spark stage has work (read from the Delta logs and the ledger, without Spark)."""
    return bronze.pending(settings) or silver.pending(settings) or gold.pending(settings)


def spark_work_expected(settings: Settings, delivery: str | None = None) -> bool:
    """Whether a run will need Spark: a stage has work, or the source lists a file the ledger has not seen."""
    if stages_pending(settings):
        return True
    try:
        return landing.unseen(settings, source_for(settings, delivery))
    except ValueError:  # no such delivery: landing says so
        return False


def spark_work_pending(landed: StageReport, settings: Settings) -> bool:
    """False only when landing took no file and every Spark stage says it has nothing pending."""
    return bool(landed.files) or stages_pending(settings)


# -- retries: transient failures only ---------------------------------------------------------

_NOT_TRANSIENT_OS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
# fmt: off
_TRANSIENT_NAMES = {
    "OperationalError",  # psycopg2: connection refused / dropped
    "InterfaceError",  # psycopg2: connection already closed
    "Py4JNetworkError",
    "ServiceUnavailable", "TooManyRequests", "InternalServerError", "GatewayTimeout", "BadGateway",
    "RetryError", "TransportError", "ClientConnectionError", "ServerDisconnectedError",
}
# fmt: on
_TRANSIENT_JAVA = (
    "java.net.",
    "java.io.IOException",
    "java.util.concurrent.TimeoutException",
    "com.google.cloud.storage.StorageException",
    "org.apache.hadoop.fs.FileAlreadyExists",
)
_NOT_TRANSIENT_JAVA = ("java.io.FileNotFoundException", "org.apache.spark.sql.AnalysisException")


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
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
    except Exception as gone:  # the JVM may be gone: the classes read so far decide
        log.debug("cannot read the Java cause of %s: %s", type(exc).__name__, gone)
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


# Prefect is imported where it is used, on purpose: it reads its settings when first imported, and a command sets
# them (the platform's API, or a temporary server's login) after importing this module.


def _api_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def ensure_writer_limit() -> None:
    """Create the `lakehouse-writer` global concurrency limit (1 slot) unless it exists."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(WRITER_LIMIT, 1)
        except Exception as race:  # a concurrent creator won the race: the limit must now be there
            log.debug("creating %s: %s", WRITER_LIMIT, race)
            client.read_global_concurrency_limit_by_name(WRITER_LIMIT)


@contextlib.contextmanager
def _file_lock(path: Path, logger: logging.Logger | logging.LoggerAdapter[Any]) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another run is writing the lake (%s held); waiting", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def writer_lock(
    settings: Settings, logger: logging.Logger | logging.LoggerAdapter[Any] | None = None
) -> Iterator[LockReport]:
    """Hold the single-writer lock: the Prefect `lakehouse-writer` limit when a server is used, plus a lake lock file.
    Reentrant in one thread; yields when it was requested, acquired and released (filled in as it happens)."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield LockReport(reentrant=True)
        finally:
            _held.depth -= 1
        return
    logger = logger or log
    info = LockReport(requested_at=time.time())
    with contextlib.ExitStack() as stack:
        if _api_configured():
            from prefect.concurrency.sync import concurrency

            ensure_writer_limit()
            stack.enter_context(concurrency(WRITER_LIMIT, occupy=1, strict=True))
        stack.enter_context(_file_lock(settings.data_dir / "lakehouse.lock", logger))
        info.acquired_at = time.time()
        info.waited_seconds = round(info.acquired_at - info.requested_at, 3)
        if info.waited_seconds > 1:
            logger.info("writer lock acquired after %.1f s", info.waited_seconds)
        _held.depth = 1
        try:
            yield info
        finally:
            _held.depth = 0
            info.released_at = time.time()


# -- progress events (the CLI draws them) ------------------------------------------------------

# (stage, event, report, error) with event in {start, done, skipped, failed}; the report comes with done and skipped
Listener = Callable[[str, str, "StageReport | None", str], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Receive every stage's progress events; returns a remover."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(stage: str, event: str, report: StageReport | None = None, error: str = "") -> None:
    """Tell every listener; a listener that fails is logged, never fails the run."""
    for listener in list(_listeners):
        try:
            listener(stage, event, report, error)
        except Exception:
            log.warning("a progress listener failed on %s %s", stage, event, exc_info=True)


def run_stage(name: str, settings: Settings, stage: Callable[[], StageReport]) -> StageReport:
    """Run one stage, announcing its start and end to listeners (and the test hook's injected failures)."""
    emit(name, "start")
    jobs = spark_jobs()
    try:
        inject_transient(name, settings)
        report = stage()
    except BaseException as exc:
        emit(name, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    after = spark_jobs()
    if jobs is not None and after is not None:
        report.jobs = len(after - jobs)
    emit(name, "skipped" if report.skipped else "done", report)
    return report


def skip_stage(name: str, reason: str) -> StageReport:
    """The report of a stage the run does not start, announced as skipped."""
    emit(name, "start")
    report = StageReport(name, skipped=True, details={"reason": reason})
    emit(name, "skipped", report)
    return report
