"""Sending a local file to a freight server over tus 1.0.0, resumably.

One upload is: find where the server stands (a remembered upload URL and ``HEAD``, or a new
``POST``), then send everything the server lacks in one streaming ``PATCH``. The server syncs
and acknowledges as it goes, so after any failure a ``HEAD`` tells exactly which bytes are
durable and the next ``PATCH`` starts there: nothing acknowledged is ever sent twice. The
local SHA-256 is computed meanwhile (see :mod:`freight.client.hashing`) and checked against
the ``Repr-Digest`` the server returns when the upload completes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from yarl import URL

from freight.client.errors import (
    ClientError,
    DigestMismatch,
    ProtocolViolation,
    ServerError,
)
from freight.client.filebody import FileBody
from freight.client.hashing import SplitHasher
from freight.client.headers import parse_repr_digest, parse_upload_offset
from freight.client.http import TUS_VERSION, describe_error, is_retryable, server_error
from freight.client.options import DEFAULTS, ProgressCallback, TransferOptions
from freight.client.resume_store import UploadKey
from freight.client.sendfile_http import (
    RawResponse,
    can_sendfile,
    raw_server_error,
    send_file_request,
)
from freight.client.urls import upload_endpoint
from freight.protocol.metadata import build_upload_metadata

__all__ = ["ProgressCallback", "UploadResult", "display_name", "local_file", "upload_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadResult:
    """A finished upload. ``verified`` is False when the server advertised no digest."""

    url: str
    name: str
    size: int
    sha256: str
    verified: bool
    resumed_from: int


def local_file(path: Path | str) -> Path:
    """``path`` as a :class:`Path`, once it is known to name a regular file (every uploader
    checks this before it talks to a server)."""
    path = Path(path)
    if not path.is_file():
        raise ClientError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path


def display_name(path: Path) -> str:
    """The name the server is told: file names that are not valid UTF-8 (surrogate-escaped
    by Python) cannot be sent as they are."""
    return path.name.encode("utf-8", "replace").decode("utf-8")


async def upload_file(
    path: Path | str,
    server_url: str,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: Callable[[int, int], None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> UploadResult:
    """Upload ``path`` to ``server_url`` (a server root or its ``/files/`` endpoint).

    With a ``resume_store`` in ``options`` the upload URL is remembered until the upload
    completes, so running this again after any interruption resumes at the server's durable
    offset. ``on_start(size, offset)`` is called once the server's offset is known; the
    options' ``progress`` then receives absolute byte counts. ``metadata`` is sent beside
    the file's name (``relativePath``, say).
    """
    path = local_file(path)
    endpoint = upload_endpoint(server_url)
    key = UploadKey.for_file(path, str(endpoint))
    async with options.session() as session:
        upload = _Upload(session, path, key, endpoint, options, on_start, metadata)
        return await upload.run()


class _Upload:
    """The state of one :func:`upload_file` call."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        path: Path,
        key: UploadKey,
        endpoint: URL,
        options: TransferOptions,
        on_start: Callable[[int, int], None] | None,
        metadata: Mapping[str, str] | None,
    ) -> None:
        self.session = session
        self.path = path
        self.key = key
        self.size = key.size
        self.endpoint = endpoint
        self.store = options.resume_store
        self.budget = options.budget()
        self.progress = options.progress
        self.on_start = on_start
        self.chunk_size = options.chunk_size
        self.stall_timeout = options.timeouts.stall
        self.metadata = {**(metadata or {}), "filename": display_name(path)}
        self.acknowledged = 0  # highest offset the server has confirmed
        self.head_digest: bytes | None = None

    async def run(self) -> UploadResult:
        url, offset = await self._locate()
        resumed_from = offset
        if self.on_start is not None:
            self.on_start(self.size, offset)
        self._report(offset)
        hasher = SplitHasher(self.path, offset, chunk_size=self.chunk_size)
        hasher.start()
        try:
            url, remote = await self._transfer(url, offset, hasher)
            local = await hasher.finish(self.size)
        finally:
            await hasher.close()
        if remote is not None and remote != local:
            self._forget()
            raise DigestMismatch(
                f"SHA-256 mismatch: the server stored {remote.hex()}, the local file is "
                f"{local.hex()}; the local file may have changed while it was sent",
                local=local.hex(),
                remote=remote.hex(),
            )
        self._forget()
        return UploadResult(
            url=url,
            name=self.path.name,
            size=self.size,
            sha256=local.hex(),
            verified=remote is not None,
            resumed_from=resumed_from,
        )

    # finding where the server stands

    async def _locate(self) -> tuple[str, int]:
        """The upload URL and the server's offset: remembered and still alive, or new."""
        while True:
            try:
                remembered = self.store.get_upload(self.key) if self.store else None
                if remembered is not None:
                    offset = await self._head(remembered)
                    if offset is not None:
                        self._acknowledge(offset)
                        return remembered, offset
                    log.info("remembered upload %s is gone; starting a new one", remembered)
                return await self._create(), 0
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                await self.budget.failed(describe_error(exc), exc)

    async def _create(self) -> str:
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Length": str(self.size),
            "Upload-Metadata": build_upload_metadata(self.metadata),
        }
        async with self.session.post(self.endpoint, headers=headers) as resp:
            if resp.status != 201:
                raise await server_error(resp, "creating the upload")
            location = resp.headers.get("Location")
            if not location:
                raise ProtocolViolation("the server created an upload but sent no Location")
            url = str(resp.url.join(URL(location)))
        self.budget.answered()
        self.acknowledged = 0
        self.head_digest = None
        if self.store is not None:
            self.store.put_upload(self.key, url)
        return url

    async def _head(self, url: str) -> int | None:
        """The server's durable offset for ``url``; None if that upload is gone or not ours."""
        async with self.session.head(url, headers={"Tus-Resumable": TUS_VERSION}) as resp:
            self.budget.answered()
            if resp.status in (404, 410):
                return None
            if resp.status not in (200, 204):
                raise await server_error(resp, "checking the upload")
            length = resp.headers.get("Upload-Length")
            if length is not None and parse_upload_offset(length, "Upload-Length") != self.size:
                return None
            offset = parse_upload_offset(resp.headers.get("Upload-Offset"))
            log.debug("HEAD %s: offset %d", url, offset)
            self.head_digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
        if offset > self.size:
            raise ProtocolViolation(f"the server reports {offset} bytes of a {self.size}-byte file")
        return offset

    async def _resync(self, url: str) -> tuple[str, int]:
        """After a failure: ask the server's offset again; recreate the upload if it expired."""
        offset = await self._head(url)
        if offset is None:
            log.info("upload %s is gone; starting a new one", url)
            url, offset = await self._create(), 0
        self._acknowledge(offset)
        self._report(offset)
        return url, offset

    # sending

    async def _transfer(
        self, url: str, offset: int, hasher: SplitHasher
    ) -> tuple[str, bytes | None]:
        """Send [offset, size) until the server has it all; returns the URL and its digest."""
        must_resync = False
        while True:
            try:
                if must_resync:
                    url, offset = await self._resync(url)
                    must_resync = False
                if offset < self.size:
                    offset, digest = await self._patch(url, offset, hasher)
                    self._acknowledge(offset)
                    if offset < self.size:
                        continue  # the server took part of the body; send the rest
                    if digest is not None:
                        return url, digest
                return url, await self._completed_digest(url)
            except Exception as exc:
                if not _worth_resyncing(exc):
                    raise
                must_resync = True
                await self.budget.failed(describe_error(exc), exc)

    async def _patch(self, url: str, offset: int, hasher: SplitHasher) -> tuple[int, bytes | None]:
        loop = asyncio.get_running_loop()
        # aiohttp times out reads, but not a body write stuck on a link that stopped taking
        # bytes: give up when neither has moved for `stall_timeout` seconds.
        async with asyncio.timeout_at(loop.time() + self.stall_timeout) as stall:

            def moved(position: int) -> None:
                stall.reschedule(loop.time() + self.stall_timeout)
                self._report(position)

            return await self._send_body(url, offset, hasher, moved)

    async def _send_body(
        self, url: str, offset: int, hasher: SplitHasher, moved: ProgressCallback
    ) -> tuple[int, bytes | None]:
        if can_sendfile(URL(url)):
            return await self._sendfile_body(url, offset, hasher, moved)
        body = FileBody(
            self.path,
            offset,
            self.size,
            chunk_size=self.chunk_size,
            hasher=hasher,
            on_read=moved,
        )
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            # A declared length (not chunked encoding) lets the server check the body's end.
            "Content-Length": str(self.size - offset),
        }
        log.debug("PATCH %s at offset %d", url, offset)
        try:
            async with self.session.patch(url, data=body, headers=headers) as resp:
                moved_on = _moved_on(resp, offset)
                if resp.status not in (200, 204) and moved_on is None:
                    raise await server_error(resp, "sending data")
                new_offset = parse_upload_offset(resp.headers.get("Upload-Offset"))
                digest = None if moved_on else parse_repr_digest(resp.headers.get("Repr-Digest"))
        except Exception:
            if body.error is not None:
                raise body.error from None  # a local read failure, not a network one
            raise
        finally:
            body.close()
        log.debug("PATCH answered offset %d", new_offset)
        if not offset < new_offset <= self.size:
            raise ProtocolViolation(
                f"the server moved the offset from {offset} to {new_offset} (size {self.size})"
            )
        return new_offset, digest

    async def _sendfile_body(
        self, url: str, offset: int, hasher: SplitHasher, moved: ProgressCallback
    ) -> tuple[int, bytes | None]:
        """:meth:`_send_body` over plain http: the kernel moves the file's pages, and the
        hasher reads them from the page cache beside it (each byte read once by us)."""
        headers = {
            "Tus-Resumable": TUS_VERSION,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Content-Length": str(self.size - offset),
        }
        log.debug("PATCH %s at offset %d (sendfile)", url, offset)
        resp = await send_file_request(
            self.session,
            "PATCH",
            URL(url),
            headers,
            self.path,
            offset,
            self.size,
            on_sent=moved,
            keep_up=functools.partial(hasher.keep_up, offset),
            stall_timeout=self.stall_timeout,
        )
        moved_on = _moved_on(resp, offset)
        if resp.status not in (200, 204) and moved_on is None:
            raise raw_server_error(resp, "sending data")
        new_offset = parse_upload_offset(resp.headers.get("Upload-Offset"))
        digest = None if moved_on else parse_repr_digest(resp.headers.get("Repr-Digest"))
        if not offset < new_offset <= self.size:
            raise ProtocolViolation(
                f"the server moved the offset from {offset} to {new_offset} (size {self.size})"
            )
        return new_offset, digest

    async def _completed_digest(self, url: str) -> bytes | None:
        """The digest of a completed upload when no PATCH answer carried it.

        Every byte acknowledged is not enough: the server must also have finished the file
        (an upload whose finishing failed, on a full disk say, reports the whole offset).
        A plain HEAD (no Tus-Resumable) asks for the file itself: 200 only once finished.
        """
        async with self.session.head(url) as resp:
            if resp.status != 200:
                raise ServerError(
                    "the server has every byte but has not finished the file yet "
                    f"(HTTP {resp.status})",
                    http_status=409 if resp.status in (409, 423) else resp.status,
                )
            digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
        return digest if digest is not None else self.head_digest

    # bookkeeping

    def _acknowledge(self, offset: int) -> None:
        self.acknowledged = max(self.acknowledged, offset)
        self.budget.reached(offset)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done)

    def _forget(self) -> None:
        if self.store is not None:
            self.store.forget_upload(self.key)


def _moved_on(resp: aiohttp.ClientResponse | RawResponse, offset: int) -> int | None:
    """The offset of a 409 that holds more than this PATCH started at, else None.

    An earlier request of ours, given up as stalled, recorded its bytes after we asked
    where the server stood: the upload went forward, so it goes on from there without
    counting a failure (the caller checks the offset like any other answer).
    """
    if resp.status != 409:
        return None
    try:
        moved = parse_upload_offset(resp.headers.get("Upload-Offset"))
    except ProtocolViolation:
        return None
    return moved if moved > offset else None


def _worth_resyncing(exc: Exception) -> bool:
    """Transient failures, and answers meaning "ask again where we stand" (409, 404, 410)."""
    if isinstance(exc, ServerError) and exc.http_status in (404, 409, 410):
        return True
    return is_retryable(exc)
