"""Headless Chromium for the dashboard tests (Debian's /usr/bin/chromium, driven by Playwright; the
``browser`` fixture in conftest.py, one per test module): one tab (context) per test with everything it
logged and every request it made."""

from __future__ import annotations

from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect

from tests.dashboard.live import ARTIFACTS, LiveController

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


class Session:
    """One browser tab with everything it logged and every request it made."""

    def __init__(self, browser: Browser, live: LiveController, locale: str = "en-GB"):
        self.context = browser.new_context(viewport={"width": 1440, "height": 900}, locale=locale)
        self.page: Page = self.context.new_page()
        self.live = live
        self.errors: list[str] = []
        self.requests: list[Request] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("request", lambda r: self.requests.append(r))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def sign_in(self, token: str) -> Page:
        self.page.goto(self.live.url + "/")
        expect(self.page.locator("#login")).to_be_visible()
        self.page.fill("#token-input", token)
        self.page.click("#login-form button[type=submit]")
        expect(self.page.locator("#app")).to_be_visible()
        self.page.wait_for_selector("#tiles[data-ts^='2']", state="attached")
        return self.page

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def close(self) -> None:
        self.context.close()
