"""`lakehouse`: the command line of the project."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Open lakehouse for learning-platform analytics.")
pg_app = typer.Typer(no_args_is_help=True, help="The project-managed PostgreSQL cluster.")
app.add_typer(pg_app, name="pg")
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print a one-line reason and exit non-zero."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
    from lakehouse.generate import generate as run_generate

    summary = run_generate(out, seed=seed, students=students, events=events, deliveries=deliveries)
    console.print(f"wrote a source to {out} ({summary.get('event_lines', events)} event lines, "
                  f"{deliveries} deliveries, seed {seed})")


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _json_value(value):
    """JSON form of a DuckDB value (timestamps and dates as ISO 8601, decimals as numbers)."""
    import decimal

    if isinstance(value, decimal.Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@app.command()
def query(
    sql: str = typer.Argument(..., help="one read-only statement, e.g. \"select * from gold.mart_users_by_type\""),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table, csv or json (one array)"),
    version: int | None = typer.Option(
        None, "--version", "-v", help="read the lake tables the SQL names as they were at this Delta version"),
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
        table = Table(*names, title=f"{len(rows):,} rows")
        for row in rows:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)


@app.command()
def dashboard(
    port: int = typer.Option(5006, help="port to serve on"),
    address: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: every interface)"),
    show: bool = typer.Option(False, help="open a browser tab"),
) -> None:
    """Serve the Panel dashboard over gold (works with no internet access); Ctrl-C stops it."""
    from apps.dashboard import serve

    serve(port, show=show, address=address)


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


@pg_app.command("status")
def pg_status() -> None:
    """Say whether the managed cluster runs."""
    from lakehouse.pgserver import managed

    console.print("running" if managed().running() else "stopped")


if __name__ == "__main__":
    app()
