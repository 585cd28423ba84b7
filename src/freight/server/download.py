"""Serving finished uploads: single ranges, strong ETags and RFC 9530 digests.

The bytes go with the kernel's sendfile when the blob store keeps local files
(:class:`SendfileSource`), from a thread of the download's own
(:mod:`freight.server.file_sender`); from any other store they are streamed through one reused
buffer per download, read in a worker thread.

The ETag is the file's SHA-256, so it names the content itself: a resumed download that
sends it back in ``If-Range`` can never be spliced onto different bytes. If-Range is
evaluated here rather than by aiohttp's FileResponse, whose 3.14 release ignores it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from freight.core import UploadEngine, UploadSession
from freight.core.blobs import BlobReader, Presigner, SendfileSource
from freight.errors import PreconditionFailed, UploadIncomplete, storage_os_error
from freight.protocol import ranges
from freight.protocol.digests import build_repr_digest
from freight.protocol.metadata import content_disposition, safe_filename
from freight.protocol.tus import format_http_date
from freight.server.file_sender import send_file
from freight.server.logs import BYTES_OUT
from freight.server.metrics import sent_counter
from freight.server.stall import Direction, Stalled, watch_progress
from freight.server.state import SETTINGS

__all__ = ["STREAM_BUFFER", "SendfileResponse", "StreamedResponse", "file_response"]

# A download from a store without sendfile reads this much at a time.
STREAM_BUFFER = 256 * 1024


class SendfileResponse(web.StreamResponse):
    """Sends ``count`` bytes of ``path`` from ``offset`` with the kernel's sendfile.

    The file is opened here, while the handler runs, so that failing to open it (out of
    descriptors) is still an error response rather than a connection cut after the headers.
    """

    def __init__(
        self, path: Path, offset: int, count: int, *, send_body: bool = True, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._file: IO[bytes] | None = None
        if count and send_body:
            try:
                self._file = open(path, "rb")  # noqa: SIM115 (closed once sent)
            except OSError as exc:
                raise storage_os_error(exc) from exc
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        file, self._file = self._file, None
        if file is None:
            return await super().prepare(request)
        with file:
            writer = await super().prepare(request)
            await self._send(request, file)
        await super().write_eof()
        return writer

    async def _send(self, request: web.BaseRequest, file: IO[bytes]) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        settings = request.app.get(SETTINGS) if isinstance(request, web.Request) else None
        idle = settings.idle_timeout if settings else None
        try:
            async with watch_progress(
                transport, Direction.SEND, idle, settings.min_rate if settings else 0
            ):
                moved = await send_file(transport, file, self._offset, self._count)
            if moved < self._count:
                raise ConnectionResetError("the stored file is shorter than its recorded size")
        except Stalled as exc:
            # aiohttp takes a ConnectionError here as a client that went away.
            raise ConnectionResetError(exc.message) from None
        finally:
            # The file's position is left past the bytes sent, even on failure.
            sent = max(0, file.tell() - self._offset)
            request[BYTES_OUT] = sent
            if isinstance(request, web.Request):
                sent_counter(request.app, "download")(sent)


class StreamedResponse(web.StreamResponse):
    """Sends ``count`` bytes of a blob from ``offset``, read through one reused buffer."""

    def __init__(
        self, reader: BlobReader | None, offset: int, count: int, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._reader = reader
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        reader, self._reader = self._reader, None
        if reader is None:
            return await super().prepare(request)
        sent = 0
        try:
            writer = await super().prepare(request)
            settings = request.app.get(SETTINGS) if isinstance(request, web.Request) else None
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("connection lost")
            idle = settings.idle_timeout if settings else None
            try:
                async with watch_progress(
                    transport, Direction.SEND, idle, settings.min_rate if settings else 0
                ):
                    sent = await self._stream(reader)
            except Stalled as exc:
                raise ConnectionResetError(exc.message) from None
        finally:
            reader.close()
            request[BYTES_OUT] = sent
            if isinstance(request, web.Request):
                sent_counter(request.app, "download")(sent)
        await super().write_eof()
        return writer

    async def _stream(self, reader: BlobReader) -> int:
        buffer = bytearray(min(STREAM_BUFFER, self._count))
        view = memoryview(buffer)
        position, end = self._offset, self._offset + self._count
        while position < end:
            want = view[: min(len(view), end - position)]
            got = await asyncio.to_thread(reader.read_into, position, want)
            if got <= 0:
                raise ConnectionResetError("the stored blob is shorter than its recorded size")
            # write() hands the bytes to the transport, which copies what it cannot send at
            # once: the buffer is free again when it returns.
            await super().write(want[:got])
            position += got
        return position - self._offset


async def file_response(
    request: web.Request, session: UploadSession, engine: UploadEngine
) -> web.StreamResponse:
    if not session.is_finished:
        raise UploadIncomplete("the upload is not finished yet")
    size = session.length or 0
    # A stored file never changes, so its id names its bytes as well as a digest would.
    etag = f'"{session.sha256 or session.id}"'
    modified = session.finished or session.created
    headers = _representation_headers(session, etag, modified)
    if ranges.etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    if_match = request.headers.get("If-Match")
    if if_match is not None and not ranges.etag_matches_strong(if_match, etag):
        raise PreconditionFailed("If-Match does not match the file's ETag")
    settings = request.app.get(SETTINGS)
    if settings is not None and settings.download_redirect and request.method == "GET":
        redirect = await _presigned(engine, session)
        if redirect is not None:
            return redirect
    send_body = request.method != "HEAD"
    byte_range = None
    if ranges.if_range_allows_partial(request.headers.get("If-Range"), etag, modified):
        byte_range = ranges.parse_range(request.headers.get("Range"), size)
    status, start, count = 200, 0, size
    if byte_range is not None:
        headers["Content-Range"] = byte_range.content_range(size)
        status, start, count = 206, byte_range.start, byte_range.length
    blobs = engine.blobs
    if isinstance(blobs, SendfileSource):
        path = blobs.file_path(session.id)
        return SendfileResponse(
            path, start, count, send_body=send_body, status=status, headers=headers
        )
    reader = await engine.open_reader(session) if count and send_body else None
    return StreamedResponse(reader, start, count, status=status, headers=headers)


# How long a presigned download URL stays valid: long enough to fetch a large file, short
# enough that a leaked one soon stops working.
PRESIGNED_FOR = 3600


async def _presigned(engine: UploadEngine, session: UploadSession) -> web.Response | None:
    """A 302 to a signed URL of the store (the bytes never pass through this node), when
    the store can sign one."""
    blobs = engine.blobs
    if not isinstance(blobs, Presigner):
        return None
    name = safe_filename(session.name, session.id)
    url = await blobs.presign_download(session.id, expires_in=PRESIGNED_FOR, filename=name)
    headers = {"Location": url, "Cache-Control": "private, no-store"}
    if session.sha256 is not None:
        headers["Repr-Digest"] = build_repr_digest(session.sha256)
    return web.Response(status=302, headers=headers)


def _representation_headers(session: UploadSession, etag: str, modified: float) -> dict[str, str]:
    name = safe_filename(session.name, session.id)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": format_http_date(modified),
        "Content-Type": "application/octet-stream",
        "Content-Disposition": content_disposition(name),
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if session.sha256 is not None:
        headers["Repr-Digest"] = build_repr_digest(session.sha256)
    return headers
