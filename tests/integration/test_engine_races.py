"""Concurrent requests on one upload, against a real server process.

* Parallel chunk PUTs share one open part file: none stays open after the upload is
  finished and deleted (each leaked descriptor pinned a deleted file's disk space).
* A request that takes over a stalled one (its link died without the server noticing) is
  served from the offset its client was given, over tus and IETF alike.
* SIGTERM with a slow upload in flight: the server exits without an error, and keeps what
  the client had sent.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from .helpers import (
    MiB,
    PatternStream,
    create_upload,
    download,
    head_offset,
    request,
    sha256_of_file,
)

TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
IETF = {"Upload-Draft-Interop-Version": "6", "Content-Type": "application/partial-upload"}


def deleted_files_held(pid: int) -> list[str]:
    """Files of the process's open descriptors that were deleted (their space is pinned)."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)"):
            held.append(target)
    return held


def descriptors_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def post_json(url: str, body: Mapping[str, Any]) -> Any:
    reply = request("POST", url, {"Content-Type": "application/json"}, json.dumps(body).encode())
    assert reply.status in (200, 201), (reply.status, reply.body)
    return reply.json()


def test_parallel_chunk_puts_leave_no_descriptor_behind(freight_server: Any) -> None:
    base = freight_server.url
    chunk = 256 * 1024
    chunks = 8
    before = descriptors_of(freight_server.pid)
    with ThreadPoolExecutor(4) as pool:
        for round_ in range(6):
            created = post_json(
                f"{base}/api/uploads",
                {"name": f"f{round_}.bin", "size": chunks * chunk, "chunk_size": chunk},
            )
            assert created["chunk_size"] == chunk
            url = f"{base}{created['upload_url']}"

            def put(n: int, url: str = url) -> int:
                body = bytes([n]) * chunk
                headers = {"Content-Type": "application/octet-stream"}
                return request("PUT", f"{url}/chunks/{n}", headers, body).status

            # Four at once, as `freight send --protocol chunks --parallel 4` sends them.
            assert list(pool.map(put, range(chunks))) == [200] * chunks
            done = post_json(f"{url}/complete", {})
            assert request("DELETE", f"{base}/api/files/{done['file_id']}").status == 204
    assert deleted_files_held(freight_server.pid) == []
    assert descriptors_of(freight_server.pid) <= before


# --- take-over after a stall -------------------------------------------------------------------


def start_stalled_patch(
    url: str, headers: Mapping[str, str], first: bytes, length: int
) -> socket.socket:
    """Send a PATCH's head and the first bytes of a ``length``-byte body, then nothing more.

    The connection stays open: to the server this is a link that died unnoticed.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
    lines = [f"PATCH {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + first)
    return sock


def send_patch(
    url: str, headers: Mapping[str, str], chunks: Iterable[bytes], length: int
) -> tuple[int, http.client.HTTPMessage]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=60)
    try:
        conn.putrequest("PATCH", parts.path, skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(length)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for piece in chunks:
            conn.send(piece)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.headers
    finally:
        conn.close()


def offset_of(url: str, protocol: str) -> int:
    if protocol == "tus":
        return head_offset(url)
    reply = request("HEAD", url, {"Upload-Draft-Interop-Version": "6"})
    assert reply.status == 204, reply.status
    return int(reply.header("Upload-Offset") or "-1")


def patch_headers(protocol: str, offset: int) -> dict[str, str]:
    if protocol == "tus":
        return {**TUS, "Upload-Offset": str(offset)}
    return {**IETF, "Upload-Offset": str(offset), "Upload-Complete": "?1"}


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_a_retry_takes_a_stalled_patch_over_from_the_offset_it_was_given(
    freight_server: Any, protocol: str
) -> None:
    size = 24 * MiB
    data = PatternStream(size, seed=7)
    url = create_upload(freight_server.url, size)
    stalled = start_stalled_patch(
        url, patch_headers(protocol, 0), b"".join(data.chunks(0, 8 * MiB)), size
    )
    try:
        time.sleep(1.0)  # the server writes what arrived, but records none of it yet
        offset = offset_of(url, protocol)  # the retrying client asks where to go on
        status, headers = send_patch(
            url, patch_headers(protocol, offset), data.chunks(offset), size - offset
        )
        assert status in (200, 201, 204), (status, dict(headers))
        assert headers["Upload-Offset"] == str(size)
    finally:
        stalled.close()
    assert download(url).sha256 == data.sha256()


def test_a_retry_declaring_a_deferred_length_takes_a_stalled_patch_over(
    freight_server: Any,
) -> None:
    """The retry is the PATCH that first states the length the upload deferred (the stalled
    one did not know it yet): setting it must take the upload over too, not answer 423
    until the dead link times out."""
    size = 24 * MiB
    data = PatternStream(size, seed=8)
    created = request("POST", f"{freight_server.url}/files/", {**TUS, "Upload-Defer-Length": "1"})
    assert created.status == 201, created.status
    url = urljoin(f"{freight_server.url}/files/", created.header("Location") or "")
    first = patch_headers("tus", 0)
    stalled = start_stalled_patch(url, first, b"".join(data.chunks(0, 8 * MiB)), size)
    try:
        time.sleep(1.0)
        offset = head_offset(url)
        retry = {**patch_headers("tus", offset), "Upload-Length": str(size)}
        status, headers = send_patch(url, retry, data.chunks(offset), size - offset)
        assert status == 204, (status, dict(headers))
        assert headers["Upload-Offset"] == str(size)
    finally:
        stalled.close()
    assert download(url).sha256 == data.sha256()


# --- SIGTERM -----------------------------------------------------------------------------------


class Trickle:
    """A tus PATCH that sends a burst, then a few bytes at a time until the server goes."""

    def __init__(self, url: str, data: PatternStream, burst: int) -> None:
        self.sock = start_stalled_patch(
            url, patch_headers("tus", 0), b"".join(data.chunks(0, burst)), data.size
        )
        self.sent = burst
        self._data = data
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self.sent < self._data.size:
                piece = b"".join(self._data.chunks(self.sent, self.sent + 64 * 1024))
                self.sock.sendall(piece)
                self.sent += len(piece)
                time.sleep(0.05)
        except OSError:
            return

    def stop(self) -> None:
        self.sock.close()
        self._thread.join(10)


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_keeps_what_a_slow_patch_sent(server_factory: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir).start()
    size = 48 * MiB  # below the 64 MiB between syncs: nothing is recorded before the end
    data = PatternStream(size, seed=3)
    url = create_upload(server.url, size)
    burst = 8 * MiB
    slow = Trickle(url, data, burst)
    try:
        time.sleep(2.0)  # the burst is in the file, the trickle goes on
        sent_before = slow.sent
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        # Bounded shutdown is another matter; this only checks the request does not hold
        # the server until aiohttp gives up on it (a minute or two).
        server.proc.wait(30)
        took = time.monotonic() - started
    finally:
        slow.stop()
    output = "".join(server.output_tail)
    assert "Traceback" not in output and "ValueError" not in output, output
    assert took < 30

    again = server_factory(data_dir=data_dir).start()
    kept = head_offset(url.replace(server.url, again.url))
    assert burst <= kept <= slow.sent
    assert kept >= sent_before - 2 * MiB  # nearly all of it: the trickle is 1.3 MB/s
    part = data_dir / "uploads" / f"{url.rsplit('/', 1)[1]}.part"
    assert sha256_of_file(part, kept) == data.sha256(kept)


# --- concatenation -----------------------------------------------------------------------------


def test_twenty_finals_over_the_same_parts_copy_them_once(
    freight_server: Any, tmp_path: Path
) -> None:
    base = freight_server.url
    parts = []
    for n in range(10):
        reply = request(
            "POST",
            f"{base}/files/",
            {"Tus-Resumable": "1.0.0", "Upload-Length": str(MiB), "Upload-Concat": "partial"},
        )
        assert reply.status == 201
        url = f"{base}{reply.header('Location')}"
        status, _ = send_patch(url, patch_headers("tus", 0), [bytes([n]) * MiB], MiB)
        assert status == 204
        parts.append(urlsplit(url).path)

    def create_final(paths: list[str]) -> tuple[int, str | None]:
        headers = {"Tus-Resumable": "1.0.0", "Upload-Concat": "final;" + " ".join(paths)}
        reply = request("POST", f"{base}/files/", headers)
        return reply.status, reply.header("Location")

    status, first = create_final(parts)
    assert status == 201
    answers = [create_final(parts) for _ in range(9)]  # retries whose answers were lost
    assert answers == [(201, first)] * 9
    others = [create_final(parts[i:] + parts[:i]) for i in range(1, 11)]  # other orders
    assert [status for status, _ in others if status != 201] == [400] * 9  # the 10th repeats
    files = tmp_path / "data" / "files"
    assert sum(p.stat().st_size for p in files.iterdir()) == 20 * MiB  # parts + one final
