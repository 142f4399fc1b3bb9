"""Altair charts compiled once to Vega-Lite, drawn by a component that swaps only their data on a redraw."""

from __future__ import annotations

import altair as alt
import pandas as pd
import param
from panel.custom import JSComponent

DATA = "table"  # the one named dataset of every chart spec
EMPTY = "no data for this selection"


def _bar(category: str, measure: str, color: str) -> alt.LayerChart:
    """A horizontal bar chart sorted by `measure`, labelled with its values; 18 px per bar."""
    base = alt.Chart(alt.NamedData(DATA)).encode(
        y=alt.Y(f"{category}:N", sort="-x", title=None),
        x=alt.X(f"{measure}:Q", title=measure.replace("_", " "), axis=alt.Axis(format="~s")),
        tooltip=[f"{category}:N", alt.Tooltip(f"{measure}:Q", format=",")],
    )
    labels = base.mark_text(align="left", dx=3, fontSize=10).encode(text=alt.Text(f"{measure}:Q", format=","))
    return (base.mark_bar(color=color) + labels).properties(height=alt.Step(18))


def _daily() -> alt.Chart:
    return (
        alt.Chart(alt.NamedData(DATA))
        .mark_line(point=alt.OverlayMarkDef(size=18))
        .encode(
            x=alt.X("event_date:T", title=None, axis=alt.Axis(format="%b %d")),
            y=alt.Y("page_views:Q", title="page views"),
            color=alt.Color("client_type:N", title="client type"),
            tooltip=["event_date:T", "client_type:N", alt.Tooltip("page_views:Q", format=",")],
        )
        .properties(height=260)
    )


BARS = {
    "states": ("state", "students", "#4c78a8"),
    "universities": ("university", "page_views", "#f58518"),
    "courses": ("course", "page_views", "#54a24b"),
    "user_types": ("user_type", "page_views", "#b279a2"),
    "foreign": ("country", "page_views", "#e45756"),
}
NAMES = ("daily", *BARS)
_specs: dict[str, dict] = {}


def spec(name: str) -> dict:
    """The Vega-Lite spec of chart `name` (compiled on first use, shared by every session); data and title come later."""
    if name not in _specs:
        chart = _daily() if name == "daily" else _bar(*BARS[name])
        out = chart.properties(width=400).to_dict()
        out.pop("datasets", None)
        out.pop("$schema", None)  # Panel serves its own Vega-Lite build; the schema URL would only warn
        if out.get("data") != {"name": DATA}:
            raise ValueError(f"chart {name} must read the named dataset {DATA!r}")
        # the title is a signal: a new title is a signal update, not a new chart
        out["params"] = [*out.get("params", []), {"name": "chart_title", "value": ""}]
        out["title"] = {"text": {"expr": "chart_title"}, "anchor": "start"}
        out["autosize"] = {"type": "fit-x", "contains": "padding"}
        _specs[name] = out
    return _specs[name]


def records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: dates and timestamps as ISO strings, missing values as null."""
    out = df.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")


class VegaChart(JSComponent):
    """A Vega-Lite chart embedded once; a new `rows` or `title` updates the live Vega view in place."""

    spec = param.Dict(default={}, doc="Vega-Lite spec reading the named dataset DATA")
    rows = param.List(default=[], doc="the dataset's rows")
    title = param.String(default="")
    revision = param.Integer(
        default=0, doc="bumped by every show(): the browser draws once per show, even unchanged rows"
    )

    # an empty chart keeps its title (and its drawn marks element) but shows a message instead of bare axes
    _stylesheets = [
        ".is-empty .role-axis, .is-empty .role-legend { display: none; } "
        ".no-data { color: #666; font: 13px sans-serif; padding: 4px 0 8px 0; }"
    ]

    _esm = """
    const EMPTY = %(empty)s
    function ready() {
      return new Promise((resolve) => {
        const poll = () => (window.vegaEmbed && window.vega) ? resolve() : setTimeout(poll, 20)
        poll()
      })
    }
    export function render({ model, el }) {
      const box = document.createElement("div")
      box.style.width = "100%%"
      const plot = document.createElement("div")
      plot.style.width = "100%%"
      const empty = document.createElement("div")
      empty.textContent = EMPTY
      empty.className = "no-data"
      empty.style.display = "none"
      box.append(plot, empty)
      let view = null
      let drawn = 0
      let queue = Promise.resolve()
      const width = () => Math.max(200, box.clientWidth || el.clientWidth || 400)
      async function draw() {
        await ready()
        const rows = model.rows || []
        if (view === null) {
          const spec = JSON.parse(JSON.stringify(model.spec))
          spec.width = width()
          spec.datasets = {%(data)s: rows}
          spec.params = spec.params.map((p) => p.name === "chart_title" ? {...p, value: model.title} : p)
          const result = await window.vegaEmbed(plot, spec, {actions: false, renderer: "svg"})
          view = result.view
        } else {
          view.signal("chart_title", model.title)
          view.data(%(data)s, rows)
          await view.runAsync()
        }
        await fit()
        empty.style.display = rows.length ? "none" : "block"
        plot.classList.toggle("is-empty", !rows.length)
        drawn += 1
        const marks = plot.querySelector("svg.marks, canvas.marks")
        if (marks) marks.dataset.drawn = String(drawn)
        el.dataset.drawn = String(drawn)
      }
      let pending = false
      // rows, title and revision arrive in one message; only the revision triggers a draw, once per show()
      const redraw = () => {
        if (pending) return
        pending = true
        queue = queue.then(() => { pending = false; return draw() }).catch((e) => console.error(e))
      }
      model.on("revision", redraw)
      model.on("after_render", redraw)
      async function fit() {
        if (view !== null && Math.abs(view.width() - width()) > 1) {
          await view.width(width()).runAsync()
        }
      }
      const resized = new ResizeObserver(() => { queue = queue.then(fit).catch((e) => console.error(e)) })
      resized.observe(box)
      model.on("remove", () => { resized.disconnect(); if (view !== null) view.finalize() })
      return box
    }
    """ % {"empty": repr(EMPTY), "data": repr(DATA)}

    def __init__(self, name: str, **params):
        super().__init__(spec=spec(name), **params)

    def draw(self, df: pd.DataFrame, title: str) -> None:
        """Draw `df` under `title` (one batched property change)."""
        self.param.update(rows=records(df), title=title, revision=self.revision + 1)
