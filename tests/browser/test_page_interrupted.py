"""After a reload the page lists this browser's interrupted uploads and resumes one only from
the same file: a different file of the same name is refused and nothing of it is sent.

Chromium's network emulation slows the page's uploads so a reload lands mid-upload; the
server is never slowed down. What the server received is read from its own counters
(``wire_bytes``: chunk-body bytes read off the wire for the upload, since the process started).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024
KiB = 1024
SMALLEST_CHUNK = 256 * KiB

pytestmark = pytest.mark.timeout(150)


def chunk_bytes(status: dict[str, Any], ranges: list[list[int]]) -> int:
    size, chunk = status["size"], status["chunk_size"]
    return sum(min(chunk, size - n * chunk) for first, end in ranges for n in range(first, end))


def settled(page: Any, upload_id: str, quiet: float = 1.0, timeout: float = 30.0) -> Any:
    """The upload's status once nothing has reached it for ``quiet`` seconds (requests the
    reload cut off may still be draining on the server)."""
    deadline = time.monotonic() + timeout
    last = page.status(upload_id)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = page.status(upload_id)
        key = ("received_bytes", "wire_bytes", "missing")
        if any(now[k] != last[k] for k in key):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"upload {upload_id} kept changing: {last}")


def impostor_of(original: Path, directory: Path, size: int | None = None) -> Path:
    """Another file with the same name (and, unless ``size`` is given, the same size and
    modification time): only its bytes differ."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / original.name
    path.write_bytes(os.urandom(original.stat().st_size if size is None else size))
    stat = original.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return path


def test_a_reload_lists_the_upload_and_only_the_same_file_resumes_it(
    tmp_path: Path,
    freight_server: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    file = random_file("holiday.mov", 8 * MiB)
    page = browser_page(freight_server)
    page.configure(parallel=2, chunk_size=SMALLEST_CHUNK)
    page.throttle(2 * MiB)
    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= 3 * SMALLEST_CHUNK)

    page.reload()  # mid-upload: chunks in flight are cut off
    page.throttle(None)
    entry = page.page.locator(f'.interrupted[data-upload-id="{upload_id}"]')
    entry.wait_for()
    assert page.page.locator("#interrupted-block").is_visible()
    assert entry.locator(".name").inner_text() == file.name
    meta = entry.locator(".meta")
    meta.filter(has_text="on the server").wait_for()
    assert "of 8.00 MiB on the server" in meta.inner_text()
    assert int(entry.get_attribute("data-received-bytes") or 0) >= 3 * SMALLEST_CHUNK
    assert entry.locator("[data-action=pick]").inner_text() == "Pick the file to resume"
    before = settled(page, upload_id)
    assert before["received_bytes"] < file.size

    # A file of the same name, size and date but other bytes: refused by its fingerprint.
    twin = impostor_of(file.path, tmp_path / "elsewhere")
    picker = entry.locator("input[type=file]")
    picker.set_input_files(str(twin))
    alert = entry.locator("[role=alert]")
    alert.filter(has_text="first and last MiB differ").wait_for()
    assert "Not resumed" in alert.inner_text()
    # The same name with another size: refused by its size.
    picker.set_input_files(str(impostor_of(file.path, tmp_path / "smaller", size=MiB)))
    alert.filter(has_text="1.00 MiB").wait_for()
    assert "not the same file" in alert.inner_text()
    # Picked through the main button, the twin is refused as well, for good (no Retry).
    page.pick(type(file)(twin, file.size, ""))
    row = page.wait_state(file, "failed")
    assert row.get_attribute("data-permanent") is not None
    assert "first and last MiB differ" in row.locator(".detail").inner_text()
    assert not row.locator("[data-action=pause]").is_visible()
    assert row.get_attribute("data-hashed-bytes") == "0", "the refused file was hashed"
    time.sleep(0.5)
    after_refusals = page.status(upload_id)
    assert after_refusals["wire_bytes"] == before["wire_bytes"], "the twin's bytes were sent"
    assert after_refusals["received_bytes"] == before["received_bytes"]
    assert entry.is_visible()
    page.screenshot("browser-interrupted.png")

    # The right file: only the chunks the server lacked are sent.
    missing = chunk_bytes(before, before["missing"])
    picker.set_input_files(str(file.path))
    row = page.wait_state(file, "done", timeout=90)
    after = page.status(upload_id)
    assert after["state"] == "finished"
    sent = after["wire_bytes"] - before["wire_bytes"]
    assert 0 < sent <= missing, f"sent {sent} bytes again, {missing} were missing"
    assert "were already on the server" in row.locator(".detail").inner_text()
    assert page.stored(upload_id)["sha256"] == file.sha256
    assert entry.count() == 0
    assert page.page.locator("#interrupted-block").is_hidden()


def test_forget_drops_the_record_and_the_server_upload(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    file = random_file("unwanted.bin", 4 * MiB)
    page = browser_page(freight_server)
    page.configure(parallel=1, chunk_size=SMALLEST_CHUNK)
    page.throttle(1 * MiB)
    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= SMALLEST_CHUNK)
    page.reload()
    page.throttle(None)

    entry = page.page.locator(f'.interrupted[data-upload-id="{upload_id}"]')
    entry.locator("[data-action=forget]").click()
    entry.wait_for(state="detached")
    deadline = time.monotonic() + 20
    while upload_id in {u["id"] for u in page.api("GET", "/api/uploads")["uploads"]}:
        assert time.monotonic() < deadline, "the server upload was never deleted"
        time.sleep(0.2)
    page.reload()
    assert page.page.locator(".interrupted").count() == 0


def test_an_interrupted_upload_resumes_over_the_transport_it_started_with(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    """Started over WebSocket, the setting changed to chunks after the reload: the same
    upload carries on (over WebSocket) instead of starting again from nothing."""
    file = random_file("by-socket.bin", 24 * MiB)
    page = browser_page(freight_server)
    page.configure()
    page.page.select_option("#transport", "ws")
    page.throttle(4 * MiB)
    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= 2 * MiB)
    page.row(file).locator("[data-action=pause]").click()
    page.wait_state(file, "paused")
    assert page.status(upload_id)["received_bytes"] < file.size
    page.reload()
    page.throttle(None)
    page.configure()
    page.page.select_option("#transport", "chunks")

    entry = page.page.locator(f'.interrupted[data-upload-id="{upload_id}"]')
    before = settled(page, upload_id)
    entry.locator("input[type=file]").set_input_files(str(file.path))
    row = page.wait_state(file, "done", timeout=90)
    assert "were already on the server" in row.locator(".detail").inner_text()
    download = row.locator("[data-action=download]").get_attribute("href") or ""
    assert download.rsplit("/", 1)[1] == upload_id
    assert page.status(upload_id)["received_bytes"] == file.size > before["received_bytes"]
    assert page.stored(upload_id)["sha256"] == file.sha256
