"""The process-wide Spark session, configured for Delta Lake."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from pyspark.sql import SparkSession

from lakehouse.config import Settings, get_settings

_lock = threading.Lock()
_LOG4J = Path(__file__).with_name("log4j2.properties")

# Table features every reader of the lake (Spark, DuckDB's delta extension, delta-rs) understands.
DELTA_DEFAULTS = {
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
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
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    line = out.splitlines()[0] if out else ""
    try:
        major = int(line.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        raise JavaMissing(f"cannot read the Java version ({line!r}); {hint}") from None
    if major < 17:
        raise JavaMissing(f"found Java {major}; {hint}")
    return line


def build_session(settings: Settings, app_name: str = "lakehouse") -> SparkSession:
    """Create (or return Spark's active) session for these settings."""
    master = settings.spark_master
    if master.startswith("sc://"):
        remote = SparkSession.builder.remote(master).appName(app_name).getOrCreate()
        for key, value in SQL_CONF.items():
            remote.conf.set(key, value)
        return remote

    check_java()
    from lakehouse import jars, storage

    # Any Python worker Spark starts runs this environment's interpreter, not whatever `python3` is on the PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # glibc gives every thread that mallocs (Parquet, Snappy, zstd through JNI) its own 64 MB arenas: at 1M events
    # the driver JVM reached 6.4 GB RSS on a 3 GB heap; with 2 arenas it stays at 3.7 GB (bench/README.md).
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.effective_shuffle_partitions()))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", str(settings.data_dir / "spark-warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{_LOG4J} -Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executorEnv.MALLOC_ARENA_MAX", os.environ["MALLOC_ARENA_MAX"])
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # Delta rebuilds a table's state from its log in this many tasks (default 50) before every read and
        # commit; our logs are small, and 50 tasks per table made each stage 2-3x slower (bench/README.md).
        .config("spark.databricks.delta.snapshotPartitions", str(min(settings.effective_shuffle_partitions(), 50)))
    )
    if master.startswith("local"):  # a local driver serves no other machine: it listens on loopback only
        builder = builder.config("spark.driver.memory", settings.spark_driver_memory)
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    gcs = settings.lake_url.startswith("gs://")
    conf = {**DELTA_DEFAULTS, **SQL_CONF, **(storage.spark_gcs_conf(settings) if gcs else {}), **settings.spark_conf}
    # Delta (and the GCS connector) as local files from the project's jar cache: no resolution at start; a spark://
    # cluster's executors fetch them from the driver.
    conf["spark.jars"] = ",".join([*jars.spark_jars(gcs=gcs), *filter(None, [settings.spark_conf.get("spark.jars")])])
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def get_spark(settings: Settings | None = None) -> SparkSession:
    """The one Spark session of this process (created on first use)."""
    with _lock:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        return build_session(settings or get_settings())
