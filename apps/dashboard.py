"""Panel + Altair dashboard over gold (through DuckDB); every script, style and font is served locally."""

from __future__ import annotations

import argparse
import itertools
import socket
import subprocess
import sys
import threading
import time
from datetime import date

import altair as alt
import pandas as pd
import panel as pn

from apps.queries import Filters, Gold, to_datetime
from lakehouse.config import PROJECT_ROOT, Settings, get_settings

ALL = "All"
REQUIRED = ("gold.fact_page_view", "gold.dim_student", "gold.fact_session", "gold.fact_subscription",
            "gold.mart_daily_activity", "gold.mart_country_access")
DEFAULT_MONTH = date(2017, 11, 1)
DEFAULT_MIN_VIEWS = 100
_gold: Gold | None = None
_gold_lock = threading.Lock()
_serial = itertools.count()


def shared_gold(settings: Settings | None = None) -> Gold:
    """The process's one read-only DuckDB view of the lake (shared by every browser session)."""
    global _gold
    with _gold_lock:
        if _gold is None:
            _gold = Gold(settings or get_settings())
        return _gold


def _bar(category: str, measure: str, color: str) -> alt.Chart:
    """A horizontal bar chart sorted by `measure`, labelled with its values."""
    base = alt.Chart(pd.DataFrame({category: ["a"], measure: [1]})).encode(
        y=alt.Y(f"{category}:N", sort="-x", title=None),
        x=alt.X(f"{measure}:Q", title=measure.replace("_", " "), axis=alt.Axis(format="~s")),
        tooltip=[f"{category}:N", alt.Tooltip(f"{measure}:Q", format=",")],
    )
    labels = base.mark_text(align="left", dx=3, fontSize=10).encode(text=alt.Text(f"{measure}:Q", format=","))
    return (base.mark_bar(color=color) + labels).properties(width="container", title="")


def _daily() -> alt.Chart:
    return alt.Chart(pd.DataFrame({"event_date": ["2017-11-01"], "client_type": ["a"], "page_views": [1]})).mark_line(
        point=alt.OverlayMarkDef(size=18)).encode(
        x=alt.X("event_date:T", title=None, axis=alt.Axis(format="%b %d")),
        y=alt.Y("page_views:Q", title="page views"),
        color=alt.Color("client_type:N", title="client type"),
        tooltip=["event_date:T", "client_type:N", alt.Tooltip("page_views:Q", format=",")],
    ).properties(width="container", height=260, title="")


def _empty() -> alt.Chart:
    return alt.Chart(pd.DataFrame({"x": [0]})).mark_text(text="no data for this selection", fontSize=13).properties(
        width="container", height=60, title="")


class Spec:
    """An Altair chart compiled once to Vega-Lite; a redraw only swaps its data, title and height (fast)."""

    def __init__(self, chart: alt.Chart):
        self.spec = chart.to_dict()
        if set(self.spec.get("data", {})) != {"name"}:
            raise ValueError("chart data must be a top-level named dataset")

    def render(self, df: pd.DataFrame, title: str, height: int | None = None) -> dict:
        name = f"data-{next(_serial)}"  # a new name makes the browser redraw, not just patch the old dataset
        spec = {**self.spec, "title": title, "data": {"name": name}, "datasets": {name: _records(df)}}
        if height is not None:
            spec["height"] = height
        return spec


def _records(df: pd.DataFrame) -> list[dict]:
    df = df.copy()
    for column in df.columns:
        if not pd.api.types.is_numeric_dtype(df[column]):
            df[column] = df[column].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
    return df.to_dict("records")


_specs: dict[str, Spec] = {}


def spec(name: str) -> Spec:
    """The compiled chart `name` (built on first use, shared by every session)."""
    if name not in _specs:
        bars = {"states": ("state", "students", "#4c78a8"), "universities": ("university", "page_views", "#f58518"),
                "courses": ("course", "page_views", "#54a24b"), "user_types": ("user_type", "page_views", "#b279a2"),
                "foreign": ("country", "page_views", "#e45756")}
        _specs[name] = Spec(_daily() if name == "daily" else _empty() if name == "empty" else _bar(*bars[name]))
    return _specs[name]


def draw(name: str, df: pd.DataFrame, title: str) -> dict:
    """The Vega-Lite spec of chart `name` over `df` (an empty-state spec when there are no rows)."""
    if df.empty:
        return spec("empty").render(pd.DataFrame({"x": [0]}), title)
    return spec(name).render(df, title, None if name == "daily" else max(60, 18 * len(df)))


def _when(value) -> str:
    moment = to_datetime(value)
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


class Dashboard:
    """One browser session's widgets and charts."""

    def __init__(self, gold: Gold):
        self.gold = gold
        first, last = gold.bounds()
        months = [pd.Timestamp(m).date() for m in gold.options("months")]
        self.dates = pn.widgets.DateRangePicker(name="Period", value=(first, last), start=first, end=last,
                                                css_classes=["filter-dates"], width=240)
        self.client = pn.widgets.Select(name="Client type", options=[ALL, *gold.options("client_types")],
                                        css_classes=["filter-client"], width=160)
        self.country = pn.widgets.Select(name="Country", options=[ALL, *gold.options("countries")],
                                         css_classes=["filter-country"], width=140)
        month_options = {m.strftime("%B %Y"): m for m in months} or {DEFAULT_MONTH.strftime("%B %Y"): DEFAULT_MONTH}
        default_month = DEFAULT_MONTH if DEFAULT_MONTH in month_options.values() else list(month_options.values())[-1]
        self.month = pn.widgets.Select(name="Month", options=month_options, value=default_month,
                                       css_classes=["filter-month"], width=160)
        self.min_views = pn.widgets.IntInput(name="More than N page views", value=DEFAULT_MIN_VIEWS, start=0,
                                             step=10, css_classes=["filter-min-views"], width=160)
        number = dict(font_size="28pt", title_size="11pt", format="{value:,}", width=190)
        self.kpis = {key: pn.indicators.Number(name=label, value=0, **number) for key, label in (
            ("page_views", "Page views"), ("active_students", "Active students"),
            ("sessions", "Sessions"), ("paying_students", "Paying students"))}
        chart = dict(sizing_mode="stretch_width")
        self.states = pn.pane.Vega(None, css_classes=["chart-states"], **chart)
        self.foreign = pn.pane.Vega(None, css_classes=["chart-foreign"], **chart)
        self.user_types = pn.pane.Vega(None, css_classes=["chart-user-types"], **chart)
        self.daily = pn.pane.Vega(None, css_classes=["chart-daily"], **chart)
        self.universities = pn.pane.Vega(None, css_classes=["chart-universities"], **chart)
        self.courses = pn.pane.Vega(None, css_classes=["chart-courses"], **chart)
        self.freshness = pn.pane.Markdown("", css_classes=["freshness"])
        self.quarantine = pn.pane.DataFrame(None, index=False, css_classes=["quarantine"], sizing_mode="stretch_width")
        self.timing = pn.pane.Str("", css_classes=["timing"], styles={"color": "#888", "font-size": "10px"})
        for widget in (self.dates, self.client, self.country):
            widget.param.watch(self.update, "value")
        for widget in (self.month, self.min_views):
            widget.param.watch(self.update_foreign, "value")
        self.update()
        self.update_foreign()
        self.update_freshness()

    def filters(self) -> Filters:
        start, end = self.dates.value
        return Filters(start=start, end=end,
                       client_type=None if self.client.value == ALL else self.client.value,
                       country=None if self.country.value == ALL else self.country.value)

    def update(self, *_events) -> None:
        """Redraw everything that depends on the period, client type and country."""
        started = time.perf_counter()
        filters = self.filters()
        data = self.gold.overview(filters)
        headline = data["headline"]
        charts = {
            self.states: draw("states", data["states"], "Active students per state"),
            self.universities: draw("universities", data["universities"], "Top universities by page views"),
            self.courses: draw("courses", data["courses"], "Top courses by page views"),
            self.user_types: draw("user_types", data["user_types"], "Page views per user type"),
            self.daily: draw("daily", data["daily"], "Daily page views by client type"),
        }
        with pn.io.hold():
            for key, indicator in self.kpis.items():
                indicator.value = headline[key]
            for pane, chart in charts.items():
                pane.object = chart
            self.timing.object = f"updated in {1000 * (time.perf_counter() - started):.0f} ms"

    def update_foreign(self, *_events) -> None:
        """Redraw the foreign-countries chart for the chosen month and threshold."""
        month, n = self.month.value, int(self.min_views.value or 0)
        df = self.gold.foreign(month, n)
        title = f"Foreign countries with more than {n:,} page views in {month.strftime('%B %Y')}"
        self.foreign.object = draw("foreign", df, title)

    def update_freshness(self) -> None:
        info = self.gold.freshness()
        quarantine = info["quarantine"]
        total = int(quarantine["rows"].sum()) if len(quarantine) else 0
        self.freshness.object = (
            f"**Latest delivery as-of** (gold): {_when(info['gold_as_of'])}  \n"
            f"**Latest delivery as-of** (bronze): {_when(info['bronze_as_of'])}  \n"
            f"**Last run** (latest gold commit): {_when(info['last_run'])}  \n"
            f"**Rows quarantined**: {total:,}"
        )
        self.quarantine.object = quarantine if len(quarantine) else None

    def view(self) -> pn.viewable.Viewable:
        card = dict(styles={"background": "white", "border-radius": "6px", "padding": "6px"}, margin=6,
                    sizing_mode="stretch_width")
        return pn.Column(
            pn.pane.Markdown("## Learning-platform activity", margin=(0, 10)),
            pn.Row(self.dates, self.client, self.country, self.timing),
            pn.Row(*self.kpis.values()),
            pn.Row(pn.Column(self.daily, **card), pn.Column(self.states, **card)),
            pn.Row(pn.Column(self.user_types, **card),
                   pn.Column(pn.Row(self.month, self.min_views), self.foreign, **card)),
            pn.Row(pn.Column(self.universities, **card), pn.Column(self.courses, **card)),
            pn.Row(pn.Column(pn.pane.Markdown("### Data freshness and quality"), self.freshness, **card),
                   pn.Column(pn.pane.Markdown("### Quarantined rows by reason"), self.quarantine, **card)),
            sizing_mode="stretch_width", styles={"background": "#f4f5f7"},
        )


def create_app(settings: Settings | None = None) -> pn.viewable.Viewable:
    """The page for one browser session."""
    pn.extension("vega")
    gold = shared_gold(settings)
    missing = [key for key in REQUIRED if not gold.has(key)]
    if missing:
        return pn.pane.Markdown(
            f"## No gold data yet\nThe lake at `{gold.settings.lake_url}` lacks {', '.join(missing)}.\n\n"
            "Run `lakehouse run` (or `make demo`), then reload this page.")
    return Dashboard(gold).view()


def serve(port: int = 5006, show: bool = False, address: str = "127.0.0.1", settings: Settings | None = None) -> None:
    """Serve the dashboard on `port` until interrupted (blocks)."""
    gold = shared_gold(settings)  # open DuckDB and compile the charts before the first browser arrives
    gold.has(*REQUIRED)
    for name in ("daily", "states", "universities", "courses", "user_types", "foreign", "empty"):
        spec(name)
    origins = ["*"] if address in ("0.0.0.0", "::") else [f"localhost:{port}", f"127.0.0.1:{port}"]
    pn.serve({"/": lambda: create_app(settings)}, port=port, address=address, show=show, title="Lakehouse dashboard",
             websocket_origin=origins, verbose=False)


def spawn(port: int = 5006, timeout: float = 60.0, address: str = "127.0.0.1", env: dict | None = None) -> subprocess.Popen:
    """Start `serve` in a child process and return it once the port accepts connections."""
    command = [sys.executable, "-m", "apps.dashboard", "--port", str(port), "--address", address]
    process = subprocess.Popen(command, env=env, cwd=str(PROJECT_ROOT))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dashboard exited with code {process.returncode} before serving")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise TimeoutError(f"dashboard did not listen on port {port} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the lakehouse dashboard.")
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.port, address=args.address)


if __name__ == "__main__":
    main()
