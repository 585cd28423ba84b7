"""The page with a token-protected server, its look at desktop and phone widths, and cancel.

Screenshots of the page mid-upload land in ``test-artifacts/`` (gitignored) for a person to
look at; the test itself checks what a screenshot cannot be trusted to show: nothing wider
than a 390 px phone screen, the rate and ETA present, and the controls labelled.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024
TOKEN = "correct-horse-battery-staple"
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.timeout(120)


def test_the_page_asks_for_a_token_once_and_uploads_with_it(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--token", TOKEN]).start()
    page = browser_page(server, token=TOKEN)
    dialog = page.page.locator("#token-dialog")

    dialog.wait_for(state="visible")
    assert page.page.locator("#token-error").is_hidden()
    page.screenshot("browser-token-dialog.png")
    page.page.fill("#token-input", "not-the-token")
    page.page.click("#token-submit")
    page.page.locator("#token-error").wait_for(state="visible")  # refused: asked again
    page.page.fill("#token-input", TOKEN)
    page.page.click("#token-submit")
    dialog.wait_for(state="hidden")
    page.page.locator("#connection[data-state=live]").wait_for()

    file = random_file("secret.bin", 3 * MiB)
    page.pick(file)
    row = page.wait_state(file, "done")
    upload_id = row.locator("[data-action=download]").get_attribute("href").rsplit("/", 1)[1]
    assert page.stored(upload_id)["sha256"] == file.sha256

    # Its download link works although a plain link cannot send the token: the page swaps
    # in a signed link.
    with page.page.expect_download() as fetched:
        row.locator("[data-action=download]").click()
    saved = fetched.value.path()
    assert hashlib.sha256(Path(saved).read_bytes()).hexdigest() == file.sha256

    # Kept for the tab's session: a reload does not ask again.
    page.reload()
    page.page.locator(f'.file[data-file-id="{upload_id}"]').wait_for()
    assert dialog.is_hidden()


def test_screenshots_mid_upload_at_desktop_and_phone_width_then_cancel(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    page = browser_page(freight_server)
    earlier = random_file("holiday-photos.tar", 5 * MiB)
    page.pick(earlier)
    page.wait_state(earlier, "done")

    big = random_file("vm-image-ubuntu-24.04.qcow2", 48 * MiB)
    small = random_file("notes.pdf", 12 * MiB)
    page.configure(parallel=4, chunk_size=MiB)
    page.page.click("#settings summary")  # close the settings again
    page.throttle(4 * MiB)
    page.pick(big, small)
    page.wait_for_status(page.upload_id(big), lambda s: s["received_bytes"] >= 6 * MiB)
    row = page.row(big)
    row.locator(".eta:not(:empty)").wait_for()
    page.page.locator(".live").first.wait_for()

    desktop = page.screenshot("browser-desktop-mid-upload.png")
    phone = page.screenshot("browser-phone-mid-upload.png", viewport=PHONE)
    assert desktop.stat().st_size > 0 and phone.stat().st_size > 0
    overflow = page.page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= PHONE["width"], f"the page is {overflow} px wide on a 390 px phone"
    assert row.locator(".rate").inner_text().endswith("/s")
    for button in page.page.locator(".upload button:visible").all():
        assert button.get_attribute("aria-label"), "a row button has no accessible label"

    # Cancel: the page deletes the upload on the server and forgets it.
    upload_id = page.upload_id(big)
    row.locator("[data-action=cancel]").click()
    page.wait_state(big, "cancelled")
    assert server_answer(lambda: page.status(upload_id)) == 404
    page.page.wait_for_function(
        "(id) => !Object.values(localStorage).some((v) => v.includes(id))", arg=upload_id
    )


def server_answer(call: Callable[[], Any], timeout: float = 5.0) -> int:
    """The HTTP error status ``call`` ends up raising (it is polled until it raises)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            call()
        except urllib.error.HTTPError as error:
            return error.code
        time.sleep(0.05)
    raise AssertionError("the server still answers 200")
