"""Downloading to a stream (``freight get URL -o -``): stdout, a pipe, nothing to rename.

What was written cannot be taken back, so a retry continues from the byte after the last one
written, with ``Range`` and ``If-Range: <ETag>``; a server that answers anything but the
exact continuation of the same version (the file changed) ends the download with an
error rather than start over into the same stream. The SHA-256 of everything written is
checked against the server's ``Repr-Digest`` at the end; a mismatch is an error (exit
status non-zero), though the bytes have gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp

from freight.client.download import DownloadInfo, DownloadResult
from freight.client.errors import ClientError, DigestMismatch, ProtocolViolation
from freight.client.headers import parse_content_range, parse_repr_digest
from freight.client.http import RetryBudget, describe_error, is_retryable, server_error
from freight.client.options import DEFAULTS, ProgressCallback, TransferOptions
from freight.client.rate import pace
from freight.client.urls import parse_http_url

__all__ = ["STREAM", "download_to_stream"]

STREAM = Path("-")  # the path a stream download reports

_BATCH = 1024 * 1024  # bytes gathered before one write (and hash) in a worker thread


async def download_to_stream(
    url: str,
    fd: int,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: Callable[[DownloadInfo], None] | None = None,
) -> DownloadResult:
    """Write the file at ``url`` to the open descriptor ``fd``, in order, verified. What
    was written cannot be resumed later, so the options' ``resume_store`` is not used."""
    file_url = parse_http_url(url)
    budget = options.budget()
    sink = _Sink(fd, budget, options.progress)
    size: int | None = None
    etag: str | None = None
    digest: bytes | None = None
    async with options.session(download=True) as session:
        while size is None or sink.written < size:
            try:
                headers = {}
                if sink.written > 0:
                    if etag is None:
                        raise ClientError(
                            "the download was cut and the server gives no ETag to resume "
                            "the same version with; bytes already written cannot be undone"
                        )
                    headers = {"Range": f"bytes={sink.written}-", "If-Range": etag}
                async with session.get(file_url, headers=headers) as resp:
                    if sink.written == 0 and resp.status == 200:
                        if resp.content_length is None:
                            raise ProtocolViolation("the server sent no Content-Length")
                        size = resp.content_length
                        digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
                        tag = resp.headers.get("ETag")
                        etag = tag if tag and not tag.startswith("W/") else None
                        if on_start is not None:
                            on_start(DownloadInfo(STREAM, size, 0))
                    elif sink.written > 0 and resp.status == 206:
                        span = parse_content_range(resp.headers.get("Content-Range"))
                        if span.start != sink.written or span.total != size:
                            raise ClientError(_CHANGED)
                    elif sink.written > 0 and resp.status in (200, 416):
                        raise ClientError(_CHANGED)
                    else:
                        raise await server_error(resp, "downloading")
                    assert size is not None
                    await sink.copy(resp, size)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                await budget.failed(describe_error(exc), exc)
    local = sink.sha.digest()
    if digest is not None and digest != local:
        raise DigestMismatch(
            f"SHA-256 mismatch: the server advertises {digest.hex()}, received {local.hex()};"
            " the bytes written are not the server's file",
            local=local.hex(),
            remote=digest.hex(),
        )
    return DownloadResult(
        url=str(file_url),
        path=STREAM,
        size=sink.written,
        sha256=local.hex(),
        verified=digest is not None,
        resumed_from=0,
        restarted=False,
    )


_CHANGED = "the file changed on the server while it was read; what was written is incomplete"


class _Sink:
    """The stream written so far: how far it reaches and the SHA-256 of what it holds."""

    def __init__(self, fd: int, budget: RetryBudget, progress: ProgressCallback | None) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.written = 0
        self._budget = budget
        self._progress = progress
        self._pending: list[bytes] = []
        self._gathered = 0

    async def copy(self, resp: aiohttp.ClientResponse, size: int) -> None:
        """The body into the stream a batch at a time (a write and a hash in a thread)."""
        try:
            async for chunk in resp.content.iter_any():
                if self.written + self._gathered + len(chunk) > size:
                    raise ProtocolViolation("the server sent more bytes than it announced")
                self._pending.append(chunk)
                self._gathered += len(chunk)
                await pace(len(chunk))  # --limit-rate
                if self._gathered >= _BATCH:
                    await self._flush()
        finally:
            # What arrived intact goes out: a retry continues after it.
            await self._flush()
        if self.written != size:
            raise aiohttp.ClientPayloadError("the server sent fewer bytes than it announced")

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch = b"".join(self._pending)
        self._pending.clear()
        self._gathered = 0
        await asyncio.to_thread(self._write_all, batch)
        self.written += len(batch)
        self._budget.reached(self.written)
        if self._progress is not None:
            self._progress(self.written)

    def _write_all(self, data: bytes) -> None:
        self.sha.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
