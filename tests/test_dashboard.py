"""The dashboard in a real headless Chromium: charts drawn, a filter redraws, no request leaves the machine."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

import pytest

from gold_lake import shared_lake

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHARTS = "svg.marks, canvas.marks"

pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium"),
              pytest.mark.timeout(1800)]  # the shared lake is written by Spark on first use


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
