"""The example app in a real browser: headless Chromium driven by Playwright.

Needs the ``playwright`` package and a Chromium binary (Debian's
``chromium``, ``/usr/bin/chromium``, or the path in ``PRANCER_CHROMIUM``);
Playwright's own browser downloads are not used. Without them the tests skip,
or fail when ``PRANCER_REQUIRE_SERVICES=1``.

A screenshot of each step is saved in ``PRANCER_ARTIFACTS`` (by default the
test's ``tmp_path``). With ``PRANCER_SCREENSHOTS=1`` the README's screenshots
in ``docs/screenshots/`` are made again.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from example_app import create_app
from flask_prancer_session.ids import store_key

from . import services

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser
    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page
    from playwright.sync_api import ViewportSize

CHROMIUM = os.environ.get("PRANCER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README_SCREENSHOTS = Path(__file__).parent.parent / "docs" / "screenshots"
VIEWPORT: ViewportSize = {"width": 960, "height": 600}

Shoot = t.Callable[["Page", str], None]


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    """Chromium, headless, with a fresh profile."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        services.unavailable("playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        services.unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shoot(request: pytest.FixtureRequest, tmp_path: Path) -> Shoot:
    """Return a function that saves a screenshot of a page for one step."""
    directory = Path(os.environ.get("PRANCER_ARTIFACTS") or tmp_path) / request.node.name
    directory.mkdir(parents=True, exist_ok=True)
    steps = itertools.count(1)

    def shoot(page: Page, name: str) -> None:
        page.screenshot(path=directory / f"{next(steps):02d}-{name}.png")

    return shoot


def readme_screenshot(page: Page, name: str) -> None:
    """Save one of the README's screenshots, when asked to."""
    if os.environ.get("PRANCER_SCREENSHOTS") == "1":
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # The body, not the viewport: no blank space below short pages.
        page.locator("body").screenshot(path=README_SCREENSHOTS / f"{name}.png")


@contextlib.contextmanager
def serve(app: Flask) -> t.Iterator[str]:
    """Serve ``app`` on a free loopback port and yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_app(tmp_path: Path, **state_options: t.Any) -> Flask:
    """The example app on the memory store, which the server thread shares
    with the test."""
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "browser test",
            "PRANCER_SESSION": {
                "state": {"driver": "cookie", "options": state_options},
                "store": "memory",
            },
        },
        instance_path=tmp_path / "instance",
    )


@pytest.fixture(autouse=True)
def _environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRANCER_SESSION_CONFIG", raising=False)


def new_context(browser: Browser, base_url: str) -> BrowserContext:
    return browser.new_context(base_url=base_url, viewport=VIEWPORT)


def session_cookie(context: BrowserContext) -> dict[str, t.Any]:
    cookies = [cookie for cookie in context.cookies() if cookie["name"] == "PSESSION"]
    assert len(cookies) == 1, cookies
    return dict(cookies[0])


def log_in(page: Page, username: str) -> None:
    from playwright.sync_api import expect

    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".flash")).to_have_text(f"Logged in as {username}.")


def test_browser_session_flow(browser: Browser, tmp_path: Path, shoot: Shoot) -> None:
    from playwright.sync_api import expect

    with serve(make_app(tmp_path)) as base_url:
        laptop = new_context(browser, base_url)
        page = laptop.new_page()

        page.goto("/")
        expect(page.locator("#count")).to_have_text("1")
        shoot(page, "first-visit")
        page.reload()
        expect(page.locator("#count")).to_have_text("2")
        shoot(page, "reload")

        cookie = session_cookie(laptop)
        assert cookie["httpOnly"] is True
        assert cookie["secure"] is False
        assert cookie["sameSite"] == "Lax"
        assert "PSESSION" not in page.evaluate("document.cookie")

        log_in(page, "alice")
        expect(page.locator("#count")).to_have_text("3")
        logged_in = session_cookie(laptop)
        assert logged_in["value"] != cookie["value"]
        assert logged_in["httpOnly"] is True
        assert "PSESSION" not in page.evaluate("document.cookie")
        shoot(page, "logged-in")
        readme_screenshot(page, "home")

        page.get_by_role("link", name="Session", exact=True).click()
        session_id = logged_in["value"].split(".")[0]
        expect(page.locator("#fingerprint")).to_have_text(store_key(session_id)[:12])
        html = page.content()
        assert session_id not in html and logged_in["value"] not in html
        shoot(page, "session")
        readme_screenshot(page, "session")

        page.get_by_role("button", name="Log out alice").click()
        expect(page).to_have_url(f"{base_url}/login")
        expect(page.locator(".flash")).to_have_text("You are logged out.")
        shoot(page, "logged-out")

        # The pre-logout cookie, replayed from a fresh browser, opens nothing.
        stale = new_context(browser, base_url)
        stale.add_cookies([{"name": "PSESSION", "value": logged_in["value"], "url": base_url}])
        stale_page = stale.new_page()
        stale_page.goto("/")
        expect(stale_page.get_by_text("Hello, stranger.")).to_be_visible()
        expect(stale_page.locator("#count")).to_have_text("1")
        assert session_cookie(stale)["value"] != logged_in["value"]
        shoot(stale_page, "old-cookie")
        stale.close()

        # Log in on three devices, end one from another, then log out everywhere.
        log_in(page, "alice")
        phone = new_context(browser, base_url)
        phone_page = phone.new_page()
        log_in(phone_page, "alice")
        tablet = new_context(browser, base_url)
        tablet_page = tablet.new_page()
        log_in(tablet_page, "alice")

        phone_page.get_by_role("link", name="Devices", exact=True).click()
        rows = phone_page.locator("tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.first).to_contain_text("This device")
        shoot(phone_page, "devices")
        readme_screenshot(phone_page, "devices")

        tablet_fingerprint = store_key(session_cookie(tablet)["value"].split(".")[0])[:12]
        phone_page.get_by_role("button", name=f"End session {tablet_fingerprint}").click()
        expect(phone_page.locator(".flash")).to_have_text(
            f"Ended the session {tablet_fingerprint}."
        )
        expect(rows).to_have_count(2)
        tablet_page.reload()
        expect(tablet_page.get_by_text("Hello, stranger.")).to_be_visible()
        shoot(phone_page, "ended-one")

        phone_page.get_by_role("button", name="Log out everywhere").click()
        expect(phone_page).to_have_url(f"{base_url}/login")
        expect(phone_page.locator(".flash")).to_have_text(
            "Logged out everywhere: 2 sessions ended."
        )
        shoot(phone_page, "logged-out-everywhere")

        page.goto("/")
        expect(page.get_by_text("Hello, stranger.")).to_be_visible()
        page.get_by_role("link", name="Devices", exact=True).click()
        expect(page).to_have_url(f"{base_url}/login")
        expect(page.locator(".flash")).to_have_text("Log in to see your devices.")
        shoot(page, "first-device-ended")

        for context in (laptop, phone, tablet):
            context.close()


def test_browser_receives_the_configured_cookie_attributes(
    browser: Browser, tmp_path: Path, shoot: Shoot
) -> None:
    # Browsers do not keep Secure cookies from plain http, so look at the
    # header the page received rather than at the cookie jar.
    with serve(make_app(tmp_path, secure=True, samesite="Strict")) as base_url:
        context = new_context(browser, base_url)
        page = context.new_page()
        response = page.goto("/")
        assert response is not None
        header = response.header_value("set-cookie")
        assert header is not None and header.startswith("PSESSION=")
        attributes = {part.strip().lower() for part in header.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
        shoot(page, "secure")
        context.close()
