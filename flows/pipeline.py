"""The pipeline flows: land → bronze → silver → gold → PostgreSQL mirror, one writer at a time."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from lakehouse.spark import get_spark, warm_up
from flows.common import TASK_OPTIONS, call_stage, inject_transient, publish_report, settings_for
from flows.common import stage as announce
from flows.common import writer_lock

Layer = Literal["silver", "gold"]
SPARK_STAGES = ("bronze", "silver", "gold")


def _run_id() -> str:
    return str(flow_run.id or "local")


@task(name="land", **TASK_OPTIONS)
def land(source: str | None = None, delivery: str | None = None) -> dict:
    """Copy new source files into the lake's landing zone."""
    from lakehouse import landing
    from lakehouse.sources import open_source

    settings = settings_for(source)
    with announce("land") as out:
        inject_transient("land", settings)
        files = open_source(settings.source_url, settings)
        out.update(call_stage(landing.land, settings, source=OneDelivery(files, delivery) if delivery else None))
    return out


class OneDelivery:
    """A source narrowed to one delivery folder."""

    def __init__(self, source, delivery: str) -> None:
        self.source, self.delivery, self.url = source, delivery, source.url

    def list_files(self):
        found = [f for f in self.source.list_files() if f.delivery == self.delivery]
        if not found:
            raise ValueError(f"no file of delivery {self.delivery!r} in {self.url}")
        return iter(found)

    def open(self, f):
        return self.source.open(f)

    @property
    def skipped(self) -> list[dict[str, str]]:
        return getattr(self.source, "skipped", [])


@task(name="bronze", **TASK_OPTIONS)
def bronze(source: str | None = None) -> dict:
    """Ingest pending landing batches into bronze (and quarantine)."""
    from lakehouse import bronze as stage_module

    settings = settings_for(source)
    with announce("bronze") as out:
        inject_transient("bronze", settings)
        out.update(call_stage(stage_module.ingest, get_spark(settings), settings, _run_id()))
    return out


@task(name="silver", **TASK_OPTIONS)
def silver(full_refresh: bool = False) -> dict:
    """Refresh silver from new bronze rows."""
    from lakehouse import silver as stage_module

    settings = settings_for()
    with announce("silver") as out:
        inject_transient("silver", settings)
        out.update(call_stage(stage_module.refresh, get_spark(settings), settings, _run_id(),
                              full_refresh=full_refresh))
    return out


@task(name="gold", **TASK_OPTIONS)
def gold(full_refresh: bool = False) -> dict:
    """Refresh the gold star schema and marts from silver."""
    from lakehouse import gold as stage_module

    settings = settings_for()
    with announce("gold") as out:
        inject_transient("gold", settings)
        out.update(call_stage(stage_module.refresh, get_spark(settings), settings, _run_id(),
                              full_refresh=full_refresh))
    return out


@task(name="mirror", **TASK_OPTIONS)
def mirror() -> dict:
    """Apply new gold versions to the PostgreSQL warehouse."""
    from lakehouse import warehouse

    settings = settings_for()
    with announce("mirror") as out:
        inject_transient("mirror", settings)
        out.update(call_stage(warehouse.mirror, settings))
    return out


def _skipped(name: str, reason: str) -> dict:
    with announce(name) as out:
        out.update({"skipped": True, "reason": reason})
    return out


def _stages_pending(settings) -> bool:
    """Whether a Spark stage has work (read from the Delta logs and the ledger, without Spark)."""
    from lakehouse import bronze, gold, silver

    return bronze.pending(settings) or silver.pending(settings) or gold.pending(settings)


def _spark_work_pending(landed: dict, source: str | None) -> bool:
    """False only when landing found nothing and every Spark stage says it has nothing pending."""
    return bool(landed.get("files_new")) or _stages_pending(settings_for(source))


def spark_work_expected(source: str | None = None, delivery: str | None = None) -> bool:
    """Whether a run will need Spark: a stage has work, or the source lists a file the ledger has not seen."""
    from lakehouse import landing
    from lakehouse.sources import open_source

    settings = settings_for(source)
    if _stages_pending(settings):
        return True
    files = open_source(settings.source_url, settings)
    try:
        return landing.unseen(settings, OneDelivery(files, delivery) if delivery else files)
    except ValueError:  # no such delivery: landing says so
        return False


def _warm_spark(settings, expected: bool) -> None:
    """Start Spark in the background when the run will need it: it starts while landing copies files."""
    if expected:
        warm_up(settings)


def _refine(full_refresh: Layer | None) -> dict[str, dict]:
    return {
        "silver": silver(full_refresh=full_refresh == "silver"),
        "gold": gold(full_refresh=full_refresh in ("silver", "gold")),
    }


def check_warehouse(settings) -> None:
    """Start the managed PostgreSQL now, so what cannot work there is said in one line before any pipeline work."""
    from lakehouse.pgserver import warehouse_dsn

    warehouse_dsn(settings)


@flow(name="full-pipeline", log_prints=True)
def full_pipeline(source: str | None = None, delivery: str | None = None,
                  full_refresh: Layer | None = None) -> dict:
    """Land, ingest, refine and mirror everything new in the source (what `lakehouse run` does)."""
    settings = settings_for(source)
    check_warehouse(settings)
    _warm_spark(settings, bool(full_refresh) or spark_work_expected(source, delivery))
    with writer_lock(settings) as lock:
        reports = {"land": land(source, delivery)}
        if full_refresh or _spark_work_pending(reports["land"], source):
            reports["bronze"] = bronze(source)
            reports.update(_refine(full_refresh))
        else:
            for name in SPARK_STAGES:
                reports[name] = _skipped(name, "nothing new")
            get_run_logger().info("nothing new to process: Spark not started")
        reports["mirror"] = mirror()
    return publish_report("full-pipeline", reports, {"lock": lock})


@flow(name="land-bronze", log_prints=True)
def land_bronze(source: str | None = None, delivery: str | None = None) -> dict:
    """Land new source files and ingest them into bronze."""
    settings = settings_for(source)
    _warm_spark(settings, spark_work_expected(source, delivery))
    with writer_lock(settings) as lock:
        reports = {"land": land(source, delivery)}
        if _spark_work_pending(reports["land"], source):
            reports["bronze"] = bronze(source)
        else:
            reports["bronze"] = _skipped("bronze", "nothing new")
    return publish_report("land-bronze", reports, {"lock": lock})


@flow(name="refine", log_prints=True)
def refine(full_refresh: Layer | None = None) -> dict:
    """Refine bronze into silver, then gold; optionally rebuild a layer from scratch."""
    _warm_spark(settings_for(), bool(full_refresh) or _stages_pending(settings_for()))
    with writer_lock(settings_for()) as lock:
        reports = _refine(full_refresh)
    return publish_report("refine", reports, {"lock": lock})


@flow(name="mirror-warehouse", log_prints=True)
def mirror_warehouse() -> dict:
    """Mirror gold into the PostgreSQL warehouse (SCD2 dimensions and facts)."""
    with writer_lock(settings_for()) as lock:
        reports = {"mirror": mirror()}
    return publish_report("mirror-warehouse", reports, {"lock": lock})
