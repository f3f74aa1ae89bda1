"""Fixtures for the rater page in a real browser: Debian's Chromium driven by Playwright, against live_server."""

import os
import re
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; ORM calls after it are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots of every screen a test passes through, for people to look at (never committed).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


class PageOpener:
    """Opens pages in fresh browser contexts; the test fails on any JavaScript or HTTP error.

    ``expect(*fragments)`` lets through errors containing a fragment (a refused request
    the test provokes on purpose); everything else fails the test at teardown.
    """

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.errors = []
        self.expected = []

    def __call__(self, url, width=1280, height=800, **options):
        context = self.browser.new_context(viewport={"width": width, "height": height}, **options)
        self.contexts.append(context)
        return self.new_tab(context, url)

    def new_tab(self, context, url):
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on(
            "response",
            lambda response: (
                response.status >= 400
                and self.errors.append(f"HTTP {response.status}: {response.url}")
            ),
        )
        page.on(
            "console",
            lambda message: (
                message.type == "error" and self.errors.append(f"console: {message.text}")
            ),
        )
        # Leaving with unsent answers asks first (beforeunload); a reload in a test says yes.
        page.on("dialog", lambda dialog: dialog.accept())
        if url:
            page.goto(url)
        return page

    def expect(self, *fragments):
        self.expected.extend(fragments)

    def unexpected(self):
        return [e for e in self.errors if not any(f in e for f in self.expected)]


@pytest.fixture
def open_page(browser):
    opener = PageOpener(browser)
    yield opener
    for context in opener.contexts:
        context.close()
    assert not opener.unexpected(), opener.unexpected()


@pytest.fixture
def screenshot(request):
    """``screenshot(page, name)`` saves the page as var/screenshots/<module>/<test>/<name>.png.

    Each screen a journey passes through is kept for anyone to look at after the run.
    Returns the file's path."""
    module = request.node.module.__name__.rsplit(".", 1)[-1]
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    folder = SCREENSHOTS / module / test

    def take(page, name: str, full_page: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
