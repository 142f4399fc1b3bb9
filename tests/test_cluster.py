"""Silver and gold on a standalone Spark cluster (master + one worker from pyspark's own spark-class) equal the
local result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

from lakehouse import delta, gold, silver, tables
from lakehouse.config import Settings
from tests.builders import CAMEL_GLUED, ISO_ANON, SPACED, STUDENTS, entity_rows, event_rows, in_file

SCRIPT = """
import json, sys
from lakehouse import gold, silver
from lakehouse.config import get_settings
from lakehouse.spark import get_spark
settings = get_settings()
spark = get_spark(settings)
assert spark.sparkContext.master.startswith("spark://"), spark.sparkContext.master
report = {"silver": silver.refresh(spark, settings, "cluster").as_dict(),
          "gold": gold.refresh(spark, settings, "cluster").as_dict()}
report["executors"] = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
print("REPORT " + json.dumps(report, default=str))
spark.stop()
"""


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def _bronze(spark, settings: Settings) -> None:
    events = event_rows(
        spark,
        in_file("2017-11-16", "p0.json", SPACED, CAMEL_GLUED)
        + in_file("2017-11-17", "p0.json", SPACED)
        + in_file("2017-11-17", "p1.json", ISO_ANON),
    )
    delta.append_once(
        events, delta.Target(tables.table("bronze", "events"), settings, app_id="bronze.events", version=1)
    )
    courses = {"2017-11-16": [{"Id": 20, "Name": "Direito"}, {"Id": "21", "Name": "Medicina"}]}
    for entity, recs in {"students": STUDENTS, "courses": courses}.items():
        rows = entity_rows(spark, entity, recs)
        delta.append_once(
            rows, delta.Target(tables.table("bronze", entity), settings, app_id=f"bronze.{entity}", version=1)
        )


def test_refresh_on_standalone_cluster_equals_local(spark, standalone, tmp_path):
    local = Settings(lake=str(tmp_path / "local-lake"), data_dir=str(tmp_path / "data"), shuffle_partitions=2)
    remote = Settings(lake=str(tmp_path / "cluster-lake"), data_dir=str(tmp_path / "data"), shuffle_partitions=2)
    _bronze(spark, local)
    _bronze(spark, remote)
    silver.refresh(spark, local, "local")
    gold.refresh(spark, local, "local")

    env = dict(
        os.environ,
        LAKEHOUSE_SPARK_MASTER=standalone,
        LAKEHOUSE_LAKE=remote.lake_url,
        LAKEHOUSE_DATA_DIR=str(tmp_path / "data"),
        LAKEHOUSE_SHUFFLE_PARTITIONS="2",
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
    )
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    report = json.loads(lines[-1][len("REPORT ") :])
    assert report["executors"] >= 2  # the driver plus the worker's executor
    assert not report["gold"]["tables"]["fact_page_view"]["skipped"]

    tables = [("silver", t) for t in tuple(silver.BY_NAME)] + [("gold", t) for t in gold.TABLES]
    for layer, table in tables:
        if not delta.table_exists(layer, table, local):
            assert not delta.table_exists(layer, table, remote), table
            continue
        a, b = (delta.read_table(spark, layer, table, s) for s in (local, remote))
        cols = sorted(c for c in a.columns if c not in ("run_id", "loaded_at"))
        maps = {f.name for f in a.schema.fields if isinstance(f.dataType, MapType)}  # no set operations on maps
        select = [F.to_json(c).alias(c) if c in maps else F.col(c) for c in cols]
        a, b = a.select(*select), b.select(*select)
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, (layer, table)
