"""Overall progress with pause all / resume all, and the server list's honest states: paused,
stalled, and unknown while the server is down (never a speed from before)."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

MiB = 1024 * 1024
KiB = 1024
SMALLEST_CHUNK = 256 * KiB
DECIMAL_UNITS = re.compile(r"\d\s?(kB|KB|MB|GB|TB)\b")

pytestmark = pytest.mark.timeout(150)


def send(server: Any, method: str, path: str, body: bytes, content_type: str) -> Any:
    request = urllib.request.Request(server.url + path, data=body, method=method)
    request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def test_pause_all_stops_every_upload_and_resume_all_finishes_them(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    files = [random_file("first.bin", 6 * MiB), random_file("second.bin", 6 * MiB)]
    page = browser_page(freight_server)
    page.configure(parallel=2, chunk_size=SMALLEST_CHUNK)
    page.throttle(2 * MiB)
    page.pick(*files)
    ids = []
    for file in files:
        page.wait_state(file, "uploading")
        ids.append(page.upload_id(file))
    for upload_id in ids:
        page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= SMALLEST_CHUNK)

    overall = page.page.locator("#overall")
    assert overall.is_visible()
    assert "of 12.0 MiB" in overall.inner_text()
    assert "2 uploads" in overall.inner_text()
    overall.locator("[data-action=pause-all]").click()
    for file in files:
        page.wait_state(file, "paused")
    paused = [page.status(i) for i in ids]
    time.sleep(1.2)
    still = [page.status(i) for i in ids]
    assert [s["wire_bytes"] for s in still] == [s["wire_bytes"] for s in paused]
    assert all(s["received_bytes"] < s["size"] for s in still)
    text = overall.locator(".overall-text")
    text.filter(has_text="2 paused").wait_for()
    assert "/s" not in text.inner_text()
    assert overall.locator("[data-action=pause-all]").is_disabled()
    assert overall.locator("[data-action=resume-all]").is_enabled()

    # The server list marks them paused instead of showing the speed they had.
    for upload_id in ids:
        entry = page.page.locator(f'.live[data-upload-id="{upload_id}"]')
        entry.and_(page.page.locator('[data-live-state="paused"]')).wait_for()
        assert "paused" in entry.locator(".meta").inner_text()
        assert "/s" not in entry.locator(".meta").inner_text()

    page.screenshot("browser-paused-all.png")

    # Binary units everywhere: no kB, MB or GB anywhere on the page.
    body = page.page.locator("body").inner_text()
    assert "MiB" in body
    assert not DECIMAL_UNITS.search(body), DECIMAL_UNITS.search(body)

    page.throttle(None)
    overall.locator("[data-action=resume-all]").click()
    for file, upload_id in zip(files, ids, strict=True):
        page.wait_state(file, "done", timeout=60)
        assert page.stored(upload_id)["sha256"] == file.sha256
    assert "100%" in overall.inner_text()


def test_the_server_list_marks_stalled_uploads_and_a_server_that_is_down(
    freight_server: Any, browser_page: Callable[..., Any]
) -> None:
    """Another client's upload stops moving: "stalled", no speed. The server goes away: every
    entry says so instead of a speed."""
    created = send(
        freight_server,
        "POST",
        "/api/uploads",
        json.dumps({"name": "elsewhere.bin", "size": MiB, "chunk_size": SMALLEST_CHUNK}).encode(),
        "application/json",
    )
    upload_id = created["id"]
    chunk = os.urandom(SMALLEST_CHUNK)
    page = browser_page(freight_server)
    entry = page.page.locator(f'.live[data-upload-id="{upload_id}"]')
    entry.wait_for()

    path = f"/api/uploads/{upload_id}/chunks/"
    send(freight_server, "PUT", path + "0", chunk, "application/octet-stream")
    entry.and_(page.page.locator('[data-live-state="moving"]')).wait_for(timeout=5_000)
    time.sleep(0.3)
    send(freight_server, "PUT", path + "1", chunk, "application/octet-stream")
    meta = entry.locator(".meta")
    meta.filter(has_text="512 KiB of 1.00 MiB").wait_for()
    # Nothing more arrives: within a few seconds the speed is gone and it says why.
    entry.and_(page.page.locator('[data-live-state="stalled"]')).wait_for(timeout=15_000)
    assert "stalled, no data for" in meta.inner_text()
    assert "/s" not in meta.inner_text()

    freight_server.kill()
    entry.and_(page.page.locator('[data-live-state="offline"]')).wait_for(timeout=15_000)
    assert "server unreachable" in meta.inner_text()
    assert "/s" not in meta.inner_text()
    assert page.page.locator("#connection").get_attribute("data-state") == "offline"
