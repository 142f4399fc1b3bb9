"""Targets, docs/benchmarks.md (+ PNG chart) and the printed table, from one results JSON.

Usage: python -m bench.report [bench/results/<file>.json]   (default: the newest)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TypeGuard

from bench.common import ROOT
from lakehouse.reports import StageReport

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
GIB = 1024
TARGET_SCALE = 1_000_000
BIG_SCALE = 10_000_000
SERIES_SCALE = 600_000  # the delivery-series scenarios (bench/run.py SERIES_EVENTS)
# dashboard figures that are not one chart's query: the sum of all charts, the browser's end-to-end redraw
NOT_A_CHART_QUERY = ("all filtered charts", "filter redraw")
STAGES = ("spark_start", "land", "bronze", "silver", "gold", "mirror")


# -- reading figures --------------------------------------------------------------------------------------


def mirror_figures(entry: dict | None) -> dict:
    """COPY+SCD2 and row-by-row rates, and their ratio, from bench/mirror.py's report."""
    report = (entry or {}).get("report") or {}
    return {
        "copy_rows_per_s": (report.get("copy_scd2") or {}).get("rows_per_s"),
        "insert_rows_per_s": (report.get("row_by_row") or {}).get("rows_per_s"),
        "speedup": report.get("speedup"),
    }


def dashboard_figures(entry: dict | None) -> dict:
    """Per-chart p50/p95 (ms) from bench/dashboard.py's report: {"queries": {chart: {"p50_ms", "p95_ms"}}}."""
    report = (entry or {}).get("report") or {}
    return {name: {"p50_ms": q["p50_ms"], "p95_ms": q["p95_ms"]} for name, q in (report.get("queries") or {}).items()}


def _stage_note(name: str, entry: dict) -> str:
    """A pipeline stage's rows (from its StageReport) and memory, for its row in the scale table."""
    if not entry.get("ok"):
        return ""
    memory = (
        f"Python {entry.get('peak_rss_python_mib', 0):.0f} MiB + JVM {entry.get('peak_rss_children_mib', 0):.0f} MiB"
    )
    if name == "spark_start":
        return memory
    stage = StageReport.from_dict(entry["report"])
    return f"{stage.rows_in:,} rows in, {stage.rows_out:,} out, {stage.quarantined:,} quarantined; {memory}"


def _contenders(result: dict, events: int) -> dict:
    return (result.get("scales", {}).get(str(events)) or {}).get("contenders", {})


def _ok(entry: dict | None) -> TypeGuard[dict]:
    return bool(entry and entry.get("ok"))


def _target_scale(result: dict, wanted: int = TARGET_SCALE) -> int | None:
    scales = sorted(int(s) for s in result.get("scales", {}))
    if wanted in scales:
        return wanted
    below = [s for s in scales if s <= wanted]
    return below[-1] if below else (scales[0] if scales else None)


# What each target of the issue asks, by id, in the order the report lists them.
TARGETS = {
    "vs_duckdb": "`lakehouse run` within 4x the DuckDB script",
    "vs_casestudy": "`lakehouse run` at least 5x faster than the case study's way",
    "rerun": "re-run with nothing new under 20 s",
    "new_delivery": "one new delivery under 35% of a full run",
    "mirror_rate": "mirror at least 50,000 rows/s (COPY + SCD2)",
    "mirror_vs_insert": "mirror at least 10x row-by-row INSERT",
    "dashboard_p95": "dashboard queries p95 under 300 ms (each chart's query)",
    "memory": "peak memory under 4 GiB (`lakehouse run`, whole process tree)",
    "sixth_delivery": "6 deliveries: the 6th alone at most 30% of a full run over all 6 (gold equal)",
    "growth": "12 daily deliveries: the 12th run at most 1.3x the 3rd",
    "complete_10m": "10M events in under 1,200 s",
    "expectations_cost": "the project's own expectations cost at most 10% of `lakehouse run`",
}


def targets(result: dict) -> list[dict]:
    """Each target of the issue as {id, target, scale, figure, met, note}; met is None when not measured."""
    out: list[dict] = []
    scale = _target_scale(result)

    def add(tid: str, figure, met, note: str = "", at: int | None = scale) -> None:
        if at is not None and at != TARGET_SCALE and tid not in ("complete_10m", "sixth_delivery", "growth"):
            note = (note + "; " if note else "") + f"measured at {at:,} events, the target names {TARGET_SCALE:,}"
        out.append(
            {
                "id": tid,
                "target": TARGETS[tid],
                "scale": at,
                "figure": figure,
                "met": None if figure is None else met,
                "note": note,
            }
        )

    c = _contenders(result, scale) if scale else {}
    run, duck, case = c.get("lakehouse_run"), c.get("duckdb"), c.get("casestudy")
    if _ok(run) and _ok(duck):
        ratio = run["wall_s"] / duck["wall_s"]
        add("vs_duckdb", f"{ratio:.2f}x", ratio <= 4)
    else:
        add("vs_duckdb", None, None, _why(run, duck))
    if _ok(run) and _ok(case):
        ratio = case["wall_s"] / run["wall_s"]
        add("vs_casestudy", f"{ratio:.2f}x faster", ratio >= 5)
    else:
        add("vs_casestudy", None, None, _why(run, case))
    checked = c.get("expectations")
    if _ok(checked) and checked.get("cost_share") is not None:
        share, cost, run_s = checked["cost_share"], checked["cost_s"], checked["run_without_s"]
        add("expectations_cost", f"{share:+.1%} ({cost:+.1f} s on {run_s:.1f} s)", share <= 0.10)
    else:
        add("expectations_cost", None, None, _why(checked) if checked else "not measured")
    inc = c.get("incremental") or {}
    rerun = inc.get("rerun_nothing_new")
    if _ok(rerun):
        add("rerun", f"{rerun['wall_s']:.1f} s", rerun["wall_s"] < 20)
    else:
        add("rerun", None, None, _why(rerun) if rerun else _why(inc))
    if inc.get("new_delivery_vs_full") is not None:
        share = inc["new_delivery_vs_full"]
        add(
            "new_delivery",
            f"{share:.0%} ({inc['new_delivery']['wall_s']:.1f} s vs {inc['full_rebuild']['wall_s']:.1f} s)",
            share < 0.35,
        )
    else:
        add("new_delivery", None, None, _why(inc))
    m = mirror_figures(c.get("mirror"))
    mirror_note = _why(c.get("mirror")) if not _ok(c.get("mirror")) else "report has no rows/s figure"
    rows = ((c.get("mirror") or {}).get("report") or {}).get("history_rows")
    own = f"on bench/mirror.py's own history of {rows:,} rows" if rows else ""
    add(
        "mirror_rate",
        f"{m['copy_rows_per_s']:,.0f} rows/s" if m["copy_rows_per_s"] else None,
        bool(m["copy_rows_per_s"] and m["copy_rows_per_s"] >= 50_000),
        own if m["copy_rows_per_s"] else mirror_note,
    )
    add(
        "mirror_vs_insert",
        f"{m['speedup']:.1f}x" if m["speedup"] else None,
        bool(m["speedup"] and m["speedup"] >= 10),
        own if m["speedup"] else mirror_note,
    )
    d = {k: v for k, v in dashboard_figures(c.get("dashboard")).items() if not k.startswith(NOT_A_CHART_QUERY)}
    if d:
        worst = max(d.items(), key=lambda kv: kv[1]["p95_ms"])
        synthetic = ((c.get("dashboard") or {}).get("report") or {}).get("synthetic_gold")
        add(
            "dashboard_p95",
            f"worst p95 {worst[1]['p95_ms']:.0f} ms ({worst[0]})",
            worst[1]["p95_ms"] < 300,
            "on a synthetic gold-shaped lake (the pipeline's gold was missing)" if synthetic else "",
        )
    else:
        add(
            "dashboard_p95",
            None,
            None,
            _why(c.get("dashboard")) if not _ok(c.get("dashboard")) else "report has no p95_ms figure",
        )
    if _ok(run):
        peak = run["peak_rss_mib"]
        add("memory", f"{peak / GIB:.2f} GiB", peak < 4 * GIB)
    else:
        add("memory", None, None, _why(run))
    series = _contenders(result, SERIES_SCALE)
    six, growth = series.get("six_deliveries") or {}, series.get("growth") or {}
    if six.get("last_vs_full") is not None:
        runs = six["runs"]
        add(
            "sixth_delivery",
            f"{six['last_vs_full']:.0%} ({runs[-1]['wall_s']:.1f} s vs {six['full']['wall_s']:.1f} s; "
            f"gold {'equal' if not six.get('differences') else 'DIFFERS'})",
            six["last_vs_full"] <= 0.30 and not six.get("differences"),
            at=SERIES_SCALE,
        )
    else:
        add("sixth_delivery", None, None, _why(six) if six else "not run", at=SERIES_SCALE)
    if growth.get("last_vs_third") is not None:
        runs = growth["runs"]
        add(
            "growth",
            f"{growth['last_vs_third']:.2f}x ({runs[-1]['wall_s']:.1f} s vs {runs[2]['wall_s']:.1f} s)",
            growth["last_vs_third"] <= 1.3,
            at=SERIES_SCALE,
        )
    else:
        add("growth", None, None, _why(growth) if growth else "not run", at=SERIES_SCALE)
    big, source = _big_run(result)
    if big is None:
        add("complete_10m", None, None, "not run (make bench EVENTS=10000000)", at=BIG_SCALE)
    else:
        note = "" if big.get("ok") else _why(big)
        if source:
            note = (note + "; " if note else "") + f"from the run in `{source}` (10M runs on request only)"
        add(
            "complete_10m",
            f"{'completed' if big.get('ok') else 'failed'} in {big.get('wall_s', 0):.0f} s, "
            f"peak {big.get('peak_rss_mib', 0) / GIB:.2f} GiB",
            bool(big.get("ok")) and big["wall_s"] < 1200,
            note,
            at=BIG_SCALE,
        )
    return out


def _big_run(result: dict) -> tuple[dict | None, str | None]:
    """The 10M `lakehouse run` of this result, else of the newest results file that has one (10M is run on request,
    apart from the default scales), with that file's name."""
    if str(BIG_SCALE) in result.get("scales", {}):
        return _contenders(result, BIG_SCALE).get("lakehouse_run"), None
    for path in sorted((ROOT / "bench" / "results").glob("*.json"), reverse=True):
        try:
            run = _contenders(json.loads(path.read_text()), BIG_SCALE).get("lakehouse_run")
        except (OSError, ValueError):
            continue
        if run is not None:
            return run, str(path.relative_to(ROOT))
    return None, None


def _why(*entries) -> str:
    for e in entries:
        if e is None:
            return "not run"
        if not e.get("ok"):
            return ("missing: " if e.get("missing") else "failed: ") + str(e.get("error", "unknown error"))[:300]
    return ""


# -- rows of the per-scale table ------------------------------------------------------------------------------


def scale_rows(result: dict, events: int) -> list[dict]:
    """One row per measured thing: name, wall_s, peak_mib, events_per_s, vs_run, status."""
    c = _contenders(result, events)
    run = c.get("lakehouse_run")
    run_wall = run["wall_s"] if _ok(run) else None
    rows: list[dict] = []

    def row(name: str, entry: dict | None, note: str = "", eps: bool = True, ratio: bool = True) -> None:
        if entry is None:
            return
        ok = entry.get("ok", False)
        wall = entry.get("wall_s")
        rows.append(
            {
                "name": name,
                "wall_s": wall if ok else None,
                "peak_mib": entry.get("peak_rss_mib") if ok else None,
                "events_per_s": round(events / wall) if ok and eps and wall else None,
                "vs_run": round(wall / run_wall, 2) if ok and ratio and run_wall and wall else None,
                "status": "ok" + (f"; {note}" if note else "") if ok else _why(entry),
            }
        )

    stages = c.get("pipeline_stages")
    if stages is not None:
        report = stages.get("report") or {}
        for name in STAGES:
            s = (report.get("stages") or {}).get(name)
            if s is not None:
                row(f"pipeline: {name}", s, eps=False, ratio=False, note=_stage_note(name, s))
        row("pipeline: stages in one process", stages)
    row("`lakehouse run`", run)
    row("DuckDB script", c.get("duckdb"))
    case = c.get("casestudy")
    rate = ((case or {}).get("report") or {}).get("insert_rows_per_s")
    row("case study's way", case, note=f"row-by-row INSERT {rate:,.0f} rows/s" if rate else "")
    inc = c.get("incremental")
    if inc is not None:
        if not any(k in inc for k in ("rerun_nothing_new", "new_delivery", "full_rebuild")):
            row("incremental runs", inc)
        plus = (inc.get("source_plus") or {}).get("extra_events")
        row("re-run, nothing new", inc.get("rerun_nothing_new"), eps=False)
        row(
            "one new delivery (incremental)",
            inc.get("new_delivery"),
            eps=False,
            note=f"{plus:,} new events; {inc['new_delivery_vs_full']:.0%} of the full rebuild"
            if plus and inc.get("new_delivery_vs_full") is not None
            else "",
        )
        row("full rebuild incl. the new delivery", inc.get("full_rebuild"), eps=False)
    checked = c.get("expectations")
    if checked is not None:
        share = checked.get("cost_share")
        note = (
            f"silver + gold {checked['refine_project_s']:.1f} s with the project's expectations, "
            f"{checked['refine_none_s']:.1f} s without: {share:+.1%} of a run without them; executor CPU "
            f"{checked.get('executor_cpu_ratio') or 0:.2f}x"
            if share is not None
            else ""
        )
        row("expectations: their cost", checked, note=note, eps=False, ratio=False)
    mirror = c.get("mirror")
    if mirror is not None:
        m = mirror_figures(mirror)
        note = ", ".join(
            x
            for x in (
                f"COPY+SCD2 {m['copy_rows_per_s']:,.0f} rows/s" if m["copy_rows_per_s"] else "",
                f"row-by-row {m['insert_rows_per_s']:,.0f} rows/s" if m["insert_rows_per_s"] else "",
                f"{m['speedup']:.1f}x" if m["speedup"] else "",
            )
            if x
        )
        row("warehouse mirror benchmark", mirror, note=note, eps=False, ratio=False)
    dash = c.get("dashboard")
    if dash is not None:
        d = dashboard_figures(dash)
        note = "; ".join(
            f"{k} p50 {v['p50_ms']:.0f} / p95 {v['p95_ms']:.0f} ms" for k, v in d.items() if v["p50_ms"] is not None
        )
        row("dashboard queries", dash, note=note, eps=False, ratio=False)
    return rows


# -- outputs ----------------------------------------------------------------------------------------------


def _fmt(value, spec: str = ",.1f") -> str:
    return "–" if value is None else format(value, spec)


def _met(t: dict) -> str:
    return "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")


def chart(result: dict, path: Path | None = None) -> bool:
    """Wall time per contender per scale as a PNG; False when nothing completed."""
    import altair as alt
    import pandas as pd

    # fmt: off
    wanted = ("pipeline: stages in one process", "`lakehouse run`", "DuckDB script", "case study's way",
              "re-run, nothing new", "one new delivery (incremental)", "full rebuild incl. the new delivery")
    # fmt: on
    data = [
        {"contender": r["name"].replace("`", ""), "scale": f"{int(ev):,} events", "seconds": r["wall_s"]}
        for ev in result.get("scales", {})
        for r in scale_rows(result, int(ev))
        if r["name"] in wanted and r["wall_s"]
    ]
    if not data:
        return False
    frame = pd.DataFrame(data)
    order = [w.replace("`", "") for w in wanted]
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("contender:N", sort=order, title=None),
            x=alt.X("seconds:Q", title="wall time (s)"),
            color=alt.Color("contender:N", sort=order, legend=None),
            tooltip=["contender", "scale", "seconds"],
        )
    )
    text = bars.mark_text(align="left", dx=3).encode(text=alt.Text("seconds:Q", format=".1f"), color=alt.value("black"))
    layered = alt.layer(bars, text, data=frame).properties(width=420, height=24 * len(order))
    scales = [f"{int(ev):,} events" for ev in sorted(int(e) for e in result.get("scales", {}))]
    final = (
        layered.facet(row=alt.Row("scale:N", title=None, sort=scales))
        .resolve_scale(x="independent")
        .properties(
            title=f"Wall time per contender ({result['machine'].get('cpu_count')} cores, {result['started_at']})"
        )
    )
    path = path or CHART
    path.parent.mkdir(parents=True, exist_ok=True)
    final.save(str(path), format="png", scale_factor=1.5)
    return True


def markdown(result: dict, results_path: Path | None, has_chart: bool) -> str:
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run`); do not edit by hand. "
        "Scales: `make bench EVENTS=100000,1000000` (default), `EVENTS=10000000` on request, `--quick` for 20k.",
        "",
        f"Run {result['started_at']} → {result.get('finished_at', '?')}"
        + (f", raw figures in `{results_path.relative_to(ROOT)}`" if results_path else "")
        + ".",
        "",
        f"Machine: {m.get('cpu_count')} × {m.get('cpu_model')}, {m.get('memory_gib')} GiB RAM "
        f"(load average at start {m.get('load_average_at_start')}); Python {m.get('python')}, {m.get('java')}, "
        f"Spark {m.get('spark')}, delta-spark {m.get('delta_spark')}, DuckDB {m.get('duckdb')}.",
        "",
    ]
    load = m.get("load_average_at_start") or [0]
    if load and load[0] and m.get("cpu_count") and load[0] > m["cpu_count"]:
        lines += [
            f"> **Noisy run**: the load average ({load[0]}) exceeded the core count when it started; "
            "take these figures as a check of the harness, not as measurements.",
            "",
        ]
    lines += ["## Targets", "", "| target | scale | figure | verdict | note |", "|---|---|---|---|---|"]
    for t in result.get("targets", []):
        lines.append(
            f"| {t['target']} | {_fmt(t['scale'], ',d')} | {t['figure'] or '–'} | {_met(t)} | {_cell(t['note'])} |"
        )
    lines.append("")
    if has_chart:
        lines += ["![wall time per contender](benchmarks.png)", ""]
    for events in sorted(int(e) for e in result.get("scales", {})):
        s = result["scales"][str(events)]
        src = s.get("source", {})
        lines += [
            f"## {events:,} events",
            "",
            f"Source: {src.get('event_lines', '?'):,} event lines in {len(src.get('deliveries', []))} deliveries, "
            f"{src.get('key', {}).get('students', '?'):,} students, seed {src.get('key', {}).get('seed', '?')}.",
            "",
            "| contender | wall (s) | peak RSS (MiB) | events/s | × `lakehouse run` | status |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in scale_rows(result, events):
            lines.append(
                f"| {r['name']} | {_fmt(r['wall_s'], ',.2f')} | {_fmt(r['peak_mib'], ',.0f')} | "
                f"{_fmt(r['events_per_s'], ',d')} | {_fmt(r['vs_run'], '.2f')} | {_cell(r['status'])} |"
            )
        lines.append("")
    lines += [
        "## What is measured",
        "",
        "Every contender runs in its own process on the same generated source; peak RSS is the largest sum over the "
        "process and all its children (Python, the Spark JVM, Prefect's temporary server), sampled every 100 ms, "
        "of each process's proportional set size (PSS: a page shared by n processes counts 1/n in each). "
        "Each contender loads its own fresh PostgreSQL database (a cluster under `data/bench/postgres`, or "
        "`LAKEHOUSE_PG_DSN`'s server).",
        "",
        "- **pipeline stages** (`bench/pipeline_stages.py`): `landing.land`, `bronze.ingest`, `silver.refresh`, "
        "`gold.refresh`, `warehouse.mirror` in sequence with one Spark session; per stage the wall time and the peak "
        "memory of Python and of the JVM.",
        "- **`lakehouse run`**: the command as users run it, on a fresh lake and database.",
        "- **DuckDB script** (`bench/duckdb_pipeline.py`): the same job in one DuckDB process: events read as lines "
        "(both spellings coalesced, three `at` forms, malformed lines quarantined), deduplicated, dims with their "
        "latest state (no SCD2 history), facts, the four marts, COPY into PostgreSQL.",
        "- **case study's way** (`bench/casestudy.py`): Spark with 200 shuffle partitions and adaptive execution off "
        "(Spark 2.x defaults), schema inference, a Python UDF splitting `studentId_clientType`, joins, `toPandas()` "
        "to CSV, one `INSERT` per row into PostgreSQL.",
        "- **incremental**: `lakehouse run` again with nothing new; then one new delivery (about 10% more events, "
        "plus that day's transactional exports) run incrementally on the same lake, against a full rebuild of the "
        "same source on a fresh lake.",
        "- **mirror** (`bench/mirror.py`) and **dashboard** (`bench/dashboard.py`) are run through "
        "`bench/external.py`: their function (`run`, `benchmark`, `bench`, `measure` or `main`) gets the keyword "
        "arguments it names among `lake`, `source`, `data_dir`, `dsn`, `events`, `workdir`, `quick`, `repeat`, "
        '`settings`. Read back: mirror `{"copy_scd2": {"rows_per_s"}, "row_by_row": {"rows_per_s"}}`, '
        'dashboard `{"queries": {<chart>: {"p50_ms", "p95_ms"}}}`.',
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def write_docs(result: dict, results_path: Path | None = None) -> None:
    try:
        has_chart = chart(result)
    except Exception as exc:  # noqa: BLE001 - the table matters more than the picture
        print(f"chart not drawn: {type(exc).__name__}: {exc}", file=sys.stderr)
        has_chart = False
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(markdown(result, results_path, has_chart))


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for events in sorted(int(e) for e in result.get("scales", {})):
        table = Table(title=f"{events:,} events")
        for col, justify in (
            ("contender", "left"),
            ("wall s", "right"),
            ("peak MiB", "right"),
            ("events/s", "right"),
            ("× run", "right"),
            ("status", "left"),
        ):
            table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for r in scale_rows(result, events):
            table.add_row(
                r["name"],
                _fmt(r["wall_s"], ",.2f"),
                _fmt(r["peak_mib"], ",.0f"),
                _fmt(r["events_per_s"], ",d"),
                _fmt(r["vs_run"], ".2f"),
                r["status"][:160],
            )
        console.print(table)
    table = Table(title="targets")
    for col in ("target", "figure", "verdict", "note"):
        table.add_column(col, overflow="fold")
    for t in result.get("targets", []):
        style = {True: "green", False: "red", None: "yellow"}[t["met"]]
        table.add_row(t["target"], t["figure"] or "–", f"[{style}]{_met(t)}[/]", (t["note"] or "")[:160])
    console.print(table)


def main() -> None:
    results = ROOT / "bench" / "results"
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else max(results.glob("*.json"))
    result = json.loads(path.read_text())
    result["targets"] = targets(result)
    write_docs(result, path.resolve())
    print_tables(result)


if __name__ == "__main__":
    main()
