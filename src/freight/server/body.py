"""Streaming a request body into an upload writer."""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from freight.core.writer import UploadWriter
from freight.errors import ClientDisconnected, InvalidHeader, UploadTooLarge

__all__ = ["check_fits", "content_length", "has_body", "stream_body"]


def content_length(request: web.Request) -> int | None:
    value = request.headers.get("Content-Length")
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidHeader("Content-Length must be a non-negative integer")
    return int(value)


def has_body(request: web.Request) -> bool:
    length = content_length(request)
    return bool(length) or (length is None and request.body_exists)


def check_fits(offset: int, request: web.Request, limit: int | None) -> None:
    """Refuse a body that the headers already say is too long, before reading any of it."""
    length = content_length(request)
    if limit is not None and length is not None and offset + length > limit:
        raise UploadTooLarge(
            f"{length} bytes at offset {offset} run past the upload's length of {limit}"
        )


async def stream_body(request: web.Request, writer: UploadWriter) -> None:
    """Feed the body to ``writer`` as it arrives; aiohttp's buffers bound the memory used."""
    content = request.content
    while True:
        try:
            chunk = await content.readany()
        except (ConnectionError, HttpProcessingError) as exc:
            raise ClientDisconnected(
                f"the body ended early at byte {writer.position}: {exc}"
            ) from exc
        if not chunk:
            return
        await writer.write(chunk)
