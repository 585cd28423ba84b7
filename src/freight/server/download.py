"""Serving finished uploads: sendfile, single ranges, strong ETags and RFC 9530 digests.

The ETag is the file's SHA-256, so it names the content itself: a resumed download that
sends it back in ``If-Range`` can never be spliced onto different bytes. If-Range is
evaluated here rather than by aiohttp's FileResponse, whose 3.14 release ignores it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from freight.core import UploadSession
from freight.errors import PreconditionFailed, UploadIncomplete
from freight.protocol import ranges
from freight.protocol.digests import build_repr_digest
from freight.protocol.metadata import content_disposition, safe_filename
from freight.protocol.tus import format_http_date
from freight.storage.base import SendfileSource

__all__ = ["SendfileResponse", "file_response"]


class SendfileResponse(web.StreamResponse):
    """Sends ``count`` bytes of ``path`` from ``offset`` with the kernel's sendfile."""

    def __init__(self, path: Path, offset: int, count: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._path = path
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        if request.method == "HEAD" or self._count == 0:
            return writer
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        with open(self._path, "rb") as file:
            # asyncio loops over os.sendfile until count is sent (Linux caps one call near
            # 2 GiB) and falls back to read/write on transports without sendfile (TLS).
            await asyncio.get_running_loop().sendfile(transport, file, self._offset, self._count)
        await super().write_eof()
        return writer


def file_response(
    request: web.Request, session: UploadSession, store: object
) -> web.StreamResponse:
    if not session.is_finished:
        raise UploadIncomplete("the upload is not finished yet")
    if not isinstance(store, SendfileSource):
        raise NotImplementedError("downloads from this storage backend are not supported yet")
    path = store.file_path(session.id)
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
    byte_range = None
    if ranges.if_range_allows_partial(request.headers.get("If-Range"), etag, modified):
        byte_range = ranges.parse_range(request.headers.get("Range"), size)
    if byte_range is None:
        return SendfileResponse(path, 0, size, status=200, headers=headers)
    headers["Content-Range"] = byte_range.content_range(size)
    return SendfileResponse(path, byte_range.start, byte_range.length, status=206, headers=headers)


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
