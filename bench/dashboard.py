"""Dashboard speed on a lake's gold: per-chart query latency, page load and filter redraw in headless Chromium.

Usage: python -m bench.dashboard [--lake PATH] [--events N] [--repeat N] [--screenshot docs/dashboard.png]
A lake without gold gets a synthetic gold-shaped one (N events, written by Spark) under --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from lakehouse.security import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# fmt: off
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# fmt: on
FILTERED_CHARTS = (".chart-daily", ".chart-states", ".chart-user-types", ".chart-universities", ".chart-courses")
# the drawn marks (svg.marks / canvas.marks) inside each chart host matching `css`, searched through shadow roots
MARKS_JS = """(css) => {
  const hosts = [];
  const walk = (root) => root.querySelectorAll('*').forEach(el => {
    if (el.matches(css)) hosts.push(el);
    if (el.shadowRoot) walk(el.shadowRoot);
  });
  walk(document);
  const marks = (host) => { const found = [];
    const inner = (root) => root.querySelectorAll('*').forEach(el => {
      if (el.matches('svg.marks, canvas.marks')) found.push(el);
      if (el.shadowRoot) inner(el.shadowRoot); });
    if (host.shadowRoot) inner(host.shadowRoot); inner(host); return found; };
  return hosts.map(marks);
}"""
# tag what is drawn now with its draw count (`data-drawn`, set by apps.charts.VegaChart after each draw); a redraw
# is done when every chart shows a mark element drawn since: a new element (re-embedded) or a higher draw count
STALE_JS = "(css) => { (%s)(css).forEach(ms => ms.forEach(m => m.dataset.stale = m.dataset.drawn || '0')); }" % MARKS_JS
REDRAWN_JS = (
    "(css) => { const all = (%s)(css); return all.length > 0 && "
    "all.every(ms => ms.some(m => m.dataset.stale === undefined || "
    "m.dataset.stale !== (m.dataset.drawn || '0'))); }" % MARKS_JS
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _figures(samples: list[float]) -> dict:
    return {
        "p50_ms": round(_pct(samples, 0.5), 1),
        "p95_ms": round(_pct(samples, 0.95), 1),
        "max_ms": round(max(samples), 1),
        "n": len(samples),
    }


def ensure_gold(lake: str, events: int, workdir: Path) -> tuple[str, bool]:
    """The lake to measure: `lake` when it has gold, else a synthetic gold-shaped lake of `events` events."""
    from lakehouse import catalog
    from lakehouse.config import Settings

    if {"gold.fact_page_view", "gold.dim_student"} <= {t.key for t in catalog.discover(Settings(lake=lake))}:
        return lake, False
    synthetic = workdir / f"synthetic-gold-{events}" / "lake"
    marker = synthetic.parent / ".complete"
    if not marker.exists():
        from lakehouse.spark import build_session
        from tests.gold_lake import write_lake

        spark = build_session(Settings(spark_master="local[2]", shuffle_partitions=4, data_dir=workdir))
        write_lake(spark, str(synthetic), events=events, students=max(2000, events // 50))
        spark.stop()
        marker.write_text("ok")
    return str(synthetic), True


def query_latency(lake: str, repeat: int) -> dict:
    """Server-side p50/p95 of each chart's query, cycling filter values, on one shared read-only connection."""
    from apps.queries import Filters, Gold
    from lakehouse.config import Settings

    started = time.perf_counter()
    gold = Gold(Settings(lake=lake, data_dir=Path(tempfile.mkdtemp(prefix="bench-dash-"))))
    first, last = gold.bounds()
    open_ms = 1000 * (time.perf_counter() - started)
    clients = [None, *gold.options("client_types")]
    countries = [None, *gold.options("countries")[:3]]
    months = gold.options("months")
    samples: dict[str, list[float]] = {}

    def timed(name, fn):
        t = time.perf_counter()
        fn()
        samples.setdefault(name, []).append(1000 * (time.perf_counter() - t))

    for i in range(repeat):
        f = Filters(first, last, clients[i % len(clients)], countries[(i // len(clients)) % len(countries)])
        timed("states + headline", lambda: gold.headline(f))
        timed("universities", lambda: gold.breakdown("university", f))
        timed("courses", lambda: gold.breakdown("course", f))
        timed("user_types", lambda: gold.frame("user_type", f.params()))
        timed("daily", lambda: gold.frame("daily", f.params()))
        timed("all filtered charts (server)", lambda: gold.overview(f))
        timed("foreign", lambda: gold.foreign(months[i % len(months)], 100))
    gold.lake.close()
    return {"open_ms": round(open_ms, 1), "queries": {k: _figures(v) for k, v in samples.items()}}


def browser_latency(lake: str, data_dir: str, repeat: int, screenshot: str | None = None) -> dict:
    """Page interactive time and filter-change redraw time, measured in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from apps.dashboard import spawn

    port = free_port()
    env = {**os.environ, "LAKEHOUSE_LAKE": lake, "LAKEHOUSE_DATA_DIR": data_dir}
    server = spawn(port, timeout=180, env=env)
    url = f"http://127.0.0.1:{port}/"
    requests: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)  # warm-up: first session opens DuckDB
            page.locator("svg.marks, canvas.marks").nth(5).wait_for(state="attached", timeout=120_000)
            loads = []
            for _ in range(3):
                t = time.perf_counter()
                page.goto(url, wait_until="domcontentloaded", timeout=120_000)
                page.locator("svg.marks, canvas.marks").nth(5).wait_for(state="attached", timeout=120_000)
                page.locator(".filter-client select").wait_for(state="attached")
                loads.append(1000 * (time.perf_counter() - t))
            if screenshot:
                page.wait_for_timeout(500)
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=screenshot, full_page=True)
            options = page.locator(".filter-client select option").all_inner_texts()
            cycle = [o for o in options if o != "All"] + ["All"]
            redraws = []
            css = ", ".join(FILTERED_CHARTS)
            for i in range(repeat):
                page.evaluate(STALE_JS, css)
                t = time.perf_counter()
                page.locator(".filter-client select").select_option(cycle[i % len(cycle)])
                page.wait_for_function(REDRAWN_JS, arg=css, polling=10, timeout=30_000)
                redraws.append(1000 * (time.perf_counter() - t))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    hosts = sorted({urlsplit(u).hostname or "" for u in requests if not u.startswith(("data:", "blob:"))})
    return {"page_interactive_ms": _figures(loads), "filter_redraw_ms": _figures(redraws), "request_hosts": hosts}


def run(
    lake: str | None = None,
    data_dir: str | None = None,
    events: int = 1_000_000,
    repeat: int = 30,
    workdir: str | None = None,
    quick: bool = False,
    screenshot: str | None = None,
) -> dict:
    """Measure the dashboard on `lake` (default: the configured lake); the report the bench harness reads."""
    from lakehouse.config import get_settings

    settings = get_settings()
    work = Path(workdir or tempfile.mkdtemp(prefix="bench-dashboard-"))
    work.mkdir(parents=True, exist_ok=True)
    lake, synthetic = ensure_gold(lake or settings.lake_url, events, work)
    report: dict = {"lake": lake, "synthetic_gold": synthetic, "events": events}
    server_side = query_latency(lake, repeat)
    report["open_ms"] = server_side["open_ms"]
    report["queries"] = server_side["queries"]
    if os.path.exists(CHROMIUM):
        browser = browser_latency(lake, data_dir or str(work / "data"), max(10, repeat), screenshot)
        report["queries"]["filter redraw (browser, end to end)"] = browser["filter_redraw_ms"]
        report["page_interactive_ms"] = browser["page_interactive_ms"]
        report["request_hosts"] = browser["request_hosts"]
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", default=None, help="lake root (default: LAKEHOUSE_LAKE / the configured lake)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the synthetic gold, when needed")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--workdir", default=str(ROOT / "data" / "bench" / "dashboard"))
    parser.add_argument("--screenshot", default=None, help="save a full-page screenshot here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.lake, None, args.events, args.repeat, args.workdir, screenshot=args.screenshot)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "measure",
        "p50 ms",
        "p95 ms",
        "max ms",
        "n",
        title=f"dashboard on {report['lake']}{' (synthetic gold)' if report['synthetic_gold'] else ''}",
    )
    rows = dict(report["queries"])
    if "page_interactive_ms" in report:
        rows["page interactive (browser)"] = report["page_interactive_ms"]
    for name, f in rows.items():
        table.add_row(name, f"{f['p50_ms']:.0f}", f"{f['p95_ms']:.0f}", f"{f['max_ms']:.0f}", str(f["n"]))
    Console().print(table)
    print(f"DuckDB open: {report['open_ms']:.0f} ms; request hosts: {report.get('request_hosts')}")


if __name__ == "__main__":
    main()
