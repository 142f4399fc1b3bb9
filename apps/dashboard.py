"""Panel + Altair dashboard over gold (through DuckDB); every script, style and font is served locally."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pandas as pd
import panel as pn

from apps.charts import NAMES, VegaChart, spec
from apps.queries import Filters, Gold, to_datetime
from lakehouse.config import PROJECT_ROOT, Settings, get_settings
from lakehouse.platform import origins, public_url
from lakehouse.reports import OUTCOMES
from lakehouse.security import ADMIN_USER, BindRefused, check_bind, login_set, wait_listening
from lakehouse.trust import Trust

log = logging.getLogger(__name__)
ALL = "All"
# fmt: off
REQUIRED = ("gold.fact_page_view", "gold.dim_student", "gold.fact_session", "gold.fact_subscription",
            "gold.mart_daily_activity", "gold.mart_country_access", "gold.dim_date")
# fmt: on
DEFAULT_MONTH = date(2017, 11, 1)
DEFAULT_MIN_VIEWS = 100
LOGIN_TEMPLATE = Path(__file__).with_name("login.html")  # Panel's own loads its images from a CDN
_gold: Gold | None = None
_gold_lock = threading.Lock()


def shared_gold(settings: Settings | None = None) -> Gold:
    """The process's one read-only DuckDB view of the lake (shared by every browser session)."""
    global _gold
    with _gold_lock:
        if _gold is None:
            _gold = Gold(settings or get_settings())
        return _gold


def _when(value) -> str:
    moment = to_datetime(value)
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


TRUST_REFRESH_MS = 60_000
_BAD, _GOOD = "#c0392b", "#1e8449"


def trust_headline(found: Trust) -> str:
    """The trust panel's first line: sources fresh or stale, tables up to date or pending, expectations' outcomes."""
    stale = [s.status.group for s in found.sources if s.status.stale]
    odd = [s.status.group for s in found.sources if s.status.anomaly]
    behind = [t.table for t in found.tables if t.behind]
    outcomes = Counter(o for t in found.tables for o in t.outcomes.values())

    def said(good: bool, text: str) -> str:
        return f'<span style="color:{_GOOD if good else _BAD}">{"✔" if good else "✖"} {text}</span>'

    sources = said(
        not stale,
        f"{len(stale)} of {len(found.sources)} sources stale: {', '.join(stale)}"
        if stale
        else f"all {len(found.sources)} sources fresh (SLA {found.sla})",
    )
    volume = said(not odd, f"unusually small delivery: {', '.join(odd)}" if odd else "volumes as usual")
    tables = said(
        not behind,
        f"{len(behind)} tables held back: {', '.join(behind[:4])}{'...' if len(behind) > 4 else ''}"
        if behind
        else "every table up to date",
    )
    checks = said(
        not outcomes["failed"],
        "expectations: "
        + (", ".join(f"{outcomes[o]} {o}" for o in (*OUTCOMES, "unchecked") if outcomes[o]) or "none declared"),
    )
    return " &nbsp;·&nbsp; ".join((sources, volume, tables, checks))


class Dashboard:
    """One browser session's widgets and charts."""

    def __init__(self, gold: Gold):
        self.gold = gold
        first, last = gold.bounds()
        months = [pd.Timestamp(m).date() for m in gold.options("months")]
        self.dates = pn.widgets.DateRangePicker(
            name="Period", value=(first, last), start=first, end=last, css_classes=["filter-dates"], width=240
        )
        self.client = pn.widgets.Select(
            name="Client type", options=[ALL, *gold.options("client_types")], css_classes=["filter-client"], width=160
        )
        self.country = pn.widgets.Select(
            name="Country", options=[ALL, *gold.options("countries")], css_classes=["filter-country"], width=140
        )
        month_options = {m.strftime("%B %Y"): m for m in months} or {DEFAULT_MONTH.strftime("%B %Y"): DEFAULT_MONTH}
        default_month = DEFAULT_MONTH if DEFAULT_MONTH in month_options.values() else list(month_options.values())[-1]
        self.month = pn.widgets.Select(
            name="Month", options=month_options, value=default_month, css_classes=["filter-month"], width=160
        )
        self.min_views = pn.widgets.IntInput(
            name="More than N page views",
            value=DEFAULT_MIN_VIEWS,
            start=0,
            step=10,
            css_classes=["filter-min-views"],
            width=160,
        )
        number = dict(font_size="28pt", title_size="11pt", format="{value:,}", width=190)
        self.kpis = {
            key: pn.indicators.Number(name=label, value=0, **number)
            for key, label in (
                ("page_views", "Page views"),
                ("active_students", "Active students"),
                ("sessions", "Sessions"),
                ("paying_students", "Paying students"),
            )
        }
        chart = dict(sizing_mode="stretch_width")
        self.states = VegaChart("states", css_classes=["chart-states"], **chart)
        self.foreign = VegaChart("foreign", css_classes=["chart-foreign"], **chart)
        self.user_types = VegaChart("user_types", css_classes=["chart-user-types"], **chart)
        self.daily = VegaChart("daily", css_classes=["chart-daily"], **chart)
        self.universities = VegaChart("universities", css_classes=["chart-universities"], **chart)
        self.courses = VegaChart("courses", css_classes=["chart-courses"], **chart)
        self.freshness = pn.pane.Markdown("", css_classes=["freshness"])
        self.trust_headline = pn.pane.Markdown("", css_classes=["trust-headline"], margin=(0, 10))
        table = dict(index=False, sizing_mode="stretch_width")
        self.trust_sources = pn.pane.DataFrame(None, css_classes=["trust-sources"], **table)
        self.trust_tables = pn.pane.DataFrame(None, css_classes=["trust-tables"], **table)
        self.quarantine = pn.pane.DataFrame(None, index=False, css_classes=["quarantine"], sizing_mode="stretch_width")
        self.timing = pn.pane.Str("", css_classes=["timing"], styles={"color": "#888", "font-size": "10px"})
        for widget in (self.dates, self.client, self.country, self.month, self.min_views):
            widget._debounce = 0  # type: ignore[misc]  # Panel waits 50 ms for more changes of a widget by default: a pick is one change
        for widget in (self.dates, self.client, self.country):
            widget.param.watch(self.update, "value")
        for widget in (self.month, self.min_views):
            widget.param.watch(self.update_foreign, "value")
        self.update()
        self.update_foreign()
        self.update_freshness()
        self.update_trust()
        if pn.state.curdoc is not None:  # a browser session: the panel follows the lake
            pn.state.add_periodic_callback(self.update_trust, period=TRUST_REFRESH_MS)

    def filters(self) -> Filters:
        start, end = self.dates.value  # type: ignore[misc]  # a range widget's value is a pair
        return Filters(
            start=start,
            end=end,
            client_type=None if self.client.value == ALL else self.client.value,
            country=None if self.country.value == ALL else self.country.value,
        )

    def update(self, *_events) -> None:
        """Redraw everything that depends on the period, client type and country."""
        started = time.perf_counter()
        filters = self.filters()
        data = self.gold.overview(filters)
        headline = data["headline"]
        with pn.io.hold():  # one message to the browser; each chart gets only its new rows
            for key, indicator in self.kpis.items():
                indicator.value = headline[key]
            self.states.draw(data["states"], "Active students per state")
            self.universities.draw(data["universities"], "Top universities by page views")
            self.courses.draw(data["courses"], "Top courses by page views")
            self.user_types.draw(data["user_types"], "Page views per user type")
            self.daily.draw(data["daily"], "Daily page views by client type")
            self.timing.object = f"updated in {1000 * (time.perf_counter() - started):.0f} ms"

    def update_foreign(self, *_events) -> None:
        """Redraw the foreign-countries chart for the chosen month and threshold."""
        month, n = self.month.value, int(self.min_views.value or 0)
        df = self.gold.foreign(month, n)
        title = f"Foreign countries with more than {n:,} page views in {month.strftime('%B %Y')}"
        self.foreign.draw(df, title)

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

    def update_trust(self) -> None:
        """The trust panel: one line to read first, then the source groups and the tables."""
        try:
            found = self.gold.trust()
        except Exception as exc:  # the charts stand without it; the next refresh tries again
            log.warning("the trust panel could not be read: %s", exc)
            self.trust_headline.object = f"The trust panel could not be read: {type(exc).__name__}: {exc}"
            return
        self.trust_headline.object = trust_headline(found)
        self.trust_sources.object = pd.DataFrame(found.source_rows())
        self.trust_tables.object = pd.DataFrame(found.table_rows())

    def view(self) -> pn.viewable.Viewable:
        card = dict(
            styles={"background": "white", "border-radius": "6px", "padding": "6px"},
            margin=6,
            sizing_mode="stretch_width",
        )
        trust = pn.Column(
            pn.pane.Markdown("### Can I trust the numbers?"),
            self.trust_headline,
            pn.Row(
                pn.Column(pn.pane.Markdown("#### Sources"), self.trust_sources, sizing_mode="stretch_width"),
                pn.Column(pn.pane.Markdown("#### Tables"), self.trust_tables, sizing_mode="stretch_width"),
            ),
            css_classes=["trust"],
            **card,
        )
        return pn.Column(
            pn.pane.Markdown("## Learning-platform activity", margin=(0, 10)),
            pn.Row(trust),
            pn.Row(self.dates, self.client, self.country, self.timing),
            pn.Row(*self.kpis.values()),
            pn.Row(pn.Column(self.daily, **card), pn.Column(self.states, **card)),
            pn.Row(
                pn.Column(self.user_types, **card), pn.Column(pn.Row(self.month, self.min_views), self.foreign, **card)
            ),
            pn.Row(pn.Column(self.universities, **card), pn.Column(self.courses, **card)),
            pn.Row(
                pn.Column(pn.pane.Markdown("### Data freshness and quality"), self.freshness, **card),
                pn.Column(pn.pane.Markdown("### Quarantined rows by reason"), self.quarantine, **card),
            ),
            sizing_mode="stretch_width",
            styles={"background": "#f4f5f7"},
        )


def create_app(settings: Settings | None = None) -> pn.viewable.Viewable:
    """The page for one browser session."""
    pn.extension("vega")
    gold = shared_gold(settings)
    missing = [key for key in REQUIRED if not gold.has(key)]
    if missing:
        return pn.pane.Markdown(
            f"## No gold data yet\nThe lake at `{gold.settings.lake_url}` lacks {', '.join(missing)}.\n\n"
            "Run `lakehouse run` (or `make demo`), then reload this page."
        )
    return Dashboard(gold).view()


def login_options(settings: Settings, address: str, port: int) -> dict:
    """How `pn.serve` asks for a login: Panel's OAuth when PANEL_OAUTH_PROVIDER is set, else basic auth (user admin,
    LAKEHOUSE_ADMIN_PASSWORD) when that is set, else none, which only loopback allows (BindRefused otherwise)."""
    import secrets

    from panel.config import config

    cookie_secret = config.cookie_secret or secrets.token_urlsafe(32)
    if config.oauth_provider:
        if config.oauth_encryption_key:
            from cryptography.fernet import Fernet

            pn.state.encryption = Fernet(config.oauth_encryption_key)
        return {"oauth_provider": config.oauth_provider, "cookie_secret": cookie_secret}
    if login_set(settings):
        assert settings.admin_password is not None  # login_set
        return {
            "basic_auth": {ADMIN_USER: settings.admin_password.get_secret_value()},
            "cookie_secret": cookie_secret,
            "basic_login_template": str(LOGIN_TEMPLATE),
        }
    check_bind(address, False, "the dashboard")
    return {}


def serve(port: int = 5006, show: bool = False, address: str | None = None, settings: Settings | None = None) -> None:
    """Serve the dashboard on `port` until interrupted (blocks); `address` defaults to LAKEHOUSE_BIND."""
    settings = settings or get_settings()
    address = address or settings.bind
    login = login_options(settings, address, port)
    gold = shared_gold(settings)  # open DuckDB and compile the charts before the first browser arrives
    gold.has(*REQUIRED)
    for name in NAMES:
        spec(name)
    public = public_url(settings.model_copy(update={"bind": address}), port, settings.dashboard_url)
    allowed = [o.split("://", 1)[1] for o in origins(settings.model_copy(update={"bind": address}), port, public)]
    pn.serve(
        {"/": lambda: create_app(settings)},
        port=port,
        address=address,
        show=show,
        title="Lakehouse dashboard",
        websocket_origin=allowed,
        verbose=False,
        **login,
    )


def spawn(
    port: int = 5006, timeout: float = 60.0, address: str = "127.0.0.1", env: dict | None = None
) -> subprocess.Popen:
    """Start `serve` in a child process and return it once the port accepts connections."""
    command = [sys.executable, "-m", "apps.dashboard", "--port", str(port), "--address", address]
    process = subprocess.Popen(command, env=env, cwd=str(PROJECT_ROOT))
    try:
        wait_listening(port, process, timeout, "the dashboard")
    except TimeoutError:
        process.terminate()
        raise
    return process


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the lakehouse dashboard.")
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--address", default=None, help="interface to listen on (default: LAKEHOUSE_BIND)")
    args = parser.parse_args(argv)
    try:
        serve(args.port, address=args.address)
    except BindRefused as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
