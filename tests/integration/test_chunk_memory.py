"""Flat memory under browser-style load: 8 chunk uploads of 512 MiB at once, each sending
4 chunks of 10 MiB in parallel (32 requests in flight), into a ``freight serve`` process
whose peak RSS must stay small. The data is generated as it is sent, never whole in memory,
and every upload's SHA-256 is checked by the server at ``complete``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import ClientSession, ClientTimeout, TCPConnector
from helpers import MiB, PatternStream

UPLOADS = 8
PARALLEL = 4
SIZE = 512 * MiB
CHUNK = 10 * MiB
RSS_LIMIT_KIB = 96 * 1024


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (VmHWM, VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class RssSampler(threading.Thread):
    """Samples VmRSS while the uploads run (the kernel updates VmHWM lazily)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak_kib


async def _body(stream: PatternStream, start: int, end: int) -> AsyncIterator[bytes]:
    for piece in stream.chunks(start, end):  # 1 MiB at a time
        yield piece


def _digest(stream: PatternStream, start: int, end: int) -> str:
    sha = hashlib.sha256()
    for piece in stream.chunks(start, end):
        sha.update(piece)
    return f"sha-256=:{base64.b64encode(sha.digest()).decode()}:"


async def _send_chunk(
    http: ClientSession, url: str, stream: PatternStream, n: int, with_digest: bool
) -> None:
    start, end = n * CHUNK, min((n + 1) * CHUNK, stream.size)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - start)}
    if with_digest:
        headers["Content-Digest"] = await asyncio.to_thread(_digest, stream, start, end)
    async with http.put(f"{url}/chunks/{n}", data=_body(stream, start, end), headers=headers) as r:
        assert r.status == 200, await r.text()


async def _upload(http: ClientSession, base: str, seed: int) -> dict[str, Any]:
    """One browser-like upload; half of them send Content-Digest, as a page may."""
    stream = PatternStream(SIZE, seed=seed)
    expected = asyncio.ensure_future(asyncio.to_thread(stream.sha256))
    request = {"name": f"vm-{seed}.img", "size": SIZE, "chunk_size": CHUNK}
    async with http.post(f"{base}/api/uploads", json=request) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["chunk_size"] == CHUNK
    url = f"{base}/api/uploads/{created['id']}"
    pending = deque(range(created["chunk_count"]))

    async def worker() -> None:
        while pending:
            await _send_chunk(http, url, stream, pending.popleft(), seed % 2 == 1)

    await asyncio.gather(*(worker() for _ in range(PARALLEL)))
    sha256 = await expected
    async with http.post(f"{url}/complete", json={"sha256": sha256}) as resp:
        assert resp.status == 200, await resp.text()
        done = await resp.json()
    assert done["sha256"] == sha256 and done["size"] == SIZE
    return dict(done)


async def _upload_all(base: str) -> list[dict[str, Any]]:
    connector = TCPConnector(limit=UPLOADS * PARALLEL + UPLOADS)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=300)) as http:
        return await asyncio.gather(*(_upload(http, base, seed) for seed in range(UPLOADS)))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rss_stays_flat_for_32_chunk_requests_at_once(server_factory: Any, tmp_path: Path) -> None:
    # --fsync never: syncing decides how long the disk takes, not what the server holds in
    # memory (written pages sit in the page cache, which RSS does not count), and 4 GiB of
    # syncs would make this test slow and at the mercy of the disk.
    server = server_factory(data_dir=tmp_path / "data", args=["--fsync", "never"]).start()
    idle_kib = status_kib(server.pid, "VmHWM")
    sampler = RssSampler(server.pid)
    sampler.start()
    server_cpu, client_cpu = psutil.Process(server.pid), psutil.Process()
    cpu_before = sum(server_cpu.cpu_times()[:2]), sum(client_cpu.cpu_times()[:2])
    started = time.monotonic()
    done = asyncio.run(_upload_all(server.url))
    seconds = time.monotonic() - started
    server_seconds = sum(server_cpu.cpu_times()[:2]) - cpu_before[0]
    client_seconds = sum(client_cpu.cpu_times()[:2]) - cpu_before[1]
    sampled_kib = sampler.stop()
    hwm_kib = status_kib(server.pid, "VmHWM")

    assert len({d["file_id"] for d in done}) == UPLOADS
    for result in done:
        assert (tmp_path / "data" / "files" / result["file_id"]).stat().st_size == SIZE
    peak_kib = max(hwm_kib, sampled_kib)
    total = UPLOADS * SIZE
    print(
        f"\n{UPLOADS} x {SIZE // MiB} MiB, {PARALLEL} chunks of {CHUNK // MiB} MiB in flight "
        f"each: {seconds:.1f} s, {total / MiB / seconds:.0f} MiB/s; server VmHWM idle "
        f"{idle_kib} KiB, peak {peak_kib} KiB (sampled VmRSS {sampled_kib} KiB); CPU seconds: "
        f"server {server_seconds:.1f}, test client {client_seconds:.1f}"
    )
    # Measured ~90 MiB (48 MiB idle): 8 large staging pairs (16 MiB) and 24 small ones
    # (6 MiB), up to ~256 KiB read ahead plus ~256 KiB in hand per request in aiohttp
    # (~16 MiB), two shared read-back buffers. See READ_BUFSIZE in freight.server.app.
    assert peak_kib < RSS_LIMIT_KIB, f"peak RSS {peak_kib} KiB with 32 chunk requests at once"
