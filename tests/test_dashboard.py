"""The dashboard in a real headless Chromium: charts drawn, a filter redraws, no request leaves the machine."""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

import pytest

from lakehouse.security import free_port
from tests.builders import cli
from tests.gold_lake import shared_lake

CHROMIUM = "/usr/bin/chromium"
# fmt: off
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# fmt: on
CHARTS = "svg.marks, canvas.marks"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.timeout(1800),
]  # the shared lake is written by Spark on first use


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """The dashboard served by a child process over the shared gold-shaped lake."""
    from apps.dashboard import spawn

    lake = shared_lake(None if os.environ.get("LAKEHOUSE_TEST_LAKE") else request.getfixturevalue("spark"))
    env = {**os.environ, "LAKEHOUSE_LAKE": lake, "LAKEHOUSE_DATA_DIR": str(tmp_path_factory.mktemp("dash-data"))}
    port = free_port()
    process = spawn(port, timeout=120, env=env)
    yield f"http://127.0.0.1:{port}/"
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def charts_html(page, selector: str = CHARTS) -> list[str]:
    return page.locator(selector).evaluate_all("els => els.map(e => e.outerHTML)")


def wait_changed(page, selector: str, before: list[str], timeout: float = 30.0) -> list[str]:
    """Poll the drawn marks under `selector` until they differ from `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = charts_html(page, selector)
        if now and now != before:
            return now
        page.wait_for_timeout(50)
    raise AssertionError(f"{selector} did not redraw within {timeout:.0f} s")


def within(css: str) -> str:
    return ", ".join(f"{css} {mark}" for mark in ("svg.marks", "canvas.marks"))


def test_dashboard_draws_filters_and_stays_local(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server, wait_until="domcontentloaded", timeout=60_000)
    page.locator(CHARTS).nth(5).wait_for(state="attached", timeout=60_000)
    assert page.locator(CHARTS).count() >= 6, "expected the daily, state, user type, foreign, university, course charts"
    for headline in ("Page views", "Active students", "Sessions", "Paying students"):
        assert page.get_by_text(headline, exact=True).count() >= 1, headline
    # the trust panel comes first: its line, the source groups and the tables (this lake has no landing ledger)
    page.locator(".trust-headline").get_by_text("sources stale").wait_for(timeout=60_000)  # rendered after the charts
    # the headline is Markdown, rendered in the pane's shadow root (which inner_text does not see)
    trust = page.locator(".trust-headline").evaluate("e => (e.shadowRoot || e).textContent")
    assert "8 of 8 sources stale" in trust and "expectations:" in trust, trust
    assert "gold.fact_page_view" in page.locator(".trust-tables").evaluate("e => (e.shadowRoot || e).textContent")

    before = charts_html(page, within(".chart-daily"))
    states_before = charts_html(page, within(".chart-states"))
    page.locator(".filter-client select").select_option("Android")
    assert wait_changed(page, within(".chart-daily"), before) != before
    assert wait_changed(page, within(".chart-states"), states_before) != states_before

    # a missing client type is one readable label, in the filter and in the chart, and selects those rows
    options = page.locator(".filter-client select option").all_inner_texts()
    assert "(unknown)" in options and "null" not in options
    android = charts_html(page, within(".chart-daily"))
    page.locator(".filter-client select").select_option("(unknown)")
    unknown = "".join(wait_changed(page, within(".chart-daily"), android))
    assert "(unknown)" in unknown and ">null<" not in unknown and "Android" not in unknown

    hosts = {urlsplit(url).hostname for url in requests if not url.startswith(("data:", "blob:", "about:"))}
    assert hosts <= {"127.0.0.1", "localhost"}, f"requests left the machine: {sorted(hosts)}"
    assert any(".js" in url for url in requests), "scripts are served by the dashboard itself"
    page.close()


def test_foreign_countries_threshold(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(server, wait_until="domcontentloaded", timeout=60_000)
    foreign = within(".chart-foreign")
    page.locator(foreign).first.wait_for(state="attached", timeout=60_000)
    before = charts_html(page, foreign)
    assert "more than 100 page views in November 2017" in "".join(before)
    box = page.locator(".filter-min-views input").first
    box.fill("1")
    box.press("Enter")
    assert wait_changed(page, foreign, before) != before
    page.close()


# -- the login --------------------------------------------------------------------------------

ADMIN_PASSWORD = "dash-Board-pw-4-tests"


@pytest.fixture(scope="module")
def guarded(request, tmp_path_factory):
    """The dashboard with LAKEHOUSE_ADMIN_PASSWORD set: Panel's basic auth, login page at /login."""
    from apps.dashboard import spawn

    lake = shared_lake(None if os.environ.get("LAKEHOUSE_TEST_LAKE") else request.getfixturevalue("spark"))
    env = {
        **os.environ,
        "LAKEHOUSE_LAKE": lake,
        "LAKEHOUSE_DATA_DIR": str(tmp_path_factory.mktemp("dash-guarded")),
        "LAKEHOUSE_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    port = free_port()
    process = spawn(port, timeout=120, env=env)
    yield f"http://127.0.0.1:{port}/"
    process.terminate()
    process.wait(timeout=20)


def test_nothing_is_served_before_the_login(guarded):
    import httpx
    import websockets.exceptions
    from websockets.sync.client import connect
    from websockets.typing import Origin

    first = httpx.get(guarded, follow_redirects=False)
    assert first.status_code in (302, 303) and first.headers["location"].split("?")[0].endswith("/login")
    page = httpx.get(guarded, follow_redirects=True)
    assert 'name="username"' in page.text and 'name="password"' in page.text
    assert "docs_json" not in page.text and "Bokeh" not in page.text and "Page views" not in page.text
    assert "cdn" not in page.text.lower()

    def handshake(origin: str, cookies: dict | None = None) -> None:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        with connect(
            guarded.replace("http", "ws") + "ws",
            origin=Origin(origin),
            additional_headers=headers,
            proxy=None,
            open_timeout=10,
        ):
            pass

    own = guarded.rstrip("/")
    with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):  # the document's socket, before login
        handshake(own)

    wrong = httpx.post(guarded + "login", data={"username": "admin", "password": "nope"}, follow_redirects=False)
    assert "user" not in wrong.cookies
    right = httpx.post(
        guarded + "login", data={"username": "admin", "password": ADMIN_PASSWORD}, follow_redirects=False
    )
    assert right.status_code == 302 and "user" in right.cookies
    assert "docs_json" in httpx.get(guarded, cookies=dict(right.cookies)).text
    handshake(own, dict(right.cookies))  # logged in, from the dashboard's own origin: the socket opens
    with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):  # logged in, but from another site
        handshake("http://evil.example", dict(right.cookies))


def test_logging_in_through_the_login_page_shows_the_dashboard(guarded, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(guarded, wait_until="domcontentloaded", timeout=60_000)
    assert urlsplit(page.url).path == "/login"
    assert page.locator(CHARTS).count() == 0
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    page.wait_for_load_state("domcontentloaded")
    assert urlsplit(page.url).path == "/login" and page.locator(".errormessage").count() == 1
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.locator(CHARTS).nth(5).wait_for(state="attached", timeout=60_000)
    assert urlsplit(page.url).path == "/"
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith(("data:", "blob:", "about:"))}
    assert hosts <= {"127.0.0.1", "localhost"}, f"requests left the machine: {sorted(hosts)}"
    page.close()


def test_google_oauth_by_configuration_alone(tmp_path):
    """Panel's OAuth providers replace the basic login through PANEL_OAUTH_* settings alone: /login sends the browser
    to Google's consent page with the configured client id."""
    import httpx

    from apps.dashboard import spawn

    env = {
        **os.environ,
        "LAKEHOUSE_LAKE": str(tmp_path / "lake"),
        "LAKEHOUSE_DATA_DIR": str(tmp_path / "data"),
        "PANEL_OAUTH_PROVIDER": "google",
        "PANEL_OAUTH_KEY": "client-id-for-tests",
        "PANEL_OAUTH_SECRET": "client-secret-for-tests",
        "PANEL_COOKIE_SECRET": "cookie-secret-for-tests",
        "PANEL_OAUTH_REDIRECT_URI": "https://dashboard.example.com/login",
    }
    env.pop("LAKEHOUSE_ADMIN_PASSWORD", None)
    port = free_port()
    process = spawn(port, timeout=120, env=env)
    try:
        first = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False)
        assert first.status_code in (302, 303) and "/login" in first.headers["location"]
        login = httpx.get(f"http://127.0.0.1:{port}/login", follow_redirects=False)
        assert login.status_code == 302
        assert login.headers["location"].startswith("https://accounts.google.com/o/oauth2/v2/auth")
        assert "client_id=client-id-for-tests" in login.headers["location"]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_open_dashboard_refuses_to_listen_beyond_loopback(tmp_path):
    env = {**os.environ, "LAKEHOUSE_DATA_DIR": str(tmp_path / "data"), "LAKEHOUSE_BIND": "0.0.0.0"}
    env.pop("LAKEHOUSE_ADMIN_PASSWORD", None)
    done = cli("dashboard", "--port", str(free_port()), env=env, timeout=120)
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert "beyond this machine" in message and "LAKEHOUSE_ADMIN_PASSWORD" in message, done.stderr
    assert "Traceback" not in done.stderr
