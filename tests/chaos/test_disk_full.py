"""The server's disk fills up mid-upload (a 160 MiB loop-mounted ext4 as ``--data-dir``).

The server keeps 64 MiB free (``disk_reserve``) when it accepts a declared length, so the
disk is that much larger than the brief's 96 MiB of room.

Files stored before must survive; an upload that cannot fit is refused with 507 (never a
500); an upload whose bytes stop fitting half-way answers 507 and keeps what it had, then
resumes and completes once space is freed; the log shows no traceback. Needs root.
"""

from __future__ import annotations

import asyncio
import http.client
import os
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from helpers import (
    MiB,
    PatternStream,
    create_upload,
    download,
    head_offset,
    request,
    sha256_of_file,
)
from loopfs import fill, loop_mounted_ext4
from scale import Results

from freight.client import ServerError, upload_file

DISK = 160 * MiB
TUS = {"Tus-Resumable": "1.0.0"}
SMALL_DISK_ARGS = ["--disk-reserve", str(16 * MiB)]


def patch_headers(offset: int, size: int) -> dict[str, str]:
    return {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(size - offset),
    }


def send_body(url: str, headers: dict[str, str], source: PatternStream, start: int) -> int:
    """PATCH ``source[start:]``; returns the status, even when the server stops reading."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port or 80, timeout=60)
    try:
        conn.putrequest("PATCH", parts.path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for chunk in source.chunks(start):
                conn.send(chunk)
        except OSError:
            pass  # the server answered early and closed; its answer may still be readable
        return conn.getresponse().status
    except OSError:
        return 0  # reset before an answer could be read
    finally:
        conn.close()


def test_disk_fills_mid_upload(tmp_path: Path, server_factory: Any, chaos_results: Results) -> None:
    assert os.geteuid() == 0, "the disk-full test mounts a loop device: run it as root"
    figures: list[list[object]] = []
    with loop_mounted_ext4(tmp_path, DISK) as mount:
        # The default 64 MiB reserve and one client's half share would leave a 160 MiB disk
        # too little room to resume into; a small disk gets a small reserve.
        server = server_factory(data_dir=mount / "data", args=SMALL_DISK_ARGS).start()
        try:
            run_scenario(server, mount, tmp_path, figures)
        finally:
            server.stop()  # before the filesystem goes away
        tracebacks = sum("Traceback" in line for line in server.output_tail)
    chaos_results.table(
        "Disk full",
        f"A {DISK // MiB} MiB ext4 loop mount as the data directory; server log tracebacks: "
        f"{tracebacks}.",
        ["step", "answer", "figure"],
        figures,
    )
    assert tracebacks == 0, "".join(server.output_tail)


def run_scenario(server: Any, mount: Path, tmp_path: Path, figures: list[list[object]]) -> None:
    # Files stored before the disk fills.
    kept = []
    for n in range(3):
        local = PatternStream(4 * MiB, seed=n).write_to(tmp_path / f"kept{n}.bin")
        result = asyncio.run(upload_file(local, server.url))
        kept.append((result.url, sha256_of_file(local)))
    figures.append(["3 files of 4 MiB stored", "201/204", "-"])

    # An upload larger than the disk is refused up front.
    with pytest.raises(ServerError) as refused:
        big = tmp_path / "big.bin"
        with big.open("wb") as file:
            file.truncate(2 * DISK)
        asyncio.run(upload_file(big, server.url))
    status = refused.value.http_status
    figures.append(["freight client, upload of twice the disk", status, "refused at creation"])
    assert refused.value.http_status == 507, refused.value

    # A deferred-length upload runs into a disk another writer has filled.
    filler = mount / "filler"
    fill(filler, leave=16 * MiB)
    source = PatternStream(40 * MiB, seed=9)
    created = request("POST", f"{server.url}/files/", {**TUS, "Upload-Defer-Length": "1"})
    assert created.status == 201, created
    url = urljoin(f"{server.url}/files/", str(created.header("Location")))
    status = send_body(url, patch_headers(0, source.size), source, 0)
    offset = head_offset(url)
    figures.append(
        [
            f"{source.size // MiB} MiB deferred-length PATCH, 16 MiB free",
            status,
            f"offset {offset / MiB:.1f} MiB kept",
        ]
    )
    assert status == 507, f"a full disk must answer 507 Insufficient Storage, not {status}"
    assert 0 < offset < source.size

    # Space comes back: the upload resumes from its offset and completes.
    filler.unlink()
    headers = {**patch_headers(offset, source.size), "Upload-Length": str(source.size)}
    status = send_body(url, headers, source, offset)
    sent = (source.size - offset) / MiB
    figures.append(["resumed after freeing space", status, f"{sent:.1f} MiB sent"])
    assert status == 204, "".join(server.output_tail)
    whole = download(url)
    assert whole.sha256 == source.sha256()
    for file_url, sha in kept:
        assert download(file_url).sha256 == sha, f"{file_url} changed after the disk filled"
    figures.append(["earlier files and the resumed one", 200, "SHA-256 intact"])


def test_disk_fills_after_a_reserved_upload(
    tmp_path: Path, server_factory: Any, chaos_results: Results
) -> None:
    """A declared length is promised at creation; another writer then fills the disk."""
    assert os.geteuid() == 0, "the disk-full test mounts a loop device: run it as root"
    with loop_mounted_ext4(tmp_path, DISK) as mount:
        server = server_factory(data_dir=mount / "data").start()
        try:
            reserved = PatternStream(16 * MiB, seed=8)
            url = create_upload(server.url, reserved.size)
            filler = mount / "filler"
            fill(filler, leave=0)
            status = send_body(url, patch_headers(0, reserved.size), reserved, 0)
            filler.unlink()
            stored = download(url)
        finally:
            server.stop()
    chaos_results.table(
        "Disk full after a promised length",
        f"A {DISK // MiB} MiB ext4 loop mount; a 16 MiB upload is created (its length "
        "promised, not preallocated), then another writer fills the disk and the body is sent.",
        ["PATCH answer", "GET after freeing space"],
        [[status, stored.status]],
    )
    assert status in (204, 507), f"a full disk answered {status}"
    assert status == 507 or stored.sha256 == reserved.sha256()
