"""Fetching a file from a freight server: resumable, verified, never spliced.

Bytes land in a ``.freight-part`` file beside the target (:mod:`freight.client.partfile`,
shared with TCP downloads) and the file gets its final name only once complete and
verified. Resuming sends ``Range`` with ``If-Range: <ETag>`` (the ETag remembered in the
:class:`~freight.client.resume_store.ResumeStore` when the ``.part`` was started); a ``200``
instead of ``206`` means the file changed, so the download starts over. Because some servers
ignore ``If-Range`` (aiohttp 3.14's FileResponse does), a ``206`` is also checked: same ETag,
same total size, and the range starting where asked; anything else starts over too. Finally
the SHA-256 must equal the server's ``Repr-Digest``; a mismatch deletes the ``.part``. The
prefix kept from an earlier run is hashed from the ``.part`` in a thread; the rest is hashed
in batches as they are written, in worker threads that overlap with receiving (see
:mod:`freight.client.writer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from freight.client.errors import ClientError, DigestMismatch, ProtocolViolation
from freight.client.hashing import SplitHasher
from freight.client.headers import parse_content_range, parse_repr_digest
from freight.client.http import describe_error, is_retryable, server_error
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.partfile import PartFile, local_name, named_target
from freight.client.rate import pace
from freight.client.resume_store import DownloadKey, DownloadState
from freight.client.urls import file_id_from_url, parse_http_url
from freight.client.writer import RECEIVE_BATCH, STALE_AFTER, PartWriter

__all__ = [
    "MAX_RESTARTS",
    "DownloadInfo",
    "DownloadResult",
    "StartCallback",
    "download_file",
    "received_mismatch",
]

MAX_RESTARTS = 3  # a file replaced more often than this while we fetch it is not worth chasing


@dataclass(frozen=True)
class DownloadInfo:
    """Reported when a response starts (again, if the remote file changed)."""

    path: Path
    size: int
    resumed_from: int


@dataclass(frozen=True)
class DownloadResult:
    """A finished download. ``verified`` is False when the server advertised no digest."""

    url: str
    path: Path
    size: int
    sha256: str
    verified: bool
    resumed_from: int
    restarted: bool


StartCallback = Callable[[DownloadInfo], None]


class _Restart(Exception):
    """The remote file is not the one the ``.part`` was started from."""


async def download_file(
    url: str,
    output: Path | str | None = None,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: StartCallback | None = None,
    overwrite: bool = False,
) -> DownloadResult:
    """Download the file at ``url`` (``<server>/files/<id>``).

    ``output`` is the destination file, or a directory to put it in. Without it, or with a
    directory, the name is the server's sanitised ``Content-Disposition`` filename (else the
    file id); such a server-chosen name never replaces an existing file unless ``overwrite``.
    """
    file_url = parse_http_url(url)
    async with options.session(download=True) as session:
        download = _Download(session, file_url, options, on_start)
        target = await download.choose_target(None if output is None else Path(output), overwrite)
        return await download.run(target)


class _Download:
    """The state of one :func:`download_file` call."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: URL,
        options: TransferOptions,
        on_start: StartCallback | None,
    ) -> None:
        self.session = session
        self.url = url
        self.budget = options.budget()
        self.store = options.resume_store
        self.chunk_size = options.chunk_size
        self.progress = options.progress
        self.on_start = on_start
        self.target = Path()
        self.key = DownloadKey("", str(url))
        self.etag: str | None = None
        self.size: int | None = None
        self.digest: bytes | None = None
        self.position = 0
        self.restarted = False

    # naming

    async def choose_target(self, output: Path | None, overwrite: bool) -> Path:
        if output is not None and not output.is_dir():
            return output
        return named_target(output, await self._suggested_name(), overwrite=overwrite)

    async def _suggested_name(self) -> str:
        while True:
            try:
                async with self.session.head(self.url) as resp:
                    if resp.status != 200:
                        raise await server_error(resp, "fetching the file")
                    disposition = resp.content_disposition
                    suggested = disposition.filename if disposition is not None else None
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                await self.budget.failed(describe_error(exc))
                continue
            return local_name(suggested, file_id_from_url(self.url) or "")

    # the transfer

    async def run(self, target: Path) -> DownloadResult:
        self.target = target
        part = PartFile(target)
        self.key = DownloadKey.for_part(part.path, str(self.url))
        try:
            offset = resumed_from = self._resume_point(part.open())
            local = await self._fetch_all(part, offset)
            assert self.size is not None
            if self.digest is not None and self.digest != local:
                part.discard()
                self._forget()
                raise received_mismatch(self.digest, local)
            part.commit()
        finally:
            part.close()
        self._forget()
        return DownloadResult(
            url=str(self.url),
            path=target,
            size=self.size,
            sha256=local.hex(),
            verified=self.digest is not None,
            resumed_from=resumed_from if not self.restarted else 0,
            restarted=self.restarted,
        )

    def _resume_point(self, have: int) -> int:
        """Bytes of the part file worth keeping: only if we know which version they came
        from."""
        state = self.store.get_download(self.key) if self.store else None
        if state is None or have > state.size:
            return 0
        self.etag, self.size = state.etag, state.size
        return have

    async def _fetch_all(self, part: PartFile, offset: int) -> bytes:
        """Fill ``part`` from ``offset``; start over whenever the remote file changed."""
        fd = part.fd
        if offset == 0:
            part.truncate()
        restarts = 0
        while True:
            hasher = SplitHasher(part.path, offset, chunk_size=self.chunk_size)
            hasher.start()
            try:
                if await self._fetch_from(fd, offset, hasher):
                    assert self.size is not None
                    return await hasher.finish(self.size)
            finally:
                await hasher.close()
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise ClientError(f"the file keeps changing on the server ({restarts} restarts)")
            part.truncate()
            offset, self.etag, self.size, self.digest = 0, None, None, None
            self.restarted = True
            self._report(0)

    async def _fetch_from(self, fd: int, offset: int, hasher: SplitHasher) -> bool:
        """True once the whole file is in place; False if it must start over."""
        while True:
            try:
                if offset > 0 and offset == self.size:
                    return await self._still_same(offset)
                await self._get(fd, offset, hasher)
                return True
            except _Restart:
                return False
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                offset = self.position
                await self.budget.failed(describe_error(exc))

    async def _get(self, fd: int, offset: int, hasher: SplitHasher) -> None:
        headers = {}
        if offset > 0 and self.etag is not None:
            headers = {"Range": f"bytes={offset}-", "If-Range": self.etag}
        async with self.session.get(self.url, headers=headers) as resp:
            if resp.status == 200:
                if offset > 0:
                    raise _Restart("the file changed on the server")
                self._accept(resp)
            elif resp.status == 206 and offset > 0:
                self._check_partial(resp, offset)
            elif resp.status == 416:
                raise _Restart("the file on the server is shorter than the partial one")
            else:
                raise await server_error(resp, "downloading")
            self._started(offset)
            await self._receive(resp, fd, offset, hasher)

    def _accept(self, resp: aiohttp.ClientResponse) -> None:
        """Take a full response as the version to download, and remember its ETag."""
        if resp.content_length is None:
            raise ProtocolViolation("the server sent no Content-Length")
        self.size = resp.content_length
        self.digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
        etag = resp.headers.get("ETag")
        # If-Range needs a strong validator; a weak one cannot make a resume safe.
        self.etag = etag if etag and not etag.startswith("W/") else None
        if self.store is not None and self.etag is not None:
            self.store.put_download(self.key, DownloadState(etag=self.etag, size=self.size))

    def _check_partial(self, resp: aiohttp.ClientResponse, offset: int) -> None:
        """Trust a 206 only if it continues exactly the version the ``.part`` holds."""
        span = parse_content_range(resp.headers.get("Content-Range"))
        etag = resp.headers.get("ETag")
        digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
        if span.start != offset or span.total != self.size or (etag and etag != self.etag):
            raise _Restart("the file changed on the server")
        if digest is not None and self.digest is not None and digest != self.digest:
            raise _Restart("the file changed on the server")
        self.digest = digest or self.digest

    async def _still_same(self, offset: int) -> bool:
        """A complete ``.part`` from an earlier run: is the server's file still that one?"""
        async with self.session.head(self.url) as resp:
            if resp.status != 200:
                raise await server_error(resp, "fetching the file")
            if resp.headers.get("ETag") != self.etag or resp.content_length != self.size:
                return False
            self.digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
        self.position = offset
        self._started(offset)
        self._report(offset)
        return True

    async def _receive(
        self, resp: aiohttp.ClientResponse, fd: int, offset: int, hasher: SplitHasher
    ) -> None:
        assert self.size is not None
        batch_size = max(self.chunk_size, RECEIVE_BATCH)
        writer = PartWriter(fd, offset, hasher=hasher, batch_size=batch_size)
        writer.on_written = self._written
        try:
            while await _collect_batch(resp.content, writer, self.size):
                await writer.submit()
        finally:
            # Whatever arrived intact is kept: the next attempt resumes after it.
            await writer.flush()
        if self.position != self.size:
            raise aiohttp.ClientPayloadError("the server sent fewer bytes than it announced")

    # bookkeeping

    def _written(self, position: int) -> None:
        self.position = position
        self.budget.reached(position)  # on disk: a retry resumes after it
        self._report(position)

    def _started(self, offset: int) -> None:
        self.budget.answered()
        self.position = offset
        if self.on_start is not None and self.size is not None:
            self.on_start(DownloadInfo(self.target, self.size, offset))

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done)

    def _forget(self) -> None:
        if self.store is not None:
            self.store.forget_download(self.key)


async def _collect_batch(content: aiohttp.StreamReader, writer: PartWriter, size: int) -> bool:
    """Body chunks, as aiohttp received them (``iter_any`` would join them: a copy), into the
    writer's batch until it is full or its first chunk has waited :data:`STALE_AFTER` (a
    slow or stalled link: what came is written rather than held). False at the end."""
    loop = asyncio.get_running_loop()
    try:
        # One timer per batch, not per chunk; waiting in readchunk loses nothing if cut short.
        async with asyncio.timeout(None) as patience:
            while True:
                chunk, end_of_http_chunk = await content.readchunk()
                if not chunk:
                    if end_of_http_chunk:
                        continue
                    return False
                if writer.received + len(chunk) > size:
                    raise ProtocolViolation("the server sent more bytes than it announced")
                full = writer.append(chunk)
                # --limit-rate; after the append: a pause cut short by `patience` loses nothing.
                await pace(len(chunk))
                if full:
                    return True
                if patience.when() is None:
                    patience.reschedule(loop.time() + STALE_AFTER)
    except TimeoutError:
        if not patience.expired():
            raise  # aiohttp's own read timeout
        return True


def received_mismatch(remote: bytes, local: bytes) -> DigestMismatch:
    """The error for a download whose bytes do not hash to the server's SHA-256 (the
    caller has deleted the partial file)."""
    return DigestMismatch(
        f"SHA-256 mismatch: the server advertises {remote.hex()}, received {local.hex()}; "
        "the partial file was deleted",
        local=local.hex(),
        remote=remote.hex(),
    )
