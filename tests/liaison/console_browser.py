"""A real browser for the console tests: Debian's headless Chromium driven by Selenium.

Selenium's calls block, and the services under test run on the test's event
loop; every call therefore runs in a worker thread, so the services keep
answering while the browser waits. No browser is downloaded: the system
``chromium`` and ``chromedriver`` (``make tools``) are used, or the test fails
saying how to install them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from polling import eventually
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts" / "console"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 20.0


def start_chromium() -> webdriver.Chrome:
    """Headless Chromium at a laptop's screen size."""
    if not (shutil.which("chromium") and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "the console tests need Debian's chromium and chromium-driver: run `make tools`"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1366,900",
        "--lang=en-GB",
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


class Browser:
    """One browser window, every call off the event loop."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(function, *args)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    @property
    async def url(self) -> str:
        return str(await self.call(lambda: self.driver.current_url))

    def _visible(self, css: str, text: str | None) -> WebElement | None:
        try:
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed() and (text is None or text in element.text):
                    return element
        except (NoSuchElementException, StaleElementReferenceException):
            return None
        return None

    async def find(
        self, css: str, text: str | None = None, *, timeout: float = WAIT_S
    ) -> WebElement:
        """The first visible element matching ``css`` (and showing ``text``), waited for."""
        found: WebElement = await eventually(
            lambda: self.call(self._visible, css, text),
            lambda: (
                f"{css!r}{f' showing {text!r}' if text else ''} on {self.driver.current_url}"
                f" (page: {self.shown()!r}; log: {self.log()})"
            ),
            timeout=timeout,
            interval=0.1,
        )
        return found

    async def texts(self, css: str) -> list[str]:
        """The rendered text of every element matching ``css``, read at one moment."""
        found: list[str] = await self.js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);", css
        )
        return found

    async def text(self, css: str, text: str | None = None) -> str:
        """The text of the first visible element matching ``css`` (showing ``text``), waited for."""

        def read() -> str | None:
            try:
                element = self._visible(css, text)
                found = None if element is None else element.text
            except StaleElementReferenceException:
                return None
            return found

        found: str = await eventually(
            lambda: self.call(read),
            lambda: (
                f"{css!r} showing {text!r} on {self.driver.current_url}"
                f" (page: {self.shown()!r}; log: {self.log()})"
            ),
            timeout=WAIT_S,
            interval=0.1,
        )
        return found

    async def click(self, css: str, text: str | None = None) -> None:
        """Click the element, found again if the page redrew it meanwhile."""

        def attempt() -> bool:
            element = self._visible(css, text)
            if element is None:
                return False
            try:
                element.click()
            except StaleElementReferenceException:
                return False
            return True

        await eventually(
            lambda: self.call(attempt),
            lambda: (
                f"{css!r} to click on {self.driver.current_url}"
                f" (page: {self.shown()!r}; log: {self.log()})"
            ),
            timeout=WAIT_S,
            interval=0.1,
        )

    async def fill(self, css: str, value: str) -> None:
        element = await self.find(css)
        await self.call(element.clear)
        await self.call(element.send_keys, value)

    async def keys(self, *keys: str) -> None:
        """Keys to whatever has the focus, as a user types them."""

        def send() -> None:
            target = self.driver.switch_to.active_element
            target.send_keys(*keys)

        await self.call(send)

    async def focused(self) -> dict[str, str]:
        found: dict[str, str] = await self.js(
            "const a = document.activeElement;"
            "const li = a.closest('li');"
            "return {tag: a.tagName, id: a.id || '', cls: a.className || '', text: a.textContent,"
            " key: li && li.dataset.key || ''};"
        )
        return found

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.call(self.driver.save_screenshot, str(path))
        return path

    async def axe(self) -> list[dict[str, Any]]:
        """axe-core's violations on the page (the vendored copy, injected: nothing fetched)."""
        await self.js(AXE.read_text(encoding="utf-8"))
        result: dict[str, Any] = await self.call(
            self.driver.execute_async_script,
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' '))}))))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e),"
            " nodes: []}]));",
        )
        return list(result)

    async def sign_in(self, base_url: str, name: str, password: str) -> None:
        """A fresh session at ``base_url``'s console through its sign-in form."""
        await self.open(f"{base_url}/console/")
        await self.call(self.driver.delete_all_cookies)
        await self.open(f"{base_url}/console/")
        await self.fill("#login-name", name)
        await self.fill("#login-password", password)
        await self.click("#login-form button[type=submit]")
        await self.find("#officer", name)

    def shown(self) -> str:
        """What the page shows (the start of it), for a failure's message."""
        try:
            return str(self.driver.execute_script("return document.body.innerText;"))[:1500]
        except WebDriverException as exc:
            return f"(unreadable: {exc.msg})"

    def log(self) -> list[str]:
        """The page's console messages since the last call (errors say why a view is missing)."""
        try:
            return [str(e.get("message")) for e in self.driver.get_log("browser")]
        except WebDriverException:
            return []

    def close(self) -> None:
        with contextlib.suppress(WebDriverException):
            self.driver.quit()
