"""The process-wide Spark session, configured for Delta Lake."""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil
from pyspark.sql import SparkSession

from lakehouse import jars, storage
from lakehouse.config import Settings, get_settings
from lakehouse.security import secure_dir, wait_listening, write_secret

_lock = threading.Lock()
_LOG4J = Path(__file__).with_name("log4j2.properties")

# Table features every reader of the lake (Spark, DuckDB's delta extension, delta-rs) understands.
DELTA_DEFAULTS = {
    "spark.databricks.delta.properties.defaults.columnMapping.mode": "none",
    "spark.databricks.delta.properties.defaults.enableRowTracking": "false",
    "spark.databricks.delta.properties.defaults.checkpointPolicy": "classic",
}


# SQL settings our queries need on any session, local or remote. Constraint propagation substitutes every alias into
# every constraint: silver's event id, a hash over the ~35 page-view columns it also outputs, made the optimizer's
# constraint set grow as 2^35 (heap exhausted while planning). A partitioned write keeps a file open per partition
# (up to this many per task) instead of first sorting its rows by partition (bench/plans.py).
SQL_CONF = {"spark.sql.constraintPropagation.enabled": "false", "spark.sql.maxConcurrentOutputFileWriters": "16"}


class JavaMissing(RuntimeError):
    """Java 17+ is not installed."""


def check_java() -> str:
    """Return the Java version line, or raise JavaMissing with the command that installs it."""
    java = shutil.which("java") or (os.environ.get("JAVA_HOME") and str(Path(os.environ["JAVA_HOME"], "bin", "java")))
    hint = "Java 17+ is required by Spark: install it with `apt-get install -y openjdk-17-jre-headless`"
    if not java:
        raise JavaMissing(hint)
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()
    # the version line; the JVM may print others first (JAVA_TOOL_OPTIONS and JDK_JAVA_OPTIONS are echoed)
    line = next((text for text in out if ' version "' in text), out[0] if out else "")
    try:
        major = int(line.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        raise JavaMissing(f"cannot read the Java version ({line!r}); {hint}") from None
    if major < 17:
        raise JavaMissing(f"found Java {major}; {hint}")
    return line


def session_conf(settings: Settings, scratch: Path | None = None) -> dict[str, str]:
    """Every Spark setting a session for these settings starts with: a local or cluster session's, and the Spark
    Connect server's (`lakehouse up`). `scratch`: the JVM's private folder for shuffle files, cached blocks and
    temporary files (scratch_dir)."""
    shuffle = settings.effective_shuffle_partitions()
    local = settings.spark_master.startswith("local")
    conf = {
        "spark.master": settings.spark_master,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str(settings.data_dir / "spark-warehouse"),
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_LOG4J} -Duser.timezone=UTC"
        + (f" -Djava.io.tmpdir={scratch}" if scratch else ""),
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executorEnv.MALLOC_ARENA_MAX": ARENAS,
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta rebuilds a table's state from its log in this many tasks (default 50) before every read and
        # commit; our logs are small, and 50 tasks per table made each stage 2-3x slower. A one-machine lake's logs
        # hold a few thousand files at most: one task, and an incremental run, which rebuilds about 40 states, takes
        # 0.85-0.90x the time it takes with 4 (bench/README.md).
        "spark.databricks.delta.snapshotPartitions": "1" if local else str(min(shuffle, 50)),
        # VACUUM lists a table's folders and deletes its files in this many tasks (Spark's default: 10,000, most
        # of them empty): a small table's vacuum took 50 s on 2 cores, 5 s with 4 tasks (bench/README.md).
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(shuffle),
    }
    if local:  # a local driver serves no other machine: loopback only
        conf.update(
            {
                "spark.driver.memory": settings.spark_driver_memory,
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.host": "127.0.0.1",
                **({"spark.local.dir": str(scratch)} if scratch else {}),
            }
        )
    gcs = settings.lake_url.startswith("gs://")
    vectors = {
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": str(settings.deletion_vectors).lower()
    }
    conf.update(
        {
            **DELTA_DEFAULTS,
            **vectors,
            **SQL_CONF,
            **(storage.spark_gcs_conf(settings) if gcs else {}),
            **settings.spark_conf,
        }
    )
    # Delta (and the GCS connector) as local files from the project's jar cache: no resolution at start; a spark://
    # cluster's executors fetch them from the driver.
    conf["spark.jars"] = ",".join([*jars.spark_jars(gcs=gcs), *filter(None, [settings.spark_conf.get("spark.jars")])])
    return conf


# glibc gives every thread that mallocs (Parquet, Snappy, zstd through JNI) its own 64 MB arenas: at 1M events the
# driver JVM reached 6.4 GB RSS on a 3 GB heap; with 2 arenas it stays at 3.7 GB (bench/README.md).
ARENAS = "2"


def jvm_environment() -> dict[str, str]:
    """Environment a Spark JVM this project starts runs with."""
    # Any Python worker Spark starts runs this environment's interpreter, not whatever `python3` is on the PATH.
    return {"PYSPARK_PYTHON": sys.executable, "MALLOC_ARENA_MAX": ARENAS}


SCRATCH = "spark-scratch"  # under the data folder: one 0700 folder per Spark JVM


def scratch_dir(settings: Settings, name: str) -> Path:
    """An empty private folder for one JVM's scratch files (shuffle files, the disk cache of raw lines, temporary
    files: they hold learners' data, so never in /tmp). The folders of this project's JVMs that are gone (a kill -9)
    are emptied first."""
    root = secure_dir(Path(settings.data_dir).resolve() / SCRATCH)
    for child in root.iterdir():
        owner = child.name.split("-", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            shutil.rmtree(child, ignore_errors=True)
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return path


def properties_text(conf: dict[str, str]) -> str:
    """Spark settings as a properties file's lines (backslashes escaped)."""
    return "".join(f"{key} {value.replace(chr(92), chr(92) * 2)}\n" for key, value in conf.items())


def log_path(settings: Settings) -> Path:
    """Where the JVMs this project starts write their console output."""
    return Path(settings.data_dir) / "logs" / "spark.log"


def build_session(settings: Settings, app_name: str = "lakehouse") -> SparkSession:
    """Create (or return Spark's active) session for these settings; a new JVM's console output goes to the data
    folder's logs/spark.log, never to the caller's terminal."""
    global _remote
    master = settings.spark_master
    if master.startswith("sc://"):
        _remote = master
        return _remote_session(master, app_name)

    check_java()
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    for key, value in jvm_environment().items():
        os.environ.setdefault(key, value)
    if SparkContext._gateway is None:
        scratch = scratch_dir(settings, f"{os.getpid()}-session")
        atexit.register(shutil.rmtree, scratch, True)
        settings_ = session_conf(settings, scratch)
        conf = SparkConf(loadDefaults=False).setAll(list(settings_.items())).setAppName(app_name)
        log = log_path(settings)
        log.parent.mkdir(parents=True, exist_ok=True)
        # every setting (secrets among them) through a 0600 file, never the JVM's command line
        properties = write_secret(scratch / "session.conf", properties_text({**settings_, "spark.app.name": app_name}))
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {shlex.quote(str(properties))} pyspark-shell"
        try:
            with open(log, "ab") as sink:
                gateway = launch_gateway(None, {"stdout": sink, "stderr": sink})
        finally:
            properties.unlink(missing_ok=True)
        SparkContext._ensure_initialized(gateway=gateway, conf=conf)
    else:
        conf = SparkConf(loadDefaults=False).setAll(list(session_conf(settings).items())).setAppName(app_name)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _remote_session(url: str, app_name: str = "lakehouse", new: bool = False) -> SparkSession:
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    # pyspark.sql.functions builds Connect columns only in a process marked as a Connect client, which this one now is
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    builder = RemoteSession.builder.remote(url).appName(app_name)
    remote = builder.create() if new else builder.getOrCreate()
    for key, value in SQL_CONF.items():
        remote.conf.set(key, value)
    if not _remotes:  # closed while the interpreter still runs: a channel closed at its finalization can hang it
        atexit.register(_close_remotes)
    _remotes.append(remote)
    return remote  # type: ignore[return-value]  # the Connect session serves the same DataFrame API


_remotes: list = []  # the Spark Connect sessions of this process, closed at its exit


def _close_remotes() -> None:
    while _remotes:
        with contextlib.suppress(Exception):
            _remotes.pop().stop()


def release(session: SparkSession) -> None:
    """Close a session `fork` made, once its write is done (a Spark Connect session holds a channel to the
    server; a local one shares the engine and needs nothing)."""
    if is_remote(session) and session in _remotes:
        _remotes.remove(session)
        with contextlib.suppress(Exception):
            session.stop()


_session: SparkSession | None = None
_starting: Future | None = None
_remote: str | None = None  # the Spark Connect server this process's sessions talk to


def warm_up(settings: Settings | None = None) -> None:
    """Start this process's Spark session in the background (a JVM takes seconds): the stage that needs it later
    finds it ready. A no-op when a session exists or is starting."""
    global _starting
    with _lock:
        if _session is None and _starting is None:
            _starting = ThreadPoolExecutor(1, thread_name_prefix="spark-start").submit(
                build_session, settings or get_settings()
            )


def get_spark(settings: Settings | None = None) -> SparkSession:
    """The one Spark session of this process (created on first use, or the one `warm_up` started)."""
    global _session, _starting
    with _lock:
        if _session is not None:
            return _session
        starting = _starting
    if starting is not None:
        try:
            session = starting.result()
        finally:
            with _lock:
                _starting = None
    else:
        session = build_session(settings or get_settings())
    with _lock:
        _session = _session or session
        return _session


def spark_jobs() -> set[int] | None:
    """The ids of the Spark jobs this process's local session has run (the last thousand), to count a stage's; None
    without a local session (none started, or Spark Connect, whose client sees no jobs)."""
    with _lock:
        session = _session
    if session is None or is_remote(session):
        return None
    return set(session.sparkContext.statusTracker().getJobIdsForGroup(None))


def fork(spark: SparkSession) -> SparkSession:
    """Another session on the same Spark: its own SQL settings and temporary views, the same engine."""
    if is_remote(spark):
        return _remote_session(_remote or "", new=True)
    return spark.newSession()


def is_remote(spark: SparkSession) -> bool:
    """Whether the session talks to a Spark Connect server."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def connect_server_command(settings: Settings, port: int) -> list[str]:
    """The command that runs a Spark Connect server with this project's session settings on loopback `port` (its
    clients must present the token in SPARK_CONNECT_AUTHENTICATE_TOKEN). The settings go through a 0600 properties
    file in the data folder, not the command line, where any local user would read them."""
    import pyspark

    conf = {
        **session_conf(settings, scratch_dir(settings, f"connect-{port}")),
        "spark.connect.grpc.binding.address": "localhost",
        "spark.connect.grpc.binding.port": str(port),
        "spark.app.name": "lakehouse Spark Connect",
    }
    properties = write_secret(
        secure_dir(Path(settings.data_dir)) / "spark-connect.conf",
        properties_text(conf),
        replace=True,
    )
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    return [
        str(submit),
        "--properties-file",
        str(properties),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "spark-internal",
    ]


def start_connect_server(settings: Settings, port: int, token: str, log: Path) -> subprocess.Popen[bytes]:
    """Run the Spark Connect server of `connect_server_command` in its own process group, its console to `log`; it
    returns once the server listens (`lakehouse up` runs the same command under its own supervision)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            connect_server_command(settings, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **jvm_environment(), "SPARK_CONNECT_AUTHENTICATE_TOKEN": token},
            start_new_session=True,
        )
    try:
        wait_listening(port, proc, 300, f"the Spark Connect server (log: {log})")
    except BaseException:
        proc.kill()
        raise
    return proc
