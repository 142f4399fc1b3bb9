"""Fault injection: a land+bronze subprocess SIGKILLed at each named point, then re-run, equals a clean run row for row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.bronze import GROUPS, ingest
from lakehouse.config import Settings
from lakehouse.delta import read_table, table_exists
from lakehouse.landing import land

pytestmark = pytest.mark.e2e


ROOT = Path(__file__).resolve().parents[1]
TABLES = [t for group in GROUPS.values() for t in group]
RUN = (
    "from lakehouse.config import get_settings; from lakehouse.landing import land; "
    "from lakehouse.bronze import ingest; from lakehouse.spark import get_spark; "
    "s = get_settings(); land(s); ingest(get_spark(s), s, 'killed')"
)


def lake_settings(source: Path, lake: Path) -> Settings:
    return Settings(_env_file=None, source=str(source), lake=str(lake), data_dir=lake.parent / "data")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated source plus the awkward files: empty, not an array, non-UTF-8."""
    from lakehouse.tools.generate import generate

    root = tmp_path_factory.mktemp("crash") / "source"
    generate(root, seed=11, students=20, events=150, deliveries=2)
    (root / "events/2017-11-16/empty.json").write_bytes(b"")
    (root / "events/2017-11-16/odd.json").write_bytes(b'\xff{"at":"x"}\r\n\r\n{"at":"2017-11-16 01:00:00"}')
    (root / "transactional/2017-11-16/subjects.json").write_bytes(b'{"Id": 1}')
    return root


@pytest.fixture(scope="module")
def clean(spark, source: Path) -> Settings:
    """The uninterrupted run's lake."""
    settings = lake_settings(source, source.parent / "clean" / "lake")
    land(settings)
    ingest(spark, settings, "clean")
    return settings


def assert_same_tables(spark, got: Settings, want: Settings) -> None:
    for table in TABLES:
        a = read_table(spark, *table, got).drop("run_id", "landed_at")
        b = read_table(spark, *table, want).drop("run_id", "landed_at")
        assert a.count() == b.count(), table
        assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0, table


@pytest.mark.parametrize("fault", ["mid_landing", "after_landing", "mid_bronze", "after_bronze_commit"])
def test_killed_run_then_rerun_equals_a_clean_run(spark, source, clean, fault, tmp_path):
    settings = lake_settings(source, tmp_path / "lake")
    env = {
        **os.environ,
        "LAKEHOUSE_FAULT": fault,
        "LAKEHOUSE_SOURCE": str(source),
        "LAKEHOUSE_LAKE": settings.lake,
        "LAKEHOUSE_DATA_DIR": str(settings.data_dir),
        "LAKEHOUSE_SPARK_MASTER": "local[1]",
        "LAKEHOUSE_SPARK_DRIVER_MEMORY": "1g",
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
    }
    proc = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=ROOT, timeout=600, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    committed = [t for t in TABLES if table_exists(*t, settings)]
    if fault == "mid_bronze":
        assert 0 < len(committed) < len(TABLES)  # killed after a table's commit, before the last one
    if fault == "after_bronze_commit":
        assert committed == TABLES

    land(settings)
    report = ingest(spark, settings, "rerun")
    if fault == "after_bronze_commit":
        assert report.skipped
    assert_same_tables(spark, settings, clean)
