"""Fixtures of the browser tests: the page at ``/`` in headless Chromium, driven by Playwright.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``); Playwright never
downloads a browser of its own. Without that binary every test here is skipped with the
reason. pytest runs with ``--import-mode=importlib``, so the helpers reach the tests as
fixtures (``browser_page``, ``random_file``) rather than as an importable module.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
MiB = 1024 * 1024
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


class Server(Protocol):
    url: str


@dataclass(frozen=True)
class LocalFile:
    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


@pytest.fixture
def random_file(tmp_path: Path) -> Callable[[str, int], LocalFile]:
    """Write a file of random bytes in 1 MiB blocks and return it with its SHA-256."""

    def make(name: str, size: int) -> LocalFile:
        path = tmp_path / "picked" / name
        path.parent.mkdir(exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as out:
            left = size
            while left:
                block = os.urandom(min(MiB, left))
                digest.update(block)
                out.write(block)
                left -= len(block)
        return LocalFile(path, size, digest.hexdigest())

    return make


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module (a module's tests share it, each in its own context)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's 'chromium' (.ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


class FreightPage:
    """The freight page in one browser context, plus the server's API seen from the test."""

    def __init__(self, context: BrowserContext, server: Server, token: str | None) -> None:
        self.context = context
        self.server = server
        self.token = token
        self.page: Page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.set_default_timeout(30_000)
        self._cdp = context.new_cdp_session(self.page)
        self._cdp.send("Network.enable")

    # ---- the page ------------------------------------------------------------------------

    def open(self) -> FreightPage:
        self.page.goto(self.server.url + "/")
        self.page.wait_for_selector("body[data-ready]")
        return self

    def reload(self) -> None:
        self.page.reload()
        self.page.wait_for_selector("body[data-ready]")

    def configure(self, *, parallel: int | None = None, chunk_size: int | None = None) -> None:
        settings = self.page.locator("#settings")
        if settings.get_attribute("open") is None:
            self.page.click("#settings summary")
        if parallel is not None:
            self.page.fill("#parallel", str(parallel))
            self.page.dispatch_event("#parallel", "change")
        if chunk_size is not None:
            self.page.select_option("#chunk-size", str(chunk_size))

    def pick(self, *files: LocalFile) -> None:
        self.page.set_input_files("#file-input", [str(f.path) for f in files])

    def row(self, file: LocalFile) -> Locator:
        return self.page.locator(f'.upload[data-key^="{file.name}|{file.size}|"]')

    def wait_state(self, file: LocalFile, state: str, timeout: float = 60.0) -> Locator:
        row = self.row(file)
        row.and_(self.page.locator(f'[data-state="{state}"]')).wait_for(timeout=timeout * 1000)
        return row

    def upload_id(self, file: LocalFile) -> str:
        """The upload id the page keeps in localStorage for this file (waits for it)."""
        prefix = f"freight.resume.v1|{file.name}|{file.size}|"
        record = self.page.wait_for_function(
            """(prefix) => {
                for (let i = 0; i < localStorage.length; i++) {
                    const key = localStorage.key(i);
                    if (key.startsWith(prefix)) return localStorage.getItem(key);
                }
                return null;
            }""",
            arg=prefix,
        ).json_value()
        upload_id = json.loads(record)["id"]
        assert isinstance(upload_id, str)
        return upload_id

    def throttle(self, upload_bytes_per_second: int | None) -> None:
        """Limit the page's upload rate (Chromium's network emulation); None lifts it."""
        rate = -1 if upload_bytes_per_second is None else upload_bytes_per_second
        self._cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": rate},
        )

    def screenshot(self, name: str, viewport: dict[str, int] | None = None) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        if viewport is not None:
            self.page.set_viewport_size(viewport)  # type: ignore[arg-type]
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    # ---- the server, from the test's side ------------------------------------------------

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.server.url + path, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def status(self, upload_id: str) -> dict[str, Any]:
        status = self.api("GET", f"/api/uploads/{upload_id}")
        assert isinstance(status, dict)
        return status

    def stored(self, file_id: str) -> dict[str, Any]:
        files = self.api("GET", "/api/files")["files"]
        matches = [f for f in files if f["id"] == file_id]
        assert matches, f"{file_id} is not among the stored files: {files}"
        found = matches[0]
        assert isinstance(found, dict)
        return found

    def wait_for_status(
        self, upload_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status(upload_id)
            except urllib.error.URLError:
                status = {}
            if status and condition(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"upload {upload_id} never got there: {status}")
            time.sleep(0.05)


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[Callable[..., FreightPage]]:
    """``browser_page(server, token=None)``: a fresh context (empty storage) on the page.

    At the end, any uncaught JavaScript error the page raised fails the test.
    """
    opened: list[FreightPage] = []

    def open_page(server: Server, token: str | None = None) -> FreightPage:
        context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
        page = FreightPage(context, server, token)
        opened.append(page)
        return page.open()

    yield open_page
    errors = [error for page in opened for error in page.errors]
    for page in opened:
        page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
