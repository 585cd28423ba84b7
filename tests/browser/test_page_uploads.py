"""The browser page uploads through the chunk API: whole files, resumes, pauses, outages.

Every test drives the real page in headless Chromium against a real ``freight serve``. To
catch an upload in the middle, Chromium's own network emulation limits the page's upload
rate; the server is never slowed down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024
KiB = 1024
SMALLEST_CHUNK = 256 * KiB  # the server's minimum chunk size

pytestmark = pytest.mark.timeout(120)


def chunk_bytes(status: dict[str, Any], ranges: list[list[int]]) -> int:
    """Bytes in the half-open chunk ranges ``[first, end)`` of an upload's status."""
    size, chunk = status["size"], status["chunk_size"]
    return sum(min(chunk, size - n * chunk) for first, end in ranges for n in range(first, end))


def test_a_64_mib_file_arrives_with_the_same_sha256(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    file = random_file("disk-image.bin", 64 * MiB)
    page = browser_page(freight_server)

    page.pick(file)
    row = page.wait_state(file, "done", timeout=90)

    upload_id = row.locator("[data-action=download]").get_attribute("href").rsplit("/", 1)[1]
    stored = page.stored(upload_id)
    assert stored["size"] == file.size
    assert stored["sha256"] == file.sha256
    # The page hashed the file itself (in its worker) and says it matches the server's.
    row.locator(".ok").wait_for(timeout=30_000)
    assert row.locator("[data-sha256]").get_attribute("data-sha256") == file.sha256
    # The stored-files list shows it, with its SHA-256.
    listed = page.page.locator(f'.file[data-file-id="{upload_id}"]')
    listed.wait_for()
    assert listed.locator("[data-sha256]").get_attribute("data-sha256") == file.sha256


def test_a_reload_mid_upload_resumes_and_sends_each_chunk_once(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    """Pause (so nothing is in flight), reload, pick the file again: only missing chunks go.

    Because the page lets chunks in flight finish before it reports "paused", no request is
    cut off by the reload, so the bound is exact: the server receives ``size`` chunk-body
    bytes in all, i.e. every chunk exactly once.
    """
    file = random_file("resume-me.bin", 8 * MiB)
    page = browser_page(freight_server)
    page.configure(parallel=2, chunk_size=SMALLEST_CHUNK)
    page.throttle(3 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= 3 * SMALLEST_CHUNK)
    page.row(file).locator("[data-action=pause]").click()
    page.wait_state(file, "paused")
    before = page.status(upload_id)
    assert 3 * SMALLEST_CHUNK <= before["received_bytes"] < file.size
    assert before["wire_bytes"] == before["received_bytes"]  # nothing half-sent

    page.reload()
    page.throttle(None)
    page.pick(file)
    row = page.wait_state(file, "done")

    assert "were already on the server" in row.locator(".detail").inner_text()
    after = page.status(upload_id)
    assert after["state"] == "finished"
    assert after["wire_bytes"] == file.size, "some chunk was sent twice"
    assert page.stored(upload_id)["sha256"] == file.sha256


def test_pause_stops_the_bytes_and_resume_finishes(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    file = random_file("pausable.bin", 6 * MiB)
    page = browser_page(freight_server)
    page.configure(parallel=3, chunk_size=SMALLEST_CHUNK)
    page.throttle(2 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= SMALLEST_CHUNK)
    row = page.row(file)
    row.locator("[data-action=pause]").click()
    page.wait_state(file, "paused")

    paused = page.status(upload_id)
    shown = row.locator(".bytes").inner_text()
    time.sleep(1.2)
    still = page.status(upload_id)
    assert still["received_bytes"] == paused["received_bytes"] < file.size
    assert still["wire_bytes"] == paused["wire_bytes"], "bytes kept arriving while paused"
    assert row.locator(".bytes").inner_text() == shown
    assert row.locator("[data-action=pause]").inner_text() == "Resume"

    page.throttle(None)
    row.locator("[data-action=pause]").click()
    page.wait_state(file, "done")
    assert page.status(upload_id)["wire_bytes"] == file.size
    assert page.stored(upload_id)["sha256"] == file.sha256


def test_a_server_outage_shows_resuming_and_sends_only_what_is_missing(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    """Kill the server mid-upload, start it again on the same port and data: the page retries
    with backoff, asks what the server has, and sends only the chunks it lacks."""
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir).start()
    file = random_file("outage.bin", 6 * MiB)
    page = browser_page(server)
    page.configure(parallel=2, chunk_size=SMALLEST_CHUNK)
    page.throttle(2 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= 4 * SMALLEST_CHUNK)
    missing_before_kill = chunk_bytes(page.status(upload_id), page.status(upload_id)["missing"])
    server.kill()
    row = page.wait_state(file, "resuming", timeout=30)
    assert "retrying" in row.locator(".detail").inner_text()

    page.throttle(None)
    page.server = server_factory(data_dir=data_dir, port=server.port).start()
    page.wait_state(file, "done")

    after = page.status(upload_id)
    # The new process counts from zero: everything it got was a chunk missing at the kill.
    assert 0 < after["wire_bytes"] <= missing_before_kill
    assert page.stored(upload_id)["sha256"] == file.sha256


def test_a_forgotten_upload_starts_afresh(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    """A resume record whose upload the server no longer knows (404) is replaced."""
    file = random_file("stale.bin", 1 * MiB)
    page = browser_page(freight_server)
    # The page keys its records by name, size and the File's lastModified as Chromium sees it.
    page.page.evaluate(
        "() => { const i = document.createElement('input'); i.type = 'file'; i.id = 'probe';"
        " i.hidden = true; document.body.append(i); }"
    )
    page.page.set_input_files("#probe", str(file.path))
    last_modified = page.page.evaluate(
        "() => document.getElementById('probe').files[0].lastModified"
    )
    page.page.evaluate(
        "([key, value]) => localStorage.setItem(key, value)",
        [
            f"freight.resume.v1|{file.name}|{file.size}|{last_modified}",
            '{"id": "no-such-upload", "transport": "chunks", "chunkSize": 262144}',
        ],
    )
    page.pick(file)
    row = page.wait_state(file, "done")
    upload_id = row.locator("[data-action=download]").get_attribute("href").rsplit("/", 1)[1]
    assert upload_id != "no-such-upload"
    assert page.stored(upload_id)["sha256"] == file.sha256
