"""The Superset dashboard `make bi` serves, as a PNG (docs/superset.png), taken in headless Chromium.

Logs in as `admin` (password from LAKEHOUSE_ADMIN_PASSWORD, else the data folder's admin-password), opens the case
study's dashboard, waits until every chart has drawn, and saves the whole page.
Usage: .venv/bin/python scripts/superset_screenshot.py [--url http://127.0.0.1:8088] [--out docs/superset.png]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from lakehouse.bi import DASHBOARD_SLUG
from lakehouse.config import get_settings
from lakehouse.security import admin_password

CHROMIUM = "/usr/bin/chromium"
# fmt: off
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# fmt: on


def shoot(url: str, password: str, out: Path, width: int, timeout: float) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 1000}, device_scale_factor=1)
        page.set_default_timeout(timeout * 1000)
        page.goto(f"{url}/login/")
        page.fill("input#username", "admin")
        page.fill("input#password", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/login" not in u)
        page.goto(f"{url}/superset/dashboard/{DASHBOARD_SLUG}/?standalone=1")
        page.wait_for_selector(".chart-container")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # every chart drawn: no spinner, no chart still loading
            page.mouse.wheel(0, 4000)  # charts below the fold render when scrolled to
            if page.locator(".loading").count() == 0 and page.locator(".chart-container").count() > 0:
                break
            time.sleep(1)
        # the whole dashboard in one viewport, from its top: the sticky header stays where it belongs
        height = page.evaluate("Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        page.set_viewport_size({"width": width, "height": int(height)})
        page.evaluate("window.scrollTo(0, 0)")
        time.sleep(3)  # the charts redraw at the new size; their entry animations
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8088")
    parser.add_argument("--out", type=Path, default=Path("docs/superset.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    password = os.environ.get("LAKEHOUSE_ADMIN_PASSWORD") or admin_password(get_settings())[0]
    if not password:
        raise SystemExit("no admin password: set LAKEHOUSE_ADMIN_PASSWORD or start `make bi` once")
    shoot(args.url.rstrip("/"), password, args.out, args.width, args.timeout)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
