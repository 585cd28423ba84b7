"""The browser page uploading over the WebSocket transport (``/api/ws``, docs/websocket.md).

Each test picks "WebSocket" in the page's settings and drives the real page in headless
Chromium against a real ``freight serve``. Chromium's network emulation slows the page's
upload (it applies to WebSockets too) to catch an upload in the middle.

An init script subclasses ``WebSocket`` and wraps ``Blob.prototype.slice`` to watch the
page from inside: every binary frame is checked against the credit the server granted on
that socket, ``bufferedAmount`` is sampled before each frame, and the largest slice of a
File and the largest whole read on the page's thread are kept. ``/metrics``'s
``freight_bytes_written_total`` counts what the server's engine wrote to disk.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024
KiB = 1024
MAX_FRAME = 256 * KiB  # the server's max_frame (WsSettings)
QUEUED_FRAMES = 8  # transport-ws.js: the most frames it leaves in bufferedAmount
TOKEN = "ws-token-for-the-page"

pytestmark = pytest.mark.timeout(120)

WATCH_SCRIPT = """
(() => {
  const stats = { frames: 0, sent: 0, maxFrame: 0, maxQueued: 0, overLimit: 0, sockets: 0,
                  maxSlice: 0, maxRead: 0, openings: [] };
  window.__ws = stats;
  // A subclass, so that its message listener runs before the page's own handler.
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      stats.sockets++;
      this.__limit = 0;
      this.__position = 0;
      this.addEventListener("message", (event) => {
        const m = JSON.parse(event.data);
        if (m.op === "ready") this.__position = m.offset;
        if (m.op === "ready" || m.op === "credit") {
          this.__limit = Math.max(this.__limit, m.offset + m.credit);
        }
      });
    }

    send(data) {
      if (typeof data === "string") {
        const m = JSON.parse(data);
        if (m.op !== "done") stats.openings.push(m);
      } else {
        const n = data.size ?? data.byteLength;
        stats.frames++;
        stats.sent += n;
        stats.maxFrame = Math.max(stats.maxFrame, n);
        stats.maxQueued = Math.max(stats.maxQueued, this.bufferedAmount);
        this.__position += n;
        if (this.__position > this.__limit) stats.overLimit++;
      }
      return super.send(data);
    }
  };
  const slice = Blob.prototype.slice;
  Blob.prototype.slice = function (...args) {
    const piece = slice.apply(this, args);
    if (this instanceof File) stats.maxSlice = Math.max(stats.maxSlice, piece.size);
    return piece;
  };
  const arrayBuffer = Blob.prototype.arrayBuffer;
  Blob.prototype.arrayBuffer = function () {
    stats.maxRead = Math.max(stats.maxRead, this.size);
    return arrayBuffer.call(this);
  };
})();
"""


def use_websocket(page: Any, *, close_settings: bool = True) -> None:
    """Choose the WebSocket transport in the settings and watch the page's sockets."""
    page.context.add_init_script(WATCH_SCRIPT)
    page.reload()
    page.configure()
    page.page.select_option("#transport", "ws")
    if close_settings:
        page.page.click("#settings summary")


def stats(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.page.evaluate("() => window.__ws")
    return result


def bytes_written(server: Any) -> int:
    """``freight_bytes_written_total`` from the server's ``/metrics``."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^freight_bytes_written_total (\S+)$", text, re.MULTILINE)
    assert match, "no freight_bytes_written_total in /metrics"
    return int(float(match.group(1)))


def percent_shown(page: Any, file: Any) -> int:
    bar = page.row(file).locator("[role=progressbar]")
    return int(bar.get_attribute("aria-valuenow"))


def wait_percent(page: Any, file: Any, percent: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while percent_shown(page, file) < percent:
        assert time.monotonic() < deadline, f"the page never showed {percent}%"
        time.sleep(0.05)


def file_id_of(row: Any) -> str:
    href = row.locator("[data-action=download]").get_attribute("href")
    file_id: str = href.rsplit("/", 1)[1]
    return file_id


def check_frames(page: Any) -> dict[str, Any]:
    """What every WebSocket upload must respect, seen from inside the page."""
    seen = stats(page)
    assert seen["overLimit"] == 0, "a frame went past the credit the server granted"
    assert 0 < seen["maxFrame"] <= MAX_FRAME
    assert seen["maxSlice"] <= MAX_FRAME, "the file was sliced in pieces over max_frame"
    assert seen["maxRead"] <= MAX_FRAME, "the page read more than a frame of the file at once"
    assert seen["maxQueued"] <= QUEUED_FRAMES * MAX_FRAME, "the browser's send queue grew"
    return seen


def test_a_64_mib_file_goes_over_websocket_with_the_same_sha256(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    file = random_file("dataset.tar", 64 * MiB)
    page = browser_page(freight_server)
    use_websocket(page, close_settings=False)
    page.throttle(12 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    wait_percent(page, file, 20)
    row = page.row(file)
    row.locator(".eta:not(:empty)").wait_for()
    assert page.page.locator("#transport").input_value() == "ws"
    # Chunk size and per-chunk digests do not apply to one stream.
    assert page.page.locator("#chunk-size").is_disabled()
    assert page.page.locator("#digests").is_disabled()
    shot = page.screenshot("browser-ws-mid-upload.png")
    assert shot.stat().st_size > 0
    assert row.locator(".rate").inner_text().endswith("/s")
    assert row.locator(".eta").inner_text().endswith("left")

    page.throttle(None)
    row = page.wait_state(file, "done", timeout=90)
    upload_id = file_id_of(row)
    stored = page.stored(upload_id)
    assert stored["size"] == file.size
    assert stored["sha256"] == file.sha256
    row.locator(".ok").wait_for(timeout=30_000)  # the page's own SHA-256 agrees
    assert row.locator("[data-sha256]").get_attribute("data-sha256") == file.sha256

    seen = check_frames(page)
    assert seen["sent"] == file.size, "some bytes were sent twice"
    assert seen["sockets"] == 1
    assert seen["openings"] == [{"op": "start", "name": file.name, "size": file.size}]
    assert bytes_written(freight_server) == file.size
    # Only the WebSocket was used: no chunk requests reached the server.
    assert page.status(upload_id)["wire_bytes"] == 0


def test_pause_closes_the_socket_and_resume_carries_on_from_the_server_offset(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    file = random_file("pausable.iso", 32 * MiB)
    page = browser_page(freight_server)
    use_websocket(page)
    page.throttle(4 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    wait_percent(page, file, 15)
    row = page.row(file)
    row.locator("[data-action=pause]").click()
    page.wait_state(file, "paused")

    paused = page.status(upload_id)
    received = paused["received_bytes"]
    shown = row.locator(".bytes").inner_text()
    sent = stats(page)["sent"]
    # The server answers the close once it has recorded every byte it got, and the browser
    # sends what it queued before the close: everything sent is on the server, once.
    assert 0 < received < file.size
    assert received == sent
    assert bytes_written(freight_server) == received
    assert percent_shown(page, file) == received * 100 // file.size
    time.sleep(1.2)
    assert page.status(upload_id)["received_bytes"] == received
    assert stats(page)["sent"] == sent, "the page kept sending while paused"
    assert bytes_written(freight_server) == received
    assert row.locator(".bytes").inner_text() == shown
    assert row.locator("[data-action=pause]").inner_text() == "Resume"

    page.throttle(None)
    row.locator("[data-action=pause]").click()
    page.wait_state(file, "done")
    seen = check_frames(page)
    assert seen["sent"] == file.size
    assert [m["op"] for m in seen["openings"]] == ["start", "resume"]
    assert seen["openings"][1]["id"] == upload_id
    assert bytes_written(freight_server) == file.size
    assert page.stored(upload_id)["sha256"] == file.sha256


def test_a_reload_mid_upload_resumes_and_the_server_writes_each_byte_once(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    """Pause (so nothing is in flight), reload, pick the file again: it resumes.

    The bound is exact: the engine writes ``size`` bytes in all (``/metrics``), and the page
    after the reload sends exactly the ``size - received`` bytes the server lacked.
    """
    file = random_file("resume-me.img", 40 * MiB)
    page = browser_page(freight_server)
    use_websocket(page)
    page.throttle(4 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    wait_percent(page, file, 20)
    page.row(file).locator("[data-action=pause]").click()
    page.wait_state(file, "paused")
    received = page.status(upload_id)["received_bytes"]
    assert 0 < received < file.size
    assert bytes_written(freight_server) == received

    page.reload()
    page.throttle(None)
    assert page.page.locator("#transport").input_value() == "ws"  # the setting is kept
    page.pick(file)
    row = page.wait_state(file, "done")

    assert "were already on the server" in row.locator(".detail").inner_text()
    assert file_id_of(row) == upload_id
    seen = check_frames(page)
    assert seen["openings"] == [{"op": "resume", "id": upload_id}]
    assert seen["sent"] == file.size - received
    assert bytes_written(freight_server) == file.size
    assert page.status(upload_id)["state"] == "finished"
    assert page.stored(upload_id)["sha256"] == file.sha256


def test_a_server_outage_shows_resuming_and_sends_only_what_is_missing(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir).start()
    file = random_file("outage.bin", 40 * MiB)
    page = browser_page(server)
    use_websocket(page)
    page.throttle(6 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    # Past the first 16 MiB window: the server has made some of it durable.
    page.wait_for_status(upload_id, lambda s: s["received_bytes"] >= 16 * MiB)
    durable = page.status(upload_id)["received_bytes"]
    server.kill()
    row = page.wait_state(file, "resuming", timeout=30)
    assert row.locator(".badge").inner_text() == "Resuming…"
    assert "retrying" in row.locator(".detail").inner_text()

    page.throttle(None)
    page.server = restarted = server_factory(data_dir=data_dir, port=server.port).start()
    page.wait_state(file, "done", timeout=60)

    # The new process counts from zero: it wrote only what was not durable at the kill.
    assert 0 < bytes_written(restarted) <= file.size - durable
    assert page.stored(upload_id)["sha256"] == file.sha256
    check_frames(page)


def test_cancel_closes_the_socket_and_deletes_the_upload(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    file = random_file("unwanted.bin", 32 * MiB)
    page = browser_page(freight_server)
    use_websocket(page)
    page.throttle(4 * MiB)

    page.pick(file)
    page.wait_state(file, "uploading")
    upload_id = page.upload_id(file)
    wait_percent(page, file, 10)
    page.row(file).locator("[data-action=cancel]").click()
    page.wait_state(file, "cancelled")

    deadline = time.monotonic() + 10
    while True:
        try:
            page.status(upload_id)
        except urllib.error.HTTPError as error:
            assert error.code == 404
            break
        assert time.monotonic() < deadline, "the upload is still on the server"
        time.sleep(0.1)
    page.page.wait_for_function(
        "(id) => !Object.values(localStorage).some((v) => v.includes(id))", arg=upload_id
    )


def test_a_forgotten_upload_starts_afresh(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    """A resume record whose upload the server no longer knows (404 on ``resume``)."""
    file = random_file("stale.bin", 2 * MiB)
    page = browser_page(freight_server)
    use_websocket(page)
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
            '{"id": "no-such-upload", "transport": "ws", "chunkSize": 1048576}',
        ],
    )
    page.pick(file)
    row = page.wait_state(file, "done")
    upload_id = file_id_of(row)
    assert upload_id != "no-such-upload"
    assert [m["op"] for m in stats(page)["openings"]] == ["resume", "start"]
    assert page.stored(upload_id)["sha256"] == file.sha256


def test_the_token_goes_in_the_first_message(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    server = server_factory(data_dir=tmp_path / "data", args=["--token", TOKEN]).start()
    page = browser_page(server, token=TOKEN)
    page.page.locator("#token-dialog").wait_for(state="visible")
    page.page.fill("#token-input", TOKEN)
    page.page.click("#token-submit")
    page.page.locator("#connection[data-state=live]").wait_for()
    use_websocket(page)  # reloads: the token is kept for the tab

    file = random_file("secret.bin", 3 * MiB)
    page.pick(file)
    row = page.wait_state(file, "done")
    assert stats(page)["openings"] == [
        {"op": "start", "name": file.name, "size": file.size, "token": TOKEN}
    ]
    assert page.stored(file_id_of(row))["sha256"] == file.sha256


def test_an_empty_file_and_a_file_changed_while_paused(
    freight_server: Any, browser_page: Callable[..., Any], random_file: Callable[..., Any]
) -> None:
    """An empty file needs no frame at all; a file changed on disk since it was picked is
    unreadable, which fails the upload instead of retrying it like a network error."""
    page = browser_page(freight_server)
    use_websocket(page)
    empty = random_file("empty.txt", 0)
    page.pick(empty)
    row = page.wait_state(empty, "done")
    assert page.stored(file_id_of(row))["sha256"] == empty.sha256
    assert stats(page)["frames"] == 0

    file = random_file("changing.log", 16 * MiB)
    page.throttle(4 * MiB)
    page.pick(file)
    page.wait_state(file, "uploading")
    wait_percent(page, file, 10)
    row = page.row(file)
    row.locator("[data-action=pause]").click()
    page.wait_state(file, "paused")
    os.utime(file.path, (time.time() + 60, time.time() + 60))
    row.locator("[data-action=pause]").click()
    row = page.wait_state(file, "failed", timeout=30)
    assert "can no longer be read" in row.locator(".detail").inner_text()
