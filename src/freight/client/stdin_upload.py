"""Sending a stream of unknown length (``freight send - URL --name NAME``) over tus.

The upload is created with ``Upload-Defer-Length: 1`` and filled by one ``PATCH`` per piece
read from the stream; the piece stays in memory until the server acknowledges it, so a cut
connection is resumed from the server's durable offset (a ``HEAD``) by sending the rest of
that piece again: what was read from the stream is never needed twice, and memory stays at
one piece. At the end of the stream the last ``PATCH`` declares ``Upload-Length``. The
SHA-256 is computed as the stream is read and checked against the server's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from functools import partial

import aiohttp
from yarl import URL

from freight.client.errors import DigestMismatch, ProtocolViolation, ServerError
from freight.client.filebody import BufferBody
from freight.client.headers import parse_repr_digest, parse_upload_offset
from freight.client.http import (
    CHUNK_SIZE,
    TUS_VERSION,
    describe_error,
    is_retryable,
    retrying,
    server_error,
)
from freight.client.options import DEFAULTS, TransferOptions
from freight.client.upload import ProgressCallback, UploadResult
from freight.client.urls import upload_endpoint
from freight.protocol.metadata import build_upload_metadata

__all__ = ["PIECE_SIZE", "upload_stream"]

PIECE_SIZE = 8 * 1024 * 1024  # read, kept and sent at a time: the memory a stream costs


async def upload_stream(
    fd: int,
    server_url: str,
    name: str,
    options: TransferOptions = DEFAULTS,
    *,
    on_start: Callable[[int, int], None] | None = None,
    piece_size: int = PIECE_SIZE,
) -> UploadResult:
    """Upload what can be read from ``fd`` until its end as a file called ``name``.
    ``on_start`` gets a size of 0: the length is known only at the end. A stream cannot be
    read again, so the options' ``resume_store`` is not used; ``piece_size`` (what is held
    and resent after a failure) replaces their ``chunk_size``."""
    endpoint = upload_endpoint(server_url)
    budget = options.budget()
    progress = options.progress
    sha = hashlib.sha256()
    buffer = bytearray(piece_size)
    async with options.session() as session:
        url = await retrying(budget, lambda: _create(session, endpoint, name))
        budget.reached(0)
        if on_start is not None:
            on_start(0, 0)
        sent = 0  # the server's durable offset
        declared = False  # whether the server knows the length
        remote: bytes | None = None
        while not declared:
            count = await asyncio.to_thread(_read_piece, fd, buffer, sha)
            piece = memoryview(buffer)[:count]
            end = sent + count
            total = end if count < piece_size else None  # a short piece: the stream ended
            while sent < end or (total is not None and not declared):
                try:
                    rest = piece[count - (end - sent) :]
                    sent, remote = await _patch(session, url, rest, sent, total, progress)
                    declared = total is not None and sent == end
                    budget.reached(sent)
                except Exception as exc:
                    if not _worth_retrying(exc):
                        raise
                    await budget.failed(describe_error(exc), exc)
                    sent, declared = await retrying(budget, partial(_state, session, url, end))
        if remote is None:  # the answer that carried it was lost
            remote = await retrying(budget, lambda: _finished_digest(session, url))
    local = sha.digest()
    if remote != local:
        raise DigestMismatch(
            f"SHA-256 mismatch: the server stored {remote.hex() if remote else 'nothing'}, "
            f"the stream was {local.hex()}",
            local=local.hex(),
            remote=remote.hex() if remote else "",
        )
    return UploadResult(
        url=url, name=name, size=sent, sha256=local.hex(), verified=True, resumed_from=0
    )


def _read_piece(fd: int, buffer: bytearray, sha: hashlib._Hash) -> int:
    """Fill ``buffer`` from ``fd`` (short only at the stream's end); hash what was read."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(view):
        count = os.readv(fd, [view[filled:]])
        if count == 0:
            break
        filled += count
    sha.update(view[:filled])
    return filled


async def _create(session: aiohttp.ClientSession, endpoint: URL, name: str) -> str:
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Upload-Defer-Length": "1",
        "Upload-Metadata": build_upload_metadata({"filename": name}),
    }
    async with session.post(endpoint, headers=headers) as resp:
        if resp.status != 201:
            raise await server_error(resp, "creating the upload")
        location = resp.headers.get("Location")
        if not location:
            raise ProtocolViolation("the server created an upload but sent no Location")
        return str(resp.url.join(URL(location)))


async def _state(session: aiohttp.ClientSession, url: str, end: int) -> tuple[int, bool]:
    """The server's durable offset, and whether it knows the upload's length."""
    async with session.head(url, headers={"Tus-Resumable": TUS_VERSION}) as resp:
        if resp.status not in (200, 204):
            raise await server_error(resp, "checking the upload")
        offset = parse_upload_offset(resp.headers.get("Upload-Offset"))
        declared = resp.headers.get("Upload-Length") is not None
    if offset > end:
        raise ProtocolViolation(f"the server reports {offset} bytes where {end} were sent")
    return offset, declared


async def _patch(
    session: aiohttp.ClientSession,
    url: str,
    data: memoryview,
    offset: int,
    total: int | None,
    progress: ProgressCallback | None,
) -> tuple[int, bytes | None]:
    def sent(position: int) -> None:
        if progress is not None:
            progress(position)

    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Content-Length": str(len(data)),
    }
    if total is not None:
        headers["Upload-Length"] = str(total)
    body = BufferBody(data, offset, piece_size=CHUNK_SIZE, on_sent=sent)
    async with session.patch(url, data=body, headers=headers) as resp:
        if resp.status not in (200, 204):
            raise await server_error(resp, "sending data")
        new_offset = parse_upload_offset(resp.headers.get("Upload-Offset"))
        digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
    if not offset <= new_offset <= offset + len(data):
        raise ProtocolViolation(f"the server moved the offset from {offset} to {new_offset}")
    # Part of the body taken: the caller sends the rest.
    return new_offset, digest if total is not None and new_offset == total else None


async def _finished_digest(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.head(url) as resp:
        if resp.status != 200:
            raise ServerError(
                f"the server has every byte but has not finished the file (HTTP {resp.status})",
                http_status=409 if resp.status in (409, 423) else resp.status,
            )
        digest = parse_repr_digest(resp.headers.get("Repr-Digest"))
    if digest is None:
        raise ProtocolViolation("the server finished the file but gave no Repr-Digest")
    return digest


def _worth_retrying(exc: Exception) -> bool:
    if isinstance(exc, ServerError) and exc.http_status == 409:
        return True  # an offset mismatch: ask where the server stands
    return is_retryable(exc)
