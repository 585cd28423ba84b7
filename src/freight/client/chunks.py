"""Sending a local file through the chunk API (``/api/uploads``), several chunks at once.

One upload is: find the server's upload (a remembered URL and ``GET``, or a new ``POST``),
ask which chunks are missing, PUT only those, ``parallel`` at a time, then ``complete`` with
the SHA-256 computed locally; the server refuses a file whose hash differs. The server keeps
what reached it of a cut PUT (one without a digest), so after a lost PUT the client asks the
status and sends only what that chunk still lacks, as a piece that waits for
``100 Continue``: a server still recording the cut request's bytes (another node, perhaps)
then says where they end before any byte is sent. Nothing acknowledged is sent again, and of
what a cut loses only what was in flight past the server's last byte.

A link that drops connections more often than a chunk takes to send would lose every
chunk. So a chunk whose whole pieces are lost twice in a row is sent in pieces half as large
(``Content-Range``, down to 256 KiB and the server's ``min_piece_size``; see
:class:`~freight.client.chunk_status.PieceSizer`), each acknowledged on its own; a resumed
upload sends only the bytes partly sent chunks lack. Smaller pieces are a new way through,
not a repeat of what failed, so they start a fresh retry count: a chunk gives up only once
its pieces are as small as they go and still fail ``attempts + 1`` times in a row.

The whole-file SHA-256 (checked by the server at ``complete``) is what makes the upload
trustworthy, so by default chunks carry no digest of their own: a thread hashes the file
from disk (the page cache, mostly) while the chunks are sent, and the server splices each
chunk into place without looking at it. That is one hash per byte on each side instead of
two. ``chunk_digests=True`` adds a ``Content-Digest`` to every chunk, so a chunk damaged on
the way is refused and resent on its own instead of failing the whole file at ``complete``.

With chunk digests each byte is still read from disk once: one reader walks the missing
chunks in order, reads each whole into a reused buffer, computes its digest (which must
precede the body) and feeds the whole-file SHA-256 from that same buffer, the two hashes in
two worker threads at once; the chunk is then sent from the buffer. At most
``parallel + 1`` chunks are held, and only while they fit
:data:`~freight.client.chunk_sender.HELD_CHUNKS_BUDGET`; past it (many streams, huge
chunks) each chunk is read twice instead, with flat memory. Each chunk retries on its own
with backoff; a chunk that keeps failing stops the others.

This module finds the server's upload and completes it; sending the chunks is
:mod:`freight.client.chunk_sender`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from freight.client.chunk_sender import ChunkSender, UploadGone
from freight.client.chunk_status import (
    Remote,
    created_remote,
    json_object,
    missing_of,
    status_remote,
)
from freight.client.errors import ClientError, DigestMismatch, LocalFileChanged, ServerError
from freight.client.hashing import SplitHasher
from freight.client.http import describe_error, retrying, server_error
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.resume_store import UploadKey
from freight.client.upload import UploadResult, display_name, local_file
from freight.client.urls import server_root
from freight.protocol.metadata import RELATIVE_PATH

__all__ = ["DEFAULT_PARALLEL", "upload_chunks"]

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 4


async def upload_chunks(
    path: Path | str,
    server_url: str,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: Callable[[int, int], None] | None = None,
    parallel: int = DEFAULT_PARALLEL,
    requested_chunk_size: int | None = None,
    chunk_digests: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> UploadResult:
    """Upload ``path`` to the server at ``server_url`` through its chunk API.

    Arguments are those of :func:`freight.client.upload.upload_file` (the options'
    ``chunk_size`` is the read granularity) plus ``parallel`` (chunks in flight),
    ``requested_chunk_size`` (the API chunk size to ask for; the server has the last word)
    and ``chunk_digests`` (send each chunk's SHA-256, see the module's doc). Of
    ``metadata`` the chunk API carries ``relativePath`` (as ``relative_path``).
    """
    path = local_file(path)
    if parallel < 1:
        raise ClientError("parallel must be at least 1")
    root = server_root(server_url)
    endpoint = root.with_path(root.path.rstrip("/") + "/api/uploads")
    async with options.session() as session:
        upload = _ChunkUpload(
            session,
            path,
            UploadKey.for_file(path, str(endpoint)),
            root,
            endpoint,
            options,
            parallel=parallel,
            requested_chunk_size=requested_chunk_size,
            chunk_digests=chunk_digests,
        )
        upload.relative_path = (metadata or {}).get(RELATIVE_PATH)
        return await upload.run(on_start)


class _ChunksMissing(Exception):
    """``complete`` found chunks missing (the server lost acknowledged bytes)."""

    def __init__(self, missing: list[tuple[int, int]], missing_bytes: list[tuple[int, int]]):
        super().__init__(f"{len(missing)} chunk ranges are missing")
        self.missing = missing
        self.missing_bytes = missing_bytes


class _ChunkUpload:
    """The state of one :func:`upload_chunks` call."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        path: Path,
        key: UploadKey,
        root: URL,
        endpoint: URL,
        options: TransferOptions,
        *,
        parallel: int,
        requested_chunk_size: int | None,
        chunk_digests: bool,
    ) -> None:
        self.session = session
        self.path = path
        self.key = key
        self.size = key.size
        self.root = root
        self.relative_path: str | None = None
        self.endpoint = endpoint
        self.store = options.resume_store
        self.budget = options.budget()
        self.read_size = options.chunk_size
        self.requested_chunk_size = requested_chunk_size
        self.chunk_digests = chunk_digests
        self.sender = ChunkSender(
            session,
            path,
            self.size,
            options,
            budget=self.budget,
            parallel=parallel,
            chunk_digests=chunk_digests,
        )
        self.hasher = SplitHasher(path, 0, chunk_size=self.read_size)  # replaced by run()
        self.local_digest: bytes | None = None

    async def run(self, on_start: Callable[[int, int], None] | None) -> UploadResult:
        remote = await retrying(self.budget, self._locate)
        resumed_from = self.sender.acknowledged = remote.received
        if on_start is not None:
            on_start(self.size, resumed_from)
        self.sender.report()
        # With chunk digests the chunks that are sent feed the file's SHA-256 as they are
        # read, and a disk reader hashes the chunks the server already has (from the first
        # missing one on, only those the reads skip past). Without, the reader hashes it all,
        # right behind the chunks handed to the senders (see ChunkSender.send_missing).
        first_missing = remote.missing[0][0] * remote.chunk_size if remote.missing else self.size
        from_disk = first_missing if self.chunk_digests else 0
        self.hasher = SplitHasher(self.path, from_disk, chunk_size=self.read_size)
        self.hasher.start()
        try:
            completed = await self._transfer(remote)
        finally:
            await self.hasher.close()
        self._forget()
        return UploadResult(
            # The server's URL is an absolute path: it already holds any mount prefix.
            url=str(self.root.join(URL(str(completed["url"])))),
            name=self.path.name,
            size=self.size,
            sha256=str(completed["sha256"]),
            verified=True,
            resumed_from=resumed_from,
        )

    # finding where the server stands

    async def _locate(self) -> Remote:
        remembered = self.store.get_upload(self.key) if self.store else None
        if remembered is not None:
            remote = await self._status(URL(remembered))
            if remote is not None:
                return remote
            log.info("remembered upload %s is gone; starting a new one", remembered)
        return await self._create()

    async def _create(self) -> Remote:
        request: dict[str, Any] = {"name": display_name(self.path), "size": self.size}
        if self.requested_chunk_size is not None:
            request["chunk_size"] = self.requested_chunk_size
        if self.relative_path is not None:
            request["relative_path"] = self.relative_path
        async with self.session.post(self.endpoint, json=request) as resp:
            if resp.status != 201:
                raise await server_error(resp, "creating the upload")
            remote = created_remote(await json_object(resp), self.endpoint, self.size)
        self.budget.answered()
        if self.store is not None:
            self.store.put_upload(self.key, str(remote.url))
        self.sender.acknowledged = 0
        return remote

    async def _status(self, url: URL) -> Remote | None:
        """The upload at ``url``; None if it is gone or is not this file's chunk upload."""
        async with self.session.get(url) as resp:
            self.budget.answered()
            if resp.status in (404, 410):
                return None
            if resp.status != 200:
                raise await server_error(resp, "checking the upload")
            return status_remote(await json_object(resp), url, self.size)

    # sending

    async def _transfer(self, remote: Remote) -> dict[str, Any]:
        """Send what is missing and complete, until the server has the whole file."""
        while True:
            try:
                await self.sender.send_missing(remote, self.hasher)
                self._check_unchanged()
                return await self._complete(remote)
            except UploadGone:
                await self.budget.failed("the server no longer has the upload; starting again")
                remote = await retrying(self.budget, self._create)
            except _ChunksMissing as exc:
                await self.budget.failed("the server is missing chunks it had; sending them again")
                remote.missing, remote.missing_bytes = exc.missing, exc.missing_bytes
            self.sender.acknowledged = remote.received = self.size - remote.lacking(self.size)
            self.sender.report()

    # completing

    async def _complete(self, remote: Remote) -> dict[str, Any]:
        if self.local_digest is None:
            self.local_digest = await self.hasher.finish(self.size)
        local = self.local_digest.hex()
        return await retrying(self.budget, lambda: self._post_complete(remote, local))

    async def _post_complete(self, remote: Remote, local: str) -> dict[str, Any]:
        async with self.session.post(remote.url / "complete", json={"sha256": local}) as resp:
            if resp.status in (404, 410):
                raise UploadGone()
            if resp.status in (409, 422):
                data = await json_object(resp)
                if resp.status == 409 and data.get("code") == "ERR_UPLOAD_INCOMPLETE":
                    raise _ChunksMissing(*missing_of(data))
                if resp.status == 422 and data.get("code") == "ERR_CHECKSUM_MISMATCH":
                    await self._discard(remote)
                    raise _mismatch(local, str(data.get("sha256")))
                raise ServerError(
                    f"completing the upload: {data.get('message')} (HTTP {resp.status})",
                    http_status=resp.status,
                    server_code=str(data.get("code")),
                )
            if resp.status != 200:
                raise await server_error(resp, "completing the upload")
            data = await json_object(resp)
        if data.get("sha256") != local:
            raise _mismatch(local, str(data.get("sha256")))
        return data

    async def _discard(self, remote: Remote) -> None:
        """Free the server's copy of a file that turned out different, and forget it."""
        self._forget()
        try:
            async with self.session.delete(remote.url):
                pass
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.info("could not delete the mismatched upload: %s", describe_error(exc))

    # bookkeeping

    def _check_unchanged(self) -> None:
        stat = os.stat(self.key.path)
        if stat.st_size != self.size or stat.st_mtime_ns != self.key.mtime_ns:
            raise LocalFileChanged(f"{self.path} changed while it was being sent")

    def _forget(self) -> None:
        if self.store is not None:
            self.store.forget_upload(self.key)


def _mismatch(local: str, remote: str) -> DigestMismatch:
    return DigestMismatch(
        f"SHA-256 mismatch: the server stored {remote}, the local file is {local}; "
        "the local file may have changed while it was sent",
        local=local,
        remote=remote,
    )
