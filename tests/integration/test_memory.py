"""Flat memory: the server moves a 2 GiB file in and out without its RSS growing with it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import MiB, create_upload, download, patch_stream, repr_digest_hex

SIZE = 2048 * MiB
RSS_LIMIT_KIB = 64 * 1024


def blocks(size: int) -> Iterator[bytes]:
    """``size`` bytes as 1 MiB blocks: one reused block with a changing 8-byte header."""
    block = bytearray(hashlib.sha256(b"freight").digest() * (MiB // 32))
    for index in range(size // MiB):
        block[:8] = index.to_bytes(8, "big")
        yield memoryview(block)  # consumed (sent and hashed) before the next one is made


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (VmHWM, VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class RssSampler(threading.Thread):
    """Samples VmRSS while a transfer runs, to report how memory moved (VmHWM is the limit)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.samples.append(status_kib(self.pid, "VmRSS"))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.samples, default=0)


@pytest.mark.slow
def test_rss_stays_flat_for_a_2_gib_upload_and_download(
    server_factory: Any, tmp_path: Path
) -> None:
    # --fsync never: syncing changes how long the disk takes, not what the server holds in
    # memory (synced or not, written pages sit in the page cache, which RSS does not count),
    # and 2 GiB of fsyncs would make this test slow and at the mercy of the disk.
    server = server_factory(data_dir=tmp_path / "data", args=["--fsync", "never"]).start()
    idle_kib = status_kib(server.pid, "VmHWM")
    upload_url = create_upload(server.url, SIZE, {"filename": "big.bin"})

    sampler = RssSampler(server.pid)
    sampler.start()
    sent_sha = hashlib.sha256()
    started = time.monotonic()
    # Asking for the digest keeps the whole finish inside the sampled request.
    wanted = {"Want-Repr-Digest": "sha-256=10"}
    reply = patch_stream(upload_url, 0, blocks(SIZE), SIZE, hasher=sent_sha, headers=wanted)
    upload_seconds = time.monotonic() - started
    upload_rss_kib = sampler.stop()
    upload_hwm_kib = status_kib(server.pid, "VmHWM")
    assert reply.status == 204, reply.body
    assert reply.header("Upload-Offset") == str(SIZE)
    assert repr_digest_hex(reply.header("Repr-Digest")) == sent_sha.hexdigest()

    sampler = RssSampler(server.pid)
    sampler.start()
    started = time.monotonic()
    got = download(upload_url)
    download_seconds = time.monotonic() - started
    download_rss_kib = sampler.stop()
    download_hwm_kib = status_kib(server.pid, "VmHWM")
    assert got.status == 200
    assert got.size == SIZE
    assert got.sha256 == sent_sha.hexdigest()

    print(
        f"\nidle VmHWM {idle_kib} KiB; upload {upload_seconds:.1f} s, VmRSS max "
        f"{upload_rss_kib} KiB, VmHWM {upload_hwm_kib} KiB; download {download_seconds:.1f} s, "
        f"VmRSS max {download_rss_kib} KiB, VmHWM {download_hwm_kib} KiB"
    )
    # The kernel updates VmHWM lazily, so a sampled VmRSS can run slightly above it.
    upload_peak = max(upload_hwm_kib, upload_rss_kib)
    download_peak = max(download_hwm_kib, download_rss_kib)
    assert upload_peak < RSS_LIMIT_KIB, f"peak RSS {upload_peak} KiB receiving 2 GiB"
    assert download_peak < RSS_LIMIT_KIB, f"peak RSS {download_peak} KiB sending 2 GiB"
