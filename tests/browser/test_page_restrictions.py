"""What the page refuses before sending (the server's size limit, accepted types), and how a
permanent failure ends an upload: no hashing after it, no Retry."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024

pytestmark = pytest.mark.timeout(120)


def writes(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Requests that could create an upload or carry bytes of one."""
    return [(m, url) for m, url in requests if m in ("POST", "PUT", "PATCH")]


def test_an_oversized_file_is_refused_before_any_byte_is_sent_or_hashed(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--max-size", str(2 * MiB)]).start()
    page = browser_page(server)
    requests: list[tuple[str, str]] = []
    page.page.on("request", lambda r: requests.append((r.method, r.url)))
    big = random_file("too-big.iso", 3 * MiB)

    page.pick(big)
    row = page.wait_state(big, "failed")
    detail = row.locator(".detail").inner_text()
    assert "Too large: 3.00 MiB" in detail
    assert "at most 2.00 MiB (2097152 bytes)" in detail
    assert row.get_attribute("data-permanent") is not None
    assert not row.locator("[data-action=pause]").is_visible(), "a Retry that cannot help"
    assert row.locator("[data-action=dismiss]").is_visible()
    assert row.get_attribute("data-hashed-bytes") == "0"
    time.sleep(0.5)
    assert row.get_attribute("data-hashed-bytes") == "0", "the refused file is being hashed"
    assert writes(requests) == [], "a request reached the server"
    assert page.api("GET", "/api/uploads")["uploads"] == []

    # A file within the limit still goes, so the limit was read, not guessed.
    small = random_file("fits.bin", 2 * MiB)
    page.pick(small)
    page.wait_state(small, "done")


def test_a_type_the_page_does_not_accept_is_refused_before_sending(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    page = browser_page(freight_server)
    page.page.evaluate("() => document.getElementById('file-input').accept = '.jpg,image/*'")
    requests: list[tuple[str, str]] = []
    page.page.on("request", lambda r: requests.append((r.method, r.url)))
    notes = random_file("notes.bin", 64 * 1024)
    page.pick(notes)
    row = page.wait_state(notes, "failed")
    assert "accepts only .jpg, image/*" in row.locator(".detail").inner_text()
    assert writes(requests) == []
    photo = random_file("photo.jpg", 64 * 1024)
    page.pick(photo)
    page.wait_state(photo, "done")


def test_a_permanent_failure_stops_hashing_and_offers_no_retry(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    """The limit could not be read (the OPTIONS request fails), so the server's 413 is what
    stops the upload; the page must take it as final."""
    server = server_factory(data_dir=tmp_path / "data", args=["--max-size", str(8 * MiB)]).start()
    page = browser_page(server)

    def no_options(route: Any) -> None:
        if route.request.method == "OPTIONS":
            route.abort()
        else:
            route.continue_()

    page.page.route("**/files/", no_options)
    big = random_file("large.img", 160 * MiB)
    page.pick(big)
    row = page.wait_state(big, "failed")
    assert row.get_attribute("data-permanent") is not None
    assert "8388608" in row.locator(".detail").inner_text()
    assert not row.locator("[data-action=pause]").is_visible(), "a Retry that cannot help"
    hashed = int(row.get_attribute("data-hashed-bytes") or 0)
    time.sleep(1.5)
    still = int(row.get_attribute("data-hashed-bytes") or 0)
    assert still < big.size, "hashing went on to the end after the failure"
    assert still - hashed <= 8 * MiB, "hashing went on after the failure"
    assert page.api("GET", "/api/uploads")["uploads"] == []


def test_a_failure_that_can_pass_keeps_its_retry(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    """A token the person declined to give (401) is not final: Retry asks again and works."""
    server = server_factory(data_dir=tmp_path / "data", args=["--token", "s3cret"]).start()
    page = browser_page(server, token="s3cret")
    dialog = page.page.locator("#token-dialog")
    file = random_file("later.bin", 256 * 1024)
    page.pick(file)
    row = page.row(file)
    deadline = time.monotonic() + 30
    while row.get_attribute("data-state") != "failed":
        assert time.monotonic() < deadline, "the upload never failed"
        if dialog.is_visible():
            page.page.click("#token-cancel")
        time.sleep(0.1)
    assert row.get_attribute("data-permanent") is None
    retry = row.locator("[data-action=pause]")
    assert retry.inner_text() == "Retry"
    retry.click()
    dialog.wait_for(state="visible")
    page.page.fill("#token-input", "s3cret")
    page.page.click("#token-submit")
    page.wait_state(file, "done", timeout=60)
