"""`lakehouse`: the command line of the project."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from lakehouse.config import Settings
from lakehouse.reports import COLUMNS, OUTCOMES, RunReport, StageReport

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Open lakehouse for learning-platform analytics.")
pg_app = typer.Typer(no_args_is_help=True, help="The project-managed PostgreSQL cluster.")
app.add_typer(pg_app, name="pg")
warehouse_app = typer.Typer(no_args_is_help=True, help="The PostgreSQL warehouse (schema dw).")
app.add_typer(warehouse_app, name="warehouse")
engine_app = typer.Typer(no_args_is_help=True, help="The background engines (Spark, Prefect) of this data folder.")
app.add_typer(engine_app, name="engine")
console = Console()
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """Open lakehouse for learning-platform analytics."""
    from lakehouse.config import get_settings
    from lakehouse.security import secure_data_dir

    secure_data_dir(get_settings())  # the data folder holds secrets: mode 0700


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line reason and exit non-zero."""
    err.print(f"[bold red]error:[/] {escape_text(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_text(value: object) -> str:
    """Text from data as the terminal shows it: control characters as visible escapes (never interpreted, so no
    escape sequence reaches the terminal), Rich markup as plain text."""
    text = "NULL" if value is None else str(value)
    return markup_escape(_CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode(), text))


@app.command()
def config() -> None:
    """Print the effective configuration (secrets masked)."""
    from lakehouse.config import get_settings

    table = Table("setting", "value", title="lakehouse configuration")
    for key, value in get_settings().masked().items():
        table.add_row(key, value)
    console.print(table)


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="folder to write the source into"),
    seed: int = typer.Option(7, help="random seed: same seed, same bytes"),
    students: int = typer.Option(2000, help="students in the first delivery"),
    events: int = typer.Option(100_000, help="page-view events in all deliveries"),
    deliveries: int = typer.Option(3, help="daily deliveries"),
) -> None:
    """Write a synthetic source in the contract's layout."""
    from lakehouse.tools.generate import generate as run_generate

    summary = run_generate(out, seed=seed, students=students, events=events, deliveries=deliveries)
    console.print(
        f"wrote a source to {out} ({summary['event_lines']} event lines, {deliveries} deliveries, seed {seed})"
    )


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _json_value(value: object) -> object:
    """JSON form of a DuckDB value (timestamps and dates as ISO 8601, decimals as numbers)."""
    import decimal

    if isinstance(value, decimal.Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@app.command()
def query(
    sql: str = typer.Argument(..., help='one read-only statement, e.g. "select * from gold.mart_users_by_type"'),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, csv or json (one array)"),
    version: int | None = typer.Option(
        None, "--version", "-v", help="read the lake tables the SQL names as they were at this Delta version"
    ),
) -> None:
    """DuckDB over the lake: every Delta table is a view <layer>.<table> (bronze, silver, gold, quarantine).

    Also refreshes the catalog file shown by `lakehouse config` (catalog), which the DuckDB CLI, DBeaver or a
    notebook can open: run `LOAD delta;` first there (this command installs the extension for DuckDB 1.5.5).
    """
    import csv
    import json
    import sys

    from lakehouse import catalog
    from lakehouse.config import get_settings

    try:
        names, rows, warnings = catalog.query(sql, get_settings(), version=version)
    except catalog.CatalogError as exc:
        fail(str(exc))
    for warning in warnings:
        err.print(f"[yellow]warning:[/] unreadable table skipped: {warning}", highlight=False, soft_wrap=True)
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps([dict(zip(names, row)) for row in rows], default=_json_value) + "\n")
    elif output is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
    else:
        table = Table(*(escape_text(n) for n in names), title=f"{len(rows):,} rows")
        for row in rows:
            table.add_row(*(escape_text(v) for v in row))
        console.print(table)


@app.command()
def tables(
    name: str = typer.Argument(None, help="a table (gold.dim_student or dim_student) or a layer; default: all"),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json (one array)"),
    warehouse: bool = typer.Option(False, "--warehouse", help="the PostgreSQL warehouse's dw tables instead"),
) -> None:
    """The data dictionary: every table's grain, keys, how it is kept, and its columns (type, description, whether
    personal), from the catalogue; types as `lakehouse query` shows them (PostgreSQL's for --warehouse)."""
    import json
    import sys

    from lakehouse import dictionary

    try:
        found = dictionary.select(name, warehouse)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps([dictionary.entry(t) for t in found]) + "\n")
        return
    if output is OutputFormat.csv:
        fail("--format is table or json here")
    for spec in found:
        entry = dictionary.entry(spec)
        grid = Table("column", "type", "personal", "description", title=f"{entry['table']}: {entry['grain']}")
        for c in entry["columns"]:
            grid.add_row(c["name"], c["type"], "yes" if c["pii"] else "", c["description"])
        console.print(grid)
        console.print(f"  key: {', '.join(entry['keys'])}; kept: {entry['kept_by']}\n", highlight=False)


@app.command()
def dashboard(
    port: int = typer.Option(5006, help="port to serve on"),
    address: str = typer.Option(None, help="interface to listen on (default LAKEHOUSE_BIND; 0.0.0.0: every one)"),
    show: bool = typer.Option(False, help="open a browser tab"),
) -> None:
    """Serve the Panel dashboard over gold (works with no internet access); Ctrl-C stops it.

    Asks for the login (user admin) when LAKEHOUSE_ADMIN_PASSWORD is set; open without it, on loopback only."""
    from apps.dashboard import serve
    from lakehouse.security import BindRefused

    try:
        serve(port, show=show, address=address)
    except BindRefused as exc:
        fail(str(exc))


@engine_app.command("status")
def engine_status() -> None:
    """Say which engines run for this data folder, where, and how long since their last use."""
    from lakehouse import engine
    from lakehouse.config import get_settings

    settings = get_settings()
    for kind in engine.KINDS:
        found = engine.read(settings, kind)
        if found is None:
            console.print(f"{kind:8} stopped", highlight=False)
        else:
            idle = engine.idle_for(settings, kind)
            console.print(
                f"{kind:8} running at {found.url} (pid {found.pid}, unused for {idle:.0f} s)", highlight=False
            )


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop this data folder's engines (a command that needs one starts it again)."""
    from lakehouse import engine
    from lakehouse.config import get_settings

    settings = get_settings()
    for kind in engine.KINDS:
        console.print(f"{kind:8} {'stopped' if engine.stop(settings, kind) else 'was not running'}", highlight=False)


@pg_app.command("start")
def pg_start() -> None:
    """Start the managed cluster (created on first use) and print its DSN, password masked."""
    from lakehouse.config import mask_dsn
    from lakehouse.pgserver import PostgresError, managed

    try:
        console.print(mask_dsn(managed().start()))
    except PostgresError as exc:
        fail(str(exc))


@pg_app.command("stop")
def pg_stop() -> None:
    """Stop the managed cluster."""
    from lakehouse.pgserver import managed

    managed().stop()


@pg_app.command("remove")
def pg_remove() -> None:
    """Stop the managed cluster and delete its data; the next run rebuilds the warehouse from gold."""
    from lakehouse.pgserver import managed

    server = managed()
    if server.initialized():
        server.remove()
        console.print(f"removed {server.cluster}", highlight=False)


@pg_app.command("status")
def pg_status() -> None:
    """Say whether the managed cluster runs."""
    from lakehouse.pgserver import managed

    console.print("running" if managed().running() else "stopped")


@warehouse_app.command("sql")
def warehouse_sql(table: str = typer.Argument(..., help="a dw target table, e.g. dim_student or fact_session")) -> None:
    """Print the SQL the mirror runs for a dw table: its load (its kind's template rendered from the table's spec),
    and for a fact the re-pointing of its surrogate keys when only its dimensions changed."""
    from lakehouse.warehouse.loads import LOADS_BY_TARGET, table_sql

    if table not in LOADS_BY_TARGET:
        fail(f"no dw table {table!r}; one of: {', '.join(LOADS_BY_TARGET)}")
    print(table_sql(table), end="")


PIPELINE_STAGES = ("land", "bronze", "silver", "gold", "mirror")


class RefreshLayer(str, Enum):
    silver = "silver"
    gold = "gold"
    warehouse = "warehouse"


def _stage_note(report: StageReport) -> str:
    row = report.row()
    return ", ".join(f"{row[k]} {k}" for k in COLUMNS if row[k])


@app.command()
def run(
    source: str = typer.Option(None, help="override LAKEHOUSE_SOURCE for this run"),
    delivery: str = typer.Option(None, help="land only this delivery folder"),
    full_refresh: RefreshLayer = typer.Option(
        None, help="rebuild this layer and the layers after it (warehouse: dw alone, from gold, in one transaction)"
    ),
    report: Path = typer.Option(None, help="also write the run's JSON report to this file"),
) -> None:
    """Land → bronze → silver → gold → warehouse for everything new (the `full-pipeline` flow, run here)."""
    from lakehouse.config import get_settings

    with _client(get_settings()) as settings:
        _run_pipeline(settings, source, delivery, full_refresh, report)


@contextlib.contextmanager
def _client(settings: Settings) -> Iterator[Settings]:
    """Hold the data folder's warm engines while the command runs, and point it at the running platform or at them
    (started when they are not running); the settings it then runs with."""
    import os

    from lakehouse import engine
    from lakehouse.config import get_settings
    from lakehouse.platform import PlatformError, client_env

    with engine.holding(settings):
        try:
            os.environ.update(client_env(settings))
        except PlatformError as exc:
            fail(str(exc))
        get_settings.cache_clear()  # the platform's or the engine's Spark, when it lends it
        yield get_settings()


def _run_pipeline(
    settings: Settings, source: str | None, delivery: str | None, full_refresh: RefreshLayer | None, report: Path | None
) -> None:
    import json

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from flows.pipeline import full_pipeline
    from lakehouse import alerts
    from lakehouse.expectations import load as load_expectations
    from lakehouse.runs import add_listener, settings_for, spark_work_expected
    from lakehouse.spark import warm_up

    with contextlib.suppress(Exception):  # a source or expectations file that cannot be read: the flow says it
        load_expectations(settings.expectations)
        refined = full_refresh in (RefreshLayer.silver, RefreshLayer.gold)
        if refined or spark_work_expected(settings_for(source), delivery):
            warm_up(settings)  # Spark starts while Prefect's server starts and landing copies

    failed: dict[str, str] = {}
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<8}"),
        BarColumn(bar_width=24),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    )
    ids = {name: progress.add_task(name, total=1, start=False, note="") for name in PIPELINE_STAGES}

    def draw(stage: str, event: str, out: StageReport | None, error: str) -> None:
        if stage not in ids:
            return
        if event == "start":
            progress.start_task(ids[stage])
            progress.update(ids[stage], note="running")
        elif event == "failed":
            lines = error.strip().splitlines()
            failed.update(stage=stage, error=lines[0] if lines else "")
            progress.update(ids[stage], note=f"[red]failed[/]: {failed['error'][:80]} (retried if transient)")
        else:
            if failed.get("stage") == stage:
                failed.clear()
            note = "[dim]skipped: nothing new[/]" if event == "skipped" or out is None else _stage_note(out)
            progress.update(ids[stage], completed=1, note=note)
            progress.stop_task(ids[stage])

    remove = add_listener(draw)
    try:
        with progress:
            state = full_pipeline(
                source=source,
                delivery=delivery,
                full_refresh=full_refresh.value if full_refresh else None,
                return_state=True,
            )
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:  # the orchestration itself failed (e.g. Prefect's API did not start)
        alerts.send(settings, alerts.run_failed("lakehouse run", exc, None))
        fail(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    finally:
        remove()
    result = state.result(raise_on_failure=False)
    if not state.is_completed() or isinstance(result, BaseException):
        reason = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else str(state.message)
        where = failed.get("stage")
        fail(f"{where} failed: {failed.get('error') or reason}" if where else reason.splitlines()[0][:300])
    payload = json.dumps(result.as_dict(), indent=2, default=str)
    (settings.data_dir / "last-run.json").parent.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "last-run.json").write_text(payload)
    if report:
        report.write_text(payload)
    console.print(
        f"[green]run completed[/] ({result.quarantined} quarantined records); `lakehouse summary` shows the lake"
    )
    _print_expectations(result)


def _print_expectations(result: RunReport) -> None:
    """What the run's expectations found: their outcomes, and each one that did not pass."""
    if not result.expectations:
        return
    outcomes = Counter(r.outcome for r in result.expectations)
    console.print("expectations: " + ", ".join(f"{outcomes[o]} {o}" for o in OUTCOMES if outcomes[o]), highlight=False)
    for found in result.expectations:
        if found.outcome != "passed":
            console.print(f"  {found.line}", highlight=False)


@app.command()
def checks() -> None:
    """Freshness of each source group (events, each export) against LAKEHOUSE_FRESHNESS_SLA and the volume of their
    latest deliveries, from the landing ledger (no Spark); alerts once when a group turns stale, recovers, or
    delivers an anomalous volume. Exit 1 when a group is stale or anomalous (docs/quality.md)."""
    import os

    from lakehouse import freshness
    from lakehouse.config import get_settings
    from lakehouse.platform import PlatformError, client_env, running_platform

    settings = get_settings()
    if running_platform(settings):  # the alerts go to its Prefect as events too
        with contextlib.suppress(PlatformError):
            os.environ.update(client_env(settings))
    report = freshness.check(settings)
    rows = report.rows()
    table = Table(*rows[0], title=f"source groups (SLA {report.sla}, volume under {report.min_pct:g}% of the median)")
    for row in rows:
        style = "red" if row["freshness"] == "stale" or row["volume"] == "anomaly" else None
        table.add_row(*row.values(), style=style)
    console.print(table)
    for alert in report.alerts:
        console.print(f"alert {alert.kind}: {alert.text}", highlight=False)
    if not report.ok:
        bad = [g.group for g in report.groups if g.stale or g.anomaly]
        err.print(f"[bold red]not fresh:[/] {', '.join(bad)}", highlight=False)
        raise typer.Exit(1)


@app.command("quarantine")
def quarantine_file(
    path: str = typer.Argument(..., help="the file as the error names it: its source path (or landed path)"),
    batch: int = typer.Option(None, "--batch", help="its landing batch, as the error names it"),
    note: str = typer.Option("", help="why, for whoever looks at it later"),
) -> None:
    """Set aside a landed file bronze fails on: the next run quarantines it whole (reason set_aside) and goes on."""
    from lakehouse.bronze import set_aside
    from lakehouse.config import get_settings

    try:
        record = set_aside(get_settings(), path, batch, note)
    except ValueError as exc:
        fail(str(exc))
    console.print(
        f"{record['path']} (batch {record['batch_id']}) is set aside: the next run puts it in "
        "quarantine.events or quarantine.transactional (reason set_aside) and ingests the rest",
        highlight=False,
    )


@app.command()
def erase(
    student: list[str] = typer.Option(None, "--student", help="a student id to erase (repeatable)"),
    ids_file: Path = typer.Option(None, "--ids-file", help="a file of student ids to erase, one a line"),
    verify: str = typer.Option(None, "--verify", help="look everywhere for this student id instead; exit 1 if found"),
) -> None:
    """A learner's right to erasure: remove learners from every layer, Delta log and version, landed file and dw
    (the `erase-students` flow, run here; the ids reach it in a private file, never as flow parameters);
    `--verify ID` prints every place an id is still found (docs/erasure.md)."""
    from lakehouse.config import get_settings

    if verify:
        from lakehouse.verify import verify as find

        found = find(get_settings(), verify)
        for place in found:
            console.print(f"[red]found[/] {place.count:,} in {escape_text(place.place)}", highlight=False)
        if found:
            raise typer.Exit(1)
        console.print(
            "the id is found nowhere (every file of the lake, the Prefect database and logs, dw and pg_stats)",
            highlight=False,
        )
        return
    from lakehouse.erasure import student_ids
    from lakehouse.security import request_file

    try:
        given = [*(student or []), *(ids_file.read_text().splitlines() if ids_file else [])]
        ids = student_ids(given)
    except (OSError, ValueError) as exc:
        fail(f"{exc}: name the students with --student ID or --ids-file FILE (or check one with --verify ID)")
    with (
        _client(get_settings()) as settings,
        request_file(settings, "erasure", "\n".join(sorted(ids)) + "\n") as request,
    ):
        from flows.erasure import erase_students  # Prefect reads its settings when imported: after _client's

        report = erase_students(ids_file=str(request)).stages[0]
    console.print(
        f"erased {report.details['students']} student(s) ({report.details['mode']}) in "
        f"{report.seconds:.1f} s; audit row {report.details['erasure_id']} in _system.erasures",
        highlight=False,
    )


@app.command()
def up(
    prefect_port: int = typer.Option(4200, help="Prefect UI and API port"),
    dashboard_port: int = typer.Option(5006, help="dashboard port"),
    dashboard: bool = typer.Option(True, help="also serve the dashboard"),
    spark_port: int = typer.Option(15002, help="port of the Spark Connect server the deployments share (loopback)"),
) -> None:
    """Start the Prefect server, a Spark Connect server, a worker serving prefect.yaml and the dashboard; Ctrl-C
    stops them all."""
    from lakehouse.config import get_settings
    from lakehouse.platform import up as run_up

    code = run_up(
        get_settings(),
        prefect_port,
        dashboard_port,
        dashboard,
        say=lambda m: console.print(m, highlight=False, soft_wrap=True),
        spark_port=spark_port,
    )
    raise typer.Exit(code)


@app.command()
def bi(port: int = typer.Option(8088, help="Superset's port")) -> None:
    """Start Apache Superset over the warehouse (schema dw) as the read-only bi_user, with the case study's
    dashboard; Ctrl-C stops it. Its environment is .venv-bi (`make bi` installs it)."""
    from lakehouse.bi import run as run_bi
    from lakehouse.config import get_settings

    code = run_bi(get_settings(), port, say=lambda m: console.print(m, highlight=False, soft_wrap=True))
    raise typer.Exit(code)


def _row_counts(settings: Settings) -> list[tuple[str, str, int]]:
    """(layer, table, rows) for every lake table, counted by DuckDB through the catalog."""
    from lakehouse import catalog

    lake = catalog.connect(settings, read_only=True)
    unreadable = {entry.split(":", 1)[0] for entry in lake.skipped}
    try:
        return [
            (t.layer, t.name, lake.rows(f"select count(*) from {t.key}")[1][0][0])
            for t in sorted(lake.tables, key=lambda t: (catalog.DELTA_LAYERS.index(t.layer), t.name))
            if t.key not in unreadable
        ]
    finally:
        lake.close()


def _warehouse_location(settings: Settings) -> str:
    from lakehouse.config import mask_dsn
    from lakehouse.pgserver import managed

    if settings.pg_dsn is not None:
        return mask_dsn(settings.pg_dsn.get_secret_value()) + " (schema dw)"
    cluster = managed(settings)
    if not cluster.initialized():
        return f"project-managed PostgreSQL in {settings.pg_dir} (not created yet)"
    status = "running" if cluster.running() else "stopped: `lakehouse pg start`"
    return f"{mask_dsn(cluster.dsn)} (schema dw; project-managed, {status})"


def _print_trust(settings: Settings) -> None:
    """The trust panel: source groups fresh or stale, tables and what their expectations found."""
    from lakehouse import trust

    try:
        found = trust.overview(settings)
    except Exception as exc:  # the rest of the summary stands without it
        err.print(f"[yellow]trust not shown:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        return
    for title, rows in (
        (f"trust: source groups (SLA {found.sla})", found.source_rows()),
        ("trust: tables", found.table_rows()),
    ):
        grid = Table(*rows[0], title=title)
        for row in rows:
            bad = "stale" in row.values() or "anomaly" in row.values() or "failed" in row.get("expectations", "")
            grid.add_row(*row.values(), style="red" if bad else None)
        console.print(grid)


@app.command()
def summary() -> None:
    """A short summary of the lake: rows per layer, quarantined records, locations, how to open the UIs."""
    import json

    from lakehouse.config import get_settings
    from lakehouse.platform import running_platform

    settings = get_settings()
    last_path = settings.data_dir / "last-run.json"
    last = json.loads(last_path.read_text()) if last_path.exists() else None
    table = Table("layer", "table", "rows", title="lakehouse: rows per table")
    quarantined = 0
    for layer, name, rows in _row_counts(settings):
        table.add_row(escape_text(layer), escape_text(name), f"{rows:,}")
        quarantined += rows if layer == "quarantine" else 0
    console.print(table)
    try:
        reports = RunReport.from_dict(last).stages if last else []
    except (TypeError, KeyError):  # written by an older version
        reports = []
        console.print(f"[dim]{last_path} is from an older version: the next `lakehouse run` rewrites it[/]")
    if reports:
        stages = Table("stage", *COLUMNS, "status", "commits", "jobs", title="last run")
        for report in reports:
            row = report.row()
            stages.add_row(
                *(str("-" if row[k] is None else row[k]) for k in ("stage", *COLUMNS, "status", "commits", "jobs"))
            )
        console.print(stages)
    console.print(f"quarantined records  {quarantined:,}")
    bronze = next((r.details for r in reports if r.stage == "bronze"), {})
    dropped = bronze.get("erased_dropped", 0)
    if dropped:  # records of erased learners a delivery brought again (docs/erasure.md)
        console.print(f"erased, dropped      {dropped:,} records of erased students in the last run", highlight=False)
    land = next((r.details for r in reports if r.stage == "land"), {})
    for entry in land.get("not_landed_files", []):  # delivery folders and files the layout does not take, links
        console.print(
            f"[yellow]not landed[/]           {escape_text(entry['path'])}: {escape_text(entry['why'])}",
            highlight=False,
        )
    if land.get("not_landed", 0) > len(land.get("not_landed_files", [])):
        console.print(f"not landed           ... {land['not_landed']:,} in all", highlight=False)
    _print_trust(settings)
    console.print(f"lake                 {escape_text(settings.lake_url)}", highlight=False)
    console.print(f"warehouse            {escape_text(_warehouse_location(settings))}", highlight=False)
    state = running_platform(settings)
    if state:
        console.print(f"Prefect UI           {state['ui_url']} (running)", highlight=False)
        console.print(f"dashboard            {state.get('dashboard_url') or 'not started'}", highlight=False)
    else:
        console.print("Prefect UI           `make up` (or `lakehouse up`), then http://127.0.0.1:4200", highlight=False)
        console.print(
            "dashboard            `make up`, then http://127.0.0.1:5006 (or `lakehouse dashboard` alone)",
            highlight=False,
        )


if __name__ == "__main__":
    app()
