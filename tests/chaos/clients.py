"""Resuming clients of every protocol, run in-process, and a reader of the server's offsets.

tus, chunks, WebSocket and TCP go through ``freight.client`` (the library ``freight send``
uses); the IETF draft has no freight client, so :func:`upload_ietf` is a small one on aiohttp
that resumes the same way (HEAD, then PATCH from the server's offset). Each upload keeps its
resume state in its own directory, which is also where :func:`remembered_url` finds the
upload's address while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from helpers import MiB
from yarl import URL

from freight.client import ResumeStore, RetryPolicy, Timeouts
from freight.client.filebody import FileBody
from freight.client.options import TransferOptions
from freight.client.protocols import UPLOADERS

__all__ = [
    "PROTOCOLS",
    "Endpoints",
    "Job",
    "file_id",
    "remembered_url",
    "server_offset",
    "stored_sha256",
    "upload",
]

PROTOCOLS = ("tus", "ietf", "chunks", "ws", "tcp")
IETF_VERSION = "8"
CHUNK = 2 * MiB


@dataclass(frozen=True)
class Endpoints:
    """Where clients connect (maybe a proxy) and where the test asks the server directly."""

    http: str  # what clients use for HTTP protocols
    tcp: str  # tcp://host:port clients use
    direct: str  # the server's own HTTP address, for status and downloads


@dataclass
class Job:
    """One file to upload with one protocol; the run fills in ``stored_id`` or ``error``."""

    name: str
    protocol: str
    path: Path
    sha256: str
    state_dir: Path
    stored_id: str = ""
    error: str = ""
    seconds: float = 0.0


def file_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def remembered_url(job: Job) -> str | None:
    """The upload address the client has stored for ``job`` (None before or after it)."""
    try:
        entries = json.loads((job.state_dir / "uploads.json").read_text())["entries"]
    except (OSError, ValueError, KeyError):
        return None
    return str(entries[0]["upload_url"]) if entries else None


def server_offset(direct: str, protocol: str, upload_id: str, timeout: float = 5.0) -> int:
    """Bytes the server reports as received for an upload, in the protocol's own terms.

    Chunk uploads count whole acknowledged chunks (``received_bytes``); every other upload
    is a session under ``/files/`` whose tus ``Upload-Offset`` is its durable prefix.
    """
    if protocol == "chunks":
        with urllib.request.urlopen(f"{direct}/api/uploads/{upload_id}", timeout=timeout) as r:
            return int(json.loads(r.read())["received_bytes"])
    head = urllib.request.Request(
        f"{direct}/files/{upload_id}", method="HEAD", headers={"Tus-Resumable": "1.0.0"}
    )
    with urllib.request.urlopen(head, timeout=timeout) as reply:
        return int(reply.headers["Upload-Offset"])


def stored_sha256(direct: str, upload_id: str, timeout: float = 30.0) -> str | None:
    """SHA-256 of the file the server serves for ``upload_id``; None if it serves none."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(f"{direct}/files/{upload_id}", timeout=timeout) as reply:
            while block := reply.read(MiB):
                digest.update(block)
    except urllib.error.HTTPError:
        return None
    return digest.hexdigest()


async def upload(job: Job, endpoints: Endpoints, *, attempts: int, read_timeout: float) -> str:
    """Upload ``job`` with its protocol, resuming after failures; returns the file's id."""
    retry = RetryPolicy(attempts=attempts, initial_delay=0.2, max_delay=2.0)
    timeouts = Timeouts(connect=5.0, read=read_timeout, stall=read_timeout)
    if job.protocol == "ietf":
        return await upload_ietf(job, endpoints.http, retry=retry, timeouts=timeouts)
    target = endpoints.tcp if job.protocol == "tcp" else endpoints.http
    extra: dict[str, Any] = {}
    if job.protocol == "chunks":
        extra["requested_chunk_size"] = CHUNK  # several acknowledgements per file
    result = await UPLOADERS[job.protocol](
        job.path,
        target,
        TransferOptions(resume_store=ResumeStore(job.state_dir), retry=retry, timeouts=timeouts),
        parallel=4,
        **extra,
    )
    if result.sha256 != job.sha256:
        raise AssertionError(f"{job.name}: the client reports {result.sha256}")
    return file_id(result.url)


_RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def upload_ietf(job: Job, base: str, *, retry: RetryPolicy, timeouts: Timeouts) -> str:
    """IETF resumable upload (interop 8): create, then PATCH from the server's offset."""
    size = job.path.stat().st_size
    common = {"Upload-Draft-Interop-Version": IETF_VERSION}
    timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect, sock_read=timeouts.read)
    failures = 0
    url: str | None = None
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                if url is None:
                    url = await _ietf_create(session, base, size, common)
                    _remember(job, url)
                offset = await _ietf_offset(session, url, common)
                if offset < size:
                    offset = await _ietf_append(
                        session, url, job.path, offset, size, common, timeouts.read
                    )
                if offset == size:
                    (job.state_dir / "uploads.json").unlink(missing_ok=True)
                    return file_id(url)
            except _RETRYABLE:
                pass
            failures += 1
            if failures > retry.attempts:
                raise AssertionError(f"{job.name}: the IETF upload gave up")
            await asyncio.sleep(retry.delay(failures))


def _remember(job: Job, url: str) -> None:
    job.state_dir.mkdir(parents=True, exist_ok=True)
    entry = {"upload_url": url}
    (job.state_dir / "uploads.json").write_text(json.dumps({"entries": [entry]}))


async def _ietf_create(
    session: aiohttp.ClientSession, base: str, size: int, common: dict[str, str]
) -> str:
    headers = {**common, "Upload-Complete": "?0", "Upload-Length": str(size)}
    async with session.post(f"{base}/files/", headers=headers) as reply:
        assert reply.status == 201, f"IETF creation answered {reply.status}"
        return str(reply.url.join(URL(reply.headers["Location"])))


async def _ietf_offset(session: aiohttp.ClientSession, url: str, common: dict[str, str]) -> int:
    async with session.head(url, headers=common) as reply:
        if reply.status != 200 and reply.status != 204:
            raise aiohttp.ClientError(f"HEAD answered {reply.status}")
        return int(reply.headers["Upload-Offset"])


async def _ietf_append(
    session: aiohttp.ClientSession,
    url: str,
    path: Path,
    offset: int,
    size: int,
    common: dict[str, str],
    stall: float,
) -> int:
    headers: dict[str, Any] = {
        **common,
        "Upload-Offset": str(offset),
        "Upload-Complete": "?1",
        "Content-Type": "application/partial-upload",
        "Content-Length": str(size - offset),
    }
    loop = asyncio.get_running_loop()
    # Like freight's tus client: a body write stuck on a silent link ends after `stall`.
    async with asyncio.timeout_at(loop.time() + stall) as timer:
        body = FileBody(
            path,
            offset,
            size,
            chunk_size=MiB,
            on_read=lambda _: timer.reschedule(loop.time() + stall),
        )
        try:
            async with session.patch(url, data=body, headers=headers) as reply:
                if reply.status not in (200, 201, 204):
                    raise aiohttp.ClientError(f"PATCH answered {reply.status}")
                return int(reply.headers.get("Upload-Offset", size))
        finally:
            body.close()
